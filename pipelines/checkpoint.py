"""Training checkpoints that resume a run exactly, written atomically and read without unpickling.

A checkpoint is a directory ``<run>/checkpoints/step_00000100/`` holding

* ``model.safetensors``: every parameter and buffer of the model (its queues included), written with
  ``safetensors.torch.save_model`` so tied or shared tensors round-trip;
* ``training_state.pt``: optimizer, scheduler and loss-scaler state, the random-number generator
  states of every process (Python, NumPy, torch CPU and CUDA) and the :class:`TrainingProgress`,
  saved with ``torch.save`` and read back with ``torch.load(weights_only=True)`` — only tensors and
  plain containers, never arbitrary pickled objects;
* ``checkpoint.json``: the progress in readable form.

``<run>/checkpoints/latest.json`` names the newest checkpoint. Each directory is first written under
a temporary name and then renamed into place, so an interrupted save never leaves a half-written
checkpoint where a resume would look for one.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from kg import atomic
from kg.errors import InputError

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
INFO_FILE = "checkpoint.json"
LATEST_FILE = "latest.json"
CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 1


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
) -> TrainingProgress:
    """Load a checkpoint into ``model`` (and the optimizer, scheduler and scaler when given).

    Args:
        checkpoint: a checkpoint directory.
        model: the bare model, built with the same configuration; loading is strict.
        rank: this process's rank, to restore its own RNG state (rank 0's when the checkpoint came
            from fewer processes).
        restore_rng: set the RNGs to their saved states, so the run continues exactly.

    Returns:
        The saved :class:`TrainingProgress`.

    Raises:
        InputError: the directory is not a checkpoint, or its tensors do not fit ``model``.
    """
    checkpoint = Path(checkpoint)
    for name in (MODEL_FILE, STATE_FILE):
        if not (checkpoint / name).is_file():
            raise InputError(f"not a checkpoint: {name} is missing", file=checkpoint)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        load_model(model, str(checkpoint / MODEL_FILE), strict=True, device=str(device))
    except RuntimeError as err:
        raise InputError(f"weights do not fit the model: {err}", file=checkpoint / MODEL_FILE) from None
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise InputError(f"unsupported checkpoint format {state.get('format_version')!r}", file=checkpoint / STATE_FILE)
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


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run directory (via ``latest.json``), or ``None`` if it has none."""
    checkpoints_dir = Path(run_dir) / CHECKPOINTS_DIR
    pointer = checkpoints_dir / LATEST_FILE
    if pointer.is_file():
        candidate = checkpoints_dir / json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
        if (candidate / STATE_FILE).is_file():
            return candidate
    found = sorted(p for p in checkpoints_dir.glob("step_*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from a run directory (its latest checkpoint) or a checkpoint directory.

    Raises:
        InputError: nothing to resume from at ``path``.
    """
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise InputError("no checkpoint to resume from (expected checkpoints/step_*/ inside a run directory)", file=path)
    return found


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
