"""Annotating a long report in parts of whole sentences, so the time grows linearly with its length.

medspaCy's ConText compares every cue of a doc with every target of the doc (and every cue with
every other), so one report of ``n`` tokens costs ``O(n²)``: a 120 KB report took a minute and a
1 MB one did not finish. A cue's scope never leaves its sentence, so ConText run over each run of
whole sentences gives the same attributes as over the whole doc. :func:`annotate_in_parts` does
that for docs longer than :data:`PART_TOKENS`: it copies each part into a doc of its own
(sentence starts included), runs the entity source and ConText there, and moves the entities and
their attributes back. Shorter docs, every ordinary report, are annotated whole, as before.

A single "sentence" longer than :data:`PART_TOKENS` (a report without punctuation) is cut every
:data:`PART_TOKENS` tokens: there a cue reaches at most to the end of its part, as ConText's
``max_scope`` would limit it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from spacy.tokens import Doc, Span

#: Tokens up to which a doc is annotated whole; longer docs go in parts of at most this many
#: (500 tokens is about 2.5 KB of report text; smaller parts cost less per token, measured).
PART_TOKENS = 500
#: Longest report text the extractor takes, in characters (spaCy's ``max_length``; its default of
#: one million guards parsers and NER models this pipeline does not run); about 20 s of CPU per MiB
#: (`benchmarks/bench_long_report.py`).
MAX_REPORT_CHARS = 8 << 20
#: Span attributes the entity sources and ConText set, moved from a part back to the report.
SPAN_ATTRIBUTES = ("kg_term", "is_negated", "is_uncertain")
#: ``doc.user_data`` key of the token indices that end a negating pseudo-cue ("no *change*"); the
#: annotation sets it and a part's indices move back to the report shifted by the part's start.
PSEUDO_NEGATION_ENDS = "pseudo_negation_ends"


def annotate_in_parts(doc: Doc, annotate: Callable[[Doc], None], part_tokens: int = PART_TOKENS) -> None:
    """Run ``annotate`` (entity source then ConText; it sets ``doc.ents`` and their attributes) on
    ``doc``, whole if it has at most ``part_tokens`` tokens, else part by part.

    ``doc`` must have its sentence starts set. Time: ``O(len(doc) * part_tokens)`` at most.
    """
    if len(doc) <= part_tokens:
        annotate(doc)
        return
    entities: list[tuple[int, int, str, dict[str, object]]] = []
    pseudo_negation_ends: set[int] = set()
    for start, end in sentence_parts(doc, part_tokens):
        part = doc[start:end].as_doc()
        annotate(part)
        pseudo_negation_ends.update(start + i for i in part.user_data.get(PSEUDO_NEGATION_ENDS, ()))
        for span in part.ents:
            values = {name: getattr(span._, name) for name in SPAN_ATTRIBUTES if Span.has_extension(name)}
            entities.append((start + span.start, start + span.end, span.label_, values))
    doc.ents = [Span(doc, start, end, label=label) for start, end, label, _ in entities]
    doc.user_data[PSEUDO_NEGATION_ENDS] = pseudo_negation_ends
    for span, (_, _, _, values) in zip(doc.ents, entities):
        for name, value in values.items():
            setattr(span._, name, value)


def sentence_parts(doc: Doc, part_tokens: int) -> Iterator[tuple[int, int]]:
    """Token ranges ``[start, end)`` covering ``doc`` in order: runs of whole sentences of at most
    ``part_tokens`` tokens, a longer sentence cut into pieces of ``part_tokens``."""
    part_start = 0
    for sentence in doc.sents:
        if sentence.end - part_start <= part_tokens:
            continue
        if sentence.start > part_start:
            yield part_start, sentence.start
            part_start = sentence.start
        while sentence.end - part_start > part_tokens:
            yield part_start, part_start + part_tokens
            part_start += part_tokens
    if part_start < len(doc):
        yield part_start, len(doc)
