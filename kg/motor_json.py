"""The knowledge annotation file MOTOR's reference code reads, written from a store.

MOTOR's training code reads one JSON file (its knowledge annotation was never released, only
described). :func:`export_motor_annotation` writes it; :func:`read_motor_annotation` reads it back.

Layout: a JSON list whose element 0 is the reference layout, exactly::

    [{"train": [{"id": "50414267",
                 "image_path": ["files/p10/p10000032/s50414267/02aa804e.jpg"],
                 "report": "...",
                 "triplet": ["effusion located at pleural", ...],
                 "label_index": [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]}, ...],
      "val": [...], "test": [...]}]

* ``id``: the study id of the input (manifest ``study_id``, or R2Gen ``id``).
* ``image_path``: the study's image paths as the input gives them (relative to the image root).
* ``report``: the report text as the input gives it.
* ``triplet``: the study's RadGraph triplets from the store (table ``report_triplets``) as
  ``"head relation tail"`` strings (:meth:`kg.normalize.Triplet.phrase`), distinct, at most
  ``max_triplets`` (default :data:`DEFAULT_MAX_TRIPLETS`; the reference code reads at most 30),
  in the ``sk_order`` policy's order (:mod:`kg.sk_order`; default ``report``, as the report
  states them), the order the SK sentences of :mod:`kg.retrieval` use too.
* ``label_index``: 14 integers in the CheXpert order of ``graphs/labels.yaml`` (Atelectasis,
  Cardiomegaly, Consolidation, Edema, Enlarged Cardiomediastinum, Fracture, Lung Lesion, Lung
  Opacity, No Finding, Pleural Effusion, Pleural Other, Pneumonia, Pneumothorax, Support Devices):
  positive 1, negative or not mentioned 0, uncertain by policy: ``negative`` → 0, ``positive`` →
  1, ``ignore`` → -1 (for training code that masks it; the reference code does not).

How the file was made goes to a side-car ``<name>.meta.json`` beside it (:func:`meta_path`), so
element 0 stays what the reference code expects: the uncertain-label policy, the triplet cap and
order, the store and input (path, sha256), where each study's labels came from and how many
studies had no knowledge in the store.

Store lookup: a study's triplets are those of the store report with the study's id; a numeric
id not in the store is also tried as ``s<id>`` (MIMIC-CXR report files are named
``s50414267.txt``, manifests carry ``50414267``). Studies without a report in the store get an
empty ``triplet`` list and are counted.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.atomic import write_json_atomic
from kg.errors import InputError
from kg.files import read_json, sha256_file
from kg.label_schema import chexpert_names
from kg.normalize import Triplet
from kg.sk_order import DEFAULT_SK_ORDER, check_sk_order, ordered_phrases
from kg.store import created_by, open_store, read_metadata

DEFAULT_MAX_TRIPLETS = 20
UNCERTAIN_POLICIES = ("negative", "positive", "ignore")
SPLITS = ("train", "val", "test")
FORMAT_NAME = "motor-knowledge-annotation"
TRIPLET_ORDERS = {
    "report": "as the report states them (first mention)",
    "specific_first": "present, then uncertain, then negated; then fewer store reports (n_reports) first; "
                      "then as the report states them",
    "frequent_first": "more store reports (n_reports) first; then as the report states them",
}

LabelValue = int | float | None


@dataclass
class MotorStudy:
    """One study to export.

    Attributes:
        id: study id written as ``id``.
        image_path: image paths, relative to the image root.
        report: the report text.
        split: ``train``, ``val`` or ``test``.
        labels: 14 CheXpert values (1, 0, -1, ``None``/NaN not mentioned) in ``graphs/labels.yaml``
            order, or ``None`` to label ``report`` with :func:`kg.label.label_texts`.
        knowledge_id: store report id holding the study's triplets (default: ``id``).
    """

    id: str
    image_path: list[str]
    report: str
    split: str
    labels: list[LabelValue] | None = None
    knowledge_id: str | None = None


@dataclass
class MotorEntry:
    """One study as the annotation file holds it (the fields of the module docstring)."""

    id: str
    image_path: list[str]
    report: str
    triplet: list[str]
    label_index: list[int]

    def to_json(self) -> dict[str, Any]:
        """The entry in the reference key order."""
        return {"id": self.id, "image_path": list(self.image_path), "report": self.report,
                "triplet": list(self.triplet), "label_index": list(self.label_index)}


@dataclass
class ExportSummary:
    """What :func:`export_motor_annotation` wrote.

    Attributes:
        out: the annotation file; meta: its side-car.
        studies: entries per split.
        without_knowledge: studies whose id is not a store report.
        labels_from_input: studies whose labels came from the input; labels_from_text: from ``kg.label``.
    """

    out: Path
    meta: Path
    studies: dict[str, int] = field(default_factory=dict)
    without_knowledge: int = 0
    labels_from_input: int = 0
    labels_from_text: int = 0


def meta_path(path: str | os.PathLike) -> Path:
    """The side-car of an annotation file: ``motor_knowledge.json`` → ``motor_knowledge.meta.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.meta.json")


def study_triplets(
    con: Any, report_ids: Sequence[str], max_triplets: int, order: str = DEFAULT_SK_ORDER
) -> dict[str, list[str]]:
    """Triplet strings of each store report in ``sk_order``, distinct, at most ``max_triplets``.

    Args:
        con: an open store connection.
        report_ids: store report ids.
        max_triplets: cap per report (>= 0), applied after ordering.
        order: one of :data:`kg.sk_order.SK_ORDERS` (``report``: as the report states them;
            ``specific_first`` / ``frequent_first`` by the number of store reports stating them).

    Returns:
        ``{report_id: [phrase, ...]}`` for the ids that are store reports (others are absent).
    """
    check_sk_order(order)
    wanted = list(dict.fromkeys(report_ids))
    known = {row[0] for row in con.execute(
        "SELECT report_id FROM reports WHERE report_id IN (SELECT unnest(?::VARCHAR[]))", [wanted]).fetchall()}
    # report_triplets is written report by report, each in order of first mention (kg.store).
    rows = con.execute(
        """
        SELECT rt.report_id, rt.head, rt.relation, rt.tail, rt.head_label, rt.tail_label,
               coalesce(t.n_reports, 0)
        FROM report_triplets rt
        LEFT JOIN triplets t USING (head, relation, tail, head_label, tail_label)
        WHERE rt.report_id IN (SELECT unnest(?::VARCHAR[]))
        ORDER BY rt.rowid
        """,
        [wanted],
    ).fetchall()
    keyed: dict[str, list[tuple[Triplet, int]]] = {report_id: [] for report_id in known}
    for report_id, head, relation, tail, head_label, tail_label, n_reports in rows:
        keyed[report_id].append((Triplet(head, relation, tail, head_label, tail_label), int(n_reports)))
    return {report_id: ordered_phrases(items, order)[:max_triplets] for report_id, items in keyed.items()}


def label_index(values: Sequence[LabelValue], uncertain: str = "negative") -> list[int]:
    """14 CheXpert values (1, 0, -1, ``None``/NaN) → the reference's integers under ``uncertain``.

    Returns:
        ``[int] * 14``: 1 positive, 0 negative or not mentioned, uncertain → 0 / 1 / -1 for
        ``negative`` / ``positive`` / ``ignore``.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"uncertain policy must be one of {', '.join(UNCERTAIN_POLICIES)}, got {uncertain!r}",
                         field="uncertain")
    as_uncertain = {"negative": 0, "positive": 1, "ignore": -1}[uncertain]
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == 0:
            out.append(0)
        elif value == 1:
            out.append(1)
        elif value == -1:
            out.append(as_uncertain)
        else:
            raise InputError(f"label value {value!r}; allowed: 1, 0, -1, null", field="labels")
    return out


def _has_labels(labels: list[LabelValue] | None) -> bool:
    return labels is not None and any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in labels)


def _store_id(study: MotorStudy, known: set[str]) -> str:
    report_id = study.knowledge_id or study.id
    if report_id not in known and report_id.isdigit() and f"s{report_id}" in known:
        return f"s{report_id}"
    return report_id


def export_motor_annotation(
    store: str | os.PathLike,
    studies: Sequence[MotorStudy],
    out: str | os.PathLike,
    *,
    max_triplets: int = DEFAULT_MAX_TRIPLETS,
    uncertain: str = "negative",
    source: dict[str, Any] | None = None,
    label_backend: str = "rules",
    sk_order: str = DEFAULT_SK_ORDER,
) -> ExportSummary:
    """Write the MOTOR knowledge annotation of ``studies`` and its side-car (module docstring).

    Args:
        store: the DuckDB knowledge store holding the studies' reports.
        studies: the studies, in output order within each split.
        out: the annotation file to write (replaced atomically; so is the side-car).
        max_triplets: cap on ``triplet`` per study (>= 0).
        uncertain: ``negative``, ``positive`` or ``ignore`` (see :func:`label_index`).
        source: description of the input (kind, path), recorded in the side-car.
        label_backend: :mod:`kg.label` back-end for studies without labels.
        sk_order: order of each study's ``triplet`` list (:data:`kg.sk_order.SK_ORDERS`).

    Raises:
        InputError: the store is missing or not a store, an option is out of range, a study's
            split or labels are malformed, or a study id repeats.
    """
    if max_triplets < 0:
        raise InputError(f"max_triplets must be >= 0, got {max_triplets}", field="max_triplets")
    check_sk_order(sk_order)
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"uncertain policy must be one of {', '.join(UNCERTAIN_POLICIES)}, got {uncertain!r}",
                         field="uncertain")
    seen: set[str] = set()
    for number, study in enumerate(studies):
        if study.split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {study.split!r}", record=study.id,
                             field="split")
        if study.id in seen:
            raise InputError("duplicate study id", record=f"{number} (id {study.id})", field="id")
        seen.add(study.id)
        if study.labels is not None and len(study.labels) != len(chexpert_names()):
            raise InputError(f"expected {len(chexpert_names())} CheXpert labels, got {len(study.labels)}",
                             record=study.id, field="labels")
    store = Path(store)
    con = open_store(store)
    try:
        candidates = [study.knowledge_id or study.id for study in studies]
        candidates += [f"s{c}" for c in candidates if c.isdigit()]
        known_triplets = study_triplets(con, candidates, max_triplets, sk_order)
        store_meta = read_metadata(con)
    finally:
        con.close()
    to_label = [i for i, study in enumerate(studies) if not _has_labels(study.labels)]
    text_labels: dict[int, list[LabelValue]] = {}
    if to_label:
        from kg.label import label_texts

        values = label_texts([studies[i].report for i in to_label], backend=label_backend)
        text_labels = {i: [float(v) for v in row] for i, row in zip(to_label, values)}
    grouped: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    known = set(known_triplets)
    without = 0
    for i, study in enumerate(studies):
        report_id = _store_id(study, known)
        if report_id not in known:
            without += 1
        labels = text_labels[i] if i in text_labels else study.labels
        entry = MotorEntry(study.id, list(study.image_path), study.report, known_triplets.get(report_id, []),
                           label_index(labels, uncertain))
        grouped[study.split].append(entry.to_json())
    out = Path(out)
    summary = ExportSummary(out=out, meta=meta_path(out), studies={k: len(v) for k, v in grouped.items()},
                            without_knowledge=without, labels_from_input=len(studies) - len(to_label),
                            labels_from_text=len(to_label))
    meta = {
        "format": FORMAT_NAME,
        "created_by": created_by(),
        "layout": "element 0 of the list in the annotation file; this side-car is not read by the reference code",
        "store": {"path": str(store), "sha256": sha256_file(store), "sources": store_meta.get("sources"),
                  "options": store_meta.get("options")},
        "input": source or {},
        "options": {"max_triplets": max_triplets, "uncertain": uncertain, "label_backend": label_backend},
        "label_order": list(chexpert_names()),
        "label_coding": {"positive": 1, "negative": 0, "not_mentioned": 0,
                         "uncertain": {"negative": 0, "positive": 1, "ignore": -1}[uncertain]},
        "triplet_order": {"sk_order": sk_order, "rule": TRIPLET_ORDERS[sk_order]},
        "counts": {"studies": summary.studies, "without_knowledge": without,
                   "labels_from_input": summary.labels_from_input, "labels_from_text": summary.labels_from_text},
    }
    write_json_atomic(out, [grouped], ensure_ascii=False)
    write_json_atomic(summary.meta, meta, indent=1, ensure_ascii=False)
    return summary


def read_motor_annotation(path: str | os.PathLike) -> dict[str, list[MotorEntry]]:
    """Read a MOTOR knowledge annotation file (element 0 of the list; other elements are ignored).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` of :class:`MotorEntry` (absent splits empty).

    Raises:
        InputError: the file is missing or not JSON, element 0 is not an object of split lists, or an
            entry lacks a field or has a wrong type; the message names the file, ``split[i] (id)``
            and the field.
    """
    path = Path(path)
    data = read_json(path, missing="annotation file not found")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise InputError("expected a list whose first element maps train / val / test to studies", file=path)
    unknown = sorted(set(data[0]) - set(SPLITS))
    if unknown:
        raise InputError(f"unknown split keys {unknown}; expected {', '.join(SPLITS)}", file=path)
    out: dict[str, list[MotorEntry]] = {split: [] for split in SPLITS}
    for split, items in data[0].items():
        if not isinstance(items, list):
            raise InputError("must be a list of studies", file=path, field=split)
        for i, item in enumerate(items):
            out[split].append(_parse_entry(item, path, f"{split}[{i}]"))
    return out


def _parse_entry(item: Any, path: Path, record: str) -> MotorEntry:
    if not isinstance(item, dict):
        raise InputError("a study must be an object", file=path, record=record)
    entry_id = item.get("id")
    if isinstance(entry_id, bool) or not isinstance(entry_id, (str, int)) or not str(entry_id).strip():
        raise InputError(f"must be a non-empty string, got {entry_id!r:.60}", file=path, record=record, field="id")
    record = f"{record} (id {entry_id})"

    def string_list(name: str) -> list[str]:
        value = item.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"must be a list of strings, got {value!r:.60}", file=path, record=record, field=name)
        return value

    report = item.get("report")
    if not isinstance(report, str):
        raise InputError(f"must be a string, got {report!r:.60}", file=path, record=record, field="report")
    labels = item.get("label_index")
    size = len(chexpert_names())
    if (not isinstance(labels, list) or len(labels) != size
            or not all(isinstance(v, int) and not isinstance(v, bool) and v in (1, 0, -1) for v in labels)):
        raise InputError(f"must be {size} integers (1, 0 or -1), got {labels!r:.80}", file=path, record=record,
                         field="label_index")
    return MotorEntry(str(entry_id), string_list("image_path"), report, string_list("triplet"), labels)
