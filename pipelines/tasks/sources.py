"""Where a finetuning or evaluation run takes its model and data from.

``--from`` names a pretraining (or finetuning) run directory — its ``model/`` is loaded and the
manifest it trained on is the default data — or a saved model directory (``save_pretrained``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kg.errors import InputError
from pipelines.config import resolve_model_config
from pipelines.distributed import DistributedContext
from pipelines.prepare import find_manifest, prepare_data
from pipelines.run import MODEL_DIR


@dataclass
class Source:
    """Where a pretrained model comes from.

    Attributes:
        model_dir: the saved model directory (``config.json``, ``model.safetensors``, tokenizer).
        run_dir: the run directory that wrote it, when there is one.
        run_info: that run's ``run.json`` (empty without one).
    """

    model_dir: Path
    run_dir: Path | None = None
    run_info: dict[str, Any] = field(default_factory=dict)

    def recorded(self, key: str) -> Path | None:
        """A file the source run recorded under ``run.json``'s ``data`` (e.g. ``"manifest"``), if it
        still exists."""
        entry = self.run_info.get("data", {}).get(key)
        path = entry.get("path") if isinstance(entry, dict) else entry
        return Path(path) if path and Path(path).exists() else None


def resolve_source(path: str | Path) -> Source:
    """The model behind ``--from``: a run directory holding ``model/``, or a model directory.

    Raises:
        InputError: neither is found at ``path``.
    """
    path = Path(path)
    if (path / "config.json").is_file():
        run_dir = path.parent if (path.parent / "run.json").is_file() else None
        model_dir = path
    elif (path / MODEL_DIR / "config.json").is_file():
        run_dir, model_dir = path, path / MODEL_DIR
    else:
        raise InputError(
            "no MOTOR model here: expected a run directory holding model/ or a directory written by save_pretrained",
            file=path,
        )
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if run_dir else {}
    return Source(model_dir=model_dir, run_dir=run_dir, run_info=info)


def load_motor(source: Source, overrides: dict[str, Any] | None = None, device: torch.device | str = "cpu") -> Any:
    """The pretrained model of the method its directory records (:func:`model.pretrained.load_pretrained`),
    with ``overrides`` of its config (e.g. dropout or loss weights) applied by rebuilding it and
    loading the same weights.

    One override may add weights: ``views: all`` on a model pretrained with ``views: first`` adds
    the view projection (``image_encoder.view_proj``), freshly initialised, as the reference code
    creates ``iu_proj`` when finetuning a single-view MIMIC-CXR pretraining on IU-Xray.

    Raises:
        InputError: an override changes the architecture otherwise, so the weights no longer fit.
    """
    from model.pretrained import load_pretrained

    motor = load_pretrained(source.model_dir)
    if overrides:
        config = resolve_model_config(overrides, base=motor.config)
        # ARL's entity vocabulary is not part of its config: it travels with the loaded model.
        extra = {"entity_names": motor.entity_names} if getattr(motor, "entity_names", None) else {}
        rebuilt = type(motor)(config, motor.tokenizer, **extra)
        adds_views = getattr(motor.config, "views", None) == "first" and getattr(config, "views", None) == "all"
        try:
            result = rebuilt.load_state_dict(motor.state_dict(), strict=not adds_views)
        except RuntimeError as err:
            raise InputError(f"the model overrides change its architecture: {err}", field="model") from None
        if adds_views:
            other = [key for key in result.missing_keys if ".view_proj." not in f".{key}"] + list(result.unexpected_keys)
            if other:
                raise InputError(f"the model overrides change its architecture: {', '.join(other[:5])}", field="model")
        motor = rebuilt
    return motor.to(device)


def vqa_manifest_path(path: str | None) -> Path | None:
    """The VQA manifest file named by ``data.vqa_manifest`` / ``--vqa-data`` (``None`` stays ``None``).

    Raises:
        InputError: the file does not exist.
    """
    if path is None:
        return None
    if not Path(path).is_file():
        raise InputError("VQA manifest not found", file=path, field="data.vqa_manifest")
    return Path(path)


def task_manifest(source: Source, config_manifest: str | None, run_dir: Path, data: Any, image_size: int,
                  ctx: DistributedContext) -> Path:
    """The study manifest: ``--data``, else the one the source run trained on, else the synthetic set."""
    if config_manifest is not None:
        return find_manifest(config_manifest)
    recorded = source.recorded("manifest")
    if recorded is not None:
        return recorded
    return prepare_data(dataclasses.replace(data, manifest=None), run_dir, image_size, ctx)
