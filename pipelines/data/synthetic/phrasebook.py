"""Report wording of the synthetic generator: sentence templates with their RadGraph annotation inline.

The wording is data, in ``phrasebook.yaml`` beside this module (its header documents the schema);
this module reads and checks it once, on import, into the constants below.

Template markup (parsed by :mod:`pipelines.data.synthetic.report_writer`):

* ``[words](LABEL#name rel>target ... +concept -concept ?concept)`` is an annotated span: ``LABEL``
  is a RadGraph entity label, ``name`` a handle local to the sentence, ``rel>target`` a relation
  to another span of the sentence (``located_at``, ``modify``, ``suggestive_of``), and ``+c`` /
  ``-c`` / ``?c`` mark the span as a positive / negated / uncertain mention of concept ``c`` (a GK
  finding id, or ``consolidation`` / ``enlarged_cardiomediastinum`` for the two CheXpert classes
  without a GK node). Mentions drive the CheXpert labels; the spans become the gold RadGraph record.
* ``{placeholder}`` is filled first from the finding instance (see ``report_writer``); a
  placeholder may expand to annotated spans itself (``{loc}``, ``{sev}``, ``{side}``).
* ``<+c ...>`` at the end of a template tags the whole sentence (used where no single span carries
  the concept, e.g. "No acute cardiopulmonary abnormality" for ``normal``).

By convention a template's main observation span is named ``o`` and its main anatomy span ``a``;
``{sev}`` modifies ``o``, ``{side}`` modifies ``a`` and ``{loc}`` / ``{loc_adj}`` end in ``a``.

Every GK finding of ``graphs/chest_gk.yaml`` has an entry (checked by :func:`check_phrasebook`); the
wording avoids surface forms of other findings (``density``, ``line``, ``mass``, ...) so that a
text labeler reading a sentence finds only the finding it describes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.errors import InputError
from kg.files import read_yaml

#: The phrase book's data file.
PHRASEBOOK_FILE = Path(__file__).resolve().parent / "phrasebook.yaml"


@dataclass(frozen=True)
class FindingPhrases:
    """How one GK finding is written.

    Attributes:
        section: FINDINGS section it is reported in (one of :data:`SECTIONS`).
        name: short name used in VQA questions and answers, per variant (``"*"`` = any).
        question: closed VQA question asking whether the finding is present, per variant.
        severity: adjectives for severity 1, 2, 3, or ``None``.
        findings: FINDINGS sentences per variant (``"*"`` = any variant).
        impression: IMPRESSION sentences per variant; empty for findings left out of the impression.
        rank: position in the IMPRESSION (lower first).
    """

    section: str
    name: dict[str, str]
    question: dict[str, str]
    severity: tuple[str, str, str] | None
    findings: dict[str, tuple[str, ...]]
    impression: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rank: int = 99


@dataclass(frozen=True)
class Negative:
    """A pertinent-negative sentence.

    Attributes:
        text: template (no placeholders).
        requires: GK findings that must all be absent for the sentence to be true.
    """

    text: str
    requires: frozenset[str]


def load_phrasebook(path: Path = PHRASEBOOK_FILE) -> dict[str, Any]:
    """The phrase book of ``path``: its YAML with sentences as tuples and the entries as
    :class:`FindingPhrases` (``findings``) and :class:`Negative` (``negatives``).

    Raises:
        InputError: naming the file, entry and field that breaks the schema.
    """
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError("top level must be a mapping", file=path)
    missing = [key for key in _KEYS if key not in data]
    if missing:
        raise InputError(f"missing sections {missing}", file=path)
    book = dict(data)
    book["sections"] = _strings(data["sections"], path, "sections")
    book["findings"] = {fid: _finding(entry, path, f"findings.{fid}") for fid, entry in _mapping(data, "findings", path).items()}
    for key in ("pneumonia_clauses", "pneumonia_impression_clauses"):
        book[key] = {kind: _strings(texts, path, f"{key}.{kind}") for kind, texts in _mapping(data, key, path).items()}
    book["negatives"] = {
        section: tuple(_negative(entry, path, f"negatives.{section}[{i}]") for i, entry in enumerate(entries))
        for section, entries in _mapping(data, "negatives", path).items()
    }
    for key in ("normal_impressions", "no_acute_impressions", "rib_ordinals"):
        book[key] = _strings(data[key], path, key)
    return book


_KEYS = ("sections", "findings", "pneumonia_clauses", "pneumonia_signs", "pneumonia_impression_clauses", "negatives",
         "negative_rate", "normal_impressions", "no_acute_impressions", "rib_ordinals")


def _mapping(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise InputError("must be a mapping", file=path, field=key)
    return value


def _strings(value: Any, path: Path, record: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError("must be a list of strings", file=path, record=record)
    return tuple(value)


def _finding(entry: Any, path: Path, record: str) -> FindingPhrases:
    if not isinstance(entry, dict):
        raise InputError("must be a mapping", file=path, record=record)
    unknown = sorted(set(entry) - {f for f in FindingPhrases.__dataclass_fields__})
    if unknown:
        raise InputError(f"unknown fields {unknown}", file=path, record=record)
    try:
        severity = entry.get("severity")
        return FindingPhrases(
            section=entry["section"],
            name=dict(entry["name"]),
            question=dict(entry["question"]),
            severity=None if severity is None else tuple(_strings(severity, path, f"{record}.severity")),
            findings={k: _strings(v, path, f"{record}.findings.{k}") for k, v in entry["findings"].items()},
            impression={k: _strings(v, path, f"{record}.impression.{k}") for k, v in (entry.get("impression") or {}).items()},
            rank=int(entry.get("rank", 99)),
        )
    except KeyError as err:
        raise InputError("missing field", file=path, record=record, field=str(err.args[0])) from None


def _negative(entry: Any, path: Path, record: str) -> Negative:
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        raise InputError("must be a mapping with a 'text'", file=path, record=record)
    return Negative(entry["text"], frozenset(_strings(entry.get("requires", []), path, f"{record}.requires")))


_BOOK = load_phrasebook()
#: Order of the FINDINGS section, as a radiologist reads a chest film.
SECTIONS: tuple[str, ...] = _BOOK["sections"]
#: How each GK finding is written.
PHRASES: dict[str, FindingPhrases] = _BOOK["findings"]
#: Clauses appended to the sentence of the opacity or consolidation that shows a pneumonia.
PNEUMONIA_CLAUSES: dict[str, tuple[str, ...]] = _BOOK["pneumonia_clauses"]
#: The pneumonia sign as it is named in the IMPRESSION, per sign finding.
PNEUMONIA_SIGNS: dict[str, str] = _BOOK["pneumonia_signs"]
#: IMPRESSION clauses naming the pneumonia after its sign (span ``o``).
PNEUMONIA_IMPRESSION_CLAUSES: dict[str, tuple[str, ...]] = _BOOK["pneumonia_impression_clauses"]
#: Pertinent negatives per FINDINGS section.
NEGATIVES: dict[str, tuple[Negative, ...]] = _BOOK["negatives"]
#: How often a section's pertinent negatives are written at all.
NEGATIVE_RATE: dict[str, float] = _BOOK["negative_rate"]
#: IMPRESSION of a study with no finding (tagged ``normal``).
NORMAL_IMPRESSIONS: tuple[str, ...] = _BOOK["normal_impressions"]
#: IMPRESSION when only findings left out of the impression are present.
NO_ACUTE_IMPRESSIONS: tuple[str, ...] = _BOOK["no_acute_impressions"]
#: Ordinal words of rib numbers.
RIB_ORDINALS: tuple[str, ...] = _BOOK["rib_ordinals"]


def check_phrasebook(finding_ids: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless every GK finding has phrases and every section is known."""
    missing = [fid for fid in finding_ids if fid not in PHRASES]
    unknown = [fid for fid in PHRASES if fid not in finding_ids]
    if missing or unknown:
        raise ValueError(f"phrasebook out of date with the GK graph: missing {missing}, unknown {unknown}")
    for fid, phrases in PHRASES.items():
        if phrases.section not in SECTIONS:
            raise ValueError(f"phrasebook entry {fid!r}: unknown section {phrases.section!r}")
