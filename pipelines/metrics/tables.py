"""Markdown tables of metric results and the JSON file they are saved in."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

from pipelines.run_bundle import write_json

MISSING = "–"


def _lookup(result: Mapping[str, Any], key: str) -> Any:
    """``result[key]``, or a nested value for a dotted key (``"uncertain_negative.f1_micro"``)."""
    if key in result:
        return result[key]
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _cell(value: Any, digits: int) -> str:
    if value is None or (_is_number(value) and not math.isfinite(float(value))):
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if _is_number(value):
        return f"{float(value):.{digits}f}"
    return str(value).replace("|", "\\|")


def metrics_table(
    results: Mapping[str, Mapping[str, Any]],
    columns: Sequence[str] | Mapping[str, str] | None = None,
    digits: int = 3,
    row_header: str = "",
) -> str:
    """A Markdown table with one row per result and one column per metric.

    Args:
        results: ``{row name: metric dict}``, e.g. ``{"MOTOR": {...}, "w/o GK": {...}}``.
        columns: metric keys to show (dotted keys reach into nested dicts), or ``{key: header}``;
            by default every top-level key holding a number or ``None`` (a metric that failed), in
            the order first seen.
        digits: decimals of floats; integers print as they are.
        row_header: header of the row-name column.

    Returns:
        The table, ending in a newline; missing, ``None`` and NaN values print as ``–``.
    """
    if columns is None:
        keys: list[str] = []
        for result in results.values():
            keys.extend(k for k, v in result.items() if (v is None or _is_number(v)) and k not in keys)
        columns = keys
    headers = dict(columns) if isinstance(columns, Mapping) else {key: key for key in columns}
    lines = [
        "| " + " | ".join([row_header, *headers.values()]) + " |",
        "|" + "|".join([":---", *("---:" for _ in headers)]) + "|",
    ]
    for name, result in results.items():
        cells = [_cell(_lookup(result, key), digits) for key in headers]
        lines.append("| " + " | ".join([_cell(name, digits), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> None:
    """Write ``metrics`` as strict JSON (NaN and infinities → ``null``), atomically.

    The file is written beside ``path`` and renamed onto it, so an interrupted write never leaves
    a truncated file behind; NumPy scalars and arrays become plain numbers and lists.
    """
    write_json(path, _plain(metrics))


def _plain(value: Any) -> Any:
    """``value`` with NumPy arrays (at any depth) turned into lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:
        return value.tolist()
    return value
