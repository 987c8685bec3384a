"""Mixed precision: bf16/fp16 autocast on GPU and a loss scaler for fp16.

bf16 keeps fp32's exponent range and needs no loss scaling; fp16 does, so a
:class:`torch.amp.GradScaler` is enabled for it and is a pass-through otherwise. On CPU, ``auto``
means fp32: CPU autocast gives little speed on small models and changes numerics.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from kg.errors import InputError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp16``) for setting ``name`` on ``device``.

    ``auto`` is bf16 on a GPU that supports it, fp16 on an older GPU and fp32 on CPU.

    Raises:
        InputError: fp16 on CPU (CPU autocast supports bf16 only).
    """
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise InputError("fp16 autocast needs a GPU; use bf16 or fp32 on CPU", field="train.precision")
    return name


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast region for a resolved ``precision``; does nothing for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 (a transparent pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
