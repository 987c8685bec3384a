"""The downstream task interface: what is trained, on which batches, and how it is scored.

Each task is a :class:`Task` subclass in a module of its own (:mod:`pipelines.tasks.retrieval`,
``generation``, ``diagnosis``, ``vqa``): the module the shared loop trains
(:func:`pipelines.loop.fit`), its datasets and batches, its evaluation and the score that picks the
checkpoint on validation. A head task also saves and loads its head (:func:`save_head_weights`).
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kg.atomic import write_atomic
from kg.errors import InputError
from pipelines.config import EvalConfig
from pipelines.data.motor_samples import MotorSamples
from pipelines.run import RunContext
from pipelines.tasks.sources import Source

#: A head task's weights, in its run directory.
HEAD_FILE = "head.safetensors"


def metrics_table(rows: dict[str, dict[str, Any]], columns: Any) -> str:
    """:func:`pipelines.metrics.metrics_table`, imported when a table is written."""
    from pipelines.metrics import metrics_table as table

    return table(rows, columns)


class Task(abc.ABC):
    """One downstream task: what is trained, on which batches, and how it is scored.

    Args:
        motor: the pretrained model (already on ``device``).
        manifest: the study manifest; ``vqa_manifest`` the VQA manifest (VQA only).
        eval_config: evaluation batch size and generation settings.
        missing: what a missing image does (``"error"`` or ``"skip"``).
    """

    name = ""

    def __init__(self, motor: Any, manifest: Path, eval_config: EvalConfig, device: torch.device, *,
                 missing: str = "error", vqa_manifest: Path | None = None) -> None:
        from pipelines.run import make_collator

        self.motor = motor
        self.manifest = manifest
        self.eval = eval_config
        self.device = device
        self.missing = missing
        self.collate: Callable = make_collator(motor.tokenizer, motor.config)
        self.entities = self._entity_data()
        if self.entities is not None:
            self.collate = self.entities.collator(self.collate)
        self.splits = {split: self.dataset(split) for split in ("train", "val", "test")}
        self.module: nn.Module = motor

    def dataset(self, split: str) -> Dataset:
        """The ``split`` samples as this task's collator reads them."""
        from pipelines.run import load_split

        samples = MotorSamples(load_split(self.manifest, split, self.motor.config, self.missing))
        return samples if self.entities is None else self.entities.samples(samples)

    def _entity_data(self) -> Any:
        """ARL's entity sequences of every split, in the pretrained model's vocabulary (else ``None``)."""
        from pipelines.arl_entities import EntityData, needs_entities
        from pipelines.data.motor_samples import study_texts
        from pipelines.prepare import RADGRAPH_NAME, companion_file
        from pipelines.run import load_split

        if not needs_entities(self.motor.config):
            return None
        splits = {split: study_texts(load_split(self.manifest, split, self.motor.config, self.missing))
                  for split in ("train", "val", "test")}
        return EntityData.prepare(splits, companion_file(self.manifest, RADGRAPH_NAME),
                                  getattr(self.motor, "entity_names", None))

    def forward_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of every training forward call."""
        return {}

    def prepare_training(self, source: Source, run: RunContext, *, reuse_store: bool, zero_shot: bool) -> dict[str, Any]:
        """Work before training (e.g. the training split's SK sentences); returns metrics to record.

        Args:
            source: the pretrained model's source.
            run: the started run.
            reuse_store: the data is the one the source run trained on, so its stores still fit.
            zero_shot: also score the model before finetuning.
        """
        return {}

    @property
    def image_manifest(self) -> Path:
        """The manifest whose images this task reads (checked before training)."""
        return self.manifest

    def data_files(self) -> dict[str, Any]:
        """Data files beside the study manifest that the run bundle records (name → description)."""
        return {}

    @abc.abstractmethod
    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        """Full metrics of the trained model on ``dataset`` (with baselines)."""

    @abc.abstractmethod
    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        """``{"score": higher is better, ...}`` on the validation split."""

    @abc.abstractmethod
    def table(self, metrics: dict[str, Any]) -> str:
        """``metrics.md``: the task's metrics as a markdown table."""

    def save_head(self, run_dir: Path) -> None:
        """Write what the task adds to the MOTOR weights (nothing for retrieval and generation)."""

    def load_head(self, run_dir: Path) -> None:
        """Read what :meth:`save_head` wrote."""

    def _kwargs(self) -> dict[str, Any]:
        return {"batch_size": self.eval.batch_size, "device": self.device}


def save_head_weights(module: nn.Module, path: Path) -> None:
    """Write ``module``'s weights as safetensors (atomic), for :func:`load_head_weights`."""
    from safetensors.torch import save_file

    state = module.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)))


def load_head_weights(module: nn.Module, path: Path, device: torch.device) -> None:
    """Load the weights :func:`save_head_weights` wrote into ``module``.

    Raises:
        InputError: no such file (not a finetuning run of this task), or weights that do not fit.
    """
    from safetensors.torch import load_model

    if not path.is_file():
        raise InputError(f"no {path.name}: this directory was not written by `motor finetune` for this task",
                         file=path.parent)
    try:
        load_model(module, str(path), strict=True, device=str(device))
    except RuntimeError as err:
        raise InputError(f"head weights do not fit: {err}", file=path) from None
