"""Conversion of metric inputs (NumPy arrays, torch tensors, nested lists) to float NumPy arrays."""
from __future__ import annotations

from typing import Any

import numpy as np

from kg.errors import InputError


def as_float_array(values: Any, *, field: str, ndim: int) -> np.ndarray:
    """``values`` as a float64 array of ``ndim`` dimensions; tensors may live on any device.

    Raises:
        InputError: the input has another number of dimensions or is not numeric.
    """
    if hasattr(values, "detach"):
        # bfloat16 has no NumPy dtype, hence the float() before numpy().
        values = values.detach().cpu().float().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"expected numbers: {err}", field=field) from None
    if array.ndim != ndim:
        raise InputError(f"expected a {ndim}-D array, got shape {array.shape}", field=field)
    return array
