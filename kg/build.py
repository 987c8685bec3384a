"""Write annotated reports into a knowledge store (:mod:`kg.store`).

:func:`build_store` takes :class:`~kg.records.ReportRecord` from any source (RadGraph files via
:class:`kg.radgraph.RadGraphReader`, free-text extraction via :func:`kg.extract.extract_reports`)
and writes them in batches of :data:`BATCH_REPORTS` reports. Each batch becomes one Arrow table per
table, inserted in bulk. A batch's relations become triplet occurrences by Arrow ``take`` on the
entity rows (:func:`batch_occurrences`), which DuckDB then aggregates in SQL:

* ``report_triplets``: the distinct triplets of each report (see :mod:`kg.normalize`);
* ``triplets``: per distinct triplet, ``count`` = occurrences over every relation of every
  labeler, ``n_reports`` = reports holding it (summed over batches at the end).

DuckDB inserts a batch on a worker thread while the next batch is read, so reading (Python) and
writing (DuckDB, outside the GIL) overlap.

Records sharing a report id must come from different labelers (``labeler="both"``) and follow
each other; they share one ``reports`` row. The build is atomic (:func:`kg.store.atomic_build`)
and deterministic: the same records, inputs and options give the same tables, in the same row
order, and the same metadata.
"""
from __future__ import annotations

import gc
import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kg.errors import InputError
from kg.normalize import ABSENT_LABEL, NEGATION_PREFIX, check_absent_mode, normalize_entity
from kg.records import RELATION_TYPES, ReportRecord
from kg.store import atomic_build, write_metadata

#: Reports per batch: the unit of bulk insertion; bounds the memory a build holds in Python.
BATCH_REPORTS = 20_000

_STR = pa.string()
_INT = pa.int32()
#: Tables a batch appends to as they are (the others are derived from ``occurrences``).
_STORED_TABLES = ("reports", "entities", "relations")
_TRIPLET_KEY = "head, relation, tail, head_label, tail_label"

#: Per batch, from ``batch_occurrences``: occurrences per (report, triplet), then the
#: ``report_triplets`` rows and the batch's partial corpus counts from those pairs (one hash
#: aggregation over the occurrences instead of two).
_BATCH_AGGREGATES_SQL = (
    f"CREATE OR REPLACE TEMP TABLE batch_pairs AS SELECT report_id, {_TRIPLET_KEY}, count(*) AS occurrences "
    f"FROM batch_occurrences GROUP BY report_id, {_TRIPLET_KEY}",
    f"INSERT INTO report_triplets SELECT report_id, {_TRIPLET_KEY} FROM batch_pairs "
    f"ORDER BY report_id, {_TRIPLET_KEY}",
    f"INSERT INTO triplet_counts SELECT {_TRIPLET_KEY}, sum(occurrences), count(*) FROM batch_pairs "
    f"GROUP BY {_TRIPLET_KEY}",
)
_TRIPLETS_SQL = f"""
INSERT INTO triplets
SELECT {_TRIPLET_KEY}, sum(count)::BIGINT AS count, sum(n_reports)::BIGINT AS n_reports
FROM triplet_counts GROUP BY {_TRIPLET_KEY}
ORDER BY count DESC, n_reports DESC, {_TRIPLET_KEY}
"""
#: Relation name → one shared string object, so the relation column converts to Arrow faster.
_RELATION_NAMES = {name: name for name in RELATION_TYPES}


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
    records: Iterable[ReportRecord],
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
        records: the reports, consumed once, in batches of :data:`BATCH_REPORTS`; records of one
            report (one per labeler) must follow each other.
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
    described = [describe_input(p, source) for p in inputs]
    path = Path(path)
    with atomic_build(path) as con:
        con.execute(
            "CREATE TEMP TABLE triplet_counts (head VARCHAR, relation VARCHAR, tail VARCHAR, head_label VARCHAR, "
            "tail_label VARCHAR, count BIGINT, n_reports BIGINT)"
        )
        with _gc_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="kg-build") as writer:
            pending: Future | None = None
            for batch in _arrow_batches(records, progress, absent):
                if pending is not None:
                    pending.result()
                pending = writer.submit(_insert_batch, con, batch)
            if pending is not None:
                pending.result()
        con.execute(_TRIPLETS_SQL)
        con.execute("DROP TABLE triplet_counts")
        con.execute("DROP TABLE IF EXISTS batch_pairs")
        write_metadata(con, "sources", [source])
        write_metadata(con, "inputs", described)
        write_metadata(con, "options", {**options, "absent": absent})
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
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    size = sum(file.stat().st_size for file in files)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": size, "source": source}


def _arrow_batches(records: Iterable[ReportRecord], progress: bool, absent: str) -> Iterator[dict[str, pa.Table]]:
    """The records as Arrow tables (:meth:`_Batch.to_arrow`), :data:`BATCH_REPORTS` reports at a
    time; a report's records never straddle two batches."""
    from tqdm import tqdm

    batch = _Batch()
    annotations: set[tuple[str, str]] = set()
    report_ids: set[str] = set()
    previous_id = None
    for record in tqdm(records, desc="building", unit=" reports", disable=not progress, file=sys.stderr,
                       mininterval=0.5):
        report_id = record.report_id
        labeler = record.labeler or ""
        if (report_id, labeler) in annotations:
            which = f" for {labeler}" if labeler else ""
            raise InputError(f"duplicate report id{which}", record=report_id, field="report_id")
        if report_id != previous_id:
            if report_id in report_ids:
                raise InputError("records of one report (one per labeler) must follow each other",
                                 record=report_id, field="report_id")
            report_ids.add(report_id)
            if batch.n_reports >= BATCH_REPORTS:
                yield batch.to_arrow(absent)
                batch = _Batch()
            batch.add_report(record)
            previous_id = report_id
        annotations.add((report_id, labeler))
        batch.add_annotation(record, labeler)
    if batch.n_reports:
        yield batch.to_arrow(absent)


class _Batch:
    """Column buffers of a batch of reports, turned into Arrow tables by :meth:`to_arrow`.

    The ``report_id`` and ``labeler`` columns of entities and relations are not buffered row by
    row: each annotation (one record) is stored once with its entity and relation counts, and the
    columns are expanded with Arrow ``take``, which is several times faster for millions of rows.
    """

    def __init__(self) -> None:
        self.reports: dict[str, list] = {"report_id": [], "text": [], "data_source": [], "data_split": []}
        self.annotation_ids: list[str] = []
        self.annotation_labelers: list[str] = []
        self.entity_counts: list[int] = []
        self.relation_counts: list[int] = []
        self.entities: dict[str, list] = {"entity_id": [], "tokens": [], "label": [], "start_ix": [], "end_ix": []}
        self.relations: dict[str, list] = {"head_id": [], "relation": [], "tail_id": []}
        # Batch entity rows of each relation's head and tail; ``None`` for a target the report lacks.
        self.head_rows: list[int] = []
        self.tail_rows: list[int | None] = []

    @property
    def n_reports(self) -> int:
        return len(self.reports["report_id"])

    def add_report(self, record: ReportRecord) -> None:
        """Add the ``reports`` row of ``record``."""
        for name, value in (("report_id", record.report_id), ("text", record.text),
                            ("data_source", record.data_source), ("data_split", record.data_split)):
            self.reports[name].append(value)

    def add_annotation(self, record: ReportRecord, labeler: str) -> None:
        """Add the entities and relations of ``record`` (annotated by ``labeler``, ``''`` if single)."""
        entities = record.entities
        first_row = len(self.entities["entity_id"])
        rows = {entity_id: first_row + k for k, entity_id in enumerate(entities)}
        annotated = entities.values()
        columns = self.entities
        columns["entity_id"] += entities
        columns["tokens"] += [entity.tokens for entity in annotated]
        columns["label"] += [entity.label for entity in annotated]
        columns["start_ix"] += [entity.start_ix for entity in annotated]
        columns["end_ix"] += [entity.end_ix for entity in annotated]
        pairs = [(entity_id, relation, target)
                 for entity_id, entity in entities.items() for relation, target in entity.relations]
        columns = self.relations
        columns["head_id"] += [head for head, _, _ in pairs]
        columns["relation"] += [_RELATION_NAMES.get(relation, relation) for _, relation, _ in pairs]
        columns["tail_id"] += [tail for _, _, tail in pairs]
        self.head_rows += [rows[head] for head, _, _ in pairs]
        self.tail_rows += [rows.get(tail) for _, _, tail in pairs]
        self.annotation_ids.append(record.report_id)
        self.annotation_labelers.append(labeler)
        self.entity_counts.append(len(entities))
        self.relation_counts.append(len(pairs))

    def to_arrow(self, absent: str) -> dict[str, pa.Table]:
        """``{"reports", "entities", "relations", "occurrences"}`` Arrow tables, the first three in
        the store's column order, ``occurrences`` by :func:`batch_occurrences`."""
        ids = pa.array(self.annotation_ids, _STR)
        labelers = pa.array(self.annotation_labelers, _STR)
        annotation = np.arange(len(self.annotation_ids), dtype=np.int32)
        entity_owner = pa.array(np.repeat(annotation, self.entity_counts))
        relation_owner = pa.array(np.repeat(annotation, self.relation_counts))
        entities, relations = self.entities, self.relations
        norm = [normalize_entity(tokens) for tokens in entities["tokens"]]
        tables = {
            "reports": pa.table({name: pa.array(values, _STR) for name, values in self.reports.items()}),
            "entities": pa.table({
                "report_id": ids.take(entity_owner),
                "labeler": labelers.take(entity_owner),
                "entity_id": pa.array(entities["entity_id"], _STR),
                "tokens": pa.array(entities["tokens"], _STR),
                "norm": pa.array(norm, _STR),
                "label": pa.array(entities["label"], _STR),
                "start_ix": pa.array(entities["start_ix"], _INT),
                "end_ix": pa.array(entities["end_ix"], _INT),
            }),
            "relations": pa.table({
                "report_id": ids.take(relation_owner),
                "labeler": labelers.take(relation_owner),
                "head_id": pa.array(relations["head_id"], _STR),
                "relation": pa.array(relations["relation"], _STR),
                "tail_id": pa.array(relations["tail_id"], _STR),
            }),
        }
        tables["occurrences"] = batch_occurrences(
            tables["entities"],
            pa.array(self.head_rows, _INT),
            pa.array(self.tail_rows, _INT),
            tables["relations"].column("relation"),
            absent,
        )
        return tables


def batch_occurrences(
    entities: pa.Table, head_rows: pa.Array, tail_rows: pa.Array, relations: pa.Array, absent: str = "negate"
) -> pa.Table:
    """Triplet occurrences of a batch by the rule of :func:`kg.normalize.relation_triplets`.

    Args:
        entities: the batch's ``entities`` rows (columns ``report_id``, ``norm``, ``label``).
        head_rows, tail_rows: int32 ``(R,)``, row in ``entities`` of each relation's head and tail;
            a null tail (a target the report lacks) makes no triplet, as in
            :func:`kg.normalize.relation_triplets`.
        relations: string ``(R,)``, each relation's type.
        absent: :data:`kg.normalize.ABSENT_MODES` entry for ``OBS-DA`` entities.

    Returns:
        ``(report_id, head, relation, tail, head_label, tail_label)``, one row per linked relation
        (fewer with ``absent="drop"``), in relation order.
    """
    linked = pc.is_valid(tail_rows)
    head_rows, tail_rows, relations = head_rows.filter(linked), tail_rows.filter(linked), relations.filter(linked)
    labels = entities.column("label")
    is_absent = pc.equal(labels, ABSENT_LABEL)
    texts = entities.column("norm")
    if absent == "negate":
        texts = pc.if_else(is_absent, pc.binary_join_element_wise(NEGATION_PREFIX, texts, ""), texts)
    occurrences = pa.table({
        "report_id": entities.column("report_id").take(head_rows),
        "head": texts.take(head_rows),
        "relation": relations,
        "tail": texts.take(tail_rows),
        "head_label": labels.take(head_rows),
        "tail_label": labels.take(tail_rows),
    })
    if absent == "drop":
        keep = pc.invert(pc.or_(is_absent.take(head_rows), is_absent.take(tail_rows)))
        occurrences = occurrences.filter(keep)
    return occurrences


def _insert_batch(con: duckdb.DuckDBPyConnection, batch: dict[str, pa.Table]) -> None:
    """Append one batch to the store and its triplets to ``report_triplets`` and the partial counts."""
    for table, rows in batch.items():
        con.register(f"batch_{table}", rows)
    try:
        for table in _STORED_TABLES:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch_{table}")
        for statement in _BATCH_AGGREGATES_SQL:
            con.execute(statement)
    finally:
        for table in batch:
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
