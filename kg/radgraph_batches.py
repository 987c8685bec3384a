"""Read RadGraph-format files straight into store batches, in worker processes if asked.

This is the reading half of ``kg build --source radgraph`` (:meth:`kg.radgraph_reader.RadGraphReader.arrow_batches`).
The input is cut into chunks: a JSONL file into runs of whole lines of about :data:`CHUNK_BYTES`,
a JSON document (parsed once, in this process) into runs of :data:`CHUNK_REPORTS` reports. A chunk
is read by :func:`read_chunk`: each report is validated and added to a
:class:`~kg.report_batch.ReportBatch` (:func:`kg.radgraph.add_raw_report`), which becomes one Arrow
batch. With ``workers`` > 1 the chunks are read by a pool of processes, at most
``2 × workers`` chunks in flight, and their batches come back in input order; the store writer
(:func:`kg.build.build_store`) inserts one while the next are read.

Report ids must be unique across all inputs, and a worker only sees its own chunk. So the main
process checks each chunk's ids (of kept and of skipped reports) against those of every earlier
chunk, and reads a chunk again itself, with the ids seen so far, when one repeats or when the
worker stopped at an error. The batches, the skipped reports' errors (in order) and the first
error raised are therefore exactly those of a one-process read, whatever the number of workers;
the store is too, since :mod:`kg.build` does not depend on batch boundaries.

Workers start with the ``forkserver`` method where the platform has it (else ``spawn``): they do
not inherit this process's threads (DuckDB's, the writer's). They exit when this process dies,
even by ``kill -9`` (:mod:`kg.process_guard`). As with any ``multiprocessing`` code,
a script that builds with workers needs an ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kg.errors import InputError
from kg.process_guard import exit_with
from kg.radgraph import add_raw_report, document_records, duplicate_id_error, is_jsonl, jsonl_line_records
from kg.report_batch import ArrowBatch, ReportBatch

if TYPE_CHECKING:
    from kg.radgraph_reader import RadGraphReader

#: JSONL bytes per chunk (whole lines; a longer line makes a longer chunk).
CHUNK_BYTES = 8 << 20
#: Reports per chunk of a JSON document.
CHUNK_REPORTS = 4096
#: ``--workers auto`` reads JSONL inputs smaller than this in one process: starting workers costs more.
AUTO_MIN_BYTES = 32 << 20
#: ``--workers auto`` uses at most this many processes.
AUTO_MAX_WORKERS = 8


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive reports of one input file.

    Attributes:
        path: the input file.
        fmt: its format (:data:`kg.radgraph.FORMATS`, not ``"auto"``).
        offset, length, first_line: JSONL: the byte range ``[offset, offset + length)`` of whole
            lines, and the file line number of its first line.
        lines: JSONL: those bytes, when already read (``None``: read them from ``path``).
        items: JSON document: ``[(report id, raw report), ...]``, or their JSON bytes on the way
            to a worker.
    """

    path: Path
    fmt: str
    offset: int = 0
    length: int = 0
    first_line: int = 1
    lines: bytes | None = field(default=None, repr=False)
    items: list | bytes | None = field(default=None, repr=False)

    def for_worker(self) -> Chunk:
        """The chunk as sent to a worker: JSONL without its bytes (the worker reads the range
        itself), a document's reports as JSON bytes (much faster to pass than pickled objects)."""
        if self.fmt == "jsonl":
            return dataclasses.replace(self, lines=None)
        return dataclasses.replace(self, items=orjson.dumps(self.items))

    def records(self) -> Iterator[tuple[str | None, Any, str]]:
        """``(report id, raw report or its InputError, where)`` of each report, as
        :class:`~kg.radgraph_reader.RadGraphReader` reads them."""
        if self.fmt == "jsonl":
            lines = self.lines
            if lines is None:
                with open(self.path, "rb") as handle:
                    handle.seek(self.offset)
                    lines = handle.read(self.length)
            return jsonl_line_records(str(self.path), lines.split(b"\n"), self.first_line)
        items = orjson.loads(self.items) if isinstance(self.items, bytes) else self.items
        where = str(self.path)
        return ((report_id, raw, where) for report_id, raw in items)


@dataclass
class ChunkResult:
    """What reading a chunk gave.

    Attributes:
        batch: the kept reports' Arrow batch (``None`` if none was kept).
        report_ids: ids of the kept reports, in order.
        errors: errors of the skipped reports (``skip_invalid``), in order.
        failure: the error reading stopped at (not ``skip_invalid``); ``batch`` is then ``None``.
    """

    batch: ArrowBatch | None
    report_ids: list[str]
    errors: list[InputError]
    failure: InputError | None = None

    def repeats_any(self, seen: dict[str, Path]) -> bool:
        """Whether a kept or skipped report of this chunk has an id in ``seen``."""
        ids = self.report_ids + [error.record for error in self.errors if isinstance(error.record, str)]
        return not seen.keys().isdisjoint(ids)


def read_chunk(
    chunk: Chunk, *, labeler: str, skip_invalid: bool, absent: str, first_seen: dict[str, Path]
) -> ChunkResult:
    """Validate a chunk's reports into one Arrow batch.

    Args:
        chunk: the reports to read.
        labeler, skip_invalid: as :class:`~kg.radgraph_reader.RadGraphReader`'s.
        absent: :data:`kg.normalize.ABSENT_MODES` entry for the batch's triplets.
        first_seen: report id → file it was first read from; a report whose id is in it is a
            duplicate. The kept reports' ids are added to it.
    """
    batch = ReportBatch()
    report_ids: list[str] = []
    errors: list[InputError] = []
    for report_id, raw, where in chunk.records():
        try:
            if isinstance(raw, InputError):
                raise raw
            if report_id in first_seen:
                raise duplicate_id_error(report_id, first_seen[report_id], where)
            add_raw_report(batch, report_id, raw, labeler=labeler, file=where)
        except InputError as err:
            if not skip_invalid:
                return ChunkResult(None, report_ids, errors, err)
            errors.append(err)
            continue
        first_seen[report_id] = chunk.path
        report_ids.append(report_id)
    return ChunkResult(batch.to_arrow(absent) if batch.n_reports else None, report_ids, errors)


def read_batches(reader: RadGraphReader, absent: str) -> Iterator[ArrowBatch]:
    """The batches of every input of ``reader``, in order; sets ``reader.errors`` and ``reader.formats``.

    Raises:
        InputError: the first invalid report (unless ``reader.skip_invalid``), or an input that is
            missing or not JSON.
    """
    reader.errors = []
    first_seen: dict[str, Path] = {}
    options = {"labeler": reader.labeler, "skip_invalid": reader.skip_invalid, "absent": absent}
    with _worker_pool(reader.workers) as pool:
        for path in reader.paths:
            fmt, document = reader.open_input(path)
            reader.formats[path] = fmt
            chunks = jsonl_chunks(path) if document is None else document_chunks(path, document, fmt)
            if pool is None:
                results = (read_chunk(chunk, first_seen=first_seen, **options) for chunk in chunks)
            else:
                results = _read_in_pool(pool, chunks, options, first_seen, in_flight=2 * reader.workers)
            for result in results:
                reader.errors += result.errors
                if result.failure is not None:
                    raise result.failure
                if result.batch is not None:
                    yield result.batch


def jsonl_chunks(path: Path) -> Iterator[Chunk]:
    """A JSONL file as chunks of whole lines, about :data:`CHUNK_BYTES` each, with their bytes."""
    offset, first_line, pending = 0, 1, b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK_BYTES)
            data = pending + block
            if not block:
                if data:
                    yield Chunk(path, "jsonl", offset, len(data), first_line, lines=data)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line ends in this block yet
                pending = data
                continue
            yield Chunk(path, "jsonl", offset, cut, first_line, lines=data[:cut])
            first_line += data.count(b"\n", 0, cut)
            offset += cut
            pending = data[cut:]


def document_chunks(path: Path, document: Any, fmt: str) -> Iterator[Chunk]:
    """A parsed JSON document's reports as chunks of :data:`CHUNK_REPORTS`.

    Raises:
        InputError: the document's top level is not what ``fmt`` has.
    """
    items: list[tuple[str, Any]] = []
    for report_id, raw, _ in document_records(path, document, fmt):
        items.append((report_id, raw))
        if len(items) == CHUNK_REPORTS:
            yield Chunk(path, fmt, items=items)
            items = []
    if items:
        yield Chunk(path, fmt, items=items)


def auto_workers(reader: RadGraphReader) -> int:
    """Worker processes for ``kg build --workers auto``.

    One per available CPU (at most :data:`AUTO_MAX_WORKERS`) when the reader's JSONL inputs
    hold :data:`AUTO_MIN_BYTES` or more, else 0. JSON documents do not count: this process parses
    each whole before any worker can start and re-encodes the reports for them, which made a
    pool slower than reading in one process on a 2-CPU machine (``benchmarks/RESULTS.md``).
    """
    jsonl_bytes = 0
    for path in reader.paths:
        if path.is_file() and (reader.format == "jsonl" or (reader.format == "auto" and is_jsonl(path))):
            jsonl_bytes += path.stat().st_size
    if jsonl_bytes < AUTO_MIN_BYTES:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, AUTO_MAX_WORKERS) if cpus > 1 else 0


def _read_in_pool(
    pool: ProcessPoolExecutor, chunks: Iterable[Chunk], options: dict[str, Any], first_seen: dict[str, Path],
    in_flight: int,
) -> Iterator[ChunkResult]:
    """:func:`read_chunk` of each chunk in ``pool``, results in chunk order, each checked against
    the ids of the chunks before it (and re-read here when a worker's view was not enough)."""
    chunks = iter(chunks)
    pending: deque[tuple[Chunk, Future]] = deque()

    def submit() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            pending.append((chunk, pool.submit(_read_chunk_in_worker, chunk.for_worker(), options)))

    for _ in range(in_flight):
        submit()
    while pending:
        chunk, future = pending.popleft()
        submit()
        result = future.result()
        if result.failure is not None or result.repeats_any(first_seen):
            result = read_chunk(chunk, first_seen=first_seen, **options)
        else:
            first_seen.update(dict.fromkeys(result.report_ids, chunk.path))
        yield result


def _start_worker(parent_pid: int) -> None:
    """Worker set-up: end with the parent, whose death the task pipe would never show (a killed
    build must not leave its workers behind), and no cyclic GC (no cycles worth collecting, as in
    :func:`kg.build._gc_paused`)."""
    exit_with(parent_pid)
    gc.disable()


def _read_chunk_in_worker(chunk: Chunk, options: dict[str, Any]) -> ChunkResult:
    return read_chunk(chunk, first_seen={}, **options)


@contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A process pool of ``workers`` processes, or ``None`` for 0 or 1 (read in this process)."""
    if workers <= 1:
        yield None
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(),))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
