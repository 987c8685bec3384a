"""From a processed report doc to RadGraph entities and relations, and to label mentions.

Input is a doc from :class:`kg.extract_pipeline.ReportNLP` (sentences, ``doc.ents`` labelled
``OBS`` / ``ANAT`` / ``MOD`` with their lexicon :class:`~kg.lexicon.Term` in ``span._.kg_term``,
ConText attributes on observations). The rules, applied within one sentence:

* **certainty**: negated → ``OBS-DA`` (also when a cue makes it uncertain too: CheXpert applies
  negation first); else uncertain (hedged, conditional or inferred: "may", "if", "suggestive of")
  → ``OBS-U``; else ``OBS-DP``.
* **split phrases**: a lexicon phrase made of anatomy + observation (``pleural effusion``,
  ``enlarged heart``) becomes two entities joined by ``located_at``, as RadGraph annotates them.
* **modify**: a location word (``left``, ``bibasilar``) modifies the anatomy that follows it, or
  becomes the location of the observation that follows (or precedes) it; any other modifier
  (severity, size, morphology, time) modifies the nearest observation to its right across other
  modifiers and anatomy, else the one just before it (``effusion is small``). At most two other
  words may sit between a modifier and its target. Modifiers with no target are dropped.
* **located_at**: every other anatomy entity is the location of the nearest observation in its
  sentence (ties go to the observation before it; an observation before a locative preposition wins:
  "opacity in the left lung"), and of the observations coordinated with that one by and / or /
  commas ("lungs are hyperexpanded and clear").
* **suggestive_of**: ``X <cue> Y`` (``opacity, likely atelectasis``; ``may represent``;
  ``consistent with``): the observation before the cue → each observation after it, up to the next
  cue or clause break ("but", "although").

Each observation also yields a :class:`Mention`: the label columns it sets, from its lexicon
concepts and from compositions with its anatomy (``heart`` + ``enlarged`` → cardiomegaly).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kg.lexicon import ANAT, LOCATION, MOD, OBS, Lexicon, Term
from kg.records import Entity

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from kg.extract_pipeline import ReportNLP

PRESENT, ABSENT, UNCERTAIN = 1, 0, -1
_OBS_LABELS = {PRESENT: "OBS-DP", ABSENT: "OBS-DA", UNCERTAIN: "OBS-U"}
#: label columns computed from all other columns, never set by a mention
COMPUTED_COLUMNS = frozenset({"No Finding", "gk:normal"})
_COORDINATION = frozenset({"and", "or", ",", "/", "and/or"})
_MAX_MODIFIER_GAP = 2
_MAX_LEFT_GAP = 3
# English prepositions that put an anatomy phrase after the observation it locates:
# "opacity in the right lower lobe may represent pneumonia" locates the opacity, not the pneumonia.
_LOCATIVE = frozenset(
    {"in", "at", "within", "of", "involving", "along", "over", "overlying", "near", "throughout",
     "through", "behind", "beneath", "below", "above", "projecting", "adjacent", "abutting", "from"}
)


@dataclass(frozen=True)
class Mention:
    """What one observation entity says about the label columns.

    Attributes:
        entity_id: id of the observation entity in its record.
        text: the entity's tokens.
        labels: label column → 1 (present), 0 (absent) or -1 (uncertain).
    """

    entity_id: str
    text: str
    labels: dict[str, int]


@dataclass(eq=False)
class _Item:
    kind: str
    start: int
    end: int
    sentence: int
    term: Term | None
    certainty: int = PRESENT
    links: list[tuple[str, "_Item"]] = field(default_factory=list)
    locations: list["_Item"] = field(default_factory=list)
    target: "_Item | None" = None
    keep: bool = True

    @property
    def is_location(self) -> bool:
        return self.kind == MOD and self.term is not None and self.term.modifier == LOCATION


def build_graph(doc: "Doc", nlp: "ReportNLP") -> tuple[list[str], list[Entity], list[Mention]]:
    """Entities, relations and mentions of one processed doc.

    Returns:
        ``(words, entities, mentions)``: the whitespace tokens of the record text (``" ".join``
        gives it), the RadGraph entities (ids ``"1"``, ``"2"``... in text order, inclusive word
        spans) and one mention per observation entity.
    """
    word_of: dict[int, int] = {}
    words: list[str] = []
    for token in doc:
        if not token.is_space:
            word_of[token.i] = len(words)
            words.append(token.text)
    sentence_of: dict[int, int] = {}
    for s, sent in enumerate(doc.sents):
        for token in sent:
            sentence_of[token.i] = s

    items = _items(doc, nlp, word_of, sentence_of)
    by_sentence: dict[int, list[_Item]] = {}
    for item in items:
        by_sentence.setdefault(item.sentence, []).append(item)
    for sentence_items in by_sentence.values():
        _attach_modifiers(sentence_items)
        _attach_anatomy(sentence_items, words)
    _attach_suggestive(doc, nlp, words, word_of, sentence_of, by_sentence)

    kept = sorted((i for i in items if i.keep), key=lambda i: (i.start, i.end))
    ids = {id(item): str(n) for n, item in enumerate(kept, start=1)}
    entities = []
    mentions = []
    for item in kept:
        relations = [(rel, ids[id(other)]) for rel, other in item.links if id(other) in ids]
        entity = Entity(ids[id(item)], " ".join(words[item.start : item.end + 1]), _label(item), item.start, item.end, relations)
        entities.append(entity)
        if item.kind == OBS:
            mentions.append(Mention(entity.id, entity.tokens, _mention_labels(item, nlp.lexicon)))
    return words, entities, mentions


# ------------------------------------------------------------------------- items
def _items(doc: "Doc", nlp: "ReportNLP", word_of: dict[int, int], sentence_of: dict[int, int]) -> list[_Item]:
    items: list[_Item] = []
    for span in doc.ents:
        tokens = [t.i for t in span if not t.is_space]
        if not tokens:
            continue
        term: Term | None = span._.kg_term
        start, end, sentence = word_of[tokens[0]], word_of[tokens[-1]], sentence_of[tokens[0]]
        certainty = PRESENT
        if span.label_ == OBS:
            if span._.is_negated:
                certainty = ABSENT
            elif span._.is_uncertain:
                certainty = UNCERTAIN
        split = nlp.split_of(span, term) if term is not None and span.label_ == OBS else None
        if split is None:
            items.append(_Item(span.label_, start, end, sentence, term, certainty))
            continue
        if split.anatomy_first:
            anatomy = _Item(ANAT, start, start + split.anatomy_tokens - 1, sentence, split.anatomy)
            observation = _Item(OBS, start + split.anatomy_tokens, end, sentence, split.observation, certainty)
        else:
            observation = _Item(OBS, start, end - split.anatomy_tokens, sentence, split.observation, certainty)
            anatomy = _Item(ANAT, end - split.anatomy_tokens + 1, end, sentence, split.anatomy)
        _locate(observation, anatomy)
        anatomy.target = observation
        items.extend([anatomy, observation] if split.anatomy_first else [observation, anatomy])
    return items


def _locate(observation: _Item, anatomy: _Item) -> None:
    observation.links.append(("located_at", anatomy))
    observation.locations.append(anatomy)


def _label(item: _Item) -> str:
    if item.kind == ANAT or item.is_location:
        return "ANAT-DP"
    if item.kind == MOD:
        return _OBS_LABELS[item.target.certainty if item.target is not None else PRESENT]
    return _OBS_LABELS[item.certainty]


# --------------------------------------------------------------------- relations
def _gap(left: _Item, right: _Item) -> int:
    return max(0, right.start - left.end - 1)


def _neighbour(items: list[_Item], index: int, step: int, wanted: set[str], skip: set[str], max_gap: int) -> _Item | None:
    """The first entity of a ``wanted`` kind (never a modifier) from ``items[index]`` in direction ``step``.

    Items of a ``skip`` kind are stepped over; words outside items count towards ``max_gap``.
    """
    previous = items[index]
    gap = 0
    j = index + step
    while 0 <= j < len(items):
        item = items[j]
        gap += _gap(previous, item) if step > 0 else _gap(item, previous)
        if gap > max_gap:
            return None
        if item.kind in wanted:
            return item
        if item.kind not in skip:
            return None
        previous = item
        j += step
    return None


def _attach_modifiers(items: list[_Item]) -> None:
    for index, item in enumerate(items):
        if item.kind != MOD:
            continue
        if item.is_location:
            wanted, skip = {ANAT, OBS}, {MOD}
        else:
            wanted, skip = {OBS}, {MOD, ANAT}
        target = _neighbour(items, index, 1, wanted, skip, _MAX_MODIFIER_GAP) or _neighbour(
            items, index, -1, wanted, skip, _MAX_LEFT_GAP
        )
        if target is None:
            item.keep = False
            continue
        item.target = target
        if item.is_location and target.kind == OBS:
            _locate(target, item)
        else:
            item.links.append(("modify", target))


def _attach_anatomy(items: list[_Item], words: list[str]) -> None:
    observations = [i for i in items if i.kind == OBS]
    if not observations:
        return
    for item in items:
        if item.kind != ANAT or item.target is not None:
            continue
        before = [o for o in observations if o.end < item.start]
        after = [o for o in observations if o.start > item.end]
        nearest = min(
            observations,
            key=lambda o: (_gap(o, item) if o.end < item.start else _gap(item, o), o.start > item.start),
        )
        if before and after and nearest is after[0]:
            between = {w.lower() for w in words[before[-1].end + 1 : item.start]}
            if between & _LOCATIVE and not between & {",", ";"}:
                nearest = before[-1]
        _locate(nearest, item)
        item.target = nearest
        for other in _coordinated(items, nearest, words):
            _locate(other, item)


def _coordinated(items: list[_Item], observation: _Item, words: list[str]) -> list[_Item]:
    """Observations joined to ``observation`` by and / or / commas only ("hyperexpanded and clear")."""
    joined = []
    index = items.index(observation)
    for step in (1, -1):
        previous = observation
        j = index + step
        while 0 <= j < len(items) and items[j].kind in (MOD, OBS):
            item = items[j]
            left, right = (previous, item) if step > 0 else (item, previous)
            if not {w.lower() for w in words[left.end + 1 : right.start]} <= _COORDINATION:
                break
            if item.kind == OBS:
                joined.append(item)
            previous = item
            j += step
    return joined


def _attach_suggestive(
    doc: "Doc",
    nlp: "ReportNLP",
    words: list[str],
    word_of: dict[int, int],
    sentence_of: dict[int, int],
    by_sentence: dict[int, list[_Item]],
) -> None:
    cues_by_sentence: dict[int, list[tuple[int, int]]] = {}
    for start, end in nlp.suggestive_cues(doc):
        cue_words = [word_of[i] for i in range(start, end) if i in word_of]
        if cue_words:
            cues_by_sentence.setdefault(sentence_of[start], []).append((cue_words[0], cue_words[-1]))
    for sentence, cues in cues_by_sentence.items():
        observations = [i for i in by_sentence.get(sentence, []) if i.kind == OBS]
        for n, (cue_start, cue_end) in enumerate(cues):
            before = [o for o in observations if o.end < cue_start]
            if not before:
                continue
            # No further than the sentence's last observation: scanning to the end of the report
            # for a clause break made long reports quadratic.
            limit = cues[n + 1][0] if n + 1 < len(cues) else observations[-1].start + 1
            limit = next((i for i in range(cue_end + 1, limit) if words[i].lower() in nlp.clause_breaks), limit)
            source = before[-1]
            for other in observations:
                if cue_end < other.start < limit and other is not source:
                    source.links.append(("suggestive_of", other))


# ---------------------------------------------------------------------- mentions
def _mention_labels(item: _Item, lexicon: Lexicon) -> dict[str, int]:
    """Label columns set by one observation (see :class:`Mention`)."""
    term = item.term
    labels: dict[str, int] = {}
    if term is None:
        return labels
    concepts = set(term.concepts)
    absent: set[str] = set()
    groups = {loc.term.group for loc in item.locations if loc.term is not None and loc.term.group}
    for rule in lexicon.compositions:
        if term.text in rule.observations and groups & rule.anatomy:
            (absent if rule.absent else concepts).update(rule.concepts)
    for concept in concepts - COMPUTED_COLUMNS:
        value = item.certainty
        if value == PRESENT and concept in term.uncertain:
            value = UNCERTAIN
        labels[concept] = value
    if item.certainty == PRESENT:
        for concept in absent - COMPUTED_COLUMNS - set(labels):
            labels[concept] = ABSENT
    return labels
