"""Faults of the file system and of input files end in one line naming the file, exit status 1.

The read-only cases run the command in a child process as an unprivileged user: root may write
into a read-only directory, and the point is what a user sees.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kg.cli import main

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A read-only directory ``ro`` inside a directory every user may enter.

    Not under pytest's base temporary directory: pytest keeps that private to its owner.
    """
    root = Path(tempfile.mkdtemp(prefix="kg-read-only-"))
    try:
        os.chmod(root, 0o755)
        (root / "ro").mkdir()
        os.chmod(root / "ro", 0o555)
        (root / "home").mkdir()
        os.chmod(root / "home", 0o777)
        yield root / "ro"
    finally:
        os.chmod(root / "ro", 0o755)
        shutil.rmtree(root)


def run_unprivileged(module: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    """``python -m module args`` as the ``nobody`` user (through util-linux ``setpriv``) when this
    is root, else as this user."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot see what a user sees")
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([*prefix, sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=home)


def assert_one_line_error(result: subprocess.CompletedProcess, prefix: str, path: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"{prefix}: error: cannot write {path}: Permission denied"


def test_kg_build_into_read_only_directory(read_only_dir: Path) -> None:
    out = read_only_dir / "sample.duckdb"
    result = run_unprivileged("kg.cli", "build", "--source", "radgraph", "--out", str(out), "--no-progress",
                              home=read_only_dir.parent / "home")
    assert_one_line_error(result, "kg build", out)
    assert list(read_only_dir.iterdir()) == []


def test_kg_label_into_read_only_directory(read_only_dir: Path) -> None:
    reports = read_only_dir.parent / "reports.csv"
    reports.write_text("uid,findings,impression\n1,No pleural effusion.,Normal chest.\n", encoding="utf-8")
    os.chmod(reports, 0o644)
    out = read_only_dir / "labels.csv"
    result = run_unprivileged("kg.cli", "label", "--input", str(reports), "--out", str(out),
                              home=read_only_dir.parent / "home")
    assert_one_line_error(result, "kg label", out)


def test_motor_synth_into_read_only_directory(read_only_dir: Path) -> None:
    out = read_only_dir / "synth"
    result = run_unprivileged("pipelines.cli", "synth", "--out", str(out), "--n", "4",
                              home=read_only_dir.parent / "home")
    assert_one_line_error(result, "motor synth", out)


def test_directory_as_input_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    code = main(["build", "--source", "radgraph", "--input", str(folder), "--out", str(tmp_path / "s.duckdb"),
                 "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err.strip() == f"kg build: error: {folder}: is a directory, expected a file"
    assert main(["stats", str(folder)]) == 1
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        ("radgraph.json", b'{"r1": {"text": "caf\xe9"}}', "at byte 20 (line 1, column 21)"),
        ("radgraph.jsonl", b'{"id": "r1", "text": "ok", "entities": {}}\n{"id": "r2", "text": "\xff"}\n', "at line 2, column 23"),
    ],
)
def test_non_utf8_input_points_at_the_byte(tmp_path: Path, capsys: pytest.CaptureFixture, name, data, where) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    code = main(["build", "--source", "radgraph", "--input", str(path), "--out", str(tmp_path / "s.duckdb"),
                 "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "not UTF-8 text" in err and err.endswith(where), err
    assert "line 1 column 1" not in err


def test_non_utf8_report_csv_points_at_the_byte(tmp_path: Path) -> None:
    from kg.errors import InputError
    from kg.reports_io import read_reports

    path = tmp_path / "reports.csv"
    path.write_bytes(b"uid,findings,impression\n1,No effusion \xe9 seen.,Normal.\n")
    with pytest.raises(InputError, match=r"invalid continuation byte 0xe9 at byte 38 \(line 2, column 15\)"):
        list(read_reports(path))
