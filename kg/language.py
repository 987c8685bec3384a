"""Is a report written in English? The extractor's lexicon and cues are English only.

A report in another language is not labelled "not mentioned": its English-looking words still
match ("Kein Pneumothorax" gave Pneumothorax = 1, a Chinese report of an effusion No Finding = 1).
So reports that are not English are skipped (:func:`kg.reports_io.read_reports`).

The test, :func:`not_english_reason`, is deliberately simple and errs towards English, because a
skipped English report is a loss and radiology reports are short and telegraphic
("Cardiomegaly." has no function word at all):

1. script: more than half of the letters outside the Latin alphabets (Chinese, Cyrillic, Greek,
   Arabic...) → not English;
2. function words: the words of spaCy's stop-word lists of German, French, Spanish, Italian,
   Portuguese and Dutch that are neither English stop words nor words of the extractor's lexicon
   ("kein", "sin", "pas", "geen"; not "possible" or "anterior") outnumber the English evidence →
   not English. English evidence: each English stop word ("no", "the", "of", "is") counts 1, each
   other lexicon word ("pneumothorax", "pleural") 1/2, as medical terms are shared between
   languages. A report with neither counts as English.
"""
from __future__ import annotations

import functools
import importlib
import re

#: Languages whose stop words count against English (spaCy language codes).
OTHER_LANGUAGES = ("de", "fr", "es", "it", "pt", "nl")
#: English words of radiology reports that the other languages' stop-word lists hold: those found in
#: the IU-Xray and RadGraph-XL development reports ("gross", "Swan-Ganz", "et al"). They never
#: count against English.
ENGLISH_HOMOGRAPHS = frozenset(
    "certain co comment different en et ganz gross op relative sent state total want".split()
)
#: Weight of a lexicon word (not a stop word) as evidence of English.
LEXICON_WORD_WEIGHT = 0.5
#: Highest share of letters outside the Latin alphabets an English report may have.
MAX_NON_LATIN_SHARE = 0.5

_WORD = re.compile(r"[^\W\d_]+")
# Basic Latin, Latin-1, Latin Extended-A/B, IPA and Latin Extended Additional.
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]")


def not_english_reason(text: str) -> str | None:
    """Why ``text`` is not English (``"script"`` or ``"function words: kein, ..."``), or ``None``."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    non_latin = sum(1 for c in letters if not _LATIN.match(c))
    if non_latin / len(letters) > MAX_NON_LATIN_SHARE:
        return "mostly non-Latin script"
    english, medical, foreign = _vocabularies()
    words = [w.lower() for w in _WORD.findall(text)]
    evidence = sum(1 for w in words if w in english) + sum(LEXICON_WORD_WEIGHT for w in words if w in medical)
    foreign_hits = [w for w in words if w in foreign]
    if len(foreign_hits) > evidence:
        return "function words of another language: " + ", ".join(dict.fromkeys(foreign_hits[:5]))
    return None


def is_english(text: str) -> bool:
    """Whether :func:`not_english_reason` finds nothing against ``text`` being English."""
    return not_english_reason(text) is None


@functools.lru_cache(maxsize=1)
def _vocabularies() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """English stop words; the other words of the lexicon (terms and cues); the stop words of
    :data:`OTHER_LANGUAGES` that are in neither."""
    from kg.lexicon import load_lexicon

    english = frozenset(importlib.import_module("spacy.lang.en.stop_words").STOP_WORDS)
    lexicon = load_lexicon()
    phrases = [*lexicon.terms, *(cue.text for cue in lexicon.context_cues), *lexicon.suggestive_cues]
    medical = frozenset(w for phrase in phrases for w in _WORD.findall(phrase.lower())) - english
    other: set[str] = set()
    for code in OTHER_LANGUAGES:
        other |= importlib.import_module(f"spacy.lang.{code}.stop_words").STOP_WORDS
    return english, medical, frozenset(other - english - medical - ENGLISH_HOMOGRAPHS)
