"""Entity text normalisation and RadGraph triplets.

A RadGraph relation ``(entity, relation, target)`` becomes the triplet ``(head, relation, tail)``
whose head and tail are the *normalised* entity texts, so that "Opacities", "opacity" and
"opacity," count as one node of the specific-knowledge (SK) graph.

Normalisation (:func:`normalize_entity`), in order:

1. lower case;
2. punctuation becomes a space, except a ``.`` between two digits (``2.5 cm`` stays ``2.5 cm``);
   hyphens and slashes are punctuation too, so ``right-sided`` reads ``right sided``;
3. whitespace collapses to single spaces;
4. every word is singularised by :func:`singularize`.

Absent findings (RadGraph label ``OBS-DA``) are handled by :func:`report_triplets`'s ``absent``
option, one of :data:`ABSENT_MODES`:

* ``"negate"`` (default): keep the triplet and write the absent entity as ``"no <text>"``, so
  "no effusion located_at pleural" and "effusion located_at pleural" are different triplets;
* ``"keep"``: keep the text as is (only the ``OBS-DA`` label tells the two apart);
* ``"drop"``: leave out every triplet with an absent head or tail.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from kg.records import ReportRecord

ABSENT_MODES = ("negate", "keep", "drop")
ABSENT_LABEL = "OBS-DA"
NEGATION_PREFIX = "no "

#: Plural → singular for words the suffix rules below would get wrong: Latin and Greek plurals
#: of anatomy and pathology, and ``-ices`` plurals that are not ``-ice`` words.
IRREGULAR_PLURALS = {
    "apices": "apex",
    "vertices": "vertex",
    "cortices": "cortex",
    "indices": "index",
    "appendices": "appendix",
    "pneumothoraces": "pneumothorax",
    "thoraces": "thorax",
    "hemithoraces": "hemithorax",
    "bronchi": "bronchus",
    "emboli": "embolus",
    "thrombi": "thrombus",
    "calculi": "calculus",
    "nuclei": "nucleus",
    "hili": "hilum",
    "hila": "hilum",
    "septa": "septum",
    "ostia": "ostium",
    "foramina": "foramen",
    "lumina": "lumen",
    "criteria": "criterion",
    "metastases": "metastasis",
    "atelectases": "atelectasis",
    "stenoses": "stenosis",
    "diagnoses": "diagnosis",
    "prostheses": "prosthesis",
    "anastomoses": "anastomosis",
    "pleurae": "pleura",
    "sinuses": "sinus",
    "axes": "axis",
}

#: Words that end like a plural but are singular (or have no singular) and stay as they are.
INVARIANT_WORDS = frozenset(
    {
        "pleura", "pancreas", "atlas", "series", "species", "diabetes", "biceps", "triceps", "bias",
        "news", "this", "does", "always", "perhaps", "towards", "whereas", "sometimes",
    }
)

#: Singular endings that a final ``s`` belongs to: ``mass``, ``hilus``, ``stenosis``, ``osseous``.
_SINGULAR_ENDINGS = ("ss", "us", "is")
_PUNCTUATION = re.compile(r"(?<!\d)\.|\.(?!\d)|[^\w\s.]|_")


def singularize(word: str) -> str:
    """Singular of a lower-case English or radiology word by rule; other words are returned as is.

    Rules, first match wins (no NLTK/WordNet data is needed):

    * :data:`IRREGULAR_PLURALS` (``apices → apex``, ``hila → hilum``, ``pleurae → pleura``) and
      :data:`INVARIANT_WORDS` (``pleura``, ``pancreas``);
    * words of three letters or fewer, and words ending in ``ss``/``us``/``is`` stay
      (``rib``, ``mass``, ``hilus``, ``atelectasis``);
    * ``-ies → -y`` (``opacities → opacity``);
    * ``-ae → -a`` (``vertebrae → vertebra``);
    * ``-sses``/``-xes``/``-ches``/``-shes`` drop ``es`` (``masses → mass``, ``branches → branch``);
    * otherwise a final ``s`` is dropped (``lungs → lung``, ``effusions → effusion``,
      ``lobes → lobe``, ``bases → base``, ``kidneys → kidney``).
    """
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word in INVARIANT_WORDS or len(word) <= 3 or word.endswith(_SINGULAR_ENDINGS):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("ae"):
        return word[:-1]
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


@lru_cache(maxsize=1 << 16)
def normalize_entity(text: str) -> str:
    """Normalised entity text: lower case, punctuation stripped, spaces collapsed, singular words.

    ``"Bilateral  Pleural-Effusions,"`` → ``"bilateral pleural effusion"``. Cached, because a
    corpus repeats the same few thousand entity strings.
    """
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    return " ".join(singularize(word) for word in words)


class Triplet(NamedTuple):
    """One RadGraph triplet of a report, entities as the store wrote them.

    ``head`` / ``tail`` are normalised entity texts; ``kg build`` writes absent findings as
    ``"no <finding>"`` by default, so the text alone keeps the negation. ``head_label`` /
    ``tail_label`` are the RadGraph entity labels.
    """

    head: str
    relation: str
    tail: str
    head_label: str
    tail_label: str

    def phrase(self) -> str:
        """``"head relation tail"``, underscores in the relation read as spaces."""
        return f"{self.head} {self.relation.replace('_', ' ')} {self.tail}"


def entity_text(tokens: str, label: str, absent: str = "negate") -> str:
    """An entity's text as it appears in triplets: normalised, ``"no "``-prefixed when absent and
    ``absent == "negate"``."""
    text = normalize_entity(tokens)
    if absent == "negate" and label == ABSENT_LABEL:
        return NEGATION_PREFIX + text
    return text


def check_absent_mode(absent: str) -> None:
    """Raise ``ValueError`` unless ``absent`` is one of :data:`ABSENT_MODES`."""
    if absent not in ABSENT_MODES:
        raise ValueError(f"unknown absent mode {absent!r}; choose one of {', '.join(ABSENT_MODES)}")


def relation_triplets(record: ReportRecord, absent: str = "negate") -> list[Triplet]:
    """Every relation of a report as a triplet, in entity and relation order, repeats included.

    The head is the entity that carries the relation, the tail its target. Relations whose target
    is not an entity of the report are skipped (:mod:`kg.radgraph` rejects them on reading).
    """
    check_absent_mode(absent)
    entities = record.entities
    out = []
    for entity in entities.values():
        if not entity.relations:
            continue
        head = entity_text(entity.tokens, entity.label, absent)
        for relation, target_id in entity.relations:
            target = entities.get(target_id)
            if target is None:
                continue
            if absent == "drop" and ABSENT_LABEL in (entity.label, target.label):
                continue
            tail = entity_text(target.tokens, target.label, absent)
            out.append(Triplet(head, relation, tail, entity.label, target.label))
    return out


def report_triplets(record: ReportRecord, absent: str = "negate") -> list[Triplet]:
    """The distinct triplets of one report in order of first mention (the report's
    ``report_triplets`` rows in a store)."""
    return list(dict.fromkeys(relation_triplets(record, absent)))
