"""MOTOR model: encoders, knowledge paths, losses and task heads (no training code).

Entry points::

    from model import MotorConfig, MotorCollator, build_model, load_tokenizer, train_tokenizer

    config = MotorConfig.preset("tiny")              # or MotorConfig.from_yaml(path)
    tokenizer = train_tokenizer(reports, "run/tokenizer")
    model = build_model(config, tokenizer)
    output = model(MotorCollator.from_config(tokenizer, config)(samples))
    output.loss.backward()

The names are imported on first use, so ``import model.variants`` (the command line's choices)
does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KNOWLEDGE_VARIANTS": "model.variants",
    "DiagnosisHead": "model.heads",
    "MotorCollator": "model.processing",
    "MotorConfig": "model.config",
    "MotorModel": "model.motor",
    "MotorOutput": "model.motor",
    "VQAHead": "model.heads",
    "build_model": "model.motor",
    "get_method": "model.registry",
    "load_tokenizer": "model.tokenizer",
    "train_tokenizer": "model.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
