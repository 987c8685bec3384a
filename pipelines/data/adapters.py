"""Adapters from public dataset layouts to manifest rows.

One function per format, each returning an :class:`AdapterResult`:

* :func:`from_r2gen_annotation`: IU-Xray or MIMIC-CXR in R2Gen's ``annotation.json`` layout
  (``{"train": [{"id", "report", "image_path": [...], "split"}, ...], "val": [...], "test": [...]}``;
  MIMIC-CXR entries also carry ``study_id`` / ``subject_id``, one entry per image). Entries sharing
  a ``study_id`` become one study with all their images. Optionally attaches MIMIC-CXR CheXpert
  labels (:func:`read_chexpert_labels`).
* :func:`from_iu_xray_csv`: the IU-Xray Kaggle CSVs (``indiana_reports.csv`` +
  ``indiana_projections.csv``). Frontal view first. The report is ``"FINDINGS: ... IMPRESSION:
  ..."``; ``gk_labels`` come from the MeSH column (below). The set has no official split: a seeded
  permutation of the uids is cut 70 / 10 / 20 % (R2Gen's proportions).
* :func:`from_vqa_rad`: VQA-RAD's JSON (``qid, image_name, question, answer, answer_type,
  phrase_type``); questions whose ``phrase_type`` starts with ``test`` form the test split, the rest
  train (the usual protocol, the release has no validation split).
* :func:`from_slake`: SLAKE's ``train.json`` / ``validate.json`` / ``test.json``; English questions
  only (``q_lang == "en"``); the split is taken from the file name unless given.

Image paths are checked and returned absolute (:func:`~kg.manifest.write_manifest`
writes them relative to the manifest). Answers are stripped and lower-cased.

IU-Xray MeSH → GK labels follow ``graphs/mesh_to_gk.yaml`` (:mod:`kg.mesh`): "Calcified Granuloma"
→ lesion + calcinosis, ``normal`` → normal, headings without a node of their own (``Markings``,
``Osteophyte``, ...) → other_finding; ``No Indexing`` leaves the study without GK labels; headings
the mapping does not know are counted in ``counts["unmapped_mesh_terms"]``. Findings not named are
0 (MeSH indexing lists every finding of a study).

Errors: a malformed record raises :class:`~kg.errors.InputError` naming the file, the record and the
field, or is skipped and counted with ``skip_invalid=True``; a missing image file raises the same
way, or the record is skipped and counted with ``missing="skip"``.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from kg.errors import InputError
from kg.files import read_json
from kg.label_schema import LabelValue, label_schema
from kg.manifest import ManifestRecord, VQARecord, write_manifest, write_vqa_manifest
from kg.mesh import MeshMapping, load_mesh_mapping

Row = TypeVar("Row", ManifestRecord, VQARecord)

MISSING_POLICIES = ("error", "skip")
#: How split names of the sources map to manifest splits.
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}
IU_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_LABEL_CELLS = {"": None, "1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1}


@dataclass
class AdapterResult(Generic[Row]):
    """Rows converted from a source, with what was left out.

    Attributes:
        records: the manifest rows, in source order.
        counts: ``skipped_missing_image``, ``skipped_invalid``, ``skipped_language`` (SLAKE),
            ``unlabelled`` (studies without a CheXpert label row), ``unmapped_mesh_terms`` (IU-Xray)
            — only the non-zero ones.
        messages: the reason of every skipped record, as the error it would have raised.
    """

    records: list[Row] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Records left out for a missing image or a malformed field."""
        return self.counts["skipped_missing_image"] + self.counts["skipped_invalid"]


class _Policy:
    """Raises or counts problems according to ``missing`` and ``skip_invalid``."""

    def __init__(self, result: AdapterResult, missing: str, skip_invalid: bool) -> None:
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
        self.result, self.missing, self.skip_invalid = result, missing, skip_invalid

    def invalid(self, err: InputError) -> None:
        if not self.skip_invalid:
            raise err
        self.result.counts["skipped_invalid"] += 1
        self.result.messages.append(str(err))

    def images(self, root: Path, relative: list[str], *, file: Path, record: str, field: str) -> list[str] | None:
        """Absolute paths of ``relative`` under ``root``; ``None`` when one is missing and skipped."""
        paths = [(root / p).resolve() for p in relative]
        for path in paths:
            if not path.is_file():
                err = InputError(f"image not found: {path}", file=file, record=record, field=field)
                if self.missing == "error":
                    raise err
                self.result.counts["skipped_missing_image"] += 1
                self.result.messages.append(str(err))
                return None
        return [str(p) for p in paths]


# ---------------------------------------------------------------------- field helpers
def _field(entry: dict[str, Any], name: str, *, file: Path, record: str, kinds: tuple[type, ...] = (str,),
           empty_ok: bool = False) -> Any:
    value = entry.get(name)
    if value is None:
        raise InputError("missing", file=file, record=record, field=name)
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise InputError(f"must be {names}, got {type(value).__name__}", file=file, record=record, field=name)
    if isinstance(value, str) and not empty_ok and not value.strip():
        raise InputError("is empty", file=file, record=record, field=name)
    return value


def _path_list(entry: dict[str, Any], name: str, *, file: Path, record: str) -> list[str]:
    value = entry.get(name)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(f"must be a non-empty list of image paths, got {value!r:.60}", file=file, record=record,
                         field=name)
    return value


def _split_name(value: Any, *, file: Path, record: str | None, field: str) -> str:
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise InputError(f"unknown split {value!r}; expected one of {', '.join(SPLIT_ALIASES)}", file=file,
                         record=record, field=field)
    return split


def _no_labels() -> list[LabelValue]:
    return [None] * len(label_schema().chexpert)


def _read_csv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise InputError("file not found", file=path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"missing columns {missing}; found {reader.fieldnames}", file=path)
        for number, row in enumerate(reader, start=2):
            yield number, row


def _study_key(value: Any) -> str:
    """MIMIC-CXR study ids appear as ``50414267`` (CSV, JSON) or ``s50414267`` (folders): keep the number."""
    text = str(value).strip()
    return text[1:] if text[:1] in "sS" and text[1:].isdigit() else text


# ---------------------------------------------------------------------- reports
def read_chexpert_labels(path: str | os.PathLike) -> dict[str, list[LabelValue]]:
    """MIMIC-CXR CheXpert (or NegBio) label CSV → ``{study_id: 14 labels}`` in ``graphs/labels.yaml`` order.

    Columns: ``subject_id, study_id`` and one per CheXpert class (any order); cells ``1.0``,
    ``0.0``, ``-1.0`` or blank.

    Raises:
        InputError: a column is missing, a cell holds another value, or a study id repeats.
    """
    path = Path(path)
    names = label_schema().chexpert
    labels: dict[str, list[LabelValue]] = {}
    for number, row in _read_csv(path, ("study_id", *names)):
        study = _study_key(row["study_id"])
        record = f"row {number} (study {study})"
        if not study:
            raise InputError("is empty", file=path, record=f"row {number}", field="study_id")
        if study in labels:
            raise InputError("duplicate study id", file=path, record=record, field="study_id")
        values = []
        for name in names:
            cell = (row[name] or "").strip()
            if cell not in _LABEL_CELLS:
                raise InputError(f"value {cell!r}; allowed: 1.0, 0.0, -1.0 or blank", file=path, record=record,
                                 field=name)
            values.append(_LABEL_CELLS[cell])
        labels[study] = values
    return labels


def from_r2gen_annotation(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    chexpert_csv: str | os.PathLike | None = None,
    missing: str = "error",
    skip_invalid: bool = False,
) -> AdapterResult[ManifestRecord]:
    """Studies of an R2Gen ``annotation.json`` (IU-Xray or MIMIC-CXR).

    Args:
        path: the annotation file.
        image_root: directory the ``image_path`` entries are relative to.
        chexpert_csv: MIMIC-CXR CheXpert label CSV to attach ``labels`` by study id; studies without
            a row keep unknown labels (counted as ``unlabelled``).
        missing: ``"error"`` or ``"skip"`` for entries whose image file is absent.
        skip_invalid: skip and count malformed entries instead of raising.
    """
    path, root = Path(path), Path(image_root)
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError("expected an object with train / val / test lists", file=path)
    result: AdapterResult[ManifestRecord] = AdapterResult()
    policy = _Policy(result, missing, skip_invalid)
    labels = read_chexpert_labels(chexpert_csv) if chexpert_csv is not None else None
    studies: dict[str, ManifestRecord] = {}
    for key, entries in data.items():
        split = _split_name(key, file=path, record=None, field=key)
        if not isinstance(entries, list):
            raise InputError("must be a list of entries", file=path, field=key)
        for i, entry in enumerate(entries):
            record = f"{key}[{i}]"
            try:
                if not isinstance(entry, dict):
                    raise InputError("an entry must be an object", file=path, record=record)
                entry_id = _field(entry, "id", file=path, record=record, kinds=(str, int))
                record = f"{key}[{i}] (id {entry_id})"
                study = _study_key(entry.get("study_id", entry_id))
                report = _field(entry, "report", file=path, record=record, empty_ok=True)
                relative = _path_list(entry, "image_path", file=path, record=record)
                if "split" in entry:
                    _split_name(entry["split"], file=path, record=record, field="split")
            except InputError as err:
                policy.invalid(err)
                continue
            images = policy.images(root, relative, file=path, record=record, field="image_path")
            if images is None:
                continue
            if study in studies:
                studies[study].image = studies[study].images + images
                continue
            studies[study] = ManifestRecord(study_id=study, image=images if len(images) > 1 else images[0],
                                            report=report, labels=_no_labels(), split=split)
    for study, row in studies.items():
        if labels is not None:
            if study in labels:
                row.labels = list(labels[study])
            else:
                result.counts["unlabelled"] += 1
        result.records.append(row)
    return result


def _iu_report(findings: str, impression: str) -> str:
    parts = []
    if findings:
        parts.append(f"FINDINGS: {findings}")
    if impression:
        parts.append(f"IMPRESSION: {impression}")
    return " ".join(parts)


def mesh_gk_labels(mesh: str, mapping: MeshMapping | None = None) -> list[LabelValue] | None:
    """GK labels (20, GK order) of an IU-Xray MeSH cell through ``graphs/mesh_to_gk.yaml``.

    Returns ``None`` for a study the mapping excludes (``No Indexing``) or with an empty cell.
    """
    if not mesh.strip():
        return None
    found = (mapping or load_mesh_mapping()).findings_of(mesh)
    if found is None:
        return None
    return [1 if f in found else 0 for f in label_schema().gk_findings]


def seeded_splits(ids: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Deterministic split of ``ids`` (train, val, test fractions) from a permutation of the sorted ids."""
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val, n_test = int(round(fractions[1] * len(ordered))), int(round(fractions[2] * len(ordered)))
    splits = {}
    for rank, index in enumerate(order):
        splits[ordered[int(index)]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return splits


def from_iu_xray_csv(
    reports_csv: str | os.PathLike,
    projections_csv: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = IU_SPLIT_FRACTIONS,
    missing: str = "error",
    skip_invalid: bool = False,
) -> AdapterResult[ManifestRecord]:
    """Studies of the IU-Xray Kaggle CSVs (``indiana_reports.csv``, ``indiana_projections.csv``).

    Args:
        reports_csv: one row per study: ``uid, MeSH, Problems, image, indication, comparison,
            findings, impression``.
        projections_csv: one row per image: ``uid, filename, projection``.
        image_root: directory holding the image files named in ``filename``.
        split_seed: seed of the train / val / test permutation.
        split_fractions: train, val, test fractions.
        missing: ``"error"`` or ``"skip"`` for studies with an absent or unlisted image.
        skip_invalid: skip and count malformed rows (no uid, no report text) instead of raising.
    """
    reports_csv, projections_csv, root = Path(reports_csv), Path(projections_csv), Path(image_root)
    views: dict[str, list[tuple[int, str, str]]] = {}
    for number, row in _read_csv(projections_csv, ("uid", "filename", "projection")):
        uid, filename = (row["uid"] or "").strip(), (row["filename"] or "").strip()
        if not uid or not filename:
            raise InputError("uid and filename are required", file=projections_csv, record=f"row {number}",
                             field="uid" if not uid else "filename")
        frontal_first = 0 if (row["projection"] or "").strip().lower() == "frontal" else 1
        views.setdefault(uid, []).append((frontal_first, filename, row["projection"]))
    result: AdapterResult[ManifestRecord] = AdapterResult()
    policy = _Policy(result, missing, skip_invalid)
    mapping = load_mesh_mapping()
    rows = []
    for number, row in _read_csv(reports_csv, ("uid", "MeSH", "findings", "impression")):
        uid = (row["uid"] or "").strip()
        record = f"row {number}" + (f" (uid {uid})" if uid else "")
        findings, impression = (row["findings"] or "").strip(), (row["impression"] or "").strip()
        if not uid:
            policy.invalid(InputError("is empty", file=reports_csv, record=record, field="uid"))
            continue
        if not findings and not impression:
            policy.invalid(InputError("the study has neither findings nor impression", file=reports_csv,
                                      record=record, field="findings"))
            continue
        if uid not in views:
            err = InputError(f"no image listed for uid {uid} in {projections_csv}", file=reports_csv, record=record,
                             field="image")
            if missing == "error":
                raise err
            result.counts["skipped_missing_image"] += 1
            result.messages.append(str(err))
            continue
        names = [name for _, name, _ in sorted(views[uid])]
        images = policy.images(root, names, file=projections_csv, record=f"uid {uid}", field="filename")
        if images is not None:
            rows.append((uid, images, findings, impression, row["MeSH"] or ""))
    splits = seeded_splits([uid for uid, *_ in rows], split_seed, split_fractions)
    for uid, images, findings, impression, mesh in rows:
        result.records.append(ManifestRecord(
            study_id=uid, image=images if len(images) > 1 else images[0], report=_iu_report(findings, impression),
            labels=_no_labels(), split=splits[uid], gk_labels=mesh_gk_labels(mesh, mapping),
            findings=findings or None, impression=impression or None,
        ))
    if mapping.unmapped:
        result.counts["unmapped_mesh_terms"] = sum(mapping.unmapped.values())
    return result


# ---------------------------------------------------------------------- VQA
def _answer_type(entry: dict[str, Any], *, file: Path, record: str) -> str:
    value = str(_field(entry, "answer_type", file=file, record=record)).strip().lower()
    if value not in ("closed", "open"):
        raise InputError(f"must be CLOSED or OPEN, got {entry['answer_type']!r}", file=file, record=record,
                         field="answer_type")
    return value


def _answer(entry: dict[str, Any], *, file: Path, record: str) -> str:
    value = _field(entry, "answer", file=file, record=record, kinds=(str, int, float))
    return str(value).strip().lower()


def from_vqa_rad(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    missing: str = "error",
    skip_invalid: bool = False,
) -> AdapterResult[VQARecord]:
    """Questions of VQA-RAD's JSON release (splits from ``phrase_type``; see module docstring)."""
    path, root = Path(path), Path(image_root)
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError("expected a list of questions", file=path)
    result: AdapterResult[VQARecord] = AdapterResult()
    policy = _Policy(result, missing, skip_invalid)
    for i, entry in enumerate(data):
        record = f"[{i}]"
        try:
            if not isinstance(entry, dict):
                raise InputError("a question must be an object", file=path, record=record)
            qid = str(_field(entry, "qid", file=path, record=record, kinds=(str, int)))
            record = f"[{i}] (qid {qid})"
            image_name = _field(entry, "image_name", file=path, record=record)
            question = _field(entry, "question", file=path, record=record).strip()
            answer = _answer(entry, file=path, record=record)
            answer_type = _answer_type(entry, file=path, record=record)
            phrase_type = str(entry.get("phrase_type") or "")
        except InputError as err:
            policy.invalid(err)
            continue
        images = policy.images(root, [image_name], file=path, record=record, field="image_name")
        if images is None:
            continue
        split = "test" if phrase_type.strip().lower().startswith("test") else "train"
        result.records.append(VQARecord(qid, Path(image_name).stem, images[0], question, answer, answer_type, split))
    return result


def from_slake(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    split: str | None = None,
    language: str = "en",
    missing: str = "error",
    skip_invalid: bool = False,
) -> AdapterResult[VQARecord]:
    """Questions of one SLAKE file (``train.json``, ``validate.json`` or ``test.json``).

    Args:
        path: the JSON file (a list of questions).
        image_root: SLAKE's ``imgs`` directory (``img_name`` is relative to it, e.g. ``xmlab102/source.jpg``).
        split: manifest split; ``None`` infers it from the file name.
        language: keep questions with this ``q_lang`` (others are counted as ``skipped_language``).
        missing: ``"error"`` or ``"skip"`` for questions whose image file is absent.
        skip_invalid: skip and count malformed questions instead of raising.
    """
    path, root = Path(path), Path(image_root)
    split = _split_name(split or path.stem, file=path, record=None, field="split")
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError("expected a list of questions", file=path)
    result: AdapterResult[VQARecord] = AdapterResult()
    policy = _Policy(result, missing, skip_invalid)
    for i, entry in enumerate(data):
        record = f"[{i}]"
        try:
            if not isinstance(entry, dict):
                raise InputError("a question must be an object", file=path, record=record)
            qid = str(_field(entry, "qid", file=path, record=record, kinds=(str, int)))
            record = f"[{i}] (qid {qid})"
            if str(_field(entry, "q_lang", file=path, record=record)).strip().lower() != language:
                result.counts["skipped_language"] += 1
                continue
            image_name = _field(entry, "img_name", file=path, record=record)
            question = _field(entry, "question", file=path, record=record).strip()
            answer = _answer(entry, file=path, record=record)
            answer_type = _answer_type(entry, file=path, record=record)
            image_id = str(_field(entry, "img_id", file=path, record=record, kinds=(str, int)))
        except InputError as err:
            policy.invalid(err)
            continue
        images = policy.images(root, [image_name], file=path, record=record, field="img_name")
        if images is None:
            continue
        result.records.append(VQARecord(qid, f"slake{image_id}", images[0], question, answer, answer_type, split))
    return result


# ---------------------------------------------------------------------- dispatch
#: Adapter per kind, and whether it produces a study manifest or a VQA manifest.
ADAPTERS: dict[str, tuple[Callable[..., AdapterResult], str]] = {
    "r2gen": (from_r2gen_annotation, "studies"),
    "iu_xray_csv": (from_iu_xray_csv, "studies"),
    "vqa_rad": (from_vqa_rad, "vqa"),
    "slake": (from_slake, "vqa"),
}


def convert(kind: str, *args: Any, out: str | os.PathLike | None = None, **kwargs: Any) -> AdapterResult:
    """Run the adapter ``kind`` (a key of :data:`ADAPTERS`) and optionally write its manifest.

    Args:
        kind: ``"r2gen"``, ``"iu_xray_csv"``, ``"vqa_rad"`` or ``"slake"``.
        *args, **kwargs: the adapter's arguments.
        out: manifest path to write (study or VQA format, by kind); ``None`` writes nothing.
    """
    if kind not in ADAPTERS:
        raise InputError(f"unknown dataset kind {kind!r}; known: {', '.join(ADAPTERS)}", field="kind")
    adapter, output = ADAPTERS[kind]
    result = adapter(*args, **kwargs)
    if out is not None:
        (write_manifest if output == "studies" else write_vqa_manifest)(result.records, out)
    return result
