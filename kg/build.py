"""Write annotated reports into a knowledge store (:mod:`kg.store`).

:func:`build_store` takes :class:`~kg.records.ReportRecord` from any source (RadGraph files via
:class:`kg.radgraph.RadGraphReader`, free-text extraction via :func:`kg.extract.extract_reports`)
and writes them in batches of :data:`BATCH_REPORTS` reports. Each batch becomes one Arrow table per
table, inserted in bulk; its triplets are derived in SQL (:data:`BATCH_TRIPLETS_SQL`):

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
from itertools import repeat
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from kg.errors import InputError
from kg.normalize import ABSENT_LABEL, NEGATION_PREFIX, check_absent_mode, normalize_entity
from kg.records import RELATION_TYPES, ReportRecord
from kg.store import atomic_build, write_metadata

#: Reports per batch: the unit of bulk insertion; bounds the memory a build holds in Python.
BATCH_REPORTS = 20_000

_STR = pa.string()
_INT = pa.int32()
#: Buffered tables and their Arrow column types, in the store's column order.
_COLUMNS = {
    "reports": {"report_id": _STR, "text": _STR, "data_source": _STR, "data_split": _STR},
    "entities": {
        "report_id": _STR, "labeler": _STR, "entity_id": _STR, "tokens": _STR, "norm": _STR, "label": _STR,
        "start_ix": _INT, "end_ix": _INT,
    },
    "relations": {"report_id": _STR, "labeler": _STR, "head_id": _STR, "relation": _STR, "tail_id": _STR},
}
_TRIPLET_KEY = "head, relation, tail, head_label, tail_label"

#: A batch's relations as triplets of normalised texts, by the rule of
#: :func:`kg.normalize.relation_triplets` (:data:`_BATCH_AGGREGATES_SQL` then adds its
#: ``report_triplets`` rows and partial corpus counts). Parameters: ``absent`` label, ``prefix`` put before absent entities (``''`` unless
#: ``absent="negate"``), ``drop`` (leave out triplets with an absent end).
BATCH_TRIPLETS_SQL = """
CREATE OR REPLACE TEMP TABLE batch_occurrences AS
SELECT r.report_id,
       CASE WHEN h.label = $absent THEN $prefix ELSE '' END || h.norm AS head,
       r.relation,
       CASE WHEN t.label = $absent THEN $prefix ELSE '' END || t.norm AS tail,
       h.label AS head_label,
       t.label AS tail_label
FROM batch_relations r
JOIN batch_entities h ON h.report_id = r.report_id AND h.labeler = r.labeler AND h.entity_id = r.head_id
JOIN batch_entities t ON t.report_id = r.report_id AND t.labeler = r.labeler AND t.entity_id = r.tail_id
WHERE NOT ($drop AND (h.label = $absent OR t.label = $absent))
"""
_BATCH_AGGREGATES_SQL = (
    f"INSERT INTO report_triplets SELECT DISTINCT report_id, {_TRIPLET_KEY} FROM batch_occurrences "
    f"ORDER BY report_id, {_TRIPLET_KEY}",
    f"INSERT INTO triplet_counts SELECT {_TRIPLET_KEY}, count(*), count(DISTINCT report_id) FROM batch_occurrences "
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
    parameters = {"absent": ABSENT_LABEL, "prefix": NEGATION_PREFIX if absent == "negate" else "",
                  "drop": absent == "drop"}
    with atomic_build(path) as con:
        con.execute(
            "CREATE TEMP TABLE triplet_counts (head VARCHAR, relation VARCHAR, tail VARCHAR, head_label VARCHAR, "
            "tail_label VARCHAR, count BIGINT, n_reports BIGINT)"
        )
        with _gc_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="kg-build") as writer:
            pending: Future | None = None
            for batch in _arrow_batches(records, progress):
                if pending is not None:
                    pending.result()
                pending = writer.submit(_insert_batch, con, batch, parameters)
            if pending is not None:
                pending.result()
        con.execute(_TRIPLETS_SQL)
        con.execute("DROP TABLE triplet_counts")
        con.execute("DROP TABLE IF EXISTS batch_occurrences")
        write_metadata(con, "sources", [source])
        write_metadata(con, "inputs", described)
        write_metadata(con, "options", {**options, "absent": absent})
        counts = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("reports", "entities", "relations", "report_triplets", "triplets")
        }
    return BuildSummary(store=path, source=source, seconds=time.perf_counter() - started, **counts)


def describe_input(path: str | os.PathLike, source: str) -> dict[str, Any]:
    """``{"path", "sha256", "bytes", "source"}`` of an input file (absolute path).

    Raises:
        InputError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": path.stat().st_size, "source": source}


def _arrow_batches(records: Iterable[ReportRecord], progress: bool) -> Iterator[dict[str, pa.Table]]:
    """The records as Arrow tables (``reports``, ``entities``, ``relations``), :data:`BATCH_REPORTS`
    reports at a time; a report's records never straddle two batches."""
    from tqdm import tqdm

    columns = {table: {name: [] for name in types if name != "norm"} for table, types in _COLUMNS.items()}
    reports, entities, relations = columns["reports"], columns["entities"], columns["relations"]
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
            if len(reports["report_id"]) >= BATCH_REPORTS:
                yield _to_arrow(columns)
            reports["report_id"].append(report_id)
            reports["text"].append(record.text)
            reports["data_source"].append(record.data_source)
            reports["data_split"].append(record.data_split)
            previous_id = report_id
        annotations.add((report_id, labeler))
        annotated = list(record.entities.values())
        entities["report_id"] += repeat(report_id, len(annotated))
        entities["labeler"] += repeat(labeler, len(annotated))
        entities["entity_id"] += record.entities
        entities["tokens"] += [entity.tokens for entity in annotated]
        entities["label"] += [entity.label for entity in annotated]
        entities["start_ix"] += [entity.start_ix for entity in annotated]
        entities["end_ix"] += [entity.end_ix for entity in annotated]
        pairs = [(entity_id, relation, target)
                 for entity_id, entity in record.entities.items() for relation, target in entity.relations]
        relations["report_id"] += repeat(report_id, len(pairs))
        relations["labeler"] += repeat(labeler, len(pairs))
        relations["head_id"] += [head for head, _, _ in pairs]
        relations["relation"] += [_RELATION_NAMES.get(relation, relation) for _, relation, _ in pairs]
        relations["tail_id"] += [tail for _, _, tail in pairs]
    if reports["report_id"]:
        yield _to_arrow(columns)


def _to_arrow(columns: dict[str, dict[str, list]]) -> dict[str, pa.Table]:
    """Arrow tables of the buffered columns (``norm`` computed here); the buffers are cleared."""
    entities = columns["entities"]
    entities["norm"] = [normalize_entity(tokens) for tokens in entities["tokens"]]
    tables = {
        table: pa.table({name: pa.array(columns[table][name], kind) for name, kind in types.items()})
        for table, types in _COLUMNS.items()
    }
    del entities["norm"]
    for buffered in columns.values():
        for values in buffered.values():
            values.clear()
    return tables


def _insert_batch(con: duckdb.DuckDBPyConnection, batch: dict[str, pa.Table], parameters: dict[str, Any]) -> None:
    """Append one batch to the store and its triplets to ``report_triplets`` and the partial counts."""
    for table, rows in batch.items():
        con.register(f"batch_{table}", rows)
    try:
        for table in batch:
            con.execute(f"INSERT INTO {table} SELECT * FROM batch_{table}")
        con.execute(BATCH_TRIPLETS_SQL, parameters)
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
