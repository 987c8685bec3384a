"""RadGraph-format report records: the one in-memory shape every knowledge source produces.

RadGraph (Jain et al.) annotates a report with entities and relations:

* entity labels: ``ANAT-DP`` (anatomy, definitely present), ``OBS-DP`` (observation, definitely
  present), ``OBS-U`` (observation, uncertain), ``OBS-DA`` (observation, definitely absent);
* relations: ``suggestive_of`` (observation → observation), ``located_at`` (observation → anatomy),
  ``modify`` (modifier → entity).

Token indices ``start_ix`` / ``end_ix`` are inclusive positions in ``text.split()`` (whitespace
tokens), as in the RadGraph release. The RadGraph parser (:mod:`kg.radgraph`), the free-text
extractor (:mod:`kg.extract`) and the synthetic data generator all yield :class:`ReportRecord`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENTITY_LABELS = ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA")
RELATION_TYPES = ("suggestive_of", "located_at", "modify")


@dataclass
class Entity:
    """One annotated span.

    Attributes:
        id: entity id, unique within its report (RadGraph uses ``"1"``, ``"2"``, ...).
        tokens: the span's text as written in the report.
        label: one of :data:`ENTITY_LABELS`.
        start_ix: index of the first whitespace token of the span (inclusive).
        end_ix: index of the last whitespace token of the span (inclusive).
        relations: ``(relation, target entity id)`` pairs, relation in :data:`RELATION_TYPES`.
        source_label: the label as the input wrote it when that differs from ``label`` (a
            RadGraph-XL label such as ``"Anatomy::measurement::definitely present"``, see
            :mod:`kg.radgraph_labels`); ``None`` when the input used ``label`` itself.
    """

    id: str
    tokens: str
    label: str
    start_ix: int
    end_ix: int
    relations: list[tuple[str, str]] = field(default_factory=list)
    source_label: str | None = None

    @property
    def written_label(self) -> str:
        """The label as the input wrote it: :attr:`source_label`, else :attr:`label`."""
        return self.source_label or self.label

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "label": self.label,
            "start_ix": self.start_ix,
            "end_ix": self.end_ix,
            "relations": [[rel, target] for rel, target in self.relations],
        }


@dataclass
class ReportRecord:
    """A report with its RadGraph-format annotation.

    Attributes:
        report_id: id of the report, unique in a corpus.
        text: the report text the token indices refer to.
        entities: entity id → :class:`Entity` (one annotator's set).
        data_source: e.g. ``"MIMIC-CXR"``, ``"CheXpert"``, ``"IU-Xray"``, ``"synthetic"``.
        data_split: e.g. ``"train"``, ``"dev"``, ``"test"``, ``"inference"``.
        labeler: which annotator's entity set this is (``"labeler_1"``), or ``None`` when single.
    """

    report_id: str
    text: str
    entities: dict[str, Entity] = field(default_factory=dict)
    data_source: str | None = None
    data_split: str | None = None
    labeler: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The RadGraph release's per-report mapping (without the report id key)."""
        out: dict[str, Any] = {
            "text": self.text,
            "entities": {eid: ent.to_json() for eid, ent in self.entities.items()},
        }
        if self.data_source is not None:
            out["data_source"] = self.data_source
        if self.data_split is not None:
            out["data_split"] = self.data_split
        return out
