"""Temporary files written beside an output, named by their owner so stale ones can be removed.

An atomic write (:mod:`kg.atomic`, :mod:`kg.store`) works on a temporary file beside its target
and renames it into place at the end. A process killed on the way (``kill -9``, out of memory)
leaves that file behind, with DuckDB's ``.wal`` beside it. To tell such leftovers from the
temporaries of a write still running, every temporary is named

    ``.<target name>.<host tag>-<pid>.<random hex><suffix>``  (DuckDB adds ``.wal``)

and :func:`remove_stale_temporaries` deletes those of a target whose owner is gone: written on
this host (the tag is a digest of the host name, so a directory shared between machines is safe)
by a process that no longer runs. A live pid, a pid of another host or a name of another pattern
is left alone.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

_TAG_DIGITS = 8
_NAME = re.compile(rf"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{{{_TAG_DIGITS}}})-(?P<pid>\d+)\.[0-9a-f]{{16}}(?:\..*)?$")


def host_tag() -> str:
    """A short digest of this machine's host name (8 hex digits)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:_TAG_DIGITS]


def temporary_path(target: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """An unused temporary path beside ``target``, owned by this process (see the module docstring).

    The path is created and removed again, so a directory that cannot be written fails here, with
    an :class:`OSError` naming the temporary (:func:`target_of` gives the output back), and not
    inside a writer with an error of its own kind (DuckDB's). The writer creates the file itself
    (DuckDB refuses an existing empty one).

    Raises:
        OSError: the directory does not exist or cannot be written.
    """
    target = Path(target)
    while True:
        candidate = target.with_name(f".{target.name}.{host_tag()}-{os.getpid()}.{secrets.token_hex(8)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        os.unlink(candidate)
        return candidate


def target_of(path: str | os.PathLike) -> Path | None:
    """The target a temporary path of :func:`temporary_path` belongs to, ``None`` for other names."""
    path = Path(path)
    match = _NAME.match(path.name)
    return path.with_name(match.group("target")) if match else None


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``target`` left by dead processes of this host.

    Returns:
        The removed paths. Files that cannot be removed (permissions) are skipped silently: they
        harm nothing but disk space, and the write that called this must not fail over them.
    """
    target = Path(target)
    try:
        siblings = list(target.parent.glob(f".{_glob_escape(target.name)}.*"))
    except OSError:
        return []
    removed = []
    tag = host_tag()
    for path in siblings:
        match = _NAME.match(path.name)
        if match is None or match.group("target") != target.name or match.group("host") != tag:
            continue
        if process_alive(int(match.group("pid"))):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)  # a directory being written (kg.atomic.replace_directory)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        # A zombie has exited (its files are closed) but keeps its pid until reaped.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
