"""Specific knowledge for training: a ``kg`` store of the training reports and each study's SK sentence.

MOTOR's report queue holds, next to each report's features, the SK sentence of that report: its
RadGraph triplets as one phrase list (``KnowledgeBase.sk_sentence``). The store is built once from
the **training split only** (validation and test reports must not leak into the knowledge the model
retrieves), from gold RadGraph annotations when the data set ships them (the synthetic set's
``radgraph.json``) and otherwise by running ``kg.extract`` on the report texts. The sentences are
computed once before training, never per step.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.errors import InputError
from kg.sk_order import DEFAULT_SK_ORDER
from model.variants import knowledge_variant

STORE_NAME = "sk.duckdb"


def uses_sk(knowledge: str) -> bool:
    """Whether the knowledge switch ``knowledge`` has an SK path."""
    return knowledge_variant(knowledge).sk


@dataclass
class StoreStats:
    """Size of a knowledge store, for printing.

    Attributes:
        reports, entities, relations, triplets: row counts (``triplets`` = distinct corpus triplets).
        top_triplets: the most frequent ``(head, relation, tail, count)``.
        source: ``radgraph`` (gold annotations) or ``reports`` (extracted with ``kg.extract``).
    """

    reports: int
    entities: int
    relations: int
    triplets: int
    top_triplets: list[tuple[str, str, str, int]] = field(default_factory=list)
    source: str = ""

    def __str__(self) -> str:
        lines = [
            f"knowledge store ({self.source}): {self.reports} reports, {self.entities} entities, "
            f"{self.relations} relations, {self.triplets} distinct triplets"
        ]
        lines += [f"  {count:6d}  {head} --{relation}--> {tail}" for head, relation, tail, count in self.top_triplets]
        return "\n".join(lines)


def _radgraph_records(radgraph_path: Path, keep: set[str]) -> Iterator[Any]:
    from kg.radgraph_reader import RadGraphReader

    for record in RadGraphReader([radgraph_path]):
        if record.report_id in keep:
            yield record


def _extracted_records(studies: Sequence[tuple[str, str]]) -> Iterator[Any]:
    from kg.extract import extract_text

    for study_id, report in studies:
        yield extract_text(study_id, report)


def build_training_store(
    studies: Sequence[tuple[str, str]],
    store_path: str | os.PathLike,
    *,
    radgraph_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> StoreStats:
    """Build a ``kg`` store of the training reports.

    Args:
        studies: ``(study_id, report text)`` of the training split.
        store_path: the DuckDB file to write (atomically replaced when it exists).
        radgraph_path: gold RadGraph-format annotations keyed by study id; those of ``studies`` are
            used. ``None`` extracts entities and relations from the texts with ``kg.extract``.
        progress: show the build's progress bar.

    Returns:
        The store's :class:`StoreStats`.

    Raises:
        InputError: ``studies`` is empty, or annotations are missing for a training study.
    """
    from kg.build import build_store

    if not studies:
        raise InputError("no training studies to build the knowledge store from", field="split")
    store_path = Path(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    if radgraph_path is not None:
        radgraph_path = Path(radgraph_path)
        records = _radgraph_records(radgraph_path, {study_id for study_id, _ in studies})
        source, inputs = "radgraph", [radgraph_path]
    else:
        records = _extracted_records(studies)
        source, inputs = "reports", []
    build_store(records, store_path, source=source, inputs=inputs, options={"split": "train"}, progress=progress)
    stats = store_stats(store_path)
    if radgraph_path is not None and stats.reports != len(studies):
        raise InputError(
            f"annotations cover {stats.reports} of the {len(studies)} training studies", file=radgraph_path
        )
    return stats


def store_stats(store_path: str | os.PathLike, top: int = 5) -> StoreStats:
    """Row counts and the ``top`` most frequent triplets of a store."""
    from kg.store import open_store
    from kg.store import store_stats as read_stats

    con = open_store(store_path, read_only=True)
    try:
        stats = read_stats(con, top=top)
    finally:
        con.close()
    tables = stats["tables"]
    return StoreStats(
        reports=tables["reports"],
        entities=tables["entities"],
        relations=tables["relations"],
        triplets=tables["triplets"],
        top_triplets=[(t["head"], t["relation"], t["tail"], int(t["count"])) for t in stats["top_triplets"]],
        source=", ".join(stats["metadata"].get("sources", [])),
    )


def sk_sentences(
    store_path: str | os.PathLike, study_ids: Sequence[str], *, max_tokens: int = 90, tokenizer: Any = None,
    order: str = DEFAULT_SK_ORDER,
) -> dict[str, str]:
    """Each study's own SK sentence (``kb.sk_sentence([study_id])``), computed once.

    Args:
        store_path: a store holding every id of ``study_ids``.
        max_tokens: budget counted with ``tokenizer`` (without special tokens).
        tokenizer: the model's tokenizer, so the budget matches what the SK encoder reads; ``None``
            counts whitespace tokens.
        order: triplet order (``sk_order``, :mod:`kg.sk_order`).

    Returns:
        study id → sentence (empty when a report has no triplet).
    """
    from kg.retrieval import KnowledgeBase

    with KnowledgeBase.open(store_path) as kb:
        return {study_id: kb.sk_sentence([study_id], max_tokens=max_tokens, tokenizer=tokenizer, order=order)
                for study_id in study_ids}
