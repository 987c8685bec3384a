"""ChestX-ray14 (NIH) from the user's own copy → ``manifest.jsonl`` + ``labels_chestxray14.csv`` + ``build_log.json``.

Inputs (nothing of ChestX-ray14 ships with motor-kg), found in ``root`` unless given:

* ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``): one row per image with ``Image
  Index``, ``Finding Labels`` (classes joined by ``|``, or ``No Finding``) and ``Patient ID``;
* ``train_val_list.txt`` and ``test_list.txt``: the official split, one image name per line;
* the PNGs, anywhere under the images root (``images/`` as extracted from the twelve
  ``images_0NN.tar.gz``, or Kaggle's ``images_0NN/images/``): they are found by file name.

Each image is one manifest study (``study_id`` = the image name without ``.png``; ChestX-ray14 has
no reports, so ``report`` is empty and the CheXpert ``labels`` are ``null``). Its 15 labels
(the 14 diseases and No Finding, :data:`LABEL_SET_FILE` order, 1 / 0) go to
``labels_chestxray14.csv`` (``study_id`` + one column per class), the label-set file a diagnosis
run on this dataset reads.

Splits: ``test_list.txt`` is the test split. The official train/val list has no validation part:
its patients are cut by a seeded permutation, ``val_fraction`` of them to ``val``, so that no
patient is in both (the same seed gives the same split).

Filters, each image counted once, in this order: ``not_in_split_lists`` (in the CSV, in neither
list) and ``image_missing`` (no such PNG under the images root).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from graphs import graph_file
from kg.atomic import write_text_atomic
from kg.errors import InputError
from pipelines.builders.common import BUILD_LOG_FILE, MANIFEST_FILE, DatasetBuild, read_csv_rows
from pipelines.data.adapters import seeded_splits
from kg.label_schema import gk_finding_ids, label_schema
from kg.manifest import ManifestRecord, write_manifest
from pipelines.run_bundle import write_json

LABEL_SET_FILE = "labels_chestxray14.yaml"
LABELS_FILE = "labels_chestxray14.csv"
DATA_ENTRY_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
FILTERS = ("not_in_split_lists", "image_missing")
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class LabelClass:
    """One class of a label set: its name, its spelling in the source, MLC prompt and GK nodes."""

    name: str
    source: str
    prompt: str
    gk: tuple[str, ...]


@dataclass(frozen=True)
class LabelSet:
    """A dataset's diagnosis classes, in label-vector order (a ``graphs/labels_*.yaml`` file)."""

    name: str
    classes: tuple[LabelClass, ...]

    @property
    def names(self) -> list[str]:
        """Class names in order."""
        return [c.name for c in self.classes]


@lru_cache(maxsize=None)
def read_label_set(file: str = LABEL_SET_FILE) -> LabelSet:
    """A label set shipped in ``graphs/`` (``name`` and a list of ``classes``; see the file's header).

    Raises:
        InputError: a class without ``name`` / ``source``, a repeated name, or a GK id that
            ``graphs/chest_gk.yaml`` does not have (file, class and field named).
    """
    path = graph_file(file)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError("missing or empty list", file=path, field="classes")
    known = set(gk_finding_ids())
    classes = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError("a class must be a mapping", file=path, record=f"classes[{i}]")
        for key in ("name", "source"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise InputError("a non-empty string is required", file=path, record=f"classes[{i}]", field=key)
        gk = tuple(entry.get("gk") or ())
        unknown = [g for g in gk if g not in known]
        if unknown:
            raise InputError(f"unknown GK findings {unknown}", file=path, record=entry["name"], field="gk")
        classes.append(LabelClass(entry["name"], entry["source"], str(entry.get("prompt") or entry["name"].lower()), gk))
    names = [c.name for c in classes]
    if len(set(names)) != len(names) or len({c.source for c in classes}) != len(classes):
        raise InputError("class names and sources must be unique", file=path, field="classes")
    return LabelSet(str(data.get("name") or path.stem), tuple(classes))


@dataclass
class LabelledBuild(DatasetBuild):
    """A :class:`DatasetBuild` whose diagnosis labels are of another label set than CheXpert's.

    Attributes:
        label_set: the classes, in column order.
        labels: study id → one 1 / 0 value per class, for every kept study.
    """

    label_set: LabelSet | None = None
    labels: dict[str, list[int]] = field(default_factory=dict)


def _find(root: Path, given: str | os.PathLike | None, names: tuple[str, ...], option: str) -> Path:
    if given is not None:
        return Path(given)
    for name in names:
        if (root / name).is_file():
            return root / name
    raise InputError(f"{' or '.join(names)} not found in {root}; pass {option}", field=option.lstrip("-"))


def read_image_list(path: Path) -> list[str]:
    """Image names of a split list, one per line (blank lines ignored).

    Raises:
        InputError: the file is missing or names an image twice.
    """
    if not path.is_file():
        raise InputError("file not found", file=path)
    names: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise InputError(f"image listed twice (first on line {names[name]})", file=path, record=f"line {number}")
        names[name] = number
    return list(names)


def parse_finding_labels(cell: str, label_set: LabelSet, *, file: Path, record: str) -> list[int]:
    """``"Cardiomegaly|Effusion"`` → a 1 / 0 vector in ``label_set`` order.

    Raises:
        InputError: an empty cell, a class the label set does not have, or No Finding together
            with a finding (the record and the field ``Finding Labels`` named).
    """
    by_source = {c.source: i for i, c in enumerate(label_set.classes)}
    found = [part.strip() for part in cell.split("|") if part.strip()]
    if not found:
        raise InputError("is empty", file=file, record=record, field="Finding Labels")
    unknown = [name for name in found if name not in by_source]
    if unknown:
        raise InputError(f"unknown classes {unknown}; {LABEL_SET_FILE} has {', '.join(by_source)}", file=file,
                         record=record, field="Finding Labels")
    if NO_FINDING in found and len(found) > 1:
        raise InputError(f"{NO_FINDING} together with findings: {cell!r}", file=file, record=record,
                         field="Finding Labels")
    values = [0] * len(label_set.classes)
    for name in found:
        values[by_source[name]] = 1
    return values


def _index_images(images_root: Path) -> dict[str, Path]:
    """``{file name: path}`` of every PNG under ``images_root`` (the first, in sorted order, of a repeated name)."""
    found: dict[str, Path] = {}
    for path in sorted(images_root.rglob("*.png")):
        found.setdefault(path.name, path)
    return found


def build_chestxray14(
    root: str | os.PathLike,
    *,
    images_root: str | os.PathLike | None = None,
    data_entry: str | os.PathLike | None = None,
    train_val_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> LabelledBuild:
    """Build ChestX-ray14's manifest records and labels (rules in the module docstring).

    Args:
        root: the release directory (holding the CSV and the two lists).
        images_root: where the PNGs are, searched recursively (default: ``root``).
        data_entry, train_val_list, test_list: the files, when not in ``root`` under their names.
        val_fraction: share of the train/val patients put in ``val``.
        seed: seed of the train / val cut.

    Returns:
        The build; write it with :func:`write_chestxray14`.

    Raises:
        InputError: a file is missing, a required column is absent, an image is in both lists or
            twice in the CSV, or a ``Finding Labels`` cell is malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a directory", file=root)
    if not 0 <= val_fraction < 1:
        raise InputError(f"must be in [0, 1), got {val_fraction}", field="val_fraction")
    images = Path(images_root) if images_root is not None else root
    if not images.is_dir():
        raise InputError("images root is not a directory", file=images, field="images_root")
    paths = {
        "data_entry": _find(root, data_entry, DATA_ENTRY_NAMES, "--data-entry"),
        "train_val_list": _find(root, train_val_list, (TRAIN_VAL_LIST,), "--train-val-list"),
        "test_list": _find(root, test_list, (TEST_LIST,), "--test-list"),
    }
    label_set = read_label_set()
    build = LabelledBuild(
        "chestxray14",
        inputs={"root": str(root), "images_root": str(images), **{k: str(v) for k, v in paths.items()}},
        options={"val_fraction": val_fraction, "seed": seed, "label_set": LABEL_SET_FILE},
        label_set=label_set,
    )
    build.filters.update({name: 0 for name in FILTERS})
    official = {name: "trainval" for name in read_image_list(paths["train_val_list"])}
    for name in read_image_list(paths["test_list"]):
        if name in official:
            raise InputError(f"{name} is also in {paths['train_val_list'].name}", file=paths["test_list"],
                             field="split")
        official[name] = "test"

    rows: list[tuple[str, str, list[int]]] = []
    seen: dict[str, int] = {}
    csv_path = paths["data_entry"]
    for line, row in read_csv_rows(csv_path, ("Image Index", "Finding Labels", "Patient ID")):
        name = row["Image Index"]
        record = f"line {line}" + (f" ({name})" if name else "")
        if not name:
            raise InputError("is empty", file=csv_path, record=record, field="Image Index")
        if name in seen:
            raise InputError(f"image repeated (first on line {seen[name]})", file=csv_path, record=record,
                             field="Image Index")
        seen[name] = line
        if not row["Patient ID"]:
            raise InputError("is empty", file=csv_path, record=record, field="Patient ID")
        rows.append((name, row["Patient ID"], parse_finding_labels(row["Finding Labels"], label_set, file=csv_path,
                                                                   record=record)))
    patients = sorted({patient for name, patient, _ in rows if official.get(name) == "trainval"})
    patient_split = seeded_splits(patients, seed, (1.0 - val_fraction, val_fraction, 0.0))
    found = _index_images(images)
    n_chexpert = len(label_schema().chexpert)
    for name, patient, values in rows:
        study = Path(name).stem
        if name not in official:
            build.drop("not_in_split_lists", study)
            continue
        if name not in found:
            build.drop("image_missing", study)
            continue
        split = "test" if official[name] == "test" else patient_split[patient]
        build.records.append(ManifestRecord(study_id=study, image=str(found[name].resolve()), report="",
                                            labels=[None] * n_chexpert, split=split))
        build.labels[study] = values
    listed_only = len(set(official) - set(seen))
    if listed_only:
        build.notes["listed_but_not_in_csv"] = listed_only
    return build


def labels_csv(build: LabelledBuild) -> str:
    """The ``labels_chestxray14.csv`` text: ``study_id`` and one 1 / 0 column per class."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["study_id", *build.label_set.names])
    for record in build.records:
        writer.writerow([record.study_id, *build.labels[record.study_id]])
    return table.getvalue()


def write_chestxray14(build: LabelledBuild, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``manifest.jsonl``, ``labels_chestxray14.csv`` and ``build_log.json`` (each atomically).

    Returns:
        ``{"manifest": path, "labels": path, "build_log": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"manifest": out / MANIFEST_FILE, "labels": out / LABELS_FILE, "build_log": out / BUILD_LOG_FILE}
    write_manifest(build.records, paths["manifest"])
    write_text_atomic(paths["labels"], labels_csv(build))
    log: dict[str, Any] = build.log()
    log["label_set"] = {"file": f"graphs/{LABEL_SET_FILE}", "classes": build.label_set.names,
                        "positives": {name: sum(v[i] for v in build.labels.values())
                                      for i, name in enumerate(build.label_set.names)}}
    write_json(paths["build_log"], log)
    return paths
