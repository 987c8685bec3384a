"""The spaCy / medspaCy pipeline behind the report extractor.

Stages, run per batch of report texts:

1. medspaCy's clinical tokenizer on a blank English pipeline (no model is loaded, nothing is
   downloaded) and spaCy's rule-based sentencizer, with ``;`` and blank lines as extra sentence
   ends so a negation never reaches across them;
2. an entity source that sets ``doc.ents`` with labels ``OBS`` / ``ANAT`` / ``MOD``: medspaCy's
   TargetMatcher over the lexicon (``rules``), or a NER model (:mod:`kg.extract_ner`);
3. medspaCy's ConText with the lexicon's radiology cues, on ``OBS`` spans.

This module imports spaCy at the top; :mod:`kg.extract` imports it only when a pipeline is built.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import medspacy
from medspacy.context import ConText, ConTextRule
from medspacy.ner import TargetMatcher, TargetRule
from spacy.attrs import SENT_START
from spacy.lang.en import English
from spacy.matcher import PhraseMatcher
from spacy.pipeline import Sentencizer
from spacy.tokens import Doc, Span

from kg.lexicon import ANAT, OBS, Lexicon, Term
from kg.long_reports import MAX_REPORT_CHARS, annotate_in_parts

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
# medspaCy's matchers hold a token Matcher even when every cue is a phrase; spaCy then warns on
# each call that it has no patterns.
warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
# The lexicon term behind an entity span; entity sources set it, kg.extract_graph reads it.
Span.set_extension("kg_term", default=None, force=True)

EntitySource = Callable[[Doc], None]


@dataclass(frozen=True)
class SplitPhrase:
    """How a lexicon phrase that joins an anatomy and an observation is cut into two entities.

    ``pleural effusion`` → anatomy ``pleural`` (1 token, first) + observation ``effusion``; the
    observation keeps the whole phrase's concepts. ``anatomy_first`` tells which end is anatomy.
    """

    anatomy: Term
    observation: Term
    anatomy_tokens: int
    anatomy_first: bool


class ReportNLP:
    """Tokenizer, sentence splitter, entity source and ConText, built once and reused.

    Args:
        lexicon: the radiology lexicon (terms, cues).
        make_entity_source: ``None`` for the lexicon's TargetMatcher; otherwise a function of this
            pipeline returning a callable that sets ``doc.ents`` (labels ``OBS`` / ``ANAT`` /
            ``MOD``, ``span._.kg_term`` set) on a tokenized, sentence-split doc
            (see :mod:`kg.extract_ner`).
    """

    def __init__(
        self, lexicon: Lexicon, make_entity_source: Callable[["ReportNLP"], EntitySource] | None = None
    ) -> None:
        self.lexicon = lexicon
        # Tokenizer only: the default medspaCy pipeline's PyRuSH sentencizer is replaced by spaCy's
        # rule-based one, which is several times faster and needs no rule file.
        self.nlp = medspacy.load(English(), medspacy_enable=["medspacy_tokenizer"])
        self.nlp.max_length = MAX_REPORT_CHARS
        self.sentencizer = Sentencizer(punct_chars=sorted(set(Sentencizer.default_punct_chars) | {";"}))
        self.context = _context(self.nlp, lexicon)
        # Lexicon terms keyed by their tokens as the tokenizer splits them ("left - sided").
        self.token_terms = {
            " ".join(t.lower_ for t in self.nlp.make_doc(text)): term for text, term in lexicon.terms.items()
        }
        self.suggestive = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self.suggestive.add("SUGGESTIVE", [self.nlp.make_doc(cue) for cue in lexicon.suggestive_cues])
        self.splits = self._split_phrases()
        # One-word scope terminators ("but", "although") also end a suggestive_of clause.
        self.clause_breaks = frozenset(
            cue.text for cue in lexicon.context_cues if cue.category == "TERMINATE" and " " not in cue.text
        )
        self.entity_source = make_entity_source(self) if make_entity_source is not None else self._target_matcher()

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[Doc]:
        """Process texts in batches; yields docs with sentences, ``doc.ents`` and ConText attributes."""
        for doc in self.nlp.pipe(texts, batch_size=batch_size):
            self.sentencizer(doc)
            _mark_paragraph_breaks(doc)
            annotate_in_parts(doc, self._annotate)  # a long report in parts: ConText is quadratic
            yield doc

    def _annotate(self, doc: Doc) -> None:
        self.entity_source(doc)
        self.context(doc)

    def find_term(self, span: Span, kind: str) -> Term | None:
        """The lexicon term of ``kind`` that is ``span`` itself or, failing that, the longest inside it.

        Entity sources other than the lexicon's matcher (NER models) use it to give their spans
        the lexicon's concepts and groups.
        """
        words = [t.lower_ for t in span if not t.is_space]
        for size in range(len(words), 0, -1):
            for start in range(len(words) - size + 1):
                term = self.token_terms.get(" ".join(words[start : start + size]))
                if term is not None and term.kind == kind:
                    return term
        return None

    def split_of(self, span: Span, term: Term) -> SplitPhrase | None:
        """How to cut ``span`` into anatomy + observation, when it is exactly a split phrase ``term``."""
        split = self.splits.get(term.text)
        if split is None or self.token_terms.get(" ".join(t.lower_ for t in span if not t.is_space)) is not term:
            return None
        return split

    def suggestive_cues(self, doc: Doc) -> list[tuple[int, int]]:
        """Token ranges ``[start, end)`` of suggestive_of cues in ``doc``, longest first per position."""
        matches = sorted(((s, e) for _, s, e in self.suggestive(doc)), key=lambda m: (m[0], -m[1]))
        kept: list[tuple[int, int]] = []
        for start, end in matches:
            if not kept or start >= kept[-1][1]:
                kept.append((start, end))
        return kept

    # ------------------------------------------------------------------ builders
    def _target_matcher(self) -> EntitySource:
        matcher = TargetMatcher(self.nlp, phrase_matcher_attr="LOWER", result_type=None)
        matcher.add(
            [
                TargetRule(term.text, term.kind, attributes={"kg_term": term})
                for term in self.lexicon.terms.values()
            ]
        )

        def set_entities(doc: Doc) -> None:
            # The matcher prunes overlaps to the longest match; assigning all at once is faster
            # than the matcher's own one-by-one doc.ents update.
            doc.ents = matcher(doc)

        return set_entities

    def _split_phrases(self) -> dict[str, SplitPhrase]:
        """Observation phrases that start or end with an anatomy term and whose rest is an observation."""
        terms = self.token_terms
        splits: dict[str, SplitPhrase] = {}
        for key, term in terms.items():
            if term.kind != OBS:
                continue
            words = key.split()
            for cut in range(1, len(words)):
                head, tail = " ".join(words[:cut]), " ".join(words[cut:])
                if _is(terms, head, ANAT) and _is(terms, tail, OBS):
                    splits[term.text] = SplitPhrase(terms[head], _with_concepts(terms[tail], term), cut, True)
                    break
                if _is(terms, head, OBS) and _is(terms, tail, ANAT):
                    splits[term.text] = SplitPhrase(terms[tail], _with_concepts(terms[head], term), len(words) - cut, False)
                    break
        return splits


def _context(nlp: English, lexicon: Lexicon) -> ConText:
    """medspaCy's ConText with the lexicon's cues (phrase-matched; no token-pattern rules)."""
    for attribute in ("is_negated", "is_uncertain"):
        if not Span.has_extension(attribute):
            Span.set_extension(attribute, default=False)
    context = ConText(
        nlp,
        rules=None,
        allowed_types={OBS},
        span_attrs={
            "NEGATED_EXISTENCE": {"is_negated": True},
            "POSSIBLE_EXISTENCE": {"is_uncertain": True},
            "LINKED_POSSIBLE_EXISTENCE": {"is_uncertain": True},
        },
        # A negation's scope ends where a hedge starts and vice versa: "no pneumothorax, possible
        # small effusion" keeps the effusion uncertain. Linked cues do not end a negation.
        terminating_types={
            "NEGATED_EXISTENCE": ["POSSIBLE_EXISTENCE"],
            "POSSIBLE_EXISTENCE": ["NEGATED_EXISTENCE"],
            "LINKED_POSSIBLE_EXISTENCE": ["NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE"],
        },
    )
    context.add([ConTextRule(cue.text, cue.category, direction=cue.direction) for cue in lexicon.context_cues])
    return context


def _is(terms: dict[str, Term], text: str, kind: str) -> bool:
    return text in terms and terms[text].kind == kind


def _with_concepts(part: Term, whole: Term) -> Term:
    """The observation part of a split phrase; the whole phrase's concepts define its meaning.

    The part's own concepts are not added: "interstitial thickening" is not pleural thickening.
    """
    return Term(part.text, OBS, whole.concepts, whole.uncertain)


def _mark_paragraph_breaks(doc: Doc) -> None:
    """Start a sentence after a blank line: report sections and list items are separated so."""
    starts = [token.i + 1 for token in doc[:-1] if token.is_space and _BLANK_LINES.search(token.text_with_ws)]
    if starts:
        # Set all at once: each Token.is_sent_start assignment scans the whole doc (spaCy checks
        # for a parse), which made reports with many paragraphs quadratic.
        sent_starts = doc.to_array([SENT_START])
        sent_starts[starts] = 1
        doc.from_array([SENT_START], sent_starts)

