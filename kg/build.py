"""Write annotated reports into a knowledge store (:mod:`kg.store`).

:func:`build_store` takes either :class:`~kg.records.ReportRecord` objects from any source (the
free-text extractor :func:`kg.extract.extract_reports`, a user's own code, ...), which it
gathers into batches of :data:`BATCH_REPORTS` reports, or a *batch source*: an object with an
``arrow_batches(absent)`` method yielding ready Arrow batches, which is how
:class:`kg.radgraph_reader.RadGraphReader` hands over RadGraph files (parsed in worker processes when it
has ``workers``). A batch (:meth:`kg.report_batch.ReportBatch.to_arrow`) arrives as one Arrow
table per store table, its triplets already derived from its relations
(:func:`kg.report_batch.batch_occurrences`), and is appended in bulk:

* ``report_triplets``: the distinct triplets of each report (see :mod:`kg.normalize`), reports in
  input order, each report's triplets in order of first mention;
* ``triplets``: per distinct triplet, ``count`` = occurrences over every relation of every
  labeler, ``n_reports`` = reports holding it (each batch's shares, summed in SQL at the end).

DuckDB inserts a batch on a worker thread while the next batch is read, so reading (Python) and
writing (DuckDB, outside the GIL) overlap.

Records sharing a report id must come from different labelers (``labeler="both"``) and follow
each other; they share one ``reports`` row. The build is atomic (:func:`kg.store.atomic_build`)
and deterministic: the same records, inputs and options give the same tables, in the same row
order, and the same metadata, however the input was cut into batches.
"""
from __future__ import annotations

import gc
import hashlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import duckdb

from kg.errors import InputError
from kg.files import update_digest
from kg.normalize import check_absent_mode
from kg.records import ReportRecord
from kg.report_batch import TRIPLET_COLUMNS, ArrowBatch, ReportBatch, concat_batches
from kg.store import atomic_build, write_metadata

#: Reports per batch: the unit of bulk insertion; bounds the memory a build holds in Python.
BATCH_REPORTS = 20_000
#: Batches waiting for the writer before reading pauses (reading runs ahead of a slow insert).
MAX_PENDING_BATCHES = 2

_TRIPLET_KEY = ", ".join(TRIPLET_COLUMNS)
_TRIPLETS_SQL = f"""
INSERT INTO triplets
SELECT {_TRIPLET_KEY}, sum(count)::BIGINT AS count, sum(n_reports)::BIGINT AS n_reports
FROM triplet_counts GROUP BY {_TRIPLET_KEY}
ORDER BY count DESC, n_reports DESC, {_TRIPLET_KEY}
"""


@runtime_checkable
class BatchSource(Protocol):
    """Anything that yields ready Arrow batches (:meth:`kg.report_batch.ReportBatch.to_arrow`).

    The source is responsible for report ids being unique; batches are inserted in the order they
    come, and the store does not depend on where the input was cut into batches.
    """

    def arrow_batches(self, absent: str) -> Iterator[ArrowBatch]:
        """The batches, ``absent`` being the :data:`kg.normalize.ABSENT_MODES` entry to apply."""
        ...


@dataclass(frozen=True)
class BuildSummary:
    """What a build wrote.

    Attributes:
        store: the store file.
        source: source kind (``"radgraph"``, ``"reports"``).
        reports, entities, relations: rows written to those tables.
        report_triplets: rows of ``report_triplets`` (distinct triplets per report).
        triplets: distinct triplets in the corpus.
        skipped: invalid input reports left out (set by the caller that read them).
        seconds: wall-clock time of the build.
    """

    store: Path
    source: str
    reports: int
    entities: int
    relations: int
    report_triplets: int
    triplets: int
    skipped: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        rows = (
            ("reports", self.reports),
            ("entities", self.entities),
            ("relations", self.relations),
            ("report triplets", self.report_triplets),
            ("distinct triplets", self.triplets),
            ("skipped reports", self.skipped),
        )
        return f"built {self.store} from {self.source} in {self.seconds:.1f} s\n" + "\n".join(
            f"  {name:<18} {count:>12,}" for name, count in rows
        )


def build_store(
    records: Iterable[ReportRecord] | BatchSource,
    path: str | os.PathLike,
    *,
    source: str,
    inputs: list[Path],
    options: dict[str, Any],
    progress: bool = True,
    absent: str = "negate",
) -> BuildSummary:
    """Build a store at ``path`` from annotated reports, replacing any store there on success.

    Args:
        records: the reports, consumed once: :class:`~kg.records.ReportRecord` objects (records
            of one report, one per labeler, must follow each other), gathered into batches of
            :data:`BATCH_REPORTS`; or a :class:`BatchSource` such as
            :class:`kg.radgraph_reader.RadGraphReader`, whose batches are written as they come.
        path: the DuckDB file to write; left untouched when anything fails.
        source: source kind recorded in metadata ``sources``.
        inputs: files the records came from; recorded with size and SHA-256 in ``inputs``.
        options: build options recorded in metadata ``options`` (``absent`` is added).
        progress: show a progress bar on stderr.
        absent: how triplets treat ``OBS-DA`` entities (:data:`kg.normalize.ABSENT_MODES`).

    Raises:
        InputError: a report id repeats for the same labeler or out of sequence, an input file is
            missing, or the records' reader rejects its input.
    """
    check_absent_mode(absent)
    started = time.perf_counter()
    path = Path(path)
    with atomic_build(path) as con:
        con.execute(
            "CREATE TEMP TABLE triplet_counts (head VARCHAR, relation VARCHAR, tail VARCHAR, head_label VARCHAR, "
            "tail_label VARCHAR, count BIGINT, n_reports BIGINT)"
        )
        with _gc_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="kg-build") as writer:
            # Hashing the inputs (hashlib releases the GIL) runs beside the reading of the first batch.
            described = writer.submit(lambda: [describe_input(p, source) for p in inputs])
            pending: deque[Future] = deque()
            # One transaction: committing each batch would checkpoint the growing tables over and over.
            # While reading runs beside it, DuckDB gets one thread: a batch is too small to gain
            # from more, and idle DuckDB threads spinning for work slow the reader down (measured).
            con.execute("BEGIN TRANSACTION")
            con.execute("SET threads = 1")
            for batch in _coalesced(_batches(records, progress, absent), BATCH_REPORTS):
                pending.append(writer.submit(_insert_batch, con, batch))
                while len(pending) > MAX_PENDING_BATCHES:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
            con.execute("RESET threads")
            con.execute(_TRIPLETS_SQL)
            con.execute("DROP TABLE triplet_counts")
            write_metadata(con, "sources", [source])
            write_metadata(con, "inputs", described.result())
            write_metadata(con, "options", {**options, "absent": absent})
            con.execute("COMMIT")
        counts = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("reports", "entities", "relations", "report_triplets", "triplets")
        }
    return BuildSummary(store=path, source=source, seconds=time.perf_counter() - started, **counts)


def describe_input(path: str | os.PathLike, source: str) -> dict[str, Any]:
    """``{"path", "sha256", "bytes", "source"}`` of an input file or directory (absolute path).

    A directory (e.g. a MIMIC-CXR report tree) is hashed over its files' relative paths and
    contents in sorted order, so the same tree always gives the same digest.

    Raises:
        InputError: the path does not exist.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        raise InputError("no such file or directory", file=path)
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        update_digest(digest, file)
    size = sum(file.stat().st_size for file in files)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": size, "source": source}


def _batches(records: Iterable[ReportRecord] | BatchSource, progress: bool, absent: str) -> Iterator[ArrowBatch]:
    """The Arrow batches of a batch source, or of records gathered by :func:`_record_batches`."""
    from tqdm import tqdm

    if not isinstance(records, BatchSource):
        yield from _record_batches(tqdm(records, desc="building", unit=" reports", disable=not progress,
                                        file=sys.stderr, mininterval=0.5), absent)
        return
    with tqdm(desc="building", unit=" reports", disable=not progress, file=sys.stderr, mininterval=0.5) as bar:
        for batch in records.arrow_batches(absent):
            bar.update(batch["reports"].num_rows)
            yield batch


def _coalesced(batches: Iterable[ArrowBatch], size: int) -> Iterator[ArrowBatch]:
    """Consecutive batches merged until each holds at least ``size`` reports (the first and the last
    may hold fewer): DuckDB appends a few large batches faster than many small ones (measured)."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    yield first  # as it is, so the writer starts while the reader goes on
    group: list[ArrowBatch] = []
    reports = 0
    for batch in batches:
        group.append(batch)
        reports += batch["reports"].num_rows
        if reports >= size:
            yield concat_batches(group)
            group, reports = [], 0
    if group:
        yield concat_batches(group)


def _record_batches(records: Iterable[ReportRecord], absent: str) -> Iterator[ArrowBatch]:
    """The records as Arrow batches (:meth:`ReportBatch.to_arrow`), :data:`BATCH_REPORTS` reports
    at a time; a report's records never straddle two batches."""
    batch = ReportBatch()
    annotations: set[tuple[str, str]] = set()
    report_ids: set[str] = set()
    previous_id = None
    for record in records:
        report_id = record.report_id
        labeler = record.labeler or ""
        if (report_id, labeler) in annotations:
            which = f" for {labeler}" if labeler else ""
            raise InputError(f"duplicate report id{which}", record=report_id, field="report_id")
        new_report = report_id != previous_id
        if new_report:
            if report_id in report_ids:
                raise InputError("records of one report (one per labeler) must follow each other",
                                 record=report_id, field="report_id")
            report_ids.add(report_id)
            if batch.n_reports >= BATCH_REPORTS:
                yield batch.to_arrow(absent)
                batch = ReportBatch()
            previous_id = report_id
        annotations.add((report_id, labeler))
        batch.add_record(record, new_report=new_report)
    if batch.n_reports:
        yield batch.to_arrow(absent)


def _insert_batch(con: duckdb.DuckDBPyConnection, batch: ArrowBatch) -> None:
    """Append one batch's rows to the store tables and its triplet-count share to ``triplet_counts``."""
    for table, rows in batch.items():
        con.register(f"batch_{table}", rows)
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch_{table}")
        finally:
            con.unregister(f"batch_{table}")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while batches are read.

    Reading allocates millions of small containers that hold no reference cycles; with the
    collector on, its repeated passes over them took about half of the build time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
