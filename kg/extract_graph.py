"""From a processed report doc to RadGraph entities and relations, and to label mentions.

Input is a doc from :class:`kg.extract_pipeline.ReportNLP` (sentences, ``doc.ents`` labelled
``OBS`` / ``ANAT`` / ``MOD`` with their lexicon :class:`~kg.lexicon.Term` in ``span._.kg_term``,
ConText attributes on observations). The rules, applied within one sentence:

* **certainty**: negated → ``OBS-DA`` (also when a cue makes it uncertain too: CheXpert applies
  negation first); else uncertain (hedged, conditional or inferred: "may", "if", "suggestive of")
  → ``OBS-U``; else the last word of a pseudo-cue opening with a negation ("no change") →
  ``OBS-DA``; else ``OBS-DP``. Observations offered as alternatives ("atelectasis or pneumonia",
  "normal or mildly enlarged") are ``OBS-U`` unless negated.
* **split phrases**: a lexicon observation phrase made of lexicon terms (``pleural effusion``,
  ``enlarged heart``, ``acute cardiopulmonary process``) is cut into them, as RadGraph annotates
  it: the observation is ``located_at`` the anatomy, other modifiers modify the observation.
* **anatomy words**: every anatomy word is an entity of its own. In a run of anatomy and location
  words the head (the last anatomy word that is not a part word such as ``bases`` or ``size``) is
  the one observations are located at; every other word of the run modifies it. Runs joined by
  "and" / commas share a trailing part word ("cardiac and mediastinal contours"), and a part word
  before "of the" modifies the anatomy after it ("size of the cardiac silhouette"). Anatomy next to
  an imaging word ("PA and lateral chest", "view of the chest") names the study and is dropped.
* **modify**: a location word (``left``, ``bibasilar``) modifies the anatomy that follows it, or
  becomes the location of the observation that follows (or precedes) it; any other modifier
  (severity, size, morphology, time) modifies the nearest observation to its right across other
  modifiers and anatomy, else the one just before it (``effusion is small``), else the subject of
  its clause when it follows a copula ("the effusion seen at the base is unchanged"). At most two
  other words may sit between a modifier and its target. A location with no target is anatomy, a
  change word with no target an observation ("the contours are unchanged"); other modifiers with
  no target are dropped. A descriptor observation (no concept of its own) after a copula
  modifies the observation that is its subject ("the effusions have increased", "support
  devices remain in place").
* **located_at**: every other anatomy entity is the location of the nearest observation in its
  sentence (ties go to the observation before it; an observation at most 5 words before a locative
  preposition wins: "opacity in the left lung"), and of the observations coordinated with that one
  by and / or / commas ("lungs are hyperexpanded and clear").
* **suggestive_of**: ``X <cue> Y`` (``opacity, likely atelectasis``; ``may represent``;
  ``consistent with``): the observation before the cue → each observation after it, up to the next
  cue; past a clause break ("but", "although") only to uncertain ones, the further possibilities
  ("may reflect atelectasis, although pneumonia cannot be excluded").
  A later cue after one of those observations ("may represent scarring or could represent
  pneumonia") keeps the first cue's source.

Each observation also yields a :class:`Mention`: the label columns it sets, from its lexicon
concepts and from compositions with its anatomy (``heart`` + ``enlarged`` → cardiomegaly).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kg.label_schema import GK_NORMAL, NO_FINDING
from kg.lexicon import ANAT, LOCATION, MOD, OBS, STANDALONE_MODIFIERS, Lexicon, Term
from kg.records import Entity

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spacy.tokens import Doc

    from kg.extract_pipeline import ReportNLP, SplitPhrase

PRESENT, ABSENT, UNCERTAIN = 1, 0, -1
_OBS_LABELS = {PRESENT: "OBS-DP", ABSENT: "OBS-DA", UNCERTAIN: "OBS-U"}
#: label columns computed from all other columns, never set by a mention
COMPUTED_COLUMNS = frozenset({NO_FINDING, GK_NORMAL})
_COORDINATION = frozenset({"and", "or", ",", "/", "and/or"})
# Words that offer two observations as alternatives: each is then only possible.
_ALTERNATIVE = frozenset({"or", "and/or"})
# Words inside a lexicon anatomy phrase that RadGraph leaves out of its entities.
_PHRASE_GLUE = frozenset({"and", "or", "of", "the", ",", "/"})
# Words between an imaging word and the anatomy it names: "PA and lateral chest", "view of the chest".
_STUDY_GLUE = frozenset({"and", "of", "the", "a", "single", "-"})
_MAX_MODIFIER_GAP = 2
_MAX_LEFT_GAP = 3
# A modifier after a copula describes the clause's subject up to this many words back.
_MAX_PREDICATE_GAP = 8
_COPULAS = frozenset({"is", "are", "was", "were", "remains", "remain", "appears", "appear", "has", "have", "been"})
# Words at most between an observation and the anatomy a locative preposition ties to it
# ("opacity in the right lower lobe": 4).
_MAX_LOCATIVE_GAP = 5
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
    # The pipeline's tokenizer (kg.report_tokens) makes every token a word (no whitespace tokens),
    # so token i is word i.
    from kg.report_tokens import doc_words  # imports spaCy, which kg.extract loads only on use

    words = doc_words(doc)
    sentence_of = _sentence_ids(doc)

    items = _split_anatomy(_items(doc, nlp, sentence_of), words, nlp.lexicon)
    by_sentence: dict[int, list[_Item]] = {}
    for item in items:
        by_sentence.setdefault(item.sentence, []).append(item)
    for sentence_items in by_sentence.values():
        _hedge_alternatives(sentence_items, words)
        _chain_anatomy(sentence_items, words, nlp.lexicon)
        _attach_modifiers(sentence_items, words)
        _attach_predicate_descriptors(sentence_items, words)
        _attach_anatomy(sentence_items, words)
    _attach_suggestive(doc, nlp, words, sentence_of, by_sentence)

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
def _sentence_ids(doc: "Doc") -> list[int]:
    """The sentence index of every token of ``doc`` (sentence starts as the sentencizer set them)."""
    import numpy
    from spacy.attrs import SENT_START

    starts = doc.to_array(SENT_START) == 1
    starts[0] = True
    return (numpy.cumsum(starts) - 1).tolist()


def _items(doc: "Doc", nlp: "ReportNLP", sentence_of: list[int]) -> list[_Item]:
    items: list[_Item] = []
    pseudo_negated = nlp.pseudo_negation_ends(doc)
    for span in doc.ents:
        start, end = span.start, span.end - 1
        term: Term | None = span._.kg_term
        sentence = sentence_of[start]
        certainty = PRESENT
        label = span.label_
        if label == OBS:
            if span._.is_negated:
                certainty = ABSENT
            elif span._.is_uncertain:
                certainty = UNCERTAIN
            elif end in pseudo_negated:
                certainty = ABSENT
        split = nlp.split_of(span, term) if term is not None and label == OBS else None
        if split is None:
            items.append(_Item(label, start, end, sentence, term, certainty))
            continue
        items.extend(_split_items(split, start, sentence, certainty, nlp.lexicon))
    return items


def _split_items(split: "SplitPhrase", start: int, sentence: int, certainty: int, lexicon: Lexicon) -> list[_Item]:
    """The items of a split phrase, related as RadGraph relates them.

    The observation is located at the phrase's head anatomy; other anatomy and location words
    modify that head; other modifiers modify the observation.
    """
    pieces: list[_Item] = []
    for size, term in split.pieces:
        pieces.append(_Item(term.kind, start, start + size - 1, sentence, term, certainty if term.kind == OBS else PRESENT))
        start += size
    observation = next(p for p in pieces if p.kind == OBS)
    anatomy = [p for p in pieces if p.kind == ANAT or p.is_location]
    head = anatomy[_head([p.term if p.kind == ANAT else None for p in anatomy], lexicon)] if anatomy else None
    for piece in pieces:
        if piece is observation:
            continue
        target = head if (piece.kind == ANAT or piece.is_location) and piece is not head else observation
        if piece is head:
            _locate(observation, piece)
        else:
            piece.links.append(("modify", target))
        piece.target = target
    return pieces


def _hedge_alternatives(items: list[_Item], words: list[str]) -> None:
    """Present observations offered as alternatives ("atelectasis or pneumonia") become uncertain.

    Two observations joined by "or" (or "and/or"), with only modifiers, commas and "either"
    between them, are each a possibility rather than a finding; a negated list ("no edema or
    effusion") keeps its negation.
    """
    observations = [i for i in items if i.kind == OBS]
    for left, right in zip(observations, observations[1:]):
        between = [w.lower() for w in words[left.end + 1 : right.start]]
        if not _ALTERNATIVE.intersection(between):  # the common case: no "or", nothing to check
            continue
        modifiers = {n for i in items if i.kind == MOD and left.end < i.start and i.end < right.start
                     for n in range(i.start, i.end + 1)}
        glue = {w for n, w in enumerate(between, start=left.end + 1) if n not in modifiers}
        if glue & _ALTERNATIVE and glue <= _ALTERNATIVE | {",", "either"}:
            for item in (left, right):
                if item.certainty == PRESENT:
                    item.certainty = UNCERTAIN


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


def _split_anatomy(items: list[_Item], words: list[str], lexicon: Lexicon) -> list[_Item]:
    """One item per anatomy word, as RadGraph annotates anatomy ("lower lobe" → "lower", "lobe").

    Words joined by a hyphen stay one item ("left - sided"); conjunctions and articles inside a
    phrase are no item. The phrase's head word (see :func:`_head`) keeps the phrase's organ and
    group, so compositions ("lung volumes are low") still see them, and takes over the phrase's
    place in a split phrase's ``located_at``.
    """
    result: list[_Item] = []
    replaced: dict[int, _Item] = {}
    for item in items:
        units = _word_units(words, item.start, item.end) if item.kind == ANAT else []
        if len(units) < 2 or item.term is None:
            result.append(item)
            continue
        terms = [_anatomy_word(" ".join(words[start : end + 1]).lower(), lexicon) for start, end in units]
        if None in terms:  # a word that is no anatomy of its own: "soft tissues", "vena cava"
            result.append(item)
            continue
        known = [t for t in terms if t is not None]
        head = _head(known, lexicon)
        known[head] = Term(known[head].text, ANAT, organ=item.term.organ, group=item.term.group)
        pieces = [_Item(term.kind, start, end, item.sentence, term) for term, (start, end) in zip(known, units)]
        pieces[head].target = item.target
        pieces[head].links = item.links
        replaced[id(item)] = pieces[head]
        result.extend(pieces)
    if replaced:
        for item in result:
            item.links = [(rel, replaced.get(id(other), other)) for rel, other in item.links]
            item.locations = [replaced.get(id(other), other) for other in item.locations]
            if item.target is not None:
                item.target = replaced.get(id(item.target), item.target)
    return result


def _anatomy_word(text: str, lexicon: Lexicon) -> Term | None:
    """The lexicon's anatomy or location term for one word of an anatomy phrase, a bare anatomy
    term for a part word, else ``None``."""
    term = lexicon.terms.get(text)
    if term is not None and (term.kind == ANAT or (term.kind == MOD and term.modifier == LOCATION)):
        return term
    return Term(text, ANAT) if text in lexicon.anatomy_parts else None


def _word_units(words: list[str], start: int, end: int) -> list[tuple[int, int]]:
    """Inclusive word ranges of the words of ``words[start:end+1]``, hyphenated words kept whole."""
    units: list[tuple[int, int]] = []
    joined = False
    for index in range(start, end + 1):
        word = words[index].lower()
        if word == "-" and units and index < end:
            joined = True
            continue
        if word in _PHRASE_GLUE:
            joined = False
            continue
        if joined:
            units[-1] = (units[-1][0], index)
        else:
            units.append((index, index))
        joined = False
    return units


def _head(terms: "Sequence[Term | None]", lexicon: Lexicon) -> int:
    """Index of the head of a run of anatomy words: the last anatomy (not location) word that does
    not name a part of another ("*lung* bases"), else the last anatomy word, else the last word."""
    anatomy = [(i, t) for i, t in enumerate(terms) if t is not None and t.kind == ANAT]
    for index, term in reversed(anatomy):
        if term.text not in lexicon.anatomy_parts:
            return index
    return anatomy[-1][0] if anatomy else len(terms) - 1


def _chain_anatomy(items: list[_Item], words: list[str], lexicon: Lexicon) -> None:
    """Adjacent anatomy words modify the chain's head: "right lower lobe", "lung bases", "heart size".

    Location words before the head and part words after it ("bases", "size", "silhouette") both
    ``modify`` the head, which alone is then located by :func:`_attach_anatomy`. Runs joined by
    "and" / commas share a trailing part word ("cardiac and mediastinal *contours*") and a run of
    locations alone modifies the last run's head ("right and left lungs"). A chain naming the
    imaging study ("PA and lateral chest") is dropped.
    """
    chain: list[list[_Item]] = []
    for item in items:
        if not (item.kind == ANAT or item.is_location):
            if chain:
                _relate_chain(chain, words, lexicon)
            chain = []
            continue
        between = words[chain[-1][-1].end + 1 : item.start] if chain else []
        # "size of the cardiac silhouette": a part word names a part of the anatomy after it
        joined = len(between) <= 2 and (
            all(w.lower() in _COORDINATION for w in between)
            or (all(w.lower() in ("of", "the") for w in between) and _only_parts(chain[-1], lexicon))
        )
        if chain and not between:
            chain[-1].append(item)
        elif chain and joined:
            chain.append([item])
        else:
            if chain:
                _relate_chain(chain, words, lexicon)
            chain = [[item]]
    if chain:
        _relate_chain(chain, words, lexicon)


def _relate_chain(runs: list[list[_Item]], words: list[str], lexicon: Lexicon) -> None:
    members = [m for run in runs for m in run]
    if _names_a_study(members, words, lexicon):
        for member in members:
            if member.target is None:
                member.keep = False
                member.target = member  # resolved: no other rule may relate it
        return
    heads = []
    for run in runs:
        head = run[_head([c.term if c.kind == ANAT else None for c in run], lexicon)]
        heads.append(head)
        for member in run:
            if member is not head and member.target is None:
                _modify(member, head)
    last, last_head = runs[-1], heads[-1]
    shared_parts = [m for m in last[last.index(last_head) + 1 :] if m.term is not None and m.term.text in lexicon.anatomy_parts]
    for n, (run, head) in enumerate(zip(runs[:-1], heads[:-1])):
        if _only_parts(run, lexicon):
            for member in run:
                if member.target is None:
                    _modify(member, heads[n + 1])
        elif all(m.kind != ANAT for m in run):
            if head.target is None:
                _modify(head, last_head)
        elif not any(m.term is not None and m.term.text in lexicon.anatomy_parts for m in run):
            for part in shared_parts:
                part.links.append(("modify", head))


def _only_parts(run: list[_Item], lexicon: Lexicon) -> bool:
    return all(m.kind == ANAT and m.term is not None and m.term.text in lexicon.anatomy_parts for m in run)


def _modify(member: _Item, head: _Item) -> None:
    member.links.append(("modify", head))
    member.target = head


def _names_a_study(chain: list[_Item], words: list[str], lexicon: Lexicon) -> bool:
    """Whether the nearest word before or after ``chain`` (past "and", "of", "the") is an imaging word."""
    for index, step in ((chain[0].start - 1, -1), (chain[-1].end + 1, 1)):
        while 0 <= index < len(words) and words[index].lower() in _STUDY_GLUE:
            index += step
        if 0 <= index < len(words) and words[index].lower() in lexicon.imaging_words:
            return True
    return False


def _subject(items: list[_Item], index: int, words: list[str]) -> _Item | None:
    """The observation a predicate modifier describes: "the effusion on the left is unchanged"."""
    modifier = items[index]
    subject = next((items[j] for j in range(index - 1, -1, -1) if items[j].kind == OBS), None)
    if subject is None:
        return None
    between = {w.lower() for w in words[subject.end + 1 : modifier.start]}
    if modifier.start - subject.end - 1 > _MAX_PREDICATE_GAP or not between & _COPULAS or between & {",", ";"}:
        return None
    return subject


def _attach_modifiers(items: list[_Item], words: list[str]) -> None:
    for index, item in enumerate(items):
        if item.kind != MOD or item.target is not None:
            continue
        if item.is_location:
            wanted, skip = {ANAT, OBS}, {MOD}
        else:
            wanted, skip = {OBS}, {MOD, ANAT}
        target = _neighbour(items, index, 1, wanted, skip, _MAX_MODIFIER_GAP) or _neighbour(
            items, index, -1, wanted, skip, _MAX_LEFT_GAP
        )
        if target is None and not item.is_location:
            target = _subject(items, index, words)
        if target is None:
            # RadGraph keeps a modifier with nothing to modify as an entity of its own: a location
            # is anatomy ("worse on the right"), a change word an observation located at the
            # anatomy it describes ("the contours are unchanged").
            if item.is_location:
                item.kind = ANAT
            elif item.term is not None and item.term.modifier in STANDALONE_MODIFIERS:
                item.kind = OBS
            else:
                item.keep = False
            continue
        item.target = target
        if item.is_location and target.kind == OBS:
            _locate(target, item)
        else:
            item.links.append(("modify", target))


def _attach_predicate_descriptors(items: list[_Item], words: list[str]) -> None:
    """A descriptor observation in predicate position modifies the observation it describes:
    "the effusions have *increased*", "support devices remain *in place*".

    Descriptors are observation terms without a concept of their own; the subject is found as for
    predicate modifiers (:func:`_subject`) and must be the nearest entity before the predicate, so
    "the effusion is small and the heart is enlarged" leaves "enlarged" to the heart.
    """
    for index, item in enumerate(items):
        if item.kind != OBS or item.term is None or item.term.concepts or not _is_predicate(item, words):
            continue
        subject = _subject(items, index, words)
        if subject is not None and all(other.kind == MOD for other in items[items.index(subject) + 1 : index]):
            item.links.append(("modify", subject))


def _is_predicate(item: _Item, words: list[str]) -> bool:
    """Whether ``item`` follows a copula, directly or after one adverb ("has slightly increased")."""
    before = [w.lower() for w in words[max(0, item.start - 2) : item.start]]
    if not before:
        return False
    return before[-1] in _COPULAS or (len(before) == 2 and before[0] in _COPULAS and before[1].endswith("ly"))


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
        if before and after and nearest is after[0] and _gap(before[-1], item) <= _MAX_LOCATIVE_GAP:
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
    sentence_of: list[int],
    by_sentence: dict[int, list[_Item]],
) -> None:
    cues_by_sentence: dict[int, list[tuple[int, int]]] = {}
    for start, end in nlp.suggestive_cues(doc):
        cues_by_sentence.setdefault(sentence_of[start], []).append((start, end - 1))
    for sentence, cues in cues_by_sentence.items():
        observations = [i for i in by_sentence.get(sentence, []) if i.kind == OBS]
        sources: dict[int, _Item] = {}  # id of a suggested observation → the one suggesting it
        for n, (cue_start, cue_end) in enumerate(cues):
            before = [o for o in observations if o.end < cue_start]
            if not before:
                continue
            # No further than the sentence's last observation: scanning to the end of the report
            # for a clause break made long reports quadratic.
            limit = cues[n + 1][0] if n + 1 < len(cues) else observations[-1].start + 1
            clause_end = next((i for i in range(cue_end + 1, limit) if words[i].lower() in nlp.clause_breaks), limit)
            # A second cue offering another reading of the same finding ("may represent scarring
            # or could represent pneumonia") keeps the first cue's source.
            source = sources.get(id(before[-1]), before[-1])
            for other in observations:
                if other is source or not cue_end < other.start < limit:
                    continue
                # After "although" / "but" a further diagnosis is offered only as a possibility:
                # "opacity may represent pneumonia, although aspiration cannot be excluded".
                if other.start < clause_end or other.certainty == UNCERTAIN:
                    source.links.append(("suggestive_of", other))
                    sources[id(other)] = source


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
