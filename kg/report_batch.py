"""Column buffers of a batch of annotated reports, and their Arrow tables.

A knowledge-store build (:mod:`kg.build`) writes reports in batches. :class:`ReportBatch` collects
a batch's rows column by column, from :class:`~kg.records.ReportRecord` objects
(:meth:`ReportBatch.add_record`) or straight from parsed columns (:meth:`ReportBatch.add_report`
+ :meth:`ReportBatch.add_annotation`, what the RadGraph reader's fast path does, without building
an object per entity). :meth:`ReportBatch.to_arrow` turns the buffers into one Arrow table per
store table, the batch's triplets included (:func:`batch_occurrences`, :func:`triplet_tables`),
plus its share of the corpus triplet counts. That is all a writer needs: a batch can be built
in a worker process and appended by another.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kg.normalize import ABSENT_LABEL, NEGATION_PREFIX, normalize_entity
from kg.records import RELATION_TYPES, ReportRecord

_STR = pa.string()
_INT = pa.int32()
#: Relation name → one shared string object, so the relation column converts to Arrow faster.
RELATION_NAMES = {name: name for name in RELATION_TYPES}

#: The key of a distinct triplet (columns of ``report_triplets`` and ``triplets``).
TRIPLET_COLUMNS = ("head", "relation", "tail", "head_label", "tail_label")
#: Store table (``reports``, ``entities``, ``relations``, ``report_triplets``) or
#: ``triplet_counts`` → that batch's rows (:meth:`ReportBatch.to_arrow`).
ArrowBatch = dict[str, pa.Table]


class AnnotationColumns(NamedTuple):
    """One annotator's entities and relations of one report, column by column.

    Entity columns (one row per entity, in annotation order): ``entity_ids``, ``tokens``,
    ``labels`` (:data:`kg.records.ENTITY_LABELS`), ``starts`` / ``ends`` (inclusive whitespace-token
    indices). Relation columns (one row per relation, in the order of their head entities):
    ``relations`` (:data:`kg.records.RELATION_TYPES`) and ``head_rows`` / ``tail_rows``, the
    position of the head and of the target among this annotation's entities. A target the report
    lacks has tail row ``None`` (it yields no triplet) and its id in ``dangling``, as
    ``(relation position, target id)``. ``source_labels`` are the entity labels as the input wrote
    them (:mod:`kg.radgraph_labels`); ``None`` when they are ``labels`` themselves.
    """

    entity_ids: list[str]
    tokens: list[str]
    labels: list[str]
    starts: list[int]
    ends: list[int]
    relations: list[str]
    head_rows: list[int]
    tail_rows: list[int | None]
    dangling: list[tuple[int, str]] = []
    source_labels: list[str] | None = None

    @classmethod
    def of(cls, record: ReportRecord) -> AnnotationColumns:
        """The columns of ``record``'s entity set."""
        entities = record.entities
        rows = {entity_id: row for row, entity_id in enumerate(entities)}
        pairs = [(rows[entity_id], relation, target)
                 for entity_id, entity in entities.items() for relation, target in entity.relations]
        values = entities.values()
        return cls(
            list(entities),
            [entity.tokens for entity in values],
            [entity.label for entity in values],
            [entity.start_ix for entity in values],
            [entity.end_ix for entity in values],
            [RELATION_NAMES.get(relation, relation) for _, relation, _ in pairs],
            [head for head, _, _ in pairs],
            [rows.get(tail) for _, _, tail in pairs],
            [(k, tail) for k, (_, _, tail) in enumerate(pairs) if tail not in rows],
            [entity.written_label for entity in values],
        )


class ReportBatch:
    """Rows of a batch of reports, kept as Python column lists until :meth:`to_arrow`.

    The ``report_id`` and ``labeler`` columns of entities and relations are not buffered row by
    row: each annotation is stored once with its entity and relation counts, and the columns are
    expanded with Arrow ``take``, which is several times faster for millions of rows.
    """

    def __init__(self) -> None:
        self.reports: dict[str, list] = {"report_id": [], "text": [], "data_source": [], "data_split": []}
        self.annotation_reports: list[int] = []  # batch row of each annotation's report
        self.annotation_labelers: list[str] = []
        self.entity_counts: list[int] = []
        self.relation_counts: list[int] = []
        self.entities: dict[str, list] = {
            "entity_id": [], "tokens": [], "label": [], "source_label": [], "start_ix": [], "end_ix": []}
        self.relations: list[str] = []
        # Rows of each relation's head and tail among its annotation's entities (``None``: a
        # target the report lacks, whose id is in ``dangling`` by batch relation position);
        # :meth:`to_arrow` makes them batch rows and takes the head and tail ids from them.
        self.head_rows: list[int] = []
        self.tail_rows: list[int | None] = []
        self.dangling: list[tuple[int, str]] = []

    @property
    def n_reports(self) -> int:
        return len(self.reports["report_id"])

    def add_report(self, report_id: str, text: str, data_source: str | None, data_split: str | None) -> None:
        """Add a ``reports`` row; the annotations added next belong to it."""
        reports = self.reports
        reports["report_id"].append(report_id)
        reports["text"].append(text)
        reports["data_source"].append(data_source)
        reports["data_split"].append(data_split)

    def add_annotation(self, labeler: str, columns: AnnotationColumns) -> None:
        """Add one annotation of the last added report (``labeler`` ``''`` for single-annotator reports)."""
        entities = self.entities
        entities["entity_id"] += columns.entity_ids
        entities["tokens"] += columns.tokens
        entities["label"] += columns.labels
        entities["source_label"] += columns.labels if columns.source_labels is None else columns.source_labels
        entities["start_ix"] += columns.starts
        entities["end_ix"] += columns.ends
        if columns.dangling:
            first = len(self.relations)
            self.dangling += [(first + position, target) for position, target in columns.dangling]
        self.relations += columns.relations
        self.head_rows += columns.head_rows
        self.tail_rows += columns.tail_rows
        self.annotation_reports.append(self.n_reports - 1)
        self.annotation_labelers.append(labeler)
        self.entity_counts.append(len(columns.entity_ids))
        self.relation_counts.append(len(columns.relations))

    def add_record(self, record: ReportRecord, *, new_report: bool = True) -> None:
        """Add ``record``: its report row (unless ``new_report`` is false: a second labeler's
        record of the report added last) and its annotation."""
        if new_report:
            self.add_report(record.report_id, record.text, record.data_source, record.data_split)
        self.add_annotation(record.labeler or "", AnnotationColumns.of(record))

    def to_arrow(self, absent: str) -> ArrowBatch:
        """The batch as store rows: Arrow tables ``reports``, ``entities``, ``relations``,
        ``report_triplets`` (in the store's column order) and ``triplet_counts`` (this batch's
        share of the corpus counts: ``head, relation, tail, head_label, tail_label, count,
        n_reports``; the store sums the shares of all batches).

        Args:
            absent: :data:`kg.normalize.ABSENT_MODES` entry for ``OBS-DA`` entities' triplets.
        """
        report_ids = pa.array(self.reports["report_id"], _STR)
        annotation_reports = pa.array(self.annotation_reports, _INT)
        ids = report_ids.take(annotation_reports)
        labelers = pa.array(self.annotation_labelers, _STR)
        annotation = np.arange(len(self.annotation_labelers), dtype=np.int32)
        entity_owner = pa.array(np.repeat(annotation, self.entity_counts))
        relation_owner = pa.array(np.repeat(annotation, self.relation_counts))
        entities = self.entities
        entity_ids = pa.array(entities["entity_id"], _STR)
        tokens = pa.array(entities["tokens"], _STR)
        # An annotation's first entity row, repeated for each of its relations: local rows + it = batch rows.
        first_rows = np.repeat(np.cumsum(self.entity_counts, dtype=np.int64) - self.entity_counts, self.relation_counts)
        first_rows = pa.array(first_rows.astype(np.int32))
        head_rows = pc.add(pa.array(self.head_rows, _INT), first_rows)
        tail_rows = pc.add(pa.array(self.tail_rows, _INT), first_rows)
        relations = pa.array(self.relations, _STR)
        tables = {
            "reports": pa.table({name: pa.array(values, _STR) for name, values in self.reports.items()}),
            "entities": pa.table({
                "report_id": ids.take(entity_owner),
                "labeler": labelers.take(entity_owner),
                "entity_id": entity_ids,
                "tokens": tokens,
                "norm": _normalized(tokens),
                "label": pa.array(entities["label"], _STR),
                "source_label": pa.array(entities["source_label"], _STR),
                "start_ix": pa.array(entities["start_ix"], _INT),
                "end_ix": pa.array(entities["end_ix"], _INT),
            }),
            "relations": pa.table({
                "report_id": ids.take(relation_owner),
                "labeler": labelers.take(relation_owner),
                "head_id": entity_ids.take(head_rows),
                "relation": relations,
                "tail_id": self._tail_ids(entity_ids, tail_rows),
            }),
        }
        occurrences = batch_occurrences(
            tables["entities"].append_column("report_row", annotation_reports.take(entity_owner)),
            head_rows, tail_rows, relations, absent,
        )
        tables["report_triplets"], tables["triplet_counts"] = triplet_tables(occurrences, report_ids)
        return tables

    def _tail_ids(self, entity_ids: pa.Array, tail_rows: pa.Array) -> pa.Array:
        """Each relation's target id: its entity's id, or the dangling id of a target the report lacks."""
        tail_ids = entity_ids.take(tail_rows)
        if not self.dangling:
            return tail_ids
        patched = tail_ids.to_pylist()
        for position, target in self.dangling:
            patched[position] = target
        return pa.array(patched, _STR)


def _normalized(tokens: pa.Array) -> pa.Array:
    """:func:`kg.normalize.normalize_entity` of each string, computed once per distinct string."""
    encoded = tokens.dictionary_encode()
    distinct = pa.array([normalize_entity(text) for text in encoded.dictionary.to_pylist()], _STR)
    return distinct.take(encoded.indices)


def batch_occurrences(
    entities: pa.Table, head_rows: pa.Array, tail_rows: pa.Array, relations: pa.Array, absent: str = "negate"
) -> pa.Table:
    """Triplet occurrences of a batch by the rule of :func:`kg.normalize.relation_triplets`.

    Args:
        entities: the batch's ``entities`` rows (columns ``norm``, ``label`` and ``report_row``,
            the batch row of the entity's report).
        head_rows, tail_rows: int32 ``(R,)``, row in ``entities`` of each relation's head and tail;
            a null tail (a target the report lacks) makes no triplet, as in
            :func:`kg.normalize.relation_triplets`.
        relations: string ``(R,)``, each relation's type.
        absent: :data:`kg.normalize.ABSENT_MODES` entry for ``OBS-DA`` entities.

    Returns:
        ``(report_row, head, relation, tail, head_label, tail_label)``, one row per linked
        relation (fewer with ``absent="drop"``), in relation order.
    """
    linked = pc.is_valid(tail_rows)
    head_rows, tail_rows, relations = head_rows.filter(linked), tail_rows.filter(linked), relations.filter(linked)
    labels = entities.column("label")
    is_absent = pc.equal(labels, ABSENT_LABEL)
    texts = entities.column("norm")
    if absent == "negate":
        texts = pc.if_else(is_absent, pc.binary_join_element_wise(NEGATION_PREFIX, texts, ""), texts)
    occurrences = pa.table({
        "report_row": entities.column("report_row").take(head_rows),
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


def triplet_tables(occurrences: pa.Table, report_ids: pa.Array) -> tuple[pa.Table, pa.Table]:
    """``report_triplets`` rows and the corpus-count share of a batch's triplet occurrences.

    Args:
        occurrences: :func:`batch_occurrences` of the batch.
        report_ids: string ``(N,)``, the id of each of the batch's reports (by ``report_row``).

    Returns:
        ``(report_triplets, triplet_counts)``: the distinct triplets of each report, reports in
        batch order and each report's triplets in order of first mention; and per distinct
        triplet its occurrences (``count``) and the reports holding it (``n_reports``).
    """
    numbered = occurrences.append_column("occurrence", pa.array(np.arange(occurrences.num_rows, dtype=np.int32)))
    pairs = numbered.group_by(["report_row", *TRIPLET_COLUMNS], use_threads=False).aggregate(
        [("occurrence", "min"), ([], "count_all")])
    # Arrow does not keep groups in order of first appearance; the first occurrence's number does.
    pairs = pairs.take(pc.sort_indices(pairs.column("occurrence_min")))
    report_triplets = pa.table({
        "report_id": report_ids.take(pairs.column("report_row")),
        **{name: pairs.column(name) for name in TRIPLET_COLUMNS},
    })
    counts = pairs.group_by(list(TRIPLET_COLUMNS), use_threads=False).aggregate(
        [("count_all", "sum"), ([], "count_all")])
    triplet_counts = pa.table({
        **{name: counts.column(name) for name in TRIPLET_COLUMNS},
        "count": counts.column("count_all_sum"),
        "n_reports": counts.column("count_all"),
    })
    return report_triplets, triplet_counts


def concat_batches(batches: list[ArrowBatch]) -> ArrowBatch:
    """Consecutive batches as one (zero-copy): each table's rows, batch after batch."""
    if len(batches) == 1:
        return batches[0]
    return {name: pa.concat_tables([batch[name] for batch in batches]) for name in batches[0]}
