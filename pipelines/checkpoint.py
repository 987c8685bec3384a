"""Training checkpoints that resume a run exactly, written atomically, verified, and read without unpickling.

A checkpoint is a directory ``<run>/checkpoints/step_00000100/`` holding

* ``model.safetensors``: every parameter and buffer of the model (its queues included), written with
  ``safetensors.torch.save_model`` so tied or shared tensors round-trip;
* ``training_state.pt``: optimizer, scheduler and loss-scaler state, the random-number generator
  states of every process (Python, NumPy, torch CPU and CUDA) and the :class:`TrainingProgress`,
  saved with ``torch.save`` and read back with ``torch.load(weights_only=True)`` — only tensors and
  plain containers, never arbitrary pickled objects;
* ``checkpoint.json``: the progress in readable form;
* ``checksums.json``, written last: the byte size and SHA-256 of each of the files above. It is the
  completion marker: a checkpoint is used only when every file still has the size and digest
  recorded when it was written.

``<run>/checkpoints/latest.json`` names the newest checkpoint. Each directory is first written under
a temporary name and then renamed into place, so an interrupted save never leaves a half-written
checkpoint where a resume would look for one. Files can still be damaged afterwards (a full disk, an
interrupted copy, a file replaced by hand): :func:`find_resume_point` then takes the newest
checkpoint that verifies and says which ones it passed over and why.

Checkpoints written before ``checksums.json`` existed (format 1) have no marker; they are verified by
reading them whole instead (the state file with ``weights_only=True``, every tensor of the weights).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from kg import atomic
from kg.errors import InputError
from kg.files import sha256_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
INFO_FILE = "checkpoint.json"
CHECKSUMS_FILE = "checksums.json"
LATEST_FILE = "latest.json"
CHECKPOINTS_DIR = "checkpoints"
#: 2: with ``checksums.json``; 1: without (still read, verified by loading it whole).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: What ``torch.load`` and safetensors raise on a damaged or foreign file: a truncated zip archive
#: (RuntimeError), an empty file (EOFError), a pickle outside the ``weights_only`` allow-list
#: (UnpicklingError), a cut safetensors header (SafetensorError).
_UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError, OSError, ValueError)


class CheckpointError(InputError):
    """A checkpoint that fails verification: a file is missing, truncated, altered or unreadable.

    ``err.file`` names the file at fault.
    """


@dataclass
class TrainingProgress:
    """Where a run stands: enough to continue the data order and the schedule exactly.

    Attributes:
        step: optimizer steps taken.
        epoch: the epoch in progress (0-based).
        batches_in_epoch: micro-batches of ``epoch`` already consumed; a resumed run skips them.
        samples_seen: training studies processed over all processes.
        extra: JSON-ready values a pipeline wants back (e.g. the best validation score so far).
    """

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    samples_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` optimizer steps."""
    return f"step_{step:08d}"


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (safe for ``weights_only`` loading)."""
    version, mt_state, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set this process's RNGs to a state from :func:`capture_rng_state`."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn("the checkpoint saw a different number of GPUs; CUDA RNG state not restored", stacklevel=2)


def save_checkpoint(
    checkpoints_dir: str | os.PathLike,
    model: torch.nn.Module,
    progress: TrainingProgress,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoint ``step_<progress.step>`` atomically and point ``latest.json`` at it.

    Args:
        checkpoints_dir: the run's ``checkpoints/`` directory (created if needed).
        model: the bare model (unwrap DistributedDataParallel first).
        progress: the run's position.
        optimizer, scheduler, scaler: their ``state_dict()`` is saved when given.
        rng_states: one :func:`capture_rng_state` per process, indexed by rank; ``None`` saves this
            process's state only.

    Returns:
        The checkpoint directory. An existing checkpoint of the same step is replaced.
    """
    checkpoints_dir = Path(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / checkpoint_name(progress.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=checkpoints_dir))
    try:
        save_model(model, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        state = {
            "format_version": FORMAT_VERSION,
            "progress": asdict(progress),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_states if rng_states is not None else [capture_rng_state()],
        }
        torch.save(state, tmp / STATE_FILE)
        (tmp / INFO_FILE).write_text(json.dumps(asdict(progress), indent=1) + "\n", encoding="utf-8")
        # Last, so that its presence means every file before it was written in full.
        checksums = {
            "format_version": FORMAT_VERSION,
            "step": progress.step,
            "files": {name: _describe(tmp / name) for name in (MODEL_FILE, STATE_FILE, INFO_FILE)},
        }
        (tmp / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=1) + "\n", encoding="utf-8")
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(checkpoints_dir / LATEST_FILE, {"checkpoint": final.name, "step": progress.step})
    return final


def _replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` onto ``dst``, replacing an existing ``dst`` only once ``src`` is complete."""
    if dst.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        os.replace(dst, trash / dst.name)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


def _describe(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def verify_checkpoint(checkpoint: str | os.PathLike) -> int:
    """Check that a checkpoint directory is whole: every file it recorded has its size and SHA-256.

    A format-1 checkpoint (no ``checksums.json``) is verified by reading it: the state file with
    ``weights_only=True`` and every tensor of the weights file. A format-2 state file without
    ``checksums.json`` means an incomplete checkpoint (a partial copy) and fails.

    Returns:
        The checkpoint's step.

    Raises:
        CheckpointError: naming the file at fault and what is wrong with it.
    """
    checkpoint = Path(checkpoint)
    for name in (MODEL_FILE, STATE_FILE):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"not a checkpoint: {name} is missing", file=checkpoint)
    marker = checkpoint / CHECKSUMS_FILE
    if not marker.is_file():
        return _verify_by_reading(checkpoint)
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        step = int(recorded["step"])
        files = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in recorded["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"unreadable checksum file ({_first_line(err)})", file=marker) from None
    for name in (MODEL_FILE, STATE_FILE):
        if name not in files:
            raise CheckpointError(f"records no checksum of {name}", file=marker)
    for name, (size, sha256) in files.items():
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError("missing (listed in checksums.json)", file=path)
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{actual} bytes where {size} were written: truncated or replaced", file=path)
        if sha256_file(path) != sha256:
            raise CheckpointError("content differs from the SHA-256 recorded when it was written", file=path)
    return step


def _verify_by_reading(checkpoint: Path) -> int:
    """Verify a checkpoint without ``checksums.json`` by reading it whole (see :func:`verify_checkpoint`)."""
    state_file = checkpoint / STATE_FILE
    state = _read_state(state_file)
    version = state.get("format_version")
    if version != 1:
        raise CheckpointError(
            f"{CHECKSUMS_FILE} is missing: the checkpoint is incomplete (format {version!r} always writes one)",
            file=checkpoint / CHECKSUMS_FILE,
        )
    try:
        with safe_open(str(checkpoint / MODEL_FILE), framework="pt") as weights:
            for key in weights.keys():
                weights.get_tensor(key)
    except _UNREADABLE as err:
        raise CheckpointError(f"unreadable weights ({_first_line(err)})", file=checkpoint / MODEL_FILE) from None
    return int(state["progress"]["step"])


def _read_state(state_file: Path) -> dict[str, Any]:
    """The training state, read with ``weights_only=True``; a damaged or foreign file raises CheckpointError."""
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        raise CheckpointError(f"unreadable training state ({_first_line(err)})", file=state_file) from None
    if not isinstance(state, dict) or state.get("format_version") not in READABLE_VERSIONS:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(f"unsupported checkpoint format {version!r}", file=state_file)
    return state


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write strict JSON (indent 1, no NaN) to a temporary file beside ``path`` and rename it onto ``path``."""
    atomic.write_json_atomic(path, data, indent=1, allow_nan=False)


def load_checkpoint(
    checkpoint: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    rank: int = 0,
    restore_rng: bool = True,
    verify: bool = True,
) -> TrainingProgress:
    """Load a checkpoint into ``model`` (and the optimizer, scheduler and scaler when given).

    Args:
        checkpoint: a checkpoint directory.
        model: the bare model, built with the same configuration; loading is strict.
        rank: this process's rank, to restore its own RNG state (rank 0's when the checkpoint came
            from fewer processes).
        restore_rng: set the RNGs to their saved states, so the run continues exactly.
        verify: check the files first (:func:`verify_checkpoint`), so nothing damaged is loaded.

    Returns:
        The saved :class:`TrainingProgress`.

    Raises:
        CheckpointError: the directory is not a checkpoint, or a file is damaged.
        InputError: its tensors do not fit ``model``, or it lacks a state that was asked for.
    """
    checkpoint = Path(checkpoint)
    if verify:
        verify_checkpoint(checkpoint)
    else:
        for name in (MODEL_FILE, STATE_FILE):
            if not (checkpoint / name).is_file():
                raise CheckpointError(f"not a checkpoint: {name} is missing", file=checkpoint)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        load_model(model, str(checkpoint / MODEL_FILE), strict=True, device=str(device))
    except RuntimeError as err:
        raise InputError(f"weights do not fit the model: {err}", file=checkpoint / MODEL_FILE) from None
    except SafetensorError as err:
        raise CheckpointError(f"unreadable weights ({_first_line(err)})", file=checkpoint / MODEL_FILE) from None
    state = _read_state(checkpoint / STATE_FILE)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if state[name] is None:
            raise InputError(f"the checkpoint holds no {name} state", file=checkpoint / STATE_FILE, field=name)
        obj.load_state_dict(state[name])
    if restore_rng:
        rng = state["rng"]
        restore_rng_state(rng[rank] if rank < len(rng) else rng[0])
    return TrainingProgress(**state["progress"])


@dataclass
class ResumePoint:
    """The checkpoint a run resumes from, and the newer ones passed over because they do not verify.

    Attributes:
        checkpoint: the checkpoint directory.
        step: its step.
        skipped: ``(checkpoint directory, reason)`` for each newer checkpoint that failed
            :func:`verify_checkpoint`, newest first; the reason names the file at fault.
    """

    checkpoint: Path
    step: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the user: ``resuming from step N (PATH)``, then what was skipped and why."""
        line = f"resuming from step {self.step} ({self.checkpoint})"
        if self.skipped:
            line += "; skipped newer checkpoints that do not verify: " + "; ".join(reason for _, reason in self.skipped)
        return line


def _step_dirs(checkpoints_dir: Path) -> list[Path]:
    """``step_*`` directories, newest step first (names are zero-padded, so they sort by step)."""
    return sorted((p for p in checkpoints_dir.glob("step_*") if p.is_dir()), reverse=True)


def find_resume_point(path: str | os.PathLike) -> ResumePoint:
    """Where to resume: a checkpoint directory as given, or a run directory's newest checkpoint that verifies.

    Newer checkpoints that fail :func:`verify_checkpoint` (truncated, empty, foreign or incomplete
    files) are passed over and listed in ``skipped``. ``latest.json`` is not consulted: the step
    directories themselves say which is newest, and a pointer written after a crash could lag.

    Raises:
        CheckpointError: a checkpoint directory named explicitly does not verify, or no checkpoint
            of the run does (the message names each one's faulty file).
        InputError: nothing to resume from at ``path``.
    """
    path = Path(path)
    if any((path / name).is_file() for name in (STATE_FILE, MODEL_FILE, CHECKSUMS_FILE)):
        return ResumePoint(path, verify_checkpoint(path))
    candidates = _step_dirs(path / CHECKPOINTS_DIR)
    if not candidates:
        raise InputError("no checkpoint to resume from (expected checkpoints/step_*/ inside a run directory)", file=path)
    skipped: list[tuple[Path, str]] = []
    for candidate in candidates:
        try:
            step = verify_checkpoint(candidate)
        except CheckpointError as err:
            skipped.append((candidate, str(err)))
            continue
        return ResumePoint(candidate, step, skipped)
    raise CheckpointError(
        f"no checkpoint verifies, nothing to resume from: {'; '.join(reason for _, reason in skipped)}",
        file=path / CHECKPOINTS_DIR,
    )


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run directory that verifies, or ``None`` if the run has none at all.

    Raises:
        CheckpointError: the run has checkpoints but none verifies (see :func:`find_resume_point`).
    """
    return find_resume_point(run_dir).checkpoint if has_checkpoints(run_dir) else None


def has_checkpoints(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory holds any checkpoint directory, whole or not."""
    return bool(_step_dirs(Path(run_dir) / CHECKPOINTS_DIR))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A verified checkpoint directory from a run directory or a checkpoint directory.

    Raises:
        InputError, CheckpointError: as :func:`find_resume_point`.
    """
    return find_resume_point(path).checkpoint


def prune_checkpoints(checkpoints_dir: str | os.PathLike, keep: int, protect: set[str] = frozenset()) -> list[str]:
    """Delete all but the newest ``keep`` periodic checkpoints, never those named in ``protect``.

    Returns:
        The names removed.
    """
    checkpoints_dir = Path(checkpoints_dir)
    candidates = sorted(p for p in checkpoints_dir.glob("step_*") if p.is_dir() and p.name not in protect)
    doomed = candidates[: max(len(candidates) - keep, 0)]
    for path in doomed:
        shutil.rmtree(path)
    return [p.name for p in doomed]
