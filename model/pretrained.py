"""Saving and loading a MOTOR model directory: ``config.json``, ``model.safetensors``, tokenizer files.

The file format only: :meth:`model.motor.MotorModel.save_pretrained` / ``from_pretrained`` build
the model and call these functions, so this module never imports the model class.

Weights go through ``safetensors.torch.save_model`` / ``load_model``, which store a tensor shared
by several modules (the decoder tied to the encoder, the LM head tied to the word embeddings)
once and restore the sharing on load. Nothing is unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kg.atomic import has_format_marker, replace_directory
from kg.errors import InputError, MissingResourceError
from kg.files import read_json
from model.config import MotorConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "motor-kg/model"
FORMAT_VERSION = 1


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model`` (with ``config`` and ``tokenizer`` attributes) to ``directory``, replacing an
    earlier saved model there atomically.

    Raises:
        InputError: ``directory`` exists, is not empty and is not a saved MOTOR model (so a
            mistyped path cannot delete unrelated files).
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    with replace_directory(directory, is_replaceable=_replaceable, what="a saved MOTOR model directory") as tmp:
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "motor_config": model.config.to_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        model.tokenizer.save_pretrained(str(tmp))
    return directory


def read_config(directory: str | os.PathLike) -> MotorConfig:
    """The :class:`MotorConfig` of a saved model directory.

    Raises:
        MissingResourceError: no ``config.json`` there. InputError: it is not a MOTOR model config.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise MissingResourceError(f"no saved MOTOR model at {Path(directory)} (config.json missing)")
    document = read_json(path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"not a MOTOR model config (expected format {FORMAT!r})", file=path, field="format")
    if document.get("format_version") != FORMAT_VERSION:
        raise InputError(f"unsupported format_version {document.get('format_version')!r}", file=path, field="format_version")
    stored = document.get("motor_config")
    if isinstance(stored, dict) and "momentum_knowledge" not in stored:
        # Saved before the field existed, when every knowledge module had a momentum copy.
        stored = {**stored, "momentum_knowledge": True}
    return MotorConfig.from_dict(stored, source=path)


def saved_config(directory: str | os.PathLike) -> MotorConfig:
    """The config to rebuild a saved model with: :func:`read_config` without the local checkouts
    (the stored weights already contain whatever they once provided).

    Raises:
        MissingResourceError: no ``config.json`` or no ``model.safetensors`` there.
    """
    directory = Path(directory)
    config = read_config(directory).replace(text_model_dir=None, image_weights=None)
    if not (directory / WEIGHTS_FILE).is_file():
        raise MissingResourceError(f"no {WEIGHTS_FILE} in {directory}")
    return config


def load_saved_weights(model: Any, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a saved directory's weights into ``model`` built from :func:`saved_config` (strict:
    every tensor must fit); returns it on ``map_location``."""
    from safetensors.torch import load_model

    weights = Path(directory) / WEIGHTS_FILE
    try:
        load_model(model, str(weights), strict=True, device=str(map_location))
    except RuntimeError as err:
        raise InputError(f"weights do not fit the configured model: {err}", file=weights) from None
    return model.to(map_location)


def _replaceable(path: Path) -> bool:
    return has_format_marker(path, CONFIG_FILE, FORMAT)
