"""Reading files: their sha256, and JSON / YAML documents with errors that name the file.

The one place the project hashes a file or reads a whole JSON document (line-by-line formats such
as manifests and JSONL reports have readers of their own that name the line).
"""
from __future__ import annotations

import hashlib
import math
import json
import os
from pathlib import Path
from typing import Any

import yaml

from kg.errors import InputError

_BLOCK = 1 << 20


def update_digest(digest: Any, path: str | os.PathLike) -> None:
    """Feed the bytes of ``path`` into ``digest`` (a ``hashlib`` object), 1 MiB at a time."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    update_digest(digest, path)
    return digest.hexdigest()


def read_json(path: str | os.PathLike, *, missing: str = "file not found") -> Any:
    """The parsed JSON document at ``path``.

    Args:
        missing: the message when there is no such file (e.g. what the file is and how to make it).

    Raises:
        InputError: naming the file: ``missing`` when it does not exist, ``not valid JSON: ...``
            (with line and column) when it does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(missing, file=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not valid JSON: {err}", file=path) from err


def read_yaml(path: str | os.PathLike, *, missing: str = "file not found", error: type[InputError] = InputError) -> Any:
    """The parsed YAML document at ``path``.

    Args:
        missing: the message when there is no such file.
        error: the :class:`InputError` subclass to raise (e.g. the caller's own schema error).

    Raises:
        InputError: (as ``error``) naming the file: ``missing`` when it does not exist,
            ``not valid YAML: ...`` when it does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise error(missing, file=path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"not valid YAML: {err}", file=path) from err


def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf as ``None``, paths as strings and tuples as lists (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return json_ready(value.item())
    return value
