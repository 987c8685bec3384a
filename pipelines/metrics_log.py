"""Progress bars, the JSONL metrics log and optional TensorBoard, all silent off rank 0.

``metrics.jsonl`` holds one JSON object per logged step (``step``, ``epoch``, ``lr``, each loss,
``samples_per_s``, ...). A resumed run first drops the lines past the step it resumes from, so the
log of an interrupted-and-resumed run reads like that of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from kg.atomic import write_text_atomic
from kg.errors import MissingResourceError

METRICS_LOG = "metrics.jsonl"
T = TypeVar("T")


def _refresh_seconds() -> float:
    """How often a bar redraws: live on a terminal; every 30 s into a log file (batch jobs, CI)."""
    return 0.1 if sys.stderr.isatty() else 30.0


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """``iterable`` wrapped in a tqdm bar on stderr when ``enabled``."""
    return iter(tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, mininterval=_refresh_seconds()))


def progress_bar(total: int, *, initial: int = 0, desc: str = "", enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr to advance by hand; silent unless ``enabled``."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, mininterval=_refresh_seconds())


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Append-only metrics log of a run (``metrics.jsonl``), mirrored to TensorBoard on request.

    Args:
        run_dir: the run directory.
        enabled: ``False`` on every rank but 0 (nothing is written).
        tensorboard: also write TensorBoard scalars under ``run_dir/tensorboard``.
        resume_step: keep only the existing lines with ``step <= resume_step`` (``None``: start a
            fresh log).

    Raises:
        MissingResourceError: TensorBoard asked for but not installed.
    """

    def __init__(
        self, run_dir: str | os.PathLike, *, enabled: bool = True, tensorboard: bool = False, resume_step: int | None = None
    ) -> None:
        self.path = Path(run_dir) / METRICS_LOG
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate(resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MissingResourceError(
                    "--tensorboard needs the tensorboard package: pip install 'motor-kg[tensorboard]'"
                ) from None
            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    def _truncate(self, resume_step: int | None) -> None:
        """Rewrite the log keeping lines up to ``resume_step`` (all of it goes when ``None``)."""
        kept = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip() and json.loads(line).get("step", 0) <= resume_step:
                    kept.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Append one line ``{"step": step, **values}`` (non-finite floats become null)."""
        if not self.enabled:
            return
        record = {"step": step, **{key: _finite(value) for key, value in values.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard, if open."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl`` as dicts (empty when there is no log)."""
    path = Path(run_dir) / METRICS_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
