"""Entity sources backed by NER models: Stanza's radiology NER and scispaCy.

Both replace only the entity step of :class:`kg.extract_pipeline.ReportNLP`; tokenization,
sentences, ConText and the relation rules stay those of the ``rules`` back-end, so records keep the
same format. Model spans are aligned to the pipeline's tokens (widened to whole tokens) and given
the lexicon term they contain, which supplies label concepts and anatomy groups.

Nothing is downloaded: the packages and models must be installed locally, else
:class:`~kg.errors.MissingResourceError` says what to provide.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from kg.errors import MissingResourceError
from kg.extract_pipeline import ReportNLP
from kg.lexicon import ANAT, LOCATION, MOD, OBS, Lexicon, Term

#: Stanza radiology NER types → entity kind and modifier kind (UNCERTAINTY is left to ConText)
STANZA_TYPES: dict[str, tuple[str, str | None]] = {
    "ANATOMY": (ANAT, None),
    "ANATOMY_MODIFIER": (MOD, LOCATION),
    "OBSERVATION": (OBS, None),
    "OBSERVATION_MODIFIER": (MOD, "descriptor"),
}


def stanza_pipeline(lexicon: Lexicon, stanza_dir: str | Path) -> ReportNLP:
    """A report pipeline whose entities come from Stanza's ``mimic`` tokenizer + ``radiology`` NER.

    Args:
        lexicon: the radiology lexicon.
        stanza_dir: local Stanza resources directory (with ``resources.json`` and the ``en/mimic``
            and ``en/ner/radiology`` models), prepared with ``stanza.download`` on a machine online.

    Raises:
        MissingResourceError: stanza not installed, or the directory lacks the models.
    """
    try:
        import stanza
    except ImportError as err:
        raise MissingResourceError(
            "the stanza backend needs the 'stanza' package: pip install stanza (or motor-kg[nlp])"
        ) from err
    directory = Path(stanza_dir)
    if not (directory / "resources.json").is_file():
        raise MissingResourceError(
            f"no Stanza resources in {directory} (resources.json missing); download the English 'mimic' "
            "package with the 'radiology' NER model there with stanza.download on a connected machine"
        )
    try:
        pipeline = stanza.Pipeline(
            "en",
            dir=str(directory),
            package="mimic",
            processors={"tokenize": "mimic", "ner": "radiology"},
            download_method=None,
            logging_level="WARN",
        )
    # Stanza reports absent or partial model files as FileNotFoundError, KeyError or ValueError
    # depending on what is missing; all mean the same to the user.
    except (OSError, KeyError, ValueError) as err:
        raise MissingResourceError(
            f"Stanza models for 'mimic' tokenize + 'radiology' NER not usable in {directory}: {err}"
        ) from err

    def spans(doc: Doc) -> list[tuple[int, int, str, str | None]]:
        result = pipeline(doc.text)
        found = []
        for entity in result.ents:
            if entity.type in STANZA_TYPES:
                kind, modifier = STANZA_TYPES[entity.type]
                found.append((entity.start_char, entity.end_char, kind, modifier))
        return found

    return ReportNLP(lexicon, make_entity_source=lambda nlp: _ModelEntities(nlp, spans))


def scispacy_pipeline(lexicon: Lexicon, model: str | Path) -> ReportNLP:
    """A report pipeline whose entity spans come from a scispaCy model (``en_core_sci_sm``, ...).

    scispaCy's general models tag spans without a type; each span is typed by the lexicon term it
    contains (observation before anatomy) and kept as an observation when it contains none.

    Args:
        lexicon: the radiology lexicon.
        model: an installed scispaCy model package name or a model directory.

    Raises:
        MissingResourceError: scispacy not installed, or the model not found locally.
    """
    try:
        import scispacy  # noqa: F401  (registers the tokenizer the models are built with)
        import spacy
    except ImportError as err:
        raise MissingResourceError(
            "the scispacy backend needs the 'scispacy' package: pip install scispacy (or motor-kg[nlp])"
        ) from err
    try:
        sci = spacy.load(str(model))
    except OSError as err:
        raise MissingResourceError(
            f"scispaCy model {str(model)!r} not found: install the model package or pass its directory"
        ) from err

    def spans(doc: Doc) -> list[tuple[int, int, str, str | None]]:
        return [(e.start_char, e.end_char, OBS, None) for e in sci(doc.text).ents]

    return ReportNLP(lexicon, make_entity_source=lambda nlp: _ModelEntities(nlp, spans, type_by_lexicon=True))


class _ModelEntities:
    """Sets ``doc.ents`` from model character spans, each with the lexicon term it contains."""

    def __init__(self, nlp: ReportNLP, spans: Any, type_by_lexicon: bool = False) -> None:
        self.nlp = nlp
        self.spans = spans
        self.type_by_lexicon = type_by_lexicon

    def __call__(self, doc: Doc) -> None:
        entities: list[Span] = []
        for start, end, kind, modifier in self.spans(doc):
            span = doc.char_span(start, end, alignment_mode="expand")
            if span is None or not span.text.strip():
                continue
            if self.type_by_lexicon:
                term = self.nlp.find_term(span, OBS) or self.nlp.find_term(span, ANAT)
                kind = term.kind if term is not None else OBS
            else:
                term = self.nlp.find_term(span, kind)
            if term is None or (kind == MOD and term.modifier is None):
                term = Term(span.text.lower(), kind, modifier=modifier)
            entity = Span(doc, span.start, span.end, label=kind)
            entity._.kg_term = term
            entities.append(entity)
        doc.ents = filter_spans(entities)
