"""F1-RadGraph of generated reports: RG_E, RG_ER and RG_ER-bar (Delbrouck et al., 2022).

Both the generated and the reference report are annotated with RadGraph entities and relations,
and each report pair gets three F1 scores over sets of "candidates" (the ``radgraph`` package's
``F1RadGraph`` reward levels ``simple``, ``partial`` and ``complete``, ``radgraph/rewards.py``):

* ``RG_E`` (simple): candidates are the entities, ``(tokens, label)``;
* ``RG_ER`` (partial): ``(tokens, label)`` for an entity without relations and
  ``(tokens, label, True)`` for one with, so an entity matches only if both reports relate it
  to something;
* ``RG_ER_bar`` (complete): ``(tokens, label)`` for an entity without relations and
  ``(tokens, label, relation, target tokens)`` for each of its relations.

Tokens are lower-cased, labels compared as the annotator wrote them (``labels="written"``, as the
package does) or by their coarse RadGraph label (``labels="coarse"``, :mod:`kg.radgraph_labels`:
to compare two annotators with different label sets), candidates are sets (repeats count once).
Per report: precision = shared / hypothesis candidates, recall = shared / reference candidates,
F1 = their harmonic mean, 0 where undefined. A pair where either report is
empty or has no entity scores 0 on all three, and the corpus figure is the plain mean over all
pairs, empty ones included, as the package averages.

The figures depend on the annotator: the package's RadGraph-XL model and motor-kg's rule-based
annotator (:mod:`kg.extract`, ``backend="rules"``) find different entities, so scores are only
comparable with others from the same annotator. Every result names its annotator
(:data:`ANNOTATORS`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kg.errors import InputError
from kg.records import ReportRecord

#: The three scores, in the order papers report them.
SCORES = ("RG_E", "RG_ER", "RG_ER_bar")
#: How entity labels are compared: as written by the annotator, or by coarse RadGraph label.
LABEL_SETS = ("written", "coarse")
#: Annotator key → the name every table prints after "F1-RadGraph".
ANNOTATORS = {"rules": "motor-kg rules annotator", "radgraph": "radgraph package annotations"}


def table_name(annotator: str) -> str:
    """``"F1-RadGraph (motor-kg rules annotator)"``: the heading of a table of these scores."""
    return f"F1-RadGraph ({ANNOTATORS[annotator]})"


def _candidates(record: ReportRecord, labels: str) -> tuple[set, set, set]:
    """The RG_E, RG_ER and RG_ER-bar candidate sets of one annotated report."""
    entities = record.entities
    simple, partial, complete = set(), set(), set()
    for entity in entities.values():
        key = (entity.tokens.lower(), entity.written_label if labels == "written" else entity.label)
        simple.add(key)
        if entity.relations:
            partial.add((*key, True))
            complete.update((*key, relation, entities[target].tokens.lower()) for relation, target in entity.relations)
        else:
            partial.add(key)
            complete.add(key)
    return simple, partial, complete


def _f1(hypothesis: set, reference: set) -> float:
    shared = len(hypothesis & reference)
    precision = shared / len(hypothesis) if hypothesis else 0.0
    recall = shared / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def report_scores(
    hypothesis: ReportRecord | None, reference: ReportRecord | None, labels: str = "written",
) -> dict[str, float]:
    """RG_E, RG_ER and RG_ER-bar of one generated report against its reference.

    Args:
        hypothesis, reference: the two reports' annotations; ``None`` for an empty report.
        labels: ``"written"`` or ``"coarse"`` (:data:`LABEL_SETS`, see the module docstring).

    Returns:
        ``{"RG_E", "RG_ER", "RG_ER_bar"}``, each in [0, 1]; all 0 when either report is empty or
        has no entity.
    """
    if labels not in LABEL_SETS:
        raise InputError(f"unknown label set {labels!r}; choose one of {', '.join(LABEL_SETS)}", field="labels")
    if hypothesis is None or reference is None or not hypothesis.entities or not reference.entities:
        return dict.fromkeys(SCORES, 0.0)
    return {name: _f1(h, r)
            for name, h, r in zip(SCORES, _candidates(hypothesis, labels), _candidates(reference, labels))}


def f1_radgraph(
    hypotheses: Sequence[ReportRecord | None], references: Sequence[ReportRecord | None], annotator: str = "rules",
    labels: str = "written",
) -> dict[str, Any]:
    """F1-RadGraph of aligned generated and reference annotations.

    Args:
        hypotheses: the generated reports' annotations (``None``: an empty report).
        references: the reference reports' annotations, aligned with ``hypotheses``.
        annotator: a key of :data:`ANNOTATORS`, recorded in the result.
        labels: ``"written"`` (the package's way) or ``"coarse"`` (:data:`LABEL_SETS`).

    Returns:
        ``{"RG_E", "RG_ER", "RG_ER_bar"}`` (means over the ``n`` pairs, NaN for none),
        ``per_report`` (``{score: [n floats]}``), ``annotator`` (its :data:`ANNOTATORS` name)
        and ``n``.

    Raises:
        InputError: the two lists differ in length, or an unknown annotator.
    """
    if annotator not in ANNOTATORS:
        raise InputError(f"unknown annotator {annotator!r}; choose one of {', '.join(ANNOTATORS)}", field="annotator")
    if len(hypotheses) != len(references):
        raise InputError(f"{len(hypotheses)} generated reports for {len(references)} references", field="hypotheses")
    rows = [report_scores(h, r, labels) for h, r in zip(hypotheses, references)]
    per_report = {name: [row[name] for row in rows] for name in SCORES}
    means = {name: sum(values) / len(values) if values else float("nan") for name, values in per_report.items()}
    return {**means, "per_report": per_report, "annotator": ANNOTATORS[annotator], "n": len(rows)}


def annotate_texts(texts: Sequence[str]) -> list[ReportRecord | None]:
    """RadGraph annotations of ``texts`` by motor-kg's rules annotator (``kg extract --backend
    rules``); ``None`` for an empty text, which the package does not annotate either."""
    from kg.extract import cached_extractor
    from kg.reports_io import RawReport

    out: list[ReportRecord | None] = [None] * len(texts)
    written = [k for k, text in enumerate(texts) if text.strip()]
    extractor = cached_extractor("rules")
    for k, extraction in zip(written, extractor.annotate(RawReport(str(k), texts[k]) for k in written)):
        out[k] = extraction.record
    return out


def f1_radgraph_from_texts(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """:func:`f1_radgraph` of generated and reference texts annotated by the rules annotator."""
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references", field="predictions")
    return f1_radgraph(annotate_texts(predictions), annotate_texts(references), "rules")


# ---------------------------------------------------------------------- package annotations
def read_annotations(path: str | os.PathLike) -> dict[str, ReportRecord]:
    """Report id → annotation of a file the ``radgraph`` package wrote, in either layout
    (:mod:`kg.radgraph`: one batch call ``{"0": report, ...}``, or a list of per-report calls
    ``[{"0": report}, ...]`` whose ids are the list positions), or any RadGraph-format file.

    Raises:
        InputError: the file is missing or a report is malformed (naming file, report and field).
    """
    from kg.radgraph_reader import RadGraphReader

    return {record.report_id: record for record in RadGraphReader([path])}


def _letters(text: str) -> str:
    # The package re-tokenises (spaces around punctuation, quotes rewritten) and writes "None" for
    # an empty report; letters and digits alone survive both.
    letters = re.sub(r"[^0-9a-z]", "", text.lower())
    return "" if letters == "none" else letters


def match_annotations(
    annotations: Mapping[str, ReportRecord], study_ids: Sequence[str], texts: Sequence[str], *,
    file: str | os.PathLike, what: str,
) -> list[ReportRecord | None]:
    """The annotation of each study's report, checked to be of that report's text.

    An annotation is found by study id; a file whose ids are the positions ``0 .. n-1`` (the
    package's own keys) is read in the order of ``study_ids`` instead.

    Args:
        annotations: :func:`read_annotations` of ``file``.
        study_ids: the evaluated studies, in evaluation order.
        texts: each study's report that ``file`` should annotate (``what``: ``"generated"`` or
            ``"reference"``); an empty one gets ``None``.

    Raises:
        InputError: a study without annotation, or an annotation of another text.
    """
    if len(study_ids) != len(texts):
        raise InputError(f"{len(study_ids)} study ids for {len(texts)} reports", field="study_ids")
    positions = [str(k) for k in range(len(annotations))]
    if all(study_id in annotations for study_id in study_ids):
        keys = list(study_ids)
    elif set(annotations) == set(positions):
        if len(annotations) != len(study_ids):
            raise InputError(
                f"{len(annotations)} annotations keyed by position for {len(study_ids)} studies; annotate the "
                f"{what} report of every evaluated study, in the evaluation's study order", file=file, field="id")
        keys = positions
    else:
        missing = [study_id for study_id in study_ids if study_id not in annotations]
        shown = ", ".join(repr(s) for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(
            f"no annotation for {len(missing)} of {len(study_ids)} studies ({shown}); key the {what} reports' "
            f"annotations by study id, or by position 0..{len(study_ids) - 1} in the evaluation's study order",
            file=file, field="id",
        )
    out: list[ReportRecord | None] = []
    for study_id, key, text in zip(study_ids, keys, texts):
        record = annotations[key]
        if _letters(record.text) != _letters(text):
            raise InputError(
                f"annotates {record.text[:60]!r}, not the {what} report of study {study_id!r} ({text[:60]!r})",
                file=file, record=key, field="text",
            )
        out.append(record if text.strip() else None)
    return out


def f1_radgraph_from_annotations(
    hypotheses_file: str | os.PathLike, references_file: str | os.PathLike, study_ids: Sequence[str],
    predictions: Sequence[str], references: Sequence[str],
) -> dict[str, Any]:
    """:func:`f1_radgraph` of annotations the ``radgraph`` package wrote for the generated
    (``hypotheses_file``) and reference (``references_file``) reports of ``study_ids``
    (:func:`match_annotations`)."""
    hypotheses = match_annotations(read_annotations(hypotheses_file), study_ids, predictions,
                                   file=hypotheses_file, what="generated")
    reference_records = match_annotations(read_annotations(references_file), study_ids, references,
                                          file=references_file, what="reference")
    return f1_radgraph(hypotheses, reference_records, "radgraph")


class GenerationF1RadGraph:
    """F1-RadGraph of sets of generated reports against one set of references, as a generation
    evaluation reports it: the references are annotated (or their package annotations read and
    matched) once, however many sets (greedy, beam search, a baseline) are scored against them.

    Args:
        references, study_ids: aligned, in evaluation order.
        annotations: ``(HYPS.json, REFS.json)`` written by the ``radgraph`` package for the
            generated and the reference reports; ``None`` annotates both with the rules annotator.

    Raises:
        InputError: an annotation file is missing or malformed, a study has no annotation, or an
            annotation of REFS.json is of another text than the study's report.
    """

    def __init__(self, references: Sequence[str], study_ids: Sequence[str],
                 annotations: Sequence[str | os.PathLike] | None = None) -> None:
        self.reference_texts = list(references)
        self.study_ids = list(study_ids)
        self.hypotheses_file: Path | None = None
        self.references_file: Path | None = None
        self.annotator = "rules"
        if annotations is not None:
            self.annotator = "radgraph"
            self.hypotheses_file, self.references_file = (Path(p) for p in annotations)
        self._references: list | None = None

    @property
    def references(self) -> list:
        """The reference annotations, made (or read and matched) on first use only."""
        if self._references is None:
            if self.references_file is None:
                self._references = annotate_texts(self.reference_texts)
            else:
                self._references = match_annotations(read_annotations(self.references_file), self.study_ids,
                                                     self.reference_texts, file=self.references_file, what="reference")
        return self._references

    def score(self, predictions: Sequence[str], *, required: bool = True) -> dict[str, Any] | None:
        """:func:`f1_radgraph`'s result for ``predictions`` without ``per_report``, or ``None``
        when ``required`` is false and the package's annotations are of other reports (their
        figure is left out rather than computed with another annotator).

        Raises:
            InputError: as the class; with ``required``, also when HYPS.json annotates other texts.
        """
        if len(predictions) != len(self.reference_texts):
            raise InputError(f"{len(predictions)} predictions for {len(self.reference_texts)} references",
                             field="predictions")
        if self.hypotheses_file is None:
            hypotheses = annotate_texts(predictions)
        else:
            try:
                hypotheses = match_annotations(read_annotations(self.hypotheses_file), self.study_ids, predictions,
                                               file=self.hypotheses_file, what="generated")
            except InputError as err:
                if required or err.field != "text":
                    raise
                return None
        result = f1_radgraph(hypotheses, self.references, self.annotator)
        result.pop("per_report")
        return result


def generation_f1_radgraph(
    predictions: Sequence[str], references: Sequence[str], study_ids: Sequence[str],
    annotations: Sequence[str | os.PathLike] | None = None, *, required: bool = True,
) -> dict[str, Any] | None:
    """F1-RadGraph of one set of generated reports (:class:`GenerationF1RadGraph` for one set).

    Args:
        predictions, references, study_ids: aligned, in evaluation order.
        annotations: as :class:`GenerationF1RadGraph`.
        required: as :meth:`GenerationF1RadGraph.score`.
    """
    return GenerationF1RadGraph(references, study_ids, annotations).score(predictions, required=required)


#: Result key → table column.
TABLE_COLUMNS = {"RG_E": "RG_E", "RG_ER": "RG_ER", "RG_ER_bar": "RG_ER-bar"}


def f1_radgraph_table(rows: Mapping[str, Mapping[str, Any] | None]) -> str:
    """F1-RadGraph of several sets of generated reports as Markdown, headed by its annotator.

    Args:
        rows: row name (``"greedy"``, ``"beam search (3)"``, ...) → :func:`generation_f1_radgraph`
            result, or ``None`` for reports it did not score (printed as ``–``).

    Returns:
        A heading line (``"F1-RadGraph (motor-kg rules annotator): ..."``), a blank line and the
        table; ``""`` when no row has a score.
    """
    from pipelines.metrics.tables import metrics_table

    scored = [row for row in rows.values() if row]
    if not scored:
        return ""
    annotators = sorted({row["annotator"] for row in scored})
    lines = [f"F1-RadGraph ({', '.join(annotators)}): RG_E, RG_ER and RG_ER-bar as the radgraph package's "
             "F1RadGraph defines them (reward levels simple, partial, complete), mean over the test studies; "
             "comparable only with figures from the same annotator."]
    if len(scored) < len(rows):
        lines[0] += " The package's annotations cover the greedy reports only: other rows are left out (–)."
    return "\n".join([*lines, "", metrics_table({name: row or {} for name, row in rows.items()}, TABLE_COLUMNS)])
