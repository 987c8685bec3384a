"""The DuckDB knowledge store: schema, atomic writes and read access.

One DuckDB file holds a corpus's specific knowledge (SK). Tables (text columns are VARCHAR):

``metadata(key PRIMARY KEY, value)``
    JSON values: ``schema_version`` (int), ``created_by`` (``"motor-kg <version>"``), ``sources``
    (source kinds built in, e.g. ``["radgraph"]``, later ``+ "umls"``), ``inputs`` (list of
    ``{"path", "sha256", "bytes", "source"}``), ``options`` (build options).
``reports(report_id PRIMARY KEY, text, data_source, data_split)``
``entities(report_id, labeler, entity_id, tokens, norm, label, source_label, start_ix, end_ix)``
    ``labeler`` is ``''`` for single-annotator reports; ``norm`` is
    :func:`kg.normalize.normalize_entity` of ``tokens`` (never negated); ``label`` is the coarse
    RadGraph label (``ANAT-DP``, ``OBS-DP``, ``OBS-U``, ``OBS-DA``) and ``source_label`` the label
    as the input wrote it (a RadGraph-XL label, or the coarse one; :mod:`kg.radgraph_labels`).
``relations(report_id, labeler, head_id, relation, tail_id)``
``report_triplets(report_id, head, relation, tail, head_label, tail_label)``
    one row per distinct normalised triplet per report; reports in input order, a report's
    triplets in order of first mention.
``triplets(head, relation, tail, head_label, tail_label, count, n_reports)``
    corpus-wide: ``count`` occurrences (every annotated relation, every labeler), ``n_reports``
    distinct reports.

The UMLS tables (``umls_*``) are added by :mod:`kg.umls` through :func:`atomic_update`.

Schema versions: 2 added ``entities.source_label``. A schema-1 store still opens and reads as
before (it has no ``source_label`` column); ``kg build`` again to add it.

Stores hold no timestamps, so the same inputs and options give the same tables and metadata.
Writes never touch the target file until they have succeeded: :func:`atomic_build` and
:func:`atomic_update` work on a temporary file beside it and ``os.replace`` it at the end, and
first delete the temporaries that killed writes left there (:mod:`kg.temporaries`).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import duckdb

from kg.errors import InputError
from kg.temporaries import remove_stale_temporaries, temporary_path

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE metadata (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE reports (report_id VARCHAR PRIMARY KEY, text VARCHAR, data_source VARCHAR, data_split VARCHAR);
CREATE TABLE entities (
    report_id VARCHAR, labeler VARCHAR, entity_id VARCHAR, tokens VARCHAR, norm VARCHAR, label VARCHAR,
    source_label VARCHAR, start_ix INTEGER, end_ix INTEGER
);
CREATE TABLE relations (report_id VARCHAR, labeler VARCHAR, head_id VARCHAR, relation VARCHAR, tail_id VARCHAR);
CREATE TABLE report_triplets (
    report_id VARCHAR, head VARCHAR, relation VARCHAR, tail VARCHAR, head_label VARCHAR, tail_label VARCHAR
);
CREATE TABLE triplets (
    head VARCHAR, relation VARCHAR, tail VARCHAR, head_label VARCHAR, tail_label VARCHAR,
    count BIGINT, n_reports BIGINT
);
"""

#: Tables every store has, in the order ``kg stats`` lists them.
CORE_TABLES = ("metadata", "reports", "entities", "relations", "report_triplets", "triplets")


def created_by() -> str:
    """``"motor-kg <version>"`` of the installed package."""
    try:
        version = package_metadata.version("motor-kg")
    except package_metadata.PackageNotFoundError:
        version = "unknown"
    return f"motor-kg {version}"


def read_metadata(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Every metadata entry, JSON-decoded, as ``{key: value}``."""
    return {key: json.loads(value) for key, value in con.execute("SELECT key, value FROM metadata ORDER BY key").fetchall()}


def write_metadata(con: duckdb.DuckDBPyConnection, key: str, value: Any) -> None:
    """Set metadata ``key`` to ``value`` (stored as JSON with sorted keys), replacing any old value."""
    con.execute(
        "INSERT OR REPLACE INTO metadata VALUES (?, ?)", [key, json.dumps(value, sort_keys=True, ensure_ascii=False)]
    )


def open_store(path: str | os.PathLike, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Connect to an existing store after checking it is one this version can read.

    Raises:
        InputError: the file is missing, is not a DuckDB database, has no motor-kg metadata, or
            was written with a newer schema.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, expected a store file", file=path)
    if not path.is_file():
        raise InputError("no such store; build one with `kg build`", file=path)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as err:
        raise InputError(f"not a DuckDB database ({_first_line(err)})", file=path) from err
    try:
        _check_schema(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    has_metadata = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = 'metadata'"
    ).fetchone()[0]
    row = con.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone() if has_metadata else None
    if row is None:
        raise InputError("not a motor-kg store (no schema_version in table metadata)", file=path, field="metadata")
    version = json.loads(row[0])
    if not isinstance(version, int):
        raise InputError(f"schema_version must be an integer, got {row[0]}", file=path, field="schema_version")
    if version > SCHEMA_VERSION:
        raise InputError(
            f"store schema {version} is newer than this motor-kg reads ({SCHEMA_VERSION}); upgrade motor-kg",
            file=path,
            field="schema_version",
        )


@contextmanager
def atomic_build(path: str | os.PathLike) -> Iterator[duckdb.DuckDBPyConnection]:
    """Build a fresh store at ``path`` all or nothing.

    Yields a connection to a new database (in a temporary file beside ``path``) with the schema
    created and ``schema_version`` / ``created_by`` set. On normal exit the database is closed and
    moved onto ``path``; on an exception it is deleted and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temp = temporary_path(path)
    try:
        con = duckdb.connect(str(temp))
        try:
            con.execute(SCHEMA)
            write_metadata(con, "schema_version", SCHEMA_VERSION)
            write_metadata(con, "created_by", created_by())
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(temp, path)
    finally:
        _remove_temp(temp)


@contextmanager
def atomic_update(path: str | os.PathLike) -> Iterator[duckdb.DuckDBPyConnection]:
    """Change an existing store all or nothing.

    Copies the store beside itself, yields a read-write connection to the copy and moves the copy
    onto ``path`` on normal exit; on an exception the copy is deleted and ``path`` is untouched.

    Raises:
        InputError: ``path`` does not exist or is not a store this version can read.
    """
    path = Path(path)
    open_store(path, read_only=True).close()
    remove_stale_temporaries(path)
    temp = temporary_path(path)
    try:
        shutil.copyfile(path, temp)
        con = open_store(temp, read_only=False)
        try:
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(temp, path)
    finally:
        _remove_temp(temp)


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables of the store: :data:`CORE_TABLES` first, then any others (``umls_*``) by name."""
    names = [row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
    ).fetchall()]
    return [t for t in CORE_TABLES if t in names] + [t for t in names if t not in CORE_TABLES]


def store_stats(con: duckdb.DuckDBPyConnection, top: int = 10) -> dict[str, Any]:
    """What a store holds, JSON-ready.

    Returns:
        ``{"tables": {name: rows}, "labels": {label: entities}, "source_labels": {label as written:
        entities} (empty for a schema-1 store), "relations": {relation: rows},
        "top_triplets": [{head, relation, tail, head_label, tail_label, count, n_reports}],
        "metadata": {...}}``; top triplets by ``count``, then ``n_reports``, then text.
    """
    tables = {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in table_names(con)}
    labels = dict(con.execute("SELECT label, count(*) FROM entities GROUP BY label ORDER BY label").fetchall())
    has_source_labels = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main' AND table_name = 'entities' "
        "AND column_name = 'source_label'"
    ).fetchone()[0]
    source_labels = dict(con.execute(
        "SELECT source_label, count(*) FROM entities GROUP BY source_label ORDER BY source_label"
    ).fetchall()) if has_source_labels else {}
    relations = dict(
        con.execute("SELECT relation, count(*) FROM relations GROUP BY relation ORDER BY relation").fetchall()
    )
    cursor = con.execute(
        "SELECT * FROM triplets ORDER BY count DESC, n_reports DESC, head, relation, tail, head_label, tail_label "
        "LIMIT ?",
        [max(top, 0)],
    )
    columns = [d[0] for d in cursor.description]
    top_triplets = [dict(zip(columns, row)) for row in cursor.fetchall()]
    return {
        "tables": tables,
        "labels": labels,
        "source_labels": source_labels,
        "relations": relations,
        "top_triplets": top_triplets,
        "metadata": read_metadata(con),
    }


def _remove_temp(temp: Path) -> None:
    for leftover in (temp, temp.with_name(temp.name + ".wal")):
        if leftover.exists():
            leftover.unlink()


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
