"""Saving and loading a MOTOR model directory: ``config.json``, ``model.safetensors``, tokenizer files.

The file format only: :meth:`model.motor.MotorModel.save_pretrained` / ``from_pretrained`` build
the model and call these functions, so this module never imports the model class.

Weights go through ``safetensors.torch.save_model`` / ``load_model``, which store a tensor shared
by several modules (the decoder tied to the encoder, the LM head tied to the word embeddings)
once and restore the sharing on load. Nothing is unpickled.
"""
from __future__ import annotations

import dataclasses
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
from model.registry import DEFAULT_METHOD, get_method, method_names

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "motor-kg/model"
FORMAT_VERSION = 1


def save_pretrained(model: nn.Module, directory: str | os.PathLike, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` (with ``config`` and ``tokenizer`` attributes) to ``directory``, replacing an
    earlier saved model there atomically.

    ``config.json`` records the method (``config.method``, default ``motor``) so that
    :func:`read_config` rebuilds the right config class; ``extra_files`` (name → text) are written
    beside the weights (e.g. ARL's entity vocabulary).

    Raises:
        InputError: ``directory`` exists, is not empty and is not a saved MOTOR model (so a
            mistyped path cannot delete unrelated files).
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    with replace_directory(directory, is_replaceable=_replaceable, what="a saved MOTOR model directory") as tmp:
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": saved_method_name(model.config),
                    "motor_config": model.config.to_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        model.tokenizer.save_pretrained(str(tmp))
    return directory


def load_pretrained(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """The model saved in ``directory`` (``save_pretrained``), built by the method it records
    (:mod:`model.registry`): a ``MotorModel``, ``M3AEModel``, ``ARLModel`` or ``MedVillModel``."""
    return get_method(read_method(directory)).model_class().from_pretrained(directory, map_location)


def saved_method_name(config: Any) -> str:
    """The registered method a config belongs to (its class attribute ``method``; MOTOR's has none)."""
    return getattr(type(config), "method", DEFAULT_METHOD)


def read_method(directory: str | os.PathLike) -> str:
    """The method name recorded in a saved model directory (``motor`` for directories written before
    methods were recorded)."""
    document = _read_document(Path(directory))
    method = document.get("method", DEFAULT_METHOD)
    if method not in method_names():
        raise InputError(f"unknown method {method!r}; registered: {', '.join(method_names())}",
                         file=Path(directory) / CONFIG_FILE, field="method")
    return method


def read_config(directory: str | os.PathLike) -> MotorConfig:
    """The config of a saved model directory, of its method's config class (:class:`MotorConfig` for MOTOR).

    Raises:
        MissingResourceError: no ``config.json`` there. InputError: it is not a MOTOR model config.
    """
    path = Path(directory) / CONFIG_FILE
    document = _read_document(Path(directory))
    config_class = get_method(read_method(directory)).config_class()
    stored = document.get("motor_config")
    if isinstance(stored, dict) and "momentum_knowledge" not in stored and "momentum_knowledge" in {
        f.name for f in dataclasses.fields(config_class)
    }:
        # Saved before the field existed, when every knowledge module had a momentum copy.
        stored = {**stored, "momentum_knowledge": True}
    known = {f.name for f in dataclasses.fields(config_class)}
    if isinstance(stored, dict) and "cross_final_norm" in known and "cross_final_norm" not in stored:
        # Saved before the field existed, when the knowledge-image encoders had no final norm.
        stored = {**stored, "cross_final_norm": False}
    return config_class.from_dict(stored, source=path)


def _read_document(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise MissingResourceError(f"no saved MOTOR model at {directory} (config.json missing)")
    document = read_json(path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"not a MOTOR model config (expected format {FORMAT!r})", file=path, field="format")
    if document.get("format_version") != FORMAT_VERSION:
        raise InputError(f"unsupported format_version {document.get('format_version')!r}", file=path, field="format_version")
    return document


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
