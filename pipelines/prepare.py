"""What every pipeline does before training: seeding, finding or generating data, checking its
images, the tokenizer.

Rank 0 writes shared files (the synthetic set, the tokenizer) and the other processes wait for it.
"""
from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

from kg.errors import InputError
from pipelines.config import DataConfig, TokenizerConfig
from pipelines.distributed import DistributedContext, barrier, broadcast_object

MANIFEST_NAME = "manifest.jsonl"
VQA_MANIFEST_NAME = "vqa.jsonl"
RADGRAPH_NAME = "radgraph.json"
P = ParamSpec("P")
R = TypeVar("R")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def keeps_thread_count(run: Callable[P, R]) -> Callable[P, R]:
    """Decorate a training entry point so that the intra-op thread count it may lower
    (:func:`make_deterministic`) is restored when it returns or raises."""

    @functools.wraps(run)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        threads = torch.get_num_threads()
        try:
            return run(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def make_deterministic(enabled: bool, device: torch.device) -> None:
    """Make the run's arithmetic repeatable bit for bit (``train.deterministic``), or do nothing.

    On CPU, PyTorch's multi-threaded kernels combine partial sums in an order that varies between
    runs, so the run gets one intra-op thread: three CPU runs of 120 tiny-preset pretraining steps
    then gave identical weights, where with two threads they differed by up to 1e-4 (and the tiny
    run took 20 % longer on 2 cores). On CUDA: ``torch.use_deterministic_algorithms`` in
    ``warn_only`` mode (an operation without a deterministic kernel warns and runs anyway, rather
    than stopping the run), cuBLAS's fixed workspace, and no cuDNN autotuning; not yet checked on
    a GPU.
    """
    if not enabled:
        return
    if device.type == "cpu":
        torch.set_num_threads(1)  # restored by keeps_thread_count when the run ends
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def find_manifest(path: str | os.PathLike) -> Path:
    """The manifest JSONL at ``path``: the file itself or ``manifest.jsonl`` inside a directory.

    Raises:
        InputError: nothing there.
    """
    path = Path(path)
    candidate = path / MANIFEST_NAME if path.is_dir() else path
    if not candidate.is_file():
        raise InputError(f"no manifest here (expected a JSONL file or a directory holding {MANIFEST_NAME})", file=path)
    return candidate


def prepare_data(data: DataConfig, run_dir: str | os.PathLike, image_size: int, ctx: DistributedContext) -> Path:
    """The manifest to train on: ``data.manifest``, or the synthetic set generated into ``run_dir/data``.

    The synthetic set is generated once per run directory and settings: when ``run_dir/data`` holds
    one made with the same size, seed and image size (its ``summary.json``), it is reused.

    Returns:
        Path of the manifest JSONL.
    """
    if data.manifest is not None:
        return find_manifest(data.manifest)
    from pipelines.data.synthetic import SUMMARY_FILE, generate

    out = Path(run_dir) / "data"
    settings = {"n": data.synthetic_n, "seed": data.synthetic_seed, "image_size": image_size}
    if ctx.is_main:
        summary = out / SUMMARY_FILE
        current = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
        if {key: current.get(key) for key in settings} != settings or not (out / MANIFEST_NAME).is_file():
            generate(out, **settings)
    barrier()
    return out / MANIFEST_NAME


def check_images(
    manifest: Path, ctx: DistributedContext, *, missing: str = "error", echo: Callable[[str], None] | None = None
) -> None:
    """Decode every image of every split of ``manifest`` before training (cached; see
    :mod:`pipelines.data.image_check`): rank 0 checks while the other processes wait, and every
    process raises the same error, so none is left waiting for a run that stopped.

    Raises:
        InputError: an image does not decode (or is absent with ``missing="error"``), naming the
            image file, the manifest, the record and the split.
    """
    from pipelines.data.image_check import verify_images

    error: InputError | None = None
    if ctx.is_main:
        try:
            check = verify_images(manifest, missing=missing)
        except InputError as err:
            error = err
        else:
            if echo is not None:
                echo(check.summary())
    error = broadcast_object(error)
    if error is not None:
        raise error


def companion_file(manifest: Path, name: str) -> Path | None:
    """A file shipped beside the manifest (``radgraph.json``, ``vqa.jsonl``), if present."""
    path = manifest.parent / name
    return path if path.is_file() else None


def prepare_tokenizer(
    config: TokenizerConfig, texts: list[str], run_dir: str | os.PathLike, ctx: DistributedContext,
    text_model_dir: str | None = None,
) -> Any:
    """The report tokenizer: loaded from ``config.path``, else the ``text_model_dir`` checkout's own,
    else a WordPiece vocabulary trained on ``texts``.

    A local BERT checkout (``model.text_model_dir``) brings its tokenizer: a vocabulary trained on
    the reports would pair the checkout's word-embedding rows with other words. A trained tokenizer
    is saved to ``run_dir/tokenizer`` by rank 0 (training is deterministic, so re-running gives the
    same vocabulary) and loaded from there by every process.

    Raises:
        MissingResourceError: ``text_model_dir`` holds neither ``vocab.txt`` nor ``tokenizer.json``
            (and ``tokenizer.path`` is unset).
    """
    from model.tokenizer import load_tokenizer, train_tokenizer

    if config.path is not None:
        return load_tokenizer(config.path)
    if text_model_dir is not None:
        return load_tokenizer(text_model_dir)
    out = Path(run_dir) / "tokenizer"
    if ctx.is_main:
        train_tokenizer(texts, out, vocab_size=config.vocab_size)
    barrier()
    return load_tokenizer(out)
