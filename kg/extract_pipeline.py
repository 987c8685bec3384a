"""The spaCy / medspaCy pipeline behind the report extractor.

Stages, run per batch of report texts:

1. RadGraph-XL's tokenisation (:mod:`kg.report_tokens`) on a blank English pipeline (no model is
   loaded, nothing is downloaded) and spaCy's rule-based sentencizer, with ``;`` and blank lines
   as extra sentence ends so a negation never reaches across them (and a decimal point, which the
   tokenisation makes a token of its own, as none);
2. an entity source that sets ``doc.ents`` with labels ``OBS`` / ``ANAT`` / ``MOD``: spaCy's
   PhraseMatcher over the lexicon, overlaps pruned to the longest (``rules``), or a NER model
   (:mod:`kg.extract_ner`);
3. medspaCy's ConText with the lexicon's radiology cues, on ``OBS`` spans; a hedge's scope ends at
   a negation and at a linking cue ("opacity *suggests* pneumonia, effusion cannot be excluded"
   leaves the opacity present).

This module imports spaCy at the top; :mod:`kg.extract` imports it only when a pipeline is built.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from medspacy.context import ConText, ConTextRule
from spacy.attrs import SENT_START
from spacy.lang.en import English
from spacy.matcher import PhraseMatcher
from spacy.pipeline import Sentencizer
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from kg.label_schema import GK_FOREIGN_OBJECT
from kg.lexicon import ANAT, OBS, Lexicon, Term
from kg.long_reports import MAX_REPORT_CHARS, PSEUDO_NEGATION_ENDS, annotate_in_parts
from kg.report_tokens import PARAGRAPH_STARTS, RadGraphTokenizer, doc_words

# medspaCy's matchers hold a token Matcher even when every cue is a phrase; spaCy then warns on
# each call that it has no patterns.
warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
# The lexicon term behind an entity span; entity sources set it, kg.extract_graph reads it.
Span.set_extension("kg_term", default=None, force=True)
# The observation spans of a doc, the only targets ConText is given.
Doc.set_extension("kg_observations", default=None, force=True)

EntitySource = Callable[[Doc], None]


@dataclass(frozen=True)
class SplitPhrase:
    """How a lexicon observation phrase made of several lexicon terms is cut into entities.

    RadGraph annotates ``pleural effusion`` as anatomy ``pleural`` + observation ``effusion``, and
    ``acute cardiopulmonary process`` as modifier + anatomy + observation. ``pieces`` are
    ``(words, term)`` in phrase order; exactly one is an observation, and it keeps the whole
    phrase's concepts.
    """

    pieces: tuple[tuple[int, Term], ...]


class ReportNLP:
    """Tokenizer, sentence splitter, entity source and ConText, built once and reused.

    Args:
        lexicon: the radiology lexicon (terms, cues).
        make_entity_source: ``None`` for the lexicon's phrase matcher; otherwise a function of this
            pipeline returning a callable that sets ``doc.ents`` (labels ``OBS`` / ``ANAT`` /
            ``MOD``, ``span._.kg_term`` set) on a tokenized, sentence-split doc
            (see :mod:`kg.extract_ner`).
    """

    def __init__(
        self, lexicon: Lexicon, make_entity_source: Callable[["ReportNLP"], EntitySource] | None = None
    ) -> None:
        self.lexicon = lexicon
        # Tokenizer only: the records must index RadGraph-XL's tokens, and spaCy's rule-based
        # sentencizer is several times faster than medspaCy's PyRuSH and needs no rule file.
        self.nlp = English()
        self.nlp.tokenizer = RadGraphTokenizer(self.nlp.vocab)
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
        self.negation_words = frozenset(
            cue.text for cue in lexicon.context_cues
            if cue.category == "NEGATED_EXISTENCE" and cue.direction == "FORWARD" and " " not in cue.text
        )

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[Doc]:
        """Process texts in batches; yields docs with sentences, ``doc.ents`` and ConText attributes."""
        for doc in self.nlp.pipe(texts, batch_size=batch_size):
            self.sentencizer(doc)
            _fix_sentence_starts(doc)
            annotate_in_parts(doc, self._annotate)  # a long report in parts: ConText is quadratic
            yield doc

    def _annotate(self, doc: Doc) -> None:
        self.entity_source(doc)
        # ConText reads observations only (allowed_types); handing it just those spares it testing
        # every cue against every anatomy and modifier span.
        doc._.kg_observations = [span for span in doc.ents if span.label_ == OBS]
        self.context(doc, targets="kg_observations")
        # Kept as token indices in user_data (not read from ConText's doc-level graph later), so
        # that a long report annotated in parts (kg.long_reports) carries them back.
        doc.user_data[PSEUDO_NEGATION_ENDS] = self._pseudo_negation_ends(doc)

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

    def pseudo_negation_ends(self, doc: Doc) -> set[int]:
        """Last tokens of pseudo-cues that open with a negation word ("no change", "no increase"),
        as :meth:`pipe` recorded them.

        The pseudo-cue keeps its negation from reaching the words after it ("no change in the
        effusion"), but its own last word is what it negates: RadGraph reads "no change" as an
        absent change.
        """
        return set(doc.user_data.get(PSEUDO_NEGATION_ENDS, ()))

    def _pseudo_negation_ends(self, doc: Doc) -> set[int]:
        ends = set()
        for modifier in doc._.context_graph.modifiers:
            start, end = modifier.modifier_span
            if modifier.category == "PSEUDO" and doc[start].lower_ in self.negation_words:
                ends.add(end - 1)
        return ends

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
        # spaCy's PhraseMatcher with one key per lexicon term, overlaps pruned to the longest by
        # spaCy's filter_spans: medspaCy's TargetMatcher does the same (its ConText is still used),
        # but also runs an empty token matcher and a regex matcher, sets a rule on every span and
        # prunes pairwise, which made it a sixth of the extractor's time.
        matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        strings = self.nlp.vocab.strings
        terms: dict[int, Term] = {}
        labels: dict[int, int] = {}
        for term in self.lexicon.terms.values():
            matcher.add(term.text, [self.nlp.make_doc(term.text)])
            key = strings[term.text]
            terms[key] = term
            labels[key] = strings.add(term.kind)

        def set_entities(doc: Doc) -> None:
            spans = filter_spans([Span(doc, start, end, label=labels[key], span_id=key) for key, start, end in matcher(doc)])
            for span in spans:
                span._.kg_term = terms[span.id]
            doc.ents = spans

        return set_entities

    def _split_phrases(self) -> dict[str, SplitPhrase]:
        """Observation phrases that are a sequence of lexicon terms with exactly one observation."""
        splits: dict[str, SplitPhrase] = {}
        for key, term in self.token_terms.items():
            if term.kind != OBS or " " not in key:
                continue
            pieces = _segment(self.token_terms, key.split())
            # Device names stay whole unless anatomy cuts them ("orogastric tube", "central line",
            # but "sternal" + "wires"): RadGraph annotates a device as one phrase.
            if pieces is not None and GK_FOREIGN_OBJECT in term.concepts and all(t.kind != ANAT for _, t in pieces):
                continue
            if pieces is not None and len(pieces) > 1 and [t.kind for _, t in pieces].count(OBS) == 1:
                splits[term.text] = SplitPhrase(
                    tuple((size, _with_concepts(t, term) if t.kind == OBS else t) for size, t in pieces)
                )
        return splits


def _segment(terms: dict[str, Term], words: list[str]) -> list[tuple[int, Term]] | None:
    """The most lexicon terms that make up ``words`` exactly (not the whole as one), or ``None``.

    The finest cut is RadGraph's: "pulmonary vascular congestion" is three entities.
    """
    best: list[list[tuple[int, Term]] | None] = [None] * (len(words) + 1)
    best[0] = []
    for end in range(1, len(words) + 1):
        for start in range(end):
            previous = best[start]
            term = terms.get(" ".join(words[start:end]))
            if previous is None or term is None or end - start == len(words):
                continue
            current = best[end]
            if current is None or len(previous) + 1 > len(current):
                best[end] = [*previous, (end - start, term)]
    return best[len(words)]


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
        # small effusion" keeps the effusion uncertain. Linked cues do not end a negation, but do
        # end a hedge: what comes before "suggests" is the finding, stated, not a possibility
        # ("opacity suggests pneumonia, effusion cannot be excluded").
        terminating_types={
            "NEGATED_EXISTENCE": ["POSSIBLE_EXISTENCE"],
            "POSSIBLE_EXISTENCE": ["NEGATED_EXISTENCE", "LINKED_POSSIBLE_EXISTENCE"],
            "LINKED_POSSIBLE_EXISTENCE": ["NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE"],
        },
    )
    context.add([ConTextRule(cue.text, cue.category, direction=cue.direction) for cue in lexicon.context_cues])
    return context


def _with_concepts(part: Term, whole: Term) -> Term:
    """The observation part of a split phrase; the whole phrase's concepts define its meaning.

    The part's own concepts are not added: "interstitial thickening" is not pleural thickening.
    """
    return Term(part.text, OBS, whole.concepts, whole.uncertain)


def _fix_sentence_starts(doc: Doc) -> None:
    """Start a sentence after a blank line (report sections, list items); never after a decimal point.

    The tokenisation makes the point of "2.5 cm" a token of its own, which the sentencizer would
    otherwise read as a full stop.
    """
    starts = list(doc.user_data.get(PARAGRAPH_STARTS, ()))
    words = doc_words(doc)
    not_starts = [i + 1 for i in range(1, len(words) - 1)
                  if words[i] == "." and words[i - 1].isdigit() and words[i + 1].isdigit()]
    if starts or not_starts:
        # Set all at once: each Token.is_sent_start assignment scans the whole doc (spaCy checks
        # for a parse), which made long reports quadratic.
        sent_starts = doc.to_array([SENT_START])
        sent_starts[starts] = 1
        sent_starts[not_starts] = -1
        doc.from_array([SENT_START], sent_starts)
