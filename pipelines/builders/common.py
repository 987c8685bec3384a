"""What every dataset builder shares: the build result, its three output files, and CSV reading.

A builder turns a dataset as its publisher distributes it into the files downstream code reads:

* ``annotation.json``: R2Gen's split file (:mod:`kg.r2gen`);
* ``manifest.jsonl``: the project's study manifest (:mod:`kg.manifest`);
* ``build_log.json``: what was read, the options, and every filter with the number of studies it
  removed and the first few ids, so a user can check a build against the paper's counts.

Outputs hold no timestamps: the same inputs and options give byte-identical files.
"""
from __future__ import annotations

import csv
import gzip
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.errors import InputError
from kg.manifest import SPLITS, ManifestRecord, write_manifest
from kg.r2gen import R2GenEntry, write_r2gen_annotation
from pipelines.run_bundle import write_json

ANNOTATION_FILE = "annotation.json"
MANIFEST_FILE = "manifest.jsonl"
BUILD_LOG_FILE = "build_log.json"
#: Ids listed per filter in ``build_log.json`` (the counts are always complete).
EXAMPLES_PER_FILTER = 10


@dataclass
class DatasetBuild:
    """A built dataset: the same studies as R2Gen entries and as manifest records, and the filters.

    Attributes:
        dataset: ``"mimic-cxr"`` or ``"iu-xray"``.
        entries: ``annotation.json`` entries, one per kept study.
        records: manifest records, one per kept study, in the same order as ``entries``.
        filters: filter name → studies it removed (every filter of the builder, zeros included).
        examples: filter name → the first :data:`EXAMPLES_PER_FILTER` removed study ids.
        notes: counts that remove nothing (e.g. studies without a CheXpert label row).
        inputs: input name → path as given.
        options: the builder's options.
    """

    dataset: str
    entries: list[R2GenEntry] = field(default_factory=list)
    records: list[ManifestRecord] = field(default_factory=list)
    filters: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, str | None] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, study: str) -> None:
        """Count ``study`` as removed by filter ``reason``."""
        self.filters[reason] += 1
        listed = self.examples.setdefault(reason, [])
        if len(listed) < EXAMPLES_PER_FILTER:
            listed.append(study)

    @property
    def kept(self) -> dict[str, int]:
        """Kept studies per split (``train``, ``val``, ``test``)."""
        counts = Counter(record.split for record in self.records)
        return {split: counts[split] for split in SPLITS}

    def log(self) -> dict[str, Any]:
        """The content of ``build_log.json``."""
        return {
            "dataset": self.dataset,
            "inputs": self.inputs,
            "options": self.options,
            "studies_kept": len(self.records),
            "kept_by_split": self.kept,
            "filters": dict(self.filters),
            "filter_examples": {k: v for k, v in self.examples.items() if v},
            "notes": self.notes,
        }


def write_dataset(build: DatasetBuild, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``annotation.json``, ``manifest.jsonl`` and ``build_log.json`` into ``out_dir``.

    Each file is written atomically; manifest image paths become relative to ``out_dir``.

    Returns:
        ``{"annotation": path, "manifest": path, "build_log": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"annotation": out / ANNOTATION_FILE, "manifest": out / MANIFEST_FILE, "build_log": out / BUILD_LOG_FILE}
    write_r2gen_annotation(build.entries, paths["annotation"])
    write_manifest(build.records, paths["manifest"])
    write_json(paths["build_log"], build.log())
    return paths


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(text.split())


def read_csv_rows(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a ``.csv`` or gzip-compressed ``.csv.gz`` file, with their line numbers.

    Yields:
        ``(line number, {column: cell})``; cells are stripped strings (``""`` for blank).

    Raises:
        InputError: the file is missing, unreadable or not CSV, or a ``required`` column is absent
            (the message names the file and the column).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            for column in required:
                if column not in header:
                    raise InputError(f"missing column; the header has {', '.join(header) or 'nothing'}", file=path,
                                     field=column)
            reader.fieldnames = header
            for row in reader:
                if None in row:
                    raise InputError(f"more cells than the {len(header)} columns", file=path,
                                     record=f"line {reader.line_num}")
                yield reader.line_num, {k: (v or "").strip() for k, v in row.items()}
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read as CSV: {err}", file=path) from err
