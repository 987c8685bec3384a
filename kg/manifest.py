"""Manifests: JSON-lines files listing studies (image + report + labels) or VQA questions.

Study manifest, one JSON object per line::

    {"study_id": "syn000001", "image": "images/syn000001.png", "report": "FINDINGS: ... IMPRESSION: ...",
     "findings": "...", "impression": "...", "labels": [14 values], "gk_labels": [20 values], "split": "train"}

* ``image``: a path relative to the manifest's directory, or a list of them (several views).
* ``labels``: the CheXpert classes in ``graphs/labels.yaml`` order; ``gk_labels`` (optional): the GK
  findings in ``graphs/chest_gk.yaml`` order. Values ``1``, ``0``, ``-1`` or ``null`` (not mentioned).
* ``split``: ``"train"``, ``"val"`` or ``"test"``; ``findings`` / ``impression`` are optional.

VQA manifest, one JSON object per line::

    {"qid": "syn000001-00", "study_id": "syn000001", "image": "images/syn000001.png",
     "question": "Is there a pleural effusion?", "answer": "yes", "answer_type": "closed", "split": "train"}

Reading validates every line and raises :class:`~kg.errors.InputError` naming the file, the line
(and study) and the field. Writing is atomic: a temporary file beside the target is renamed over it.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kg.atomic import write_text_atomic
from kg.errors import InputError
from kg.label_schema import LabelValue, label_schema

_Record = TypeVar("_Record")

SPLITS = ("train", "val", "test")
ANSWER_TYPES = ("closed", "open")
LABEL_VALUES = (1, 0, -1, None)

_STUDY_FIELDS = ("study_id", "image", "report", "findings", "impression", "labels", "gk_labels", "split")
_STUDY_REQUIRED = ("study_id", "image", "report", "labels", "split")
_VQA_FIELDS = ("qid", "study_id", "image", "question", "answer", "answer_type", "split")


@dataclass
class ManifestRecord:
    """One study of a manifest (see the module docstring for the fields)."""

    study_id: str
    image: str | list[str]
    report: str
    labels: list[LabelValue]
    split: str
    gk_labels: list[LabelValue] | None = None
    findings: str | None = None
    impression: str | None = None

    @property
    def images(self) -> list[str]:
        """The image paths as a list (one element for a single image)."""
        return [self.image] if isinstance(self.image, str) else list(self.image)

    def to_json(self) -> dict[str, Any]:
        """The manifest line as a dict, in the documented key order, without absent optional fields."""
        out = {name: getattr(self, name) for name in _STUDY_FIELDS}
        return {k: v for k, v in out.items() if v is not None or k in _STUDY_REQUIRED}


@dataclass
class VQARecord:
    """One question of a VQA manifest."""

    qid: str
    study_id: str
    image: str
    question: str
    answer: str
    answer_type: str
    split: str

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _VQA_FIELDS}


# ---------------------------------------------------------------------- validation
def _text(data: dict[str, Any], name: str, where: dict[str, Any], *, required: bool = True,
          empty_ok: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InputError("missing", field=name, **where)
        return None
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise InputError(f"must be a {'' if empty_ok else 'non-empty '}string, got {value!r:.60}", field=name, **where)
    return value


def _image(data: dict[str, Any], where: dict[str, Any]) -> str | list[str]:
    value = data.get("image")
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    raise InputError(f"must be a path or a non-empty list of paths, got {value!r:.60}", field="image", **where)


def _label_vector(value: Any, length: int, name: str, where: dict[str, Any]) -> list[LabelValue]:
    if not isinstance(value, list) or len(value) != length:
        size = len(value) if isinstance(value, list) else type(value).__name__
        raise InputError(f"must be a list of {length} values, got {size}", field=name, **where)
    out: list[LabelValue] = []
    for i, v in enumerate(value):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif not isinstance(v, bool) and isinstance(v, (int, float)) and v in (1, 0, -1):
            out.append(int(v))
        else:
            raise InputError(f"value {i} is {v!r}; allowed: 1, 0, -1, null", field=name, **where)
    return out


def _split(data: dict[str, Any], where: dict[str, Any]) -> str:
    value = data.get("split")
    if value not in SPLITS:
        raise InputError(f"must be one of {', '.join(SPLITS)}, got {value!r}", field="split", **where)
    return value


def parse_record(data: Any, *, file: str | os.PathLike | None = None, record: object = None) -> ManifestRecord:
    """Validate one parsed manifest line.

    Raises:
        InputError: naming ``file``, ``record`` and the field at fault.
    """
    where: dict[str, Any] = {"file": file, "record": record}
    if not isinstance(data, dict):
        raise InputError("a manifest line must be a JSON object", **where)
    unknown = sorted(set(data) - set(_STUDY_FIELDS))
    if unknown:
        raise InputError(f"unknown fields {unknown}; allowed: {', '.join(_STUDY_FIELDS)}", **where)
    schema = label_schema()
    study_id = _text(data, "study_id", where)
    where["record"] = f"{record} (study {study_id})" if record is not None else study_id
    gk = data.get("gk_labels")
    return ManifestRecord(
        study_id=study_id,
        image=_image(data, where),
        report=_text(data, "report", where, empty_ok=True),
        labels=_label_vector(data.get("labels"), len(schema.chexpert), "labels", where),
        split=_split(data, where),
        gk_labels=None if gk is None else _label_vector(gk, len(schema.gk_findings), "gk_labels", where),
        findings=_text(data, "findings", where, required=False, empty_ok=True),
        impression=_text(data, "impression", where, required=False, empty_ok=True),
    )


def parse_vqa_record(data: Any, *, file: str | os.PathLike | None = None, record: object = None) -> VQARecord:
    """Validate one parsed VQA manifest line (errors as :func:`parse_record`)."""
    where: dict[str, Any] = {"file": file, "record": record}
    if not isinstance(data, dict):
        raise InputError("a VQA manifest line must be a JSON object", **where)
    unknown = sorted(set(data) - set(_VQA_FIELDS))
    if unknown:
        raise InputError(f"unknown fields {unknown}; allowed: {', '.join(_VQA_FIELDS)}", **where)
    qid = _text(data, "qid", where)
    where["record"] = f"{record} (question {qid})" if record is not None else qid
    answer_type = data.get("answer_type")
    if answer_type not in ANSWER_TYPES:
        raise InputError(f"must be one of {', '.join(ANSWER_TYPES)}, got {answer_type!r}", field="answer_type", **where)
    return VQARecord(
        qid=qid,
        study_id=_text(data, "study_id", where),
        image=_text(data, "image", where),
        question=_text(data, "question", where),
        answer=_text(data, "answer", where),
        answer_type=answer_type,
        split=_split(data, where),
    )


# ---------------------------------------------------------------------- files
def _read_lines(path: str | os.PathLike) -> Iterable[tuple[int, Any]]:
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", file=path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"not valid JSON: {err.msg} (column {err.colno})", file=path, record=f"line {number}") from err


def read_manifest(path: str | os.PathLike) -> list[ManifestRecord]:
    """Read and validate a study manifest.

    Raises:
        InputError: the file is missing, a line is not JSON, a field is missing or malformed, or a
            study id repeats; the message names the file, the line and study, and the field.
    """
    return _read_unique(path, parse_record, lambda r: r.study_id, "study", "study_id")


def read_vqa_manifest(path: str | os.PathLike) -> list[VQARecord]:
    """Read and validate a VQA manifest (errors as :func:`read_manifest`; question ids must be unique)."""
    return _read_unique(path, parse_vqa_record, lambda r: r.qid, "question", "qid")


def _read_unique(path: str | os.PathLike, parse: Callable[..., _Record], key: Callable[[_Record], str],
                 what: str, field: str) -> list[_Record]:
    """Every line of ``path`` parsed by ``parse``; a repeated ``key`` is an error naming both lines."""
    records: list[_Record] = []
    seen: dict[str, int] = {}
    for number, data in _read_lines(path):
        record = parse(data, file=path, record=f"line {number}")
        if key(record) in seen:
            raise InputError(f"duplicate {what} id (first on line {seen[key(record)]})", file=path,
                             record=f"line {number} ({what} {key(record)})", field=field)
        seen[key(record)] = number
        records.append(record)
    return records


def _relative(image: str, directory: Path) -> str:
    if not os.path.isabs(image):
        return image
    return Path(os.path.relpath(image, directory)).as_posix()


def write_manifest(records: Iterable[ManifestRecord], path: str | os.PathLike) -> None:
    """Write a study manifest atomically.

    Absolute image paths (as the adapters return them) are written relative to the manifest's
    directory; relative paths are written as they are. Records are validated as they would be read.
    """
    path = Path(path)
    directory = path.resolve().parent
    lines = []
    for number, record in enumerate(records, start=1):
        data = record.to_json()
        images = [_relative(image, directory) for image in record.images]
        data["image"] = images[0] if isinstance(record.image, str) else images
        parse_record(data, file=path, record=f"line {number}")
        lines.append(json.dumps(data, ensure_ascii=False) + "\n")
    write_text_atomic(path, "".join(lines))


def write_vqa_manifest(records: Iterable[VQARecord], path: str | os.PathLike) -> None:
    """Write a VQA manifest atomically (image paths as in :func:`write_manifest`)."""
    path = Path(path)
    directory = path.resolve().parent
    lines = []
    for number, record in enumerate(records, start=1):
        data = record.to_json()
        data["image"] = _relative(record.image, directory)
        parse_vqa_record(data, file=path, record=f"line {number}")
        lines.append(json.dumps(data, ensure_ascii=False) + "\n")
    write_text_atomic(path, "".join(lines))
