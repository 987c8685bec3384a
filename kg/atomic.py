"""Atomic writes: a file or a directory appears whole, or the old one stays where it was.

Everything is written under a temporary name beside the target (same file system) and renamed
onto it only once complete, so an interrupted run never leaves a half-written file or directory.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kg.errors import InputError
from kg.temporaries import remove_stale_temporaries, temporary_path


@contextmanager
def replace_directory(
    path: str | os.PathLike,
    *,
    is_replaceable: Callable[[Path], bool] | None = None,
    what: str = "a replaceable directory",
) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path`` that replaces ``path`` on normal exit.

    On an exception the temporary directory is removed and ``path`` is untouched. The finished
    directory gets mode 0755; an existing ``path`` is renamed aside, the new one renamed into place,
    then the old one deleted.

    Args:
        path: the directory to write.
        is_replaceable: called with an existing ``path``; ``False`` refuses to replace it (so a
            mistyped output path cannot delete unrelated files). ``None`` replaces whatever is there.
        what: the expected kind of directory, with its article, for the refusal message.

    Raises:
        InputError: ``path`` exists and ``is_replaceable`` rejects it ("refusing to replace: exists
            and is not <what>").
    """
    path = Path(path)
    if is_replaceable is not None and path.exists() and not is_replaceable(path):
        raise InputError(f"refusing to replace: exists and is not {what}", file=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    tmp.mkdir(mode=0o700)
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def has_format_marker(path: Path, marker_file: str, fmt: str, *, key: str = "format") -> bool:
    """Whether ``path`` is a directory that is empty or whose JSON ``marker_file`` has ``key`` == ``fmt``.

    An unreadable or malformed marker counts as absent (``False``).
    """
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        return json.loads((path / marker_file).read_text(encoding="utf-8")).get(key) == fmt
    except (OSError, ValueError, AttributeError):
        return False


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = ".tmp") -> None:
    """Call ``write(tmp)`` for an unused temporary path beside ``path``, then rename it onto ``path``.

    ``write`` creates the file itself, so it gets the usual permissions (the umask's). ``suffix`` ends
    the temporary name, for writers that append an extension unless it is there (``numpy.save``).
    The parent directory is created if needed; on an exception ``path`` is untouched. Temporaries
    of ``path`` left by killed writers are deleted first (:mod:`kg.temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_path(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8 with ``\n`` line ends through :func:`write_atomic`."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def write_json_atomic(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int | None = None,
    ensure_ascii: bool = True,
    allow_nan: bool = True,
) -> None:
    """Write ``json.dumps(data, ...)`` and a final newline to ``path`` as UTF-8, atomically.

    The keyword arguments are those of :func:`json.dumps`.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=ensure_ascii, allow_nan=allow_nan)
    write_text_atomic(path, text + "\n")
