"""R2Gen's ``annotation.json``: the split file report-generation code for IU-Xray and MIMIC-CXR reads.

Layout (R2Gen, Chen et al. 2020, and every codebase built on it, MOTOR's included)::

    {"train": [{"id": "...", "study_id": 50414267, "subject_id": 10000032,
                "report": "...", "image_path": ["files/p10/p10000032/s50414267/<dicom>.jpg"],
                "split": "train"}, ...],
     "val":   [...],
     "test":  [...]}

* ``id``: the entry's id (MIMIC-CXR: the chosen image's ``dicom_id``; IU-Xray: the study uid).
* ``study_id`` / ``subject_id``: MIMIC-CXR only, written as integers as R2Gen's file has them.
* ``report``: one line of report text (whitespace collapsed).
* ``image_path``: paths relative to the image root the training code is given.
* ``split``: the list the entry sits in.

:func:`read_r2gen_annotation` accepts the split names R2Gen variants use (``val``, ``valid``,
``validate``) and ids written as strings or integers.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kg.atomic import write_text_atomic
from kg.errors import InputError
from kg.files import read_json
from kg.manifest import SPLITS

_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val",
                  "test": "test"}


@dataclass
class R2GenEntry:
    """One entry of an ``annotation.json`` (fields as in the module docstring; ids as strings)."""

    id: str
    report: str
    image_path: list[str]
    split: str
    study_id: str | None = None
    subject_id: str | None = None

    @property
    def study_key(self) -> str:
        """The study the entry belongs to: ``study_id`` when given, else ``id``."""
        return self.study_id if self.study_id is not None else self.id

    def to_json(self) -> dict[str, Any]:
        """The entry in R2Gen's key order; numeric study/subject ids as integers, absent ones left out."""
        out: dict[str, Any] = {"id": self.id}
        for name in ("study_id", "subject_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = int(value) if value.isdigit() else value
        out.update(report=self.report, image_path=list(self.image_path), split=self.split)
        return out


def write_r2gen_annotation(entries: list[R2GenEntry], path: str | os.PathLike) -> Path:
    """Write ``entries`` as ``annotation.json``, grouped by split in input order, atomically.

    Every split key (``train``, ``val``, ``test``) is written, empty lists included.

    Returns:
        The path written.
    """
    path = Path(path)
    grouped: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for entry in entries:
        if entry.split not in grouped:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {entry.split!r}", record=entry.id,
                             field="split")
        grouped[entry.split].append(entry.to_json())
    write_text_atomic(path, json.dumps(grouped, ensure_ascii=False, indent=1) + "\n")
    return path


def _id(entry: dict[str, Any], name: str, *, file: Path, record: str, required: bool) -> str | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise InputError(f"must be a non-empty string or integer, got {value!r:.60}", file=file, record=record,
                         field=name)
    return str(value).strip()


def read_r2gen_annotation(path: str | os.PathLike) -> list[R2GenEntry]:
    """Read and validate an R2Gen ``annotation.json``.

    Returns:
        The entries, split by split in file order; ``split`` is the key of the list holding the
        entry (normalised to ``train`` / ``val`` / ``test``).

    Raises:
        InputError: the file is missing or not JSON, a split key is unknown, or an entry lacks
            ``id`` / ``report`` / ``image_path`` or has a wrong type; the message names the file,
            the entry (``train[3] (id ...)``) and the field.
    """
    path = Path(path)
    data = read_json(path, missing="annotation file not found")
    if not isinstance(data, dict) or not data:
        raise InputError("expected an object with train / val / test lists", file=path)
    entries: list[R2GenEntry] = []
    for key, items in data.items():
        split = _SPLIT_ALIASES.get(str(key).strip().lower())
        if split is None:
            raise InputError(f"unknown split key; expected one of {', '.join(_SPLIT_ALIASES)}", file=path, field=key)
        if not isinstance(items, list):
            raise InputError("must be a list of entries", file=path, field=key)
        for i, item in enumerate(items):
            record = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise InputError("an entry must be an object", file=path, record=record)
            entry_id = _id(item, "id", file=path, record=record, required=True)
            record = f"{key}[{i}] (id {entry_id})"
            report = item.get("report")
            if not isinstance(report, str):
                raise InputError(f"must be a string, got {report!r:.60}", file=path, record=record, field="report")
            images = item.get("image_path")
            if isinstance(images, str):
                images = [images]
            if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
                raise InputError(f"must be a non-empty list of paths, got {images!r:.60}", file=path, record=record,
                                 field="image_path")
            entries.append(R2GenEntry(
                id=entry_id, report=report, image_path=list(images), split=split,
                study_id=_id(item, "study_id", file=path, record=record, required=False),
                subject_id=_id(item, "subject_id", file=path, record=record, required=False),
            ))
    return entries
