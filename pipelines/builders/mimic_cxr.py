"""MIMIC-CXR from the user's own PhysioNet copy → ``annotation.json`` + ``manifest.jsonl`` + ``build_log.json``.

Inputs (nothing of MIMIC-CXR ships with motor-kg):

* the report tree ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` (``mimic-cxr-reports``), under ``root``;
* ``mimic-cxr-2.0.0-split.csv[.gz]``: ``dicom_id, study_id, subject_id, split`` (train / validate / test);
* ``mimic-cxr-2.0.0-metadata.csv[.gz]``: ``dicom_id, subject_id, study_id, ViewPosition, ...``;
* ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` (optional): ``subject_id, study_id`` and the 14 CheXpert
  classes (``1.0`` / ``0.0`` / ``-1.0`` / blank).

The CSVs are found in ``root`` or the images root (``.csv.gz`` before ``.csv``) unless given.

Sectioning. Reports are split at their upper-case headers by :func:`kg.reports_io.split_sections`
(the header rules of MIT-LCP's ``create_section_files.py``: ``FINDINGS:``, ``IMPRESSION:``,
aliases such as ``CONCLUSION:`` merged); a report with neither section falls back to its last
paragraph, unless that paragraph opens a non-diagnostic section (indication, history,
comparison...), as the MIT-LCP script does. The per-study exceptions that script hard-codes are
not replicated. The R2Gen report of a study is its findings, or its impression when the findings
are empty (R2Gen's preprocessing), or the fallback paragraph; whitespace is collapsed to one line.
The manifest keeps ``findings`` and ``impression`` separately as well.

Image choice. One image per study: a frontal view (``ViewPosition`` PA or AP); with several, PA
before AP, then the smallest ``dicom_id``. Its path is ``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``
under the images root (the MIMIC-CXR-JPG release root).

Splits are the official ones (``validate`` → ``val``). Studies are removed by these filters, each
study counted once, by the first that applies, in this order:

``no_split``           the study is not in the split CSV;
``no_report_file``     no ``sXXXXXXXX.txt`` for it in the report tree;
``empty_report``       the report has no findings, impression or fallback paragraph;
``no_frontal_image``   the metadata lists no PA/AP image for it;
``image_missing``      with ``check_images``, the chosen JPG is not on disk.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from kg.errors import InputError
from kg.label_schema import LabelValue, label_schema
from kg.manifest import ManifestRecord
from kg.r2gen import R2GenEntry
from kg.reports_io import report_text, split_sections
from pipelines.builders.common import DatasetBuild, one_line, read_csv_rows

CSV_NAMES = {
    "split": "mimic-cxr-2.0.0-split",
    "metadata": "mimic-cxr-2.0.0-metadata",
    "chexpert": "mimic-cxr-2.0.0-chexpert",
}
#: Frontal views in order of preference.
FRONTAL_VIEWS = ("PA", "AP")
FILTERS = ("no_split", "no_report_file", "empty_report", "no_frontal_image", "image_missing")
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
_LABEL_CELLS: dict[str, LabelValue] = {"": None, "1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1}
_REPORT_FILE = re.compile(r"^s(\d+)$")
_SUBJECT_DIR = re.compile(r"^p(\d+)$")
_TITLE = re.compile(r"^\s*FINAL REPORT[ \t]*$", re.MULTILINE)


def find_csv(kind: str, search: list[Path]) -> Path | None:
    """The first ``mimic-cxr-2.0.0-<kind>.csv.gz`` or ``.csv`` in the ``search`` directories, or ``None``."""
    for directory in search:
        for suffix in (".csv.gz", ".csv"):
            candidate = directory / f"{CSV_NAMES[kind]}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _digits(value: str, *, file: Path, record: str, field: str) -> str:
    text = value[1:] if value[:1] in "sp" else value
    if not text.isdigit():
        raise InputError(f"must be a number, got {value!r}", file=file, record=record, field=field)
    return text


def read_splits(path: Path) -> dict[str, str]:
    """Split CSV → ``{study_id: "train" | "val" | "test"}``.

    Raises:
        InputError: a column is missing, a split name is unknown, or the images of one study are in
            different splits.
    """
    splits: dict[str, str] = {}
    for line, row in read_csv_rows(path, ("dicom_id", "study_id", "split")):
        record = f"line {line}"
        study = _digits(row["study_id"], file=path, record=record, field="study_id")
        split = SPLIT_NAMES.get(row["split"].lower())
        if split is None:
            raise InputError(f"unknown split {row['split']!r}; expected train, validate or test", file=path,
                             record=record, field="split")
        if splits.setdefault(study, split) != split:
            raise InputError(f"study {study} is in both {splits[study]} and {split}", file=path, record=record,
                             field="split")
    return splits


def read_frontal_images(path: Path) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Metadata CSV → the chosen frontal image of each study, and every study it lists.

    Returns:
        ``({study_id: (subject_id, dicom_id)}, {study_id, ...})``; the choice follows the module
        docstring (PA before AP, then the smallest ``dicom_id``).
    """
    best: dict[str, tuple[int, str, str]] = {}
    studies: set[str] = set()
    for line, row in read_csv_rows(path, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        record = f"line {line}"
        study = _digits(row["study_id"], file=path, record=record, field="study_id")
        subject = _digits(row["subject_id"], file=path, record=record, field="subject_id")
        if not row["dicom_id"]:
            raise InputError("is empty", file=path, record=record, field="dicom_id")
        studies.add(study)
        view = row["ViewPosition"].upper()
        if view not in FRONTAL_VIEWS:
            continue
        candidate = (FRONTAL_VIEWS.index(view), row["dicom_id"], subject)
        if study not in best or candidate < best[study]:
            best[study] = candidate
    return {study: (subject, dicom) for study, (_, dicom, subject) in best.items()}, studies


def read_chexpert(path: Path) -> dict[str, list[LabelValue]]:
    """CheXpert label CSV → ``{study_id: 14 labels}`` in ``graphs/labels.yaml`` order (blank → ``None``).

    Raises:
        InputError: a class column is missing, or a cell is not ``1.0``, ``0.0``, ``-1.0`` or blank.
    """
    names = label_schema().chexpert
    labels: dict[str, list[LabelValue]] = {}
    for line, row in read_csv_rows(path, ("study_id", *names)):
        record = f"line {line}"
        study = _digits(row["study_id"], file=path, record=record, field="study_id")
        values = []
        for name in names:
            if row[name] not in _LABEL_CELLS:
                raise InputError(f"value {row[name]!r}; allowed: 1.0, 0.0, -1.0 or blank", file=path,
                                 record=f"{record} (study {study})", field=name)
            values.append(_LABEL_CELLS[row[name]])
        labels[study] = values
    return labels


def _report_tree(root: Path) -> Path:
    files = root / "files"
    return files if files.is_dir() else root


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"report is not UTF-8 text ({err.reason} at byte {err.start})", file=path) from err
    except OSError as err:
        raise InputError(f"cannot read report: {err.strerror}", file=path) from err


def section_report(text: str) -> tuple[str, str, str]:
    """One MIMIC-CXR report → ``(report, findings, impression)``, each on one line.

    ``report`` follows the module docstring's rule and is ``""`` when nothing is left.
    """
    # The title line is not content: left in, it would join the first section's paragraph and
    # keep the last-paragraph fallback from recognising a report that is all indication.
    body = _TITLE.sub("", text, count=1)
    sections = split_sections(body)
    findings = one_line(sections.get("findings", ""))
    impression = one_line(sections.get("impression", ""))
    return findings or impression or one_line(report_text(sections, body)), findings, impression


def read_sectioned_reports(root: Path) -> dict[str, tuple[str, str, str]]:
    """Reports of the tree → ``{study_id: (report, findings, impression)}`` (see :func:`section_report`).

    Only files named ``pXXXXXXXX/sXXXXXXXX.txt`` are read.

    Raises:
        InputError: a report file is unreadable or not UTF-8 (the message names it).
    """
    out: dict[str, tuple[str, str, str]] = {}
    for path in sorted(_report_tree(root).rglob("s*.txt")):
        study = _REPORT_FILE.match(path.stem)
        if study is not None and _SUBJECT_DIR.match(path.parent.name) and path.is_file():
            out[study.group(1)] = section_report(_read_text(path))
    return out


def image_path(subject: str, study: str, dicom: str) -> str:
    """``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``: where MIMIC-CXR-JPG keeps an image, relative to its root."""
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def build_mimic_cxr(
    root: str | os.PathLike,
    *,
    images_root: str | os.PathLike | None = None,
    split_csv: str | os.PathLike | None = None,
    metadata_csv: str | os.PathLike | None = None,
    chexpert_csv: str | os.PathLike | None = None,
    check_images: bool = False,
) -> DatasetBuild:
    """Build MIMIC-CXR's ``annotation.json`` entries and manifest records (rules in the module docstring).

    Args:
        root: directory holding the report tree (``files/`` or the ``pXX`` folders themselves).
        images_root: MIMIC-CXR-JPG root holding ``files/pXX/...jpg`` (default: ``root``).
        split_csv, metadata_csv, chexpert_csv: the CSVs; ``None`` looks for them in ``root`` then
            ``images_root``. Without a CheXpert CSV the manifest's labels are all ``null``.
        check_images: drop studies whose chosen JPG is not on disk (filter ``image_missing``).

    Returns:
        The build; write it with :func:`pipelines.builders.write_dataset`.

    Raises:
        InputError: the split or metadata CSV cannot be found, a CSV lacks a column or holds a
            malformed cell, or a report file cannot be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a directory", file=root)
    images = Path(images_root) if images_root is not None else root
    search = [root, images]
    given = {"split": split_csv, "metadata": metadata_csv, "chexpert": chexpert_csv}
    paths: dict[str, Path | None] = {}
    for kind, path in given.items():
        paths[kind] = Path(path) if path is not None else find_csv(kind, search)
        if paths[kind] is None and kind != "chexpert":
            raise InputError(f"{CSV_NAMES[kind]}.csv[.gz] not found in {', '.join(map(str, search))}; "
                             f"pass --{kind}-csv", field=f"{kind}_csv")
    build = DatasetBuild(
        "mimic-cxr",
        inputs={"root": str(root), "images_root": str(images), **{k: None if v is None else str(v) for k, v in paths.items()}},
        options={"check_images": check_images, "frontal_views": list(FRONTAL_VIEWS)},
    )
    build.filters.update({name: 0 for name in FILTERS})
    splits = read_splits(paths["split"])
    frontal, listed = read_frontal_images(paths["metadata"])
    labels = read_chexpert(paths["chexpert"]) if paths["chexpert"] is not None else {}
    reports = read_sectioned_reports(root)
    unlabelled = 0
    for study in sorted(set(splits) | set(reports) | listed, key=int):
        if study not in splits:
            build.drop("no_split", study)
            continue
        if study not in reports:
            build.drop("no_report_file", study)
            continue
        report, findings, impression = reports[study]
        if not report:
            build.drop("empty_report", study)
            continue
        if study not in frontal:
            build.drop("no_frontal_image", study)
            continue
        subject, dicom = frontal[study]
        relative = image_path(subject, study, dicom)
        if check_images and not (images / relative).is_file():
            build.drop("image_missing", study)
            continue
        split = splits[study]
        build.entries.append(R2GenEntry(id=dicom, report=report, image_path=[relative], split=split,
                                        study_id=study, subject_id=subject))
        if study not in labels:
            unlabelled += 1
        build.records.append(ManifestRecord(
            study_id=study, image=str((images / relative).resolve()), report=report,
            labels=list(labels.get(study, [None] * len(label_schema().chexpert))), split=split,
            findings=findings or None, impression=impression or None,
        ))
    build.notes["kept_without_chexpert_labels"] = unlabelled
    return build
