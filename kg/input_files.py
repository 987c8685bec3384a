"""Checks every reader makes of an input file, with the errors a user can act on.

* :func:`require_file`: a missing path and a directory where a file is expected get different
  messages ("no such file" / "is a directory").
* :func:`utf8_fault`: where text that is not UTF-8 breaks, as a byte offset, line and column,
  rather than the position a JSON parser reports after decoding failed (often "line 1 column 1").
"""
from __future__ import annotations

import os
from pathlib import Path

from kg.errors import InputError


def require_file(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is an existing file (or a link to one).

    Raises:
        InputError: ``FILE: no such file`` or ``FILE: is a directory, expected a file``.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", file=path)
    if not path.is_file():
        raise InputError("no such file", file=path)


def utf8_fault(data: bytes, *, first_line: int = 1, whole_file: bool = True) -> str | None:
    """Where ``data`` stops being UTF-8, or ``None`` when it is valid.

    Args:
        data: the bytes read.
        first_line: line number of the first byte (for a line of a JSONL file).
        whole_file: ``data`` starts at byte 0 of its file, so the offset is a file offset.

    Returns:
        ``"not UTF-8 text: invalid start byte 0xff at byte 38 (line 2, column 5)"``; without the
        byte offset when ``whole_file`` is false. Lines and columns count from 1, columns in bytes.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        start = err.start
        line = first_line + data.count(b"\n", 0, start)
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        place = f"byte {start} (line {line}, column {column})" if whole_file else f"line {line}, column {column}"
        return f"not UTF-8 text: {err.reason} 0x{data[start]:02x} at {place}"
    return None
