"""Shared test fixtures.

Tests that read the IU-Xray development reports (kept beside the project, never inside it) use the
``iu_xray_reports`` fixture, which skips with a clear reason when the file is absent. Modules that
run the tiny models use ``one_torch_thread`` (``pytestmark = pytest.mark.usefixtures(...)``) and the
``tokenizer`` they were built with.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MOTOR_KG_SHARED", PROJECT_ROOT.parent / "shared"))
IU_XRAY_REPORTS = SHARED_DIR / "data" / "iu_xray" / "reports_dev.csv"

# The tests run tiny models: one thread per process is faster than several competing for two cores.
# Set before any test module imports torch, and inherited by the subprocesses the CLI tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def iu_xray_reports() -> Path:
    """Path of the IU-Xray development reports CSV; skips the test when it is not there."""
    if not IU_XRAY_REPORTS.is_file():
        pytest.skip(f"IU-Xray development reports not found at {IU_XRAY_REPORTS} (set MOTOR_KG_SHARED)")
    return IU_XRAY_REPORTS


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run the module's tests with one torch thread, then restore the setting."""
    from model_cases import one_torch_thread as single_thread

    yield from single_thread()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny synthetic-corpus tokenizer, trained once per test module."""
    from model_cases import train_tiny_tokenizer

    return train_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as the product does: no model hub is ever contacted."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
