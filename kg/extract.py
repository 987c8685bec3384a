"""Free-text radiology reports → RadGraph-format records (entities and relations), offline.

Most report corpora come without RadGraph annotations, and the RadGraph model needs weights from a
model hub. This module annotates any report text in RadGraph's format so the knowledge store
(``kg build --source reports``) and the labeler (:mod:`kg.label`) can use it.

Back-ends (``backend=``):

* ``rules`` (default): the lexicon of ``graphs/`` matched by spaCy's PhraseMatcher, negation and
  uncertainty by medspaCy's ConText, relations by the sentence rules of :mod:`kg.extract_graph`.
  Deterministic, no model files.
* ``stanza``: entities from Stanza's radiology NER (``stanza_dir=`` a local Stanza resources
  directory with the ``mimic`` package and ``radiology`` NER model); then the same ConText and
  relation rules.
* ``scispacy``: entities from a scispaCy model (``scispacy_model=`` an installed package name or a
  model directory); spans are typed anatomy / observation by the lexicon.

Nothing is ever downloaded: a missing package or model raises :class:`~kg.errors.MissingResourceError`.

Output conventions (those of the RadGraph release):

* the record's ``text`` is the report's RadGraph-XL tokens (:mod:`kg.report_tokens`) joined by
  single spaces, so punctuation stands alone (``"No pleural effusion ."``) and ``text.split()``
  are the tokens; text already tokenised so (a RadGraph-XL record's ``text``) is kept as it is;
* ``start_ix`` / ``end_ix`` are inclusive indices into ``text.split()``;
* labels ``ANAT-DP``, ``OBS-DP``, ``OBS-U``, ``OBS-DA``; relations ``located_at``,
  ``suggestive_of``, ``modify``.

Typical use::

    from kg.extract import extract_reports, extract_text
    record = extract_text("r1", "No pleural effusion. Mild cardiomegaly.")
    for record in extract_reports("reports_dev.csv"):     # IU-Xray CSV, MIMIC .txt, JSONL, text
        ...
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kg.atomic import write_atomic
from kg.errors import InputError
from kg.extract_graph import Mention, build_graph
from kg.lexicon import Lexicon, load_lexicon
from kg.records import ReportRecord
from kg.reports_io import RawReport, ReadStats, detect_report_format, read_reports

if TYPE_CHECKING:
    from kg.extract_pipeline import ReportNLP

BACKENDS = ("rules", "stanza", "scispacy")
#: ``data_source`` given to records when the caller does not name one, by input format
DATA_SOURCES = {"iu-xray-csv": "IU-Xray"}


@dataclass
class Extraction:
    """One report's annotation: the RadGraph record plus the label mentions of its observations."""

    record: ReportRecord
    mentions: list[Mention]


class Extractor:
    """A report annotator for one back-end; build it once and feed it many reports.

    Args:
        backend: one of :data:`BACKENDS`.
        lexicon: the radiology lexicon; ``None`` loads the one shipped in ``graphs/``.
        stanza_dir: local Stanza resources directory (``stanza`` back-end).
        scispacy_model: scispaCy model package name or directory (``scispacy`` back-end).
        batch_size: texts per spaCy batch.

    Raises:
        InputError: unknown back-end or a back-end option missing.
        MissingResourceError: the back-end's package or model is not installed locally.
    """

    def __init__(
        self,
        backend: str = "rules",
        *,
        lexicon: Lexicon | None = None,
        stanza_dir: str | Path | None = None,
        scispacy_model: str | Path | None = None,
        batch_size: int = 256,
    ) -> None:
        if backend not in BACKENDS:
            raise InputError(f"unknown extraction backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, not {batch_size}")
        self.backend = backend
        self.lexicon = lexicon if lexicon is not None else load_lexicon()
        self.batch_size = batch_size
        self._nlp = _build_nlp(self.lexicon, backend, stanza_dir, scispacy_model)

    def annotate(self, reports: Iterable[RawReport], data_source: str | None = None, data_split: str | None = None) -> Iterator[Extraction]:
        """Annotate reports in order; one :class:`Extraction` per report."""
        pending: list[RawReport] = []
        for report in reports:
            pending.append(report)
            if len(pending) >= self.batch_size:
                yield from self._annotate_batch(pending, data_source, data_split)
                pending = []
        if pending:
            yield from self._annotate_batch(pending, data_source, data_split)

    def annotate_text(self, report_id: str, text: str) -> Extraction:
        """Annotate one text as it is (no section selection)."""
        return next(self._annotate_batch([RawReport(report_id, text)], None, None))

    def _annotate_batch(self, reports: list[RawReport], data_source: str | None, data_split: str | None) -> Iterator[Extraction]:
        docs = self._nlp.pipe((r.text for r in reports), batch_size=self.batch_size)
        for report, doc in zip(reports, docs):
            words, entities, mentions = build_graph(doc, self._nlp)
            record = ReportRecord(
                report_id=report.report_id,
                text=" ".join(words),
                entities={e.id: e for e in entities},
                data_source=data_source,
                data_split=data_split,
            )
            yield Extraction(record, mentions)


def extract_text(report_id: str, text: str, backend: str = "rules", **options: object) -> ReportRecord:
    """Annotate one report text.

    Args:
        report_id: id given to the record.
        text: the report text, annotated as given (pass findings + impression yourself).
        backend: one of :data:`BACKENDS`.
        **options: ``stanza_dir`` / ``scispacy_model`` for those back-ends.

    Returns:
        The RadGraph-format record; ``record.text.split()`` are the tokens the spans index.
    """
    return cached_extractor(backend, **options).annotate_text(report_id, text).record


def extract_reports(
    path: str | Path,
    input_format: str = "auto",
    backend: str = "rules",
    *,
    on_empty: str = "skip",
    stats: ReadStats | None = None,
    on_not_english: str = "skip",
    data_source: str | None = None,
    data_split: str | None = "inference",
    stanza_dir: str | Path | None = None,
    scispacy_model: str | Path | None = None,
    batch_size: int = 256,
) -> Iterator[ReportRecord]:
    """Read a report corpus (:func:`kg.reports_io.read_reports`) and annotate every report.

    Args:
        path: IU-Xray CSV, MIMIC-CXR ``.txt`` file or directory, JSONL, or plain text.
        input_format: ``auto`` or a format of :data:`kg.reports_io.INPUT_FORMATS`.
        backend: one of :data:`BACKENDS`.
        on_empty: ``skip`` (counted in ``stats``) or ``error`` for reports without text.
        on_not_english: ``skip`` (counted in ``stats``), ``error`` or ``keep`` for reports that are
            not in English (:mod:`kg.language`).
        stats: optional counters of read and skipped reports.
        data_source: record ``data_source``; default ``"IU-Xray"`` for IU-Xray CSV, else none.
        data_split: record ``data_split`` (RadGraph calls model-annotated reports ``inference``).
        stanza_dir, scispacy_model, batch_size: see :class:`Extractor`.

    Yields:
        One :class:`~kg.records.ReportRecord` per report with text, in corpus order.
    """
    for extraction in annotate_reports(
        path,
        input_format,
        backend,
        on_empty=on_empty,
        stats=stats,
        on_not_english=on_not_english,
        data_source=data_source,
        data_split=data_split,
        stanza_dir=stanza_dir,
        scispacy_model=scispacy_model,
        batch_size=batch_size,
    ):
        yield extraction.record


def annotate_reports(
    path: str | Path,
    input_format: str = "auto",
    backend: str = "rules",
    *,
    on_empty: str = "skip",
    stats: ReadStats | None = None,
    on_not_english: str = "skip",
    data_source: str | None = None,
    data_split: str | None = "inference",
    stanza_dir: str | Path | None = None,
    scispacy_model: str | Path | None = None,
    batch_size: int = 256,
) -> Iterator[Extraction]:
    """Like :func:`extract_reports`, yielding :class:`Extraction` (record + label mentions)."""
    source = Path(path)
    fmt = input_format
    if fmt == "auto" and source.exists():
        fmt = detect_report_format(source)
    if data_source is None:
        data_source = DATA_SOURCES.get(fmt)
    extractor = Extractor(backend, stanza_dir=stanza_dir, scispacy_model=scispacy_model, batch_size=batch_size)
    reports = read_reports(source, input_format, on_empty=on_empty, stats=stats, on_not_english=on_not_english)
    yield from extractor.annotate(reports, data_source, data_split)


def write_records(records: Iterable[ReportRecord], path: str | Path) -> int:
    """Write records as RadGraph JSON (``.json``: id → record) or JSON lines (``.jsonl``).

    A JSONL line is ``{"report_id": ..., **record.to_json()}``. The file is written to a temporary
    name beside ``path`` and moved into place only when complete, so an existing file is never
    left half-written.

    Returns:
        The number of records written.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise InputError("output must end in .json or .jsonl", file=target)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "w", encoding="utf-8") as out:
            if suffix == ".jsonl":
                for record in records:
                    out.write(json.dumps({"report_id": record.report_id, **record.to_json()}, ensure_ascii=False))
                    out.write("\n")
                    count += 1
            else:
                mapping = {}
                for record in records:
                    if record.report_id in mapping:
                        raise InputError("duplicate report id", file=target, record=record.report_id)
                    mapping[record.report_id] = record.to_json()
                count = len(mapping)
                json.dump(mapping, out, ensure_ascii=False, indent=1)
                out.write("\n")

    write_atomic(target, write)
    return count


@functools.lru_cache(maxsize=4)
def cached_extractor(backend: str = "rules", **options: object) -> Extractor:
    """A shared :class:`Extractor` per back-end and options, built on first use (pipeline build ~5 s)."""
    return Extractor(backend, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- internals

def _build_nlp(
    lexicon: Lexicon, backend: str, stanza_dir: str | Path | None, scispacy_model: str | Path | None
) -> "ReportNLP":
    from kg.extract_pipeline import ReportNLP

    if backend == "rules":
        return ReportNLP(lexicon)
    from kg import extract_ner

    if backend == "stanza":
        if stanza_dir is None:
            raise InputError("the stanza backend needs stanza_dir (--stanza-dir): a local Stanza resources directory")
        return extract_ner.stanza_pipeline(lexicon, stanza_dir)
    if scispacy_model is None:
        raise InputError("the scispacy backend needs scispacy_model (--scispacy-model): a model package name or directory")
    return extract_ner.scispacy_pipeline(lexicon, scispacy_model)
