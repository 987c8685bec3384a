"""Diagnosis label sets other than CheXpert's 14: which one a dataset uses, and its per-study labels.

A label set is data: its classes are a ``graphs/labels_<name>.yaml`` file
(:func:`pipelines.builders.chestxray14.read_label_set`), and a dataset that uses it carries a
``labels_<name>.csv`` beside its manifest (``study_id`` then one column per class, in the YAML's
order; values ``1`` / ``0`` / ``-1`` (uncertain) or empty (not mentioned)), as
``motor build-dataset chestxray14`` writes it. A diagnosis run on that manifest trains and scores
those classes; a manifest without such a file uses the CheXpert labels of its records.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from kg.errors import InputError

LABELS_CSV = "labels_{name}.csv"
LABEL_SET_YAML = "labels_{name}.yaml"


@dataclass
class StudyLabels:
    """A dataset's label set and every study's label vector.

    Attributes:
        name: the label set (``chestxray14``). names: class names in column order.
        path: the ``labels_<name>.csv`` read. definition: the ``graphs/`` file defining the classes.
        labels: study id → ``float32`` (n_classes,) in {1, 0, -1, nan}.
    """

    name: str
    names: list[str]
    path: Path
    definition: str
    labels: dict[str, torch.Tensor]


def label_set_files(manifest: str | Path) -> dict[str, Path]:
    """``{name: labels_<name>.csv}`` beside ``manifest`` for every label set shipped in ``graphs/``."""
    from graphs import GRAPHS_DIR

    directory = Path(manifest).resolve().parent
    found = {}
    for path in sorted(directory.glob(LABELS_CSV.format(name="*"))):
        name = path.stem[len("labels_"):]
        if (GRAPHS_DIR / LABEL_SET_YAML.format(name=name)).is_file():
            found[name] = path
    return found


def dataset_label_set(manifest: str | Path) -> StudyLabels | None:
    """The label set of the dataset ``manifest`` belongs to (``None``: its records' CheXpert labels).

    Raises:
        InputError: several label-set files beside the manifest, or a malformed one.
    """
    files = label_set_files(manifest)
    if not files:
        return None
    if len(files) > 1:
        raise InputError(f"several label sets beside the manifest ({', '.join(p.name for p in files.values())}); "
                         "keep the one this dataset uses", file=manifest)
    [(name, path)] = files.items()
    return read_study_labels(path, name)


def read_study_labels(path: str | Path, name: str) -> StudyLabels:
    """Read ``labels_<name>.csv`` against the classes of ``graphs/labels_<name>.yaml``.

    Raises:
        InputError: the header is not ``study_id`` + the classes in order, a value is not 1 / 0 /
            -1 / empty, or a study repeats (file, line and column named).
    """
    from pipelines.builders.chestxray14 import read_label_set

    path = Path(path)
    definition = LABEL_SET_YAML.format(name=name)
    names = read_label_set(definition).names
    labels: dict[str, torch.Tensor] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["study_id", *names]:
            raise InputError(f"header must be study_id followed by the classes of graphs/{definition}: "
                             f"{', '.join(names)}; got {header}", file=path, record="line 1")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} columns, got {len(row)}", file=path, record=f"line {line}")
            study, values = row[0], []
            for column, cell in zip(names, row[1:]):
                if cell.strip() not in ("1", "0", "-1", ""):
                    raise InputError(f"expected 1, 0, -1 or empty; got {cell!r}", file=path,
                                     record=f"line {line} (study {study})", field=column)
                values.append(float(cell) if cell.strip() else math.nan)
            if study in labels:
                raise InputError("study repeated", file=path, record=f"line {line}", field="study_id")
            labels[study] = torch.tensor(values, dtype=torch.float32)
    return StudyLabels(name=name, names=names, path=path, definition=f"graphs/{definition}", labels=labels)


class LabelSetSamples(Dataset):
    """A dataset whose items' ``labels`` are replaced by the label set's vector of the item's study.

    Args:
        samples: items with ``index`` and ``labels`` (``MotorSamples``; its ``studies`` hold the
            manifest records, so each item's study id is known without loading its image).
        study_labels: the label set and its per-study labels.

    Raises:
        InputError: a study has no row in the label file.
    """

    def __init__(self, samples: Dataset, study_labels: StudyLabels) -> None:
        from pipelines.data.motor_samples import study_texts

        self.samples = samples
        self.study_ids = [study for study, _ in study_texts(self.studies)]
        missing = [study for study in self.study_ids if study not in study_labels.labels]
        if missing:
            raise InputError(f"{len(missing)} studies have no labels, e.g. {missing[0]!r}", file=study_labels.path,
                             field="study_id")
        self.labels = study_labels.labels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.samples[index])
        item["labels"] = self.labels[self.study_ids[index]]
        return item

    @property
    def studies(self) -> Any:
        """The wrapped samples' studies (what :func:`pipelines.per_study.study_ids` reads)."""
        return getattr(self.samples, "studies", self.samples)
