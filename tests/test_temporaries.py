"""Temporaries beside an output: only those of dead writers on this host are ever removed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kg.atomic import write_text_atomic
from kg.temporaries import host_tag, remove_stale_temporaries, target_of, temporary_path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftover(directory: Path, target: str, pid: int, tail: str = ".tmp", tag: str | None = None) -> Path:
    path = directory / f".{target}.{tag or host_tag()}-{pid}.0123456789abcdef{tail}"
    path.write_bytes(b"partial")
    return path


def test_temporary_path_names_its_target_and_owner(tmp_path: Path) -> None:
    target = tmp_path / "store.duckdb"
    temp = temporary_path(target)
    assert temp.parent == tmp_path and not temp.exists()
    assert f"-{os.getpid()}." in temp.name and temp.name.endswith(".tmp")
    assert target_of(temp) == target
    assert target_of(temp.with_name(temp.name + ".wal")) == target
    assert target_of(tmp_path / ".store.duckdb.abc.tmp") is None


def test_only_dead_writers_of_this_host_and_this_target_are_removed(tmp_path: Path) -> None:
    dead = dead_pid()
    stale = [leftover(tmp_path, "store.duckdb", dead), leftover(tmp_path, "store.duckdb", dead, ".tmp.wal")]
    kept = [
        leftover(tmp_path, "store.duckdb", os.getpid()),  # a write of this process, still running
        leftover(tmp_path, "store.duckdb", os.getppid()),  # a live process
        leftover(tmp_path, "store.duckdb", dead, tag="ffffffff" if host_tag() != "ffffffff" else "00000000"),
        leftover(tmp_path, "other.duckdb", dead),  # another target
        leftover(tmp_path, "a.store.duckdb", dead),
    ]
    foreign = tmp_path / ".store.duckdb.hand-made.tmp"
    foreign.write_bytes(b"")
    assert sorted(remove_stale_temporaries(tmp_path / "store.duckdb")) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept + [foreign])


def test_atomic_write_clears_a_killed_writers_leftover(tmp_path: Path) -> None:
    stale = leftover(tmp_path, "labels.csv", dead_pid())
    write_text_atomic(tmp_path / "labels.csv", "report_id\n")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]
