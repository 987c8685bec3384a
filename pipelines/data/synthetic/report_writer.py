"""Write the report of a synthetic study, with its gold RadGraph annotation and label mentions.

The writer fills the templates of :mod:`pipelines.data.synthetic.phrasebook` from the scene's findings and
assembles a FINDINGS section (devices, heart, mediastinum, lungs, pleura, bones; each with its
positive findings and some pertinent negatives) and an IMPRESSION (the main findings by clinical
priority, numbered or not; a normal or "no acute process" statement otherwise).

Because every annotated span is placed by the writer, the RadGraph entities and relations are exact:
token indices refer to the whitespace tokens of the tokenised text (punctuation split off, as in the
RadGraph release: ``"FINDINGS : Small left pleural effusion ."``). The natural text (``"FINDINGS:
Small left pleural effusion."``) differs only in the spaces before punctuation.

Phrasing is random but deterministic: it depends only on ``Scene.style_seed``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kg.records import ENTITY_LABELS, RELATION_TYPES, Entity, ReportRecord
from pipelines.data.synthetic.phrasebook import (
    NEGATIVE_RATE,
    NEGATIVES,
    NO_ACUTE_IMPRESSIONS,
    NORMAL_IMPRESSIONS,
    PHRASES,
    PNEUMONIA_CLAUSES,
    PNEUMONIA_IMPRESSION_CLAUSES,
    PNEUMONIA_SIGNS,
    RIB_ORDINALS,
    SECTIONS,
    check_phrasebook,
)
from kg.label_schema import gk_finding_ids
from pipelines.data.synthetic.scene import FindingInstance, Scene, pneumonia_sign

_SPAN = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_SENTENCE_TAGS = re.compile(r"\s*<([^>]*)>\s*$")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-'/]*|[^\sA-Za-z0-9]")
_POLARITY_RANK = {"+": 3, "?": 2, "-": 1}
_VOWEL_SOUND = re.compile(r"^([aeiouAEIOU]|8|11\b|18\b)")
#: At most this many findings are listed in the IMPRESSION.
MAX_IMPRESSION_ITEMS = 3


@dataclass
class _Span:
    name: str | None
    label: str
    start: int
    end: int
    relations: list[tuple[str, str]]


@dataclass
class Sentence:
    """One parsed sentence: tokens, annotated spans (local names) and label mentions."""

    tokens: list[str]
    spans: list[_Span] = field(default_factory=list)
    mentions: list[tuple[str, str]] = field(default_factory=list)


def parse_template(text: str) -> Sentence:
    """Parse a filled template (no ``{placeholders}`` left) into tokens, spans and mentions.

    Raises:
        ValueError: on an unknown entity label, relation or tag (a defect in the phrasebook).
    """
    sentence_tags: list[str] = []
    tags_match = _SENTENCE_TAGS.search(text)
    if tags_match:
        sentence_tags = tags_match.group(1).split()
        text = text[: tags_match.start()]
    sentence = Sentence(tokens=[])
    position = 0
    for match in _SPAN.finditer(text):
        sentence.tokens += _TOKEN.findall(text[position : match.start()])
        position = match.end()
        words = _TOKEN.findall(match.group(1))
        if not words:
            continue  # an optional slot left empty drops its span, its relations and its tags
        head, *rest = match.group(2).split()
        label, _, name = head.partition("#")
        if label not in ENTITY_LABELS:
            raise ValueError(f"template {text!r}: unknown entity label {label!r}")
        relations = []
        for item in rest:
            if item[0] in "+-?":
                sentence.mentions.append((item[1:], item[0]))
                continue
            relation, _, target = item.partition(">")
            if relation not in RELATION_TYPES or not target:
                raise ValueError(f"template {text!r}: bad relation {item!r}")
            relations.append((relation, target))
        start = len(sentence.tokens)
        sentence.tokens += words
        sentence.spans.append(_Span(name or None, label, start, len(sentence.tokens) - 1, relations))
    sentence.tokens += _TOKEN.findall(text[position:])
    for tag in sentence_tags:
        if tag[0] not in "+-?":
            raise ValueError(f"template {text!r}: bad sentence tag {tag!r}")
        sentence.mentions.append((tag[1:], tag[0]))
    _polish(sentence.tokens)
    return sentence


def _polish(tokens: list[str]) -> None:
    """Capitalise the sentence and turn "a" into "an" before a vowel sound, in place."""
    for i, token in enumerate(tokens):
        if token[0].isalpha():
            tokens[i] = token[0].upper() + token[1:]
            break
    for i in range(len(tokens) - 1):
        if tokens[i] in ("a", "A") and _VOWEL_SOUND.match(tokens[i + 1]):
            tokens[i] += "n"


def detokenize(tokens: list[str]) -> str:
    """Natural text of a token list: no space before ``. , ; :``."""
    return re.sub(r" (?=[.,;:])", "", " ".join(tokens))


class _ReportBuilder:
    """Concatenates sentences, numbering entities ``"1"``, ``"2"``, ... in order of appearance."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.entities: dict[str, Entity] = {}
        self.mentions: dict[str, str] = {}

    def add(self, sentence: Sentence) -> None:
        offset = len(self.tokens)
        self.tokens += sentence.tokens
        local: dict[str, str] = {}
        for span in sentence.spans:
            entity_id = str(len(self.entities) + 1)
            if span.name is not None:
                local[span.name] = entity_id
            self.entities[entity_id] = Entity(
                entity_id, " ".join(sentence.tokens[span.start : span.end + 1]), span.label,
                span.start + offset, span.end + offset,
            )
        for span, entity in zip(sentence.spans, list(self.entities.values())[-len(sentence.spans) :]):
            # Relations to a span dropped as an empty slot are dropped with it.
            entity.relations = [(rel, local[target]) for rel, target in span.relations if target in local]
        for concept, polarity in sentence.mentions:
            if _POLARITY_RANK[polarity] > _POLARITY_RANK.get(self.mentions.get(concept, ""), 0):
                self.mentions[concept] = polarity


@dataclass(frozen=True)
class WrittenReport:
    """A synthetic report with everything derived from how it was written.

    Attributes:
        findings: natural text of the FINDINGS section (without its header).
        impression: natural text of the IMPRESSION section (without its header).
        text: ``"FINDINGS: ... IMPRESSION: ..."``.
        record: gold RadGraph annotation over the tokenised text.
        mentions: concept → strongest polarity written (``"+"`` > ``"?"`` > ``"-"``); concepts are GK
            finding ids plus ``consolidation`` and ``enlarged_cardiomediastinum``.
    """

    findings: str
    impression: str
    text: str
    record: ReportRecord
    mentions: dict[str, str]


def _annotated_phrase(phrase: str) -> str:
    """Markup of a location phrase: every word anatomy, the last one the head ``a``."""
    *modifiers, head = phrase.split()
    spans = [f"[{word}](ANAT-DP#l{i} modify>a)" for i, word in enumerate(modifiers)]
    return " ".join(spans + [f"[{head}](ANAT-DP#a)"])


def location_phrases(side: str, zone: str) -> tuple[list[str], list[str]]:
    """Plain location wordings of a lung zone: ``(nouns, adjectives)``, e.g. "right lower lobe"."""
    if side == "bilateral":
        nouns = {"upper": ["bilateral upper lobes", "lung apices"], "middle": ["bilateral mid lungs"],
                 "lower": ["bilateral lower lobes", "bilateral lung bases"]}
        adjectives = {"upper": ["bilateral upper lobe", "biapical"], "middle": ["bilateral mid lung"],
                      "lower": ["bibasilar", "bilateral lower lobe"]}
        return nouns[zone], adjectives[zone]
    middle_lobe = "right middle lobe" if side == "right" else "lingula"
    nouns = {"upper": [f"{side} upper lobe", f"{side} apex", f"{side} upper lung"],
             "middle": [middle_lobe, f"{side} mid lung"],
             "lower": [f"{side} lower lobe", f"{side} lung base", f"{side} base"]}
    adjectives = {"upper": [f"{side} upper lobe", f"{side} apical"],
                  "middle": ["right middle lobe" if side == "right" else "lingular", f"{side} mid lung"],
                  "lower": [f"{side} lower lobe", f"{side} basilar"]}
    return nouns[zone], adjectives[zone]


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _slots(f: FindingInstance, rng: np.random.Generator) -> dict[str, str]:
    """Placeholder values of one finding instance (see the phrasebook's docstring)."""
    phrases = PHRASES[f.id]
    plural = f.side == "bilateral"
    slots = {
        "pl": "s" if plural else "", "is": "are" if plural else "is", "a": "" if plural else "a",
        "y": "ies" if plural else "y", "es": "es" if plural else "", "clause": "", "sign": "",
        "sev": "", "side": "", "side_anat": "", "loc": "", "loc_adj": "", "convex": f.side or "",
        "mm": str(f.size_mm or ""), "cm": str((f.size_mm or 0) // 10),
        "rib": RIB_ORDINALS[f.rib - 1] if f.rib else "",
    }
    if phrases.severity and f.severity:
        slots["sev"] = f"[{phrases.severity[f.severity - 1]}](OBS-DP#sev modify>o)"
    if f.side:
        slots["side"] = f"[{f.side}](ANAT-DP#side modify>a)"
        slots["side_anat"] = f"[{f.side}](ANAT-DP#a)"
    if f.side and f.zone:
        nouns, adjectives = location_phrases(f.side, f.zone)
        slots["loc"] = _annotated_phrase(_pick(rng, nouns))
        slots["loc_adj"] = _annotated_phrase(_pick(rng, adjectives))
    return slots


def _templates(table: dict[str, tuple[str, ...]], key: str | None) -> tuple[str, ...]:
    return table.get(key or "*") or table.get("*") or ()


def _negatives(section: str, present: set[str], rng: np.random.Generator, rate: float) -> list[str]:
    if rng.random() >= rate:
        return []
    absent = set(gk_finding_ids()) - present - {"normal"}
    candidates = [n for n in NEGATIVES.get(section, ()) if n.requires <= absent]
    chosen: list[str] = []
    covered: set[str] = set()
    for index in rng.permutation(len(candidates)):
        negative = candidates[int(index)]
        if negative.requires & covered or len(chosen) == 2 or (chosen and rng.random() < 0.5):
            continue
        chosen.append(negative.text)
        covered |= negative.requires
    return chosen


def _is_pneumonia_sign(f: FindingInstance, pneumonia: FindingInstance | None) -> bool:
    return (pneumonia is not None and f.id == pneumonia_sign(pneumonia)
            and (f.side, f.zone) == (pneumonia.side, pneumonia.zone))


def _certainty(f: FindingInstance) -> str:
    return "uncertain" if f.uncertain else "certain"


def write_report(scene: Scene, report_id: str, data_source: str = "synthetic") -> WrittenReport:
    """Write the report of ``scene``.

    Args:
        scene: the study.
        report_id: id stored in the RadGraph record.
        data_source: ``data_source`` of the RadGraph record.
    """
    check_phrasebook(gk_finding_ids())
    rng = np.random.default_rng(scene.style_seed)
    builder = _ReportBuilder()
    builder.add(parse_template("FINDINGS :"))
    findings_start = len(builder.tokens)
    present = {f.id for f in scene.findings}
    pneumonia = scene.get("pneumonia")
    for section in SECTIONS:
        for f in scene.findings:
            if PHRASES[f.id].section != section or f.id == "pneumonia":
                continue
            slots = _slots(f, rng)
            if _is_pneumonia_sign(f, pneumonia):
                slots["clause"] = _pick(rng, PNEUMONIA_CLAUSES[_certainty(pneumonia)])
            builder.add(parse_template(_pick(rng, _templates(PHRASES[f.id].findings, f.variant)).format_map(slots)))
        rate = 1.0 if scene.is_normal and section in ("heart", "lungs", "pleura") else NEGATIVE_RATE[section]
        for text in _negatives(section, present, rng, rate):
            builder.add(parse_template(text))
    findings_end = len(builder.tokens)

    builder.add(parse_template("IMPRESSION :"))
    impression_start = len(builder.tokens)
    for text in _impression(scene, rng):
        builder.add(parse_template(text))

    findings = detokenize(builder.tokens[findings_start:findings_end])
    impression = detokenize(builder.tokens[impression_start:])
    record = ReportRecord(report_id, " ".join(builder.tokens), builder.entities, data_source=data_source)
    return WrittenReport(findings, impression, detokenize(builder.tokens), record, dict(builder.mentions))


def _impression(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Filled IMPRESSION templates, in order."""
    if scene.is_normal:
        return [_pick(rng, NORMAL_IMPRESSIONS)]
    pneumonia = scene.get("pneumonia")
    items = []
    for f in scene.findings:
        key = _certainty(f) if f.id == "pneumonia" else f.variant
        if _is_pneumonia_sign(f, pneumonia) or not _templates(PHRASES[f.id].impression, key):
            continue
        items.append((PHRASES[f.id].rank, f, key))
    items.sort(key=lambda item: item[0])
    if not items:
        return [_pick(rng, NO_ACUTE_IMPRESSIONS)]
    numbered = len(items) > 1 and rng.random() < 0.5
    texts = []
    for number, (_, f, key) in enumerate(items[:MAX_IMPRESSION_ITEMS], start=1):
        slots = _slots(f, rng)
        if f.id == "pneumonia":
            slots["sign"] = PNEUMONIA_SIGNS[pneumonia_sign(f)]
            slots["clause"] = _pick(rng, PNEUMONIA_IMPRESSION_CLAUSES[key])
        text = _pick(rng, _templates(PHRASES[f.id].impression, key)).format_map(slots)
        texts.append(f"{number} . {text}" if numbered else text)
    return texts
