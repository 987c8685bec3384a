"""ARL's entity sequence per report, prepared once before training.

Each study's report gets its entity mentions: from the gold RadGraph annotations shipped beside
the manifest (``radgraph.json``; the synthetic set has them) when they cover the study, else
extracted with ``kg.extract`` (the rules back-end, as the ``kg`` store of the training reports
is built). A mention is named by ``kg.normalize.normalize_entity`` of its text (the store's
``norm`` column), and located in the report text as a character span. The entity vocabulary is
the distinct names of the **training** split's mentions (most frequent first), so validation and
test reports never add entities; their mentions outside the vocabulary are dropped.

:class:`EntityCollator` wraps the model's collator and adds, per batch, what
:class:`model.m3ae.M3AEModel` reads: ``entity_ids`` (B, E), ``entity_position_map`` (B, E, L)
(P) and ``entity_spans`` (token spans, for LK).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from kg.errors import InputError


@dataclass(frozen=True)
class Mention:
    """One entity mention: its normalised name and ``[start, end)`` character span in the report."""

    name: str
    start: int
    end: int


def needs_entities(model_config: Any) -> bool:
    """Whether a model config reads entity sequences (ARL with AK, RK or LK on)."""
    parts = getattr(model_config, "parts", None)
    return parts is not None and (parts.knowledge.uses_entities or parts.knowledge.lk)


def report_mentions(studies: Sequence[tuple[str, str]], radgraph_path: Path | None = None) -> dict[str, list[Mention]]:
    """``{study_id: mentions}`` of ``(study_id, report)`` pairs (module docstring)."""
    from kg.extract import extract_text

    gold: dict[str, Any] = {}
    if radgraph_path is not None:
        from kg.radgraph_reader import RadGraphReader

        wanted = {study_id for study_id, _ in studies}
        gold = {r.report_id: r for r in RadGraphReader([radgraph_path]) if r.report_id in wanted}
    return {study_id: locate_mentions(report, gold.get(study_id) or extract_text(study_id, report))
            for study_id, report in studies}


def locate_mentions(report: str, record: Any) -> list[Mention]:
    """The entities of a RadGraph-format ``record`` as character spans of ``report``.

    The record's spans index its own whitespace tokens, which need not be the report's (the
    extractor splits punctuation off), so each mention's text is searched for in the report,
    left to right in span order and case-insensitively; a mention not found is dropped.
    """
    from kg.normalize import normalize_entity

    lowered = report.lower()
    mentions, cursor = [], 0
    for entity in sorted(record.entities.values(), key=lambda e: (e.start_ix, e.end_ix)):
        text = entity.tokens.lower()
        start = lowered.find(text, cursor)
        if start < 0:
            start = lowered.find(text)
        name = normalize_entity(entity.tokens)
        if start < 0 or not name:
            continue
        mentions.append(Mention(name, start, start + len(text)))
        cursor = start + len(text)
    return mentions


def entity_vocabulary(mentions: Mapping[str, Sequence[Mention]]) -> list[str]:
    """Distinct entity names, most frequent first (ties by name).

    Raises:
        InputError: no report has an entity (ARL's knowledge parts would have nothing to read).
    """
    counts = Counter(m.name for found in mentions.values() for m in found)
    if not counts:
        raise InputError("no training report has an entity: ARL's knowledge parts need some", field="entities")
    return sorted(counts, key=lambda name: (-counts[name], name))


class EntitySamples(Dataset):
    """A study dataset whose items also carry ``"mentions"`` (their report's :class:`Mention` list).

    Args:
        samples: items with ``"report"`` and ``"index"`` (e.g. ``MotorSamples``), and a
            ``studies`` attribute whose ``study_texts`` give the study ids in order.
        mentions: study id → mentions.
    """

    def __init__(self, samples: Dataset, mentions: Mapping[str, Sequence[Mention]]) -> None:
        from pipelines.data.motor_samples import study_texts

        self.samples = samples
        self.study_ids = [study_id for study_id, _ in study_texts(samples.studies)]
        self.mentions = mentions

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def studies(self) -> Dataset:
        """The underlying study dataset (its manifest records give ids and reports)."""
        return self.samples.studies

    def reports(self) -> list[str]:
        """Every study's report, in order (as ``MotorSamples.reports``)."""
        return self.samples.reports()

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.samples[index], "mentions": list(self.mentions.get(self.study_ids[index], ()))}


class EntityCollator:
    """The model's collator plus each report's entities (module docstring).

    Args:
        collate: the model's collator (``model.processing.MotorCollator``).
        entity_names: the entity vocabulary (row order of the model's entity table).
    """

    def __init__(self, collate: Any, entity_names: Sequence[str]) -> None:
        self.collate = collate
        self.rows = {name: i for i, name in enumerate(entity_names)}

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from model.arl_knowledge import PADDING_ENTITY, entity_position_map, entity_token_spans

        batch = self.collate(samples)
        length = batch["input_ids"].shape[1]
        tokenizer = self.collate.tokenizer
        ids, spans = [], []
        for sample in samples:
            offsets = tokenizer(sample["report"], truncation=True, max_length=self.collate.max_len,
                                return_offsets_mapping=True)["offset_mapping"]
            known = [m for m in sample.get("mentions", ()) if m.name in self.rows]
            token_spans = entity_token_spans(offsets, [(m.start, m.end) for m in known])
            # Mentions cut off by truncation (empty token spans) are dropped with their entity.
            kept = [(self.rows[m.name], span) for m, span in zip(known, token_spans) if span[1] > span[0]]
            ids.append([row for row, _ in kept])
            spans.append([span for _, span in kept])
        width = max(1, max(len(row) for row in ids))
        batch["entity_ids"] = torch.tensor([row + [PADDING_ENTITY] * (width - len(row)) for row in ids],
                                           dtype=torch.long)
        batch["entity_position_map"] = entity_position_map(spans, length)
        if batch["entity_position_map"].shape[1] < width:  # no entity in the whole batch
            batch["entity_position_map"] = torch.zeros(len(samples), width, length)
        batch["entity_spans"] = spans
        return batch


@dataclass
class EntityData:
    """Mentions of every study and the training vocabulary; wraps datasets and the collator."""

    mentions: dict[str, list[Mention]]
    names: list[str]

    @classmethod
    def prepare(cls, splits: Mapping[str, Sequence[tuple[str, str]]], radgraph_path: Path | None,
                names: Sequence[str] | None = None) -> EntityData:
        """Mentions of the ``{split: [(study_id, report)]}`` studies; the vocabulary from ``train``,
        unless ``names`` (a pretrained model's vocabulary) is given."""
        mentions: dict[str, list[Mention]] = {}
        for studies in splits.values():
            mentions.update(report_mentions(studies, radgraph_path))
        if names is None:
            names = entity_vocabulary({study_id: mentions[study_id] for study_id, _ in splits["train"]})
        return cls(mentions=mentions, names=list(names))

    def samples(self, samples: Dataset) -> EntitySamples:
        """``samples`` with each item's mentions."""
        return EntitySamples(samples, self.mentions)

    def collator(self, collate: Any) -> EntityCollator:
        """``collate`` extended with the entity tensors."""
        return EntityCollator(collate, self.names)
