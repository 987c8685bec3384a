"""The extractor's radiology lexicon, built from the data files in ``graphs/``.

Three files make the lexicon (none of their lists is repeated in code):

* ``graphs/chest_gk.yaml``: the root and organ nodes give anatomy terms, the finding nodes give
  observation terms carrying the concept ``gk:<finding id>``;
* ``graphs/labels.yaml``: the 14 CheXpert classes; a GK finding listed under a class's ``gk`` implies
  that class, and a class's ``terms`` are observation terms of their own;
* ``graphs/radiology_lexicon.yaml``: further observations, anatomy, modifiers, compositions
  (descriptor + anatomy → concept), ConText cues and suggestive_of cues (its header documents the
  schema).

A *concept* is a label column of :mod:`kg.label`: a CheXpert class name or ``gk:<finding id>``.

Typical use::

    from kg.lexicon import load_lexicon
    lexicon = load_lexicon()
    lexicon.terms["pleural effusion"].concepts   # frozenset({'gk:effusion', 'Pleural Effusion'})
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphs import LABELS, graph_file
from kg.errors import InputError
from kg.files import read_yaml
from kg.gk import ORGAN, ROOT, load_gk
from kg.label_schema import ChexpertClass, load_chexpert_classes

RADIOLOGY_LEXICON = "radiology_lexicon.yaml"

OBS, ANAT, MOD = "OBS", "ANAT", "MOD"
#: modifier kind whose terms modify anatomy (RadGraph labels them ANAT-DP)
LOCATION = "location"
#: modifier kinds that RadGraph annotates as an observation of their own when they modify none
#: ("the cardiac contours are unchanged")
STANDALONE_MODIFIERS = frozenset({"temporal"})
#: ConText categories used by the extractor, keyed by the YAML section name
CONTEXT_CATEGORIES = {
    "negated": "NEGATED_EXISTENCE",
    "uncertain": "POSSIBLE_EXISTENCE",
    "linked_uncertain": "LINKED_POSSIBLE_EXISTENCE",
    "pseudo": "PSEUDO",
    "terminate": "TERMINATE",
}
_DIRECTIONS = {"forward": "FORWARD", "backward": "BACKWARD", "bidirectional": "BIDIRECTIONAL"}
# The GK 'normal' node lists negated phrases ("no acute disease"); these words open such a phrase.
_NEGATION_OPENERS = ("no ", "without ", "negative for ")


class LexiconError(InputError):
    """A lexicon data file breaks the schema (unknown concept, group or term, conflicting kinds)."""


@dataclass(frozen=True)
class Term:
    """One lexicon entry.

    Attributes:
        text: lower-case surface form.
        kind: ``"OBS"`` (observation), ``"ANAT"`` (anatomy) or ``"MOD"`` (modifier).
        concepts: label columns a present mention sets (observations only).
        uncertain: concepts (its own or gained by composition) the term asserts at most as uncertain.
        organ: GK organ id of an anatomy term (``None`` for the root or no organ).
        group: composition group of an anatomy term.
        modifier: modifier kind (``"severity"``, ``"location"`` ...) of a modifier term.
    """

    text: str
    kind: str
    concepts: frozenset[str] = frozenset()
    uncertain: frozenset[str] = frozenset()
    organ: str | None = None
    group: str | None = None
    modifier: str | None = None


@dataclass(frozen=True)
class Composition:
    """Descriptor observation located at an anatomy group → concepts (present, or stated absent)."""

    observations: frozenset[str]
    anatomy: frozenset[str]
    concepts: frozenset[str]
    absent: bool


@dataclass(frozen=True)
class ContextCue:
    """One ConText cue: ``category`` of :data:`CONTEXT_CATEGORIES`, ``direction`` as ConText spells it."""

    text: str
    category: str
    direction: str


@dataclass(frozen=True)
class Lexicon:
    """Everything the rule-based extractor and the labeler read from ``graphs/``.

    Attributes:
        terms: surface form → :class:`Term`.
        compositions: descriptor + anatomy rules.
        context_cues: ConText cues added to medspaCy's English defaults.
        suggestive_cues: phrases joining two observations by ``suggestive_of``.
        anatomy_parts: words naming a part or measure of the anatomy before them ("lung *bases*",
            "heart *size*"); RadGraph makes them modify that anatomy.
        imaging_words: words naming an imaging study ("PA and lateral *chest*", "*view* of the
            chest"); the anatomy they name is the study's, not a finding's, and is no entity.
        chexpert: the CheXpert classes in ``labels.yaml`` order.
        gk_findings: GK finding ids in graph order.
    """

    terms: dict[str, Term]
    compositions: tuple[Composition, ...]
    context_cues: tuple[ContextCue, ...]
    suggestive_cues: tuple[str, ...]
    anatomy_parts: frozenset[str]
    imaging_words: frozenset[str]
    chexpert: tuple[ChexpertClass, ...]
    gk_findings: tuple[str, ...]

    @property
    def label_columns(self) -> list[str]:
        """The 14 CheXpert class names followed by ``gk:<finding id>`` for every GK finding."""
        return [c.name for c in self.chexpert] + [f"gk:{f}" for f in self.gk_findings]

    def of_kind(self, kind: str) -> list[Term]:
        """Terms of one kind (``"OBS"``, ``"ANAT"``, ``"MOD"``), in insertion order."""
        return [t for t in self.terms.values() if t.kind == kind]


# ---------------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=8)
def load_lexicon(
    gk_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    lexicon_path: str | Path | None = None,
) -> Lexicon:
    """Build and validate the lexicon; ``None`` paths use the files shipped in ``graphs/``.

    Raises:
        LexiconError: naming the file, entry and field at fault (unknown concept, organ or group,
            a term given two kinds, a composition naming a term that is not a descriptor).
    """
    gk = load_gk(gk_path)
    chexpert = load_chexpert_classes(labels_path)
    source = Path(lexicon_path) if lexicon_path is not None else graph_file(RADIOLOGY_LEXICON)
    data = _read_yaml(source)
    if not isinstance(data, dict):
        raise LexiconError("top level must be a mapping", file=source)

    findings = tuple(f.id for f in gk.findings)
    columns = {c.name for c in chexpert} | {f"gk:{f}" for f in findings}
    implied: dict[str, set[str]] = {f: set() for f in findings}
    for cls in chexpert:
        for finding in cls.gk:
            if finding not in implied:
                raise LexiconError(f"unknown GK finding {finding!r}", file=graph_file(LABELS), record=cls.name, field="gk")
            implied[finding].add(cls.name)

    builder = _TermTable(source)
    for node in gk.nodes:
        if node.type in (ROOT, ORGAN):
            for form in node.surface_forms:
                builder.add(Term(form, ANAT, organ=node.id if node.type == ORGAN else None, group=node.id), gk.source)
            continue
        concepts = frozenset({f"gk:{node.id}"} | implied[node.id])
        for form in node.surface_forms:
            opener = next((o for o in _NEGATION_OPENERS if form.startswith(o)), None)
            if opener is not None:
                # Matched without its negation word so ConText sees "no" and marks the rest absent,
                # as RadGraph annotates "no acute disease" (OBS-DA), instead of a positive "normal".
                builder.add(Term(form[len(opener):].strip(), OBS), gk.source)
            else:
                builder.add(Term(form, OBS, concepts=concepts), gk.source)
    for cls in chexpert:
        for form in cls.terms:
            builder.add(Term(form.lower(), OBS, concepts=frozenset({cls.name})), graph_file(LABELS))

    organs = {n.id for n in gk.organs}
    for i, raw in enumerate(_list(data, "observations", source)):
        record = f"observations[{i}]"
        concepts = frozenset(_strings(raw.get("concepts"), source, record, "concepts"))
        _check_concepts(concepts, columns, source, record, "concepts")
        concepts = _with_implied(concepts, implied)
        uncertain = frozenset(_strings(raw.get("uncertain"), source, record, "uncertain"))
        _check_concepts(uncertain, columns, source, record, "uncertain")
        for form in _strings(raw.get("terms"), source, record, "terms", required=True):
            builder.add(Term(form.lower(), OBS, concepts=concepts, uncertain=uncertain), source)
    for i, raw in enumerate(_list(data, "anatomy", source)):
        record = f"anatomy[{i}]"
        organ = raw.get("organ")
        if organ is not None and organ not in organs:
            raise LexiconError(f"unknown GK organ {organ!r}; organs are {sorted(organs)}", file=source, record=record, field="organ")
        group = raw.get("group") or organ
        for form in _strings(raw.get("terms"), source, record, "terms", required=True):
            builder.add(Term(form.lower(), ANAT, organ=organ, group=group), source, override_group=True)
    modifiers = data.get("modifiers") or {}
    if not isinstance(modifiers, dict):
        raise LexiconError("must map a modifier kind to a list of terms", file=source, field="modifiers")
    for kind, forms in modifiers.items():
        for form in _strings(forms, source, f"modifiers.{kind}", "terms", required=True):
            builder.add(Term(form.lower(), MOD, modifier=str(kind)), source)

    terms = builder.terms
    groups = {t.group for t in terms.values() if t.kind == ANAT and t.group}
    compositions = []
    for i, raw in enumerate(_list(data, "compositions", source)):
        record = f"compositions[{i}]"
        observations = frozenset(s.lower() for s in _strings(raw.get("observations"), source, record, "observations", required=True))
        for form in sorted(observations):
            if form not in terms or terms[form].kind != OBS:
                raise LexiconError(f"{form!r} is not an observation term of the lexicon", file=source, record=record, field="observations")
        anatomy = frozenset(_strings(raw.get("anatomy"), source, record, "anatomy", required=True))
        if not anatomy <= groups:
            raise LexiconError(f"unknown anatomy groups {sorted(anatomy - groups)}; known: {sorted(groups)}", file=source, record=record, field="anatomy")
        concepts = frozenset(_strings(raw.get("concepts"), source, record, "concepts", required=True))
        _check_concepts(concepts, columns, source, record, "concepts")
        absent = raw.get("absent", False)
        if not isinstance(absent, bool):
            raise LexiconError("must be true or false", file=source, record=record, field="absent")
        compositions.append(Composition(observations, anatomy, _with_implied(concepts, implied), absent))

    return Lexicon(
        terms=terms,
        compositions=tuple(compositions),
        context_cues=tuple(_context_cues(data.get("context") or {}, source)),
        suggestive_cues=tuple(s.lower() for s in _strings(data.get("suggestive_of"), source, "suggestive_of", "suggestive_of")),
        anatomy_parts=frozenset(s.lower() for s in _strings(data.get("anatomy_parts"), source, "anatomy_parts", "anatomy_parts")),
        imaging_words=frozenset(s.lower() for s in _strings(data.get("imaging"), source, "imaging", "imaging")),
        chexpert=tuple(chexpert),
        gk_findings=findings,
    )


class _TermTable:
    """Collects terms from several files; a repeated observation term merges its concepts."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.terms: dict[str, Term] = {}
        self._origin: dict[str, Path | None] = {}

    def add(self, term: Term, origin: Path | None, override_group: bool = False) -> None:
        if not term.text:
            raise LexiconError("empty term", file=origin)
        old = self.terms.get(term.text)
        if old is None:
            self.terms[term.text] = term
            self._origin[term.text] = origin
            return
        if old.kind != term.kind:
            raise LexiconError(
                f"term {term.text!r} is {old.kind} in {self._origin[term.text]} and {term.kind} here", file=origin
            )
        if term.kind == OBS:
            merged = Term(term.text, OBS, old.concepts | term.concepts, old.uncertain | term.uncertain)
        elif term.kind == ANAT:
            merged = Term(term.text, ANAT, organ=old.organ or term.organ, group=term.group if override_group else old.group)
        else:
            merged = term if override_group else old
        self.terms[term.text] = merged


def _context_cues(raw: Any, source: Path) -> list[ContextCue]:
    if not isinstance(raw, dict):
        raise LexiconError("must be a mapping of cue categories", file=source, field="context")
    cues = []
    for section, value in raw.items():
        if section not in CONTEXT_CATEGORIES:
            raise LexiconError(f"unknown cue category {section!r}; known: {sorted(CONTEXT_CATEGORIES)}", file=source, field="context")
        category = CONTEXT_CATEGORIES[section]
        if category in ("PSEUDO", "TERMINATE"):
            for text in _strings(value, source, f"context.{section}", section, required=True):
                cues.append(ContextCue(text.lower(), category, category))
            continue
        if not isinstance(value, dict):
            raise LexiconError("must map forward/backward/bidirectional to lists", file=source, record=f"context.{section}")
        for direction, forms in value.items():
            if direction not in _DIRECTIONS:
                raise LexiconError(f"unknown direction {direction!r}", file=source, record=f"context.{section}", field=direction)
            for text in _strings(forms, source, f"context.{section}", direction, required=True):
                cues.append(ContextCue(text.lower(), category, _DIRECTIONS[direction]))
    return cues


def _with_implied(concepts: frozenset[str], implied: dict[str, set[str]]) -> frozenset[str]:
    extra: set[str] = set()
    for concept in concepts:
        if concept.startswith("gk:"):
            extra |= implied.get(concept[3:], set())
    return concepts | extra


def _check_concepts(concepts: frozenset[str], columns: set[str], source: Path, record: str, field: str) -> None:
    unknown = sorted(concepts - columns)
    if unknown:
        raise LexiconError(
            f"unknown concepts {unknown}: use a CheXpert class name or gk:<finding id>", file=source, record=record, field=field
        )


def _read_yaml(source: Path) -> Any:
    return read_yaml(source, missing="lexicon data file not found", error=LexiconError)


def _list(data: dict[str, Any], key: str, source: Path) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise LexiconError("must be a list of mappings", file=source, field=key)
    return value


def _strings(value: Any, source: Path, record: str, field: str, required: bool = False) -> tuple[str, ...]:
    if value is None:
        value = []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and any(isinstance(v, bool) for v in value):
        raise LexiconError(
            "must be a list of strings; quote words YAML reads as booleans (no, yes, on, off)", file=source, record=record, field=field
        )
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LexiconError("must be a list of non-empty strings", file=source, record=record, field=field)
    if required and not value:
        raise LexiconError("must not be empty", file=source, record=record, field=field)
    return tuple(" ".join(v.split()) for v in value)
