"""Report labeler: CheXpert's 14 observations and the 20 GK findings from free-text reports.

Each report gets, per label column, 1 (positive), 0 (negative), -1 (uncertain) or NaN (not
mentioned). Columns: the 14 CheXpert classes in ``graphs/labels.yaml`` order, then ``gk:<id>`` for
the GK findings in ``graphs/chest_gk.yaml`` order. The labels come from the same single pass of the
extractor (:mod:`kg.extract`) that produces the RadGraph records: every observation entity is a
mention whose certainty (``OBS-DP`` 1, ``OBS-U`` -1, ``OBS-DA`` 0) is given to its concepts.

Aggregation follows the CheXpert labeler (Irvin et al. 2019, ``stages/aggregate.py``):

* a column mentioned several times is 1 if any mention is positive, else -1 if any is uncertain,
  else 0 (the labeler's pairwise rules reduce to this order);
* "No Finding" is 1 when no column other than Support Devices is positive or uncertain, else
  blank; it is never 0. The columns counted are all concepts of the lexicon, so the GK findings
  without a CheXpert class (scoliosis, emphysema, calcinosis...) and other abnormalities count like
  the labeler's own "no finding" phrase list (degenerative changes, hernia, calcification...);
* "heart failure" / "CHF" also give uncertain Cardiomegaly, and vascular congestion gives
  uncertain Edema (from the lexicon's ``uncertain`` entries);
* "heart size is normal" gives Cardiomegaly 0 and "mediastinum is normal" Enlarged
  Cardiomediastinum 0, as the labeler reads a normal heart or mediastinum mention;
* the class hierarchy of the CheXpert paper (e.g. a positive child of Lung Opacity) is not
  propagated: the reference labeler does not do it either.

``gk:normal`` follows the No Finding rule with foreign objects counted as findings (a report
listing a device is not "normal" in IU-Xray's MeSH indexing).
Not implemented from the labeler: its "X or Y" → uncertain rule and its dependency-parse patterns;
negation and uncertainty come from medspaCy's ConText with the cues in
``graphs/radiology_lexicon.yaml``.

Typical use::

    from kg.label import label_reports, label_text, label_texts
    frame = label_reports("reports_dev.csv")          # pandas DataFrame, one row per report
    label_text("No effusion. Mild cardiomegaly.")     # {'Cardiomegaly': 1.0, 'Pleural Effusion': 0.0, ...}
    label_texts(["No acute disease."])                 # float array (1, 14): CheXpert columns only
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kg.atomic import write_atomic
from kg.errors import InputError
from kg.extract import Extraction, Extractor, cached_extractor, annotate_reports
from kg.extract_graph import ABSENT, PRESENT, UNCERTAIN, Mention
from kg.label_schema import GK_NORMAL, NO_FINDING, is_no_finding
from kg.lexicon import Lexicon, load_lexicon
from kg.reports_io import RawReport, ReadStats

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def label_columns(lexicon: Lexicon | None = None) -> list[str]:
    """The 14 CheXpert class names, then ``gk:<finding id>`` for the 20 GK findings."""
    return (lexicon or load_lexicon()).label_columns


def chexpert_columns(lexicon: Lexicon | None = None) -> list[str]:
    """The 14 CheXpert class names in ``graphs/labels.yaml`` order."""
    return [c.name for c in (lexicon or load_lexicon()).chexpert]


def aggregate(mentions: Iterable[Mention], columns: list[str]) -> dict[str, float]:
    """Report-level labels from mentions, by the CheXpert labeler's rules (module docstring).

    Returns:
        Column → 1.0, 0.0, -1.0 or NaN, for every column in ``columns``.
    """
    values: dict[str, set[int]] = {}
    for mention in mentions:
        for column, value in mention.labels.items():
            values.setdefault(column, set()).add(value)
    labels: dict[str, float] = {}
    for column in columns:
        seen = values.get(column)
        if not seen:
            labels[column] = math.nan
        elif PRESENT in seen:
            labels[column] = float(PRESENT)
        elif UNCERTAIN in seen:
            labels[column] = float(UNCERTAIN)
        else:
            labels[column] = float(ABSENT)
    found = {c for c, seen in values.items() if seen & {PRESENT, UNCERTAIN}}
    if NO_FINDING in labels:
        labels[NO_FINDING] = 1.0 if is_no_finding(found) else math.nan
    if GK_NORMAL in labels:
        labels[GK_NORMAL] = math.nan if found else 1.0
    return labels


def label_reports(
    reports: str | Path | Iterable[RawReport | str],
    backend: str = "rules",
    *,
    input_format: str = "auto",
    on_empty: str = "skip",
    stats: ReadStats | None = None,
    on_not_english: str = "skip",
    **options: object,
) -> "pd.DataFrame":
    """Label a corpus.

    Args:
        reports: a corpus path (any format of :func:`kg.reports_io.read_reports`), or an iterable of
            :class:`~kg.reports_io.RawReport` or plain texts (ids ``"0"``, ``"1"``... by position).
        backend: extraction back-end (:data:`kg.extract.BACKENDS`).
        input_format, on_empty, stats, on_not_english: passed to the corpus reader
            (:func:`kg.reports_io.read_reports`) when ``reports`` is a path.
        **options: ``stanza_dir`` / ``scispacy_model`` / ``batch_size`` for the extractor.

    Returns:
        DataFrame with column ``report_id`` then :func:`label_columns` (float: 1, 0, -1 or NaN),
        one row per report in input order.
    """
    import pandas as pd

    if isinstance(reports, (str, Path)):
        extractions: Iterable[Extraction] = annotate_reports(
            reports, input_format, backend, on_empty=on_empty, stats=stats, on_not_english=on_not_english,
            **options,  # type: ignore[arg-type]
        )
    else:
        extractor = Extractor(backend, **options)  # type: ignore[arg-type]
        extractions = extractor.annotate(_as_raw(reports))
    columns = label_columns()
    rows = []
    for extraction in extractions:
        row: dict[str, object] = {"report_id": extraction.record.report_id}
        row.update(aggregate(extraction.mentions, columns))
        rows.append(row)
    return pd.DataFrame(rows, columns=["report_id", *columns])


def label_text(text: str, backend: str = "rules", **options: object) -> dict[str, float]:
    """Labels of one report text (annotated as given): column → 1.0, 0.0, -1.0 or NaN."""
    extraction = cached_extractor(backend, **options).annotate_text("0", text)
    return aggregate(extraction.mentions, label_columns())


def label_texts(texts: list[str], backend: str = "rules", **options: object) -> "np.ndarray":
    """CheXpert labels of many texts, for MLC targets and clinical-efficacy metrics.

    Returns:
        float array of shape ``(len(texts), 14)`` in :func:`chexpert_columns` order, values in
        {1, 0, -1, NaN}.
    """
    import numpy as np

    columns = chexpert_columns()
    extractor = cached_extractor(backend, **options)
    out = np.full((len(texts), len(columns)), np.nan, dtype=np.float64)
    for row, extraction in enumerate(extractor.annotate(_as_raw(texts))):
        labels = aggregate(extraction.mentions, columns)
        out[row] = [labels[c] for c in columns]
    return out


def write_labels(frame: "pd.DataFrame", path: str | Path) -> None:
    """Write labels as ``.csv`` (blank for NaN) or ``.parquet``, replacing ``path`` atomically."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError("labels output must end in .csv or .parquet", file=target)
    if suffix == ".csv":
        write_atomic(target, lambda tmp: frame.to_csv(tmp, index=False, float_format="%g"))
    else:
        write_atomic(target, lambda tmp: frame.to_parquet(tmp, index=False))


def _as_raw(reports: Iterable[RawReport | str]) -> Iterable[RawReport]:
    for n, report in enumerate(reports):
        if isinstance(report, RawReport):
            yield report
        elif isinstance(report, str):
            yield RawReport(str(n), report)
        else:
            raise InputError(f"expected a report text or RawReport, got {type(report).__name__}", record=n)
