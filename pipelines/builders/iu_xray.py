"""IU-Xray from the user's own copy → ``annotation.json`` + ``manifest.jsonl`` + ``build_log.json``.

Two sources:

* the Kaggle CSVs (``indiana_reports.csv`` + ``indiana_projections.csv``), read by
  :func:`pipelines.data.adapters.from_iu_xray_csv`: frontal image first, MeSH → ``gk_labels``,
  and, as the release has no split, a seeded permutation of the uids cut 70 / 10 / 20 % into
  train / val / test (R2Gen's 7:1:2); the same seed gives the same split;
* an existing R2Gen ``annotation.json``: its splits and image order are kept.

The R2Gen report is the findings, or the impression when the findings are empty (the rule of the
MIMIC-CXR builder); the manifest ``report`` is ``"FINDINGS: ... IMPRESSION: ..."`` for the CSV
source and the annotation's report for the other. The manifest's CheXpert ``labels`` are ``null``
(IU-Xray has none; ``kg label`` or ``kg export-motor`` derive them from the text).

Filters, each study counted once: ``invalid_or_empty_report`` (CSV rows without uid, or with
neither findings nor impression) and ``image_missing`` (an image not listed or not on disk; both
sources check every image under ``images_root``).
"""
from __future__ import annotations

import os
from pathlib import Path

from kg.errors import InputError
from kg.label_schema import label_schema
from kg.manifest import ManifestRecord
from kg.r2gen import R2GenEntry, read_r2gen_annotation
from pipelines.builders.common import DatasetBuild, one_line
from pipelines.data.adapters import IU_SPLIT_FRACTIONS, from_iu_xray_csv

FILTERS = ("invalid_or_empty_report", "image_missing")


def _relative(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def build_iu_xray(
    images_root: str | os.PathLike,
    *,
    reports_csv: str | os.PathLike | None = None,
    projections_csv: str | os.PathLike | None = None,
    annotation: str | os.PathLike | None = None,
    seed: int = 0,
) -> DatasetBuild:
    """Build IU-Xray's ``annotation.json`` entries and manifest records (rules in the module docstring).

    Args:
        images_root: directory the image names (CSV ``filename``, annotation ``image_path``) are
            relative to.
        reports_csv, projections_csv: the Kaggle CSVs (both, or neither and ``annotation``).
        annotation: an R2Gen ``annotation.json`` to rebuild from instead.
        seed: seed of the 7:1:2 split (CSV source only).

    Raises:
        InputError: not exactly one source given, or a malformed source file (named in the message).
    """
    csvs = reports_csv is not None and projections_csv is not None
    if csvs == (annotation is not None) or (reports_csv is None) != (projections_csv is None):
        raise InputError("give either --reports and --projections, or --annotation", field="source")
    root = Path(images_root)
    if not root.is_dir():
        raise InputError("images root is not a directory", file=root, field="images_root")
    if csvs:
        return _from_csv(root, Path(reports_csv), Path(projections_csv), seed)
    return _from_annotation(root, Path(annotation))


def _from_csv(root: Path, reports_csv: Path, projections_csv: Path, seed: int) -> DatasetBuild:
    build = DatasetBuild(
        "iu-xray",
        inputs={"reports": str(reports_csv), "projections": str(projections_csv), "images_root": str(root)},
        options={"seed": seed, "split_fractions": list(IU_SPLIT_FRACTIONS)},
    )
    build.filters.update({name: 0 for name in FILTERS})
    result = from_iu_xray_csv(reports_csv, projections_csv, root, split_seed=seed, missing="skip",
                              skip_invalid=True)
    build.filters["invalid_or_empty_report"] = result.counts["skipped_invalid"]
    build.filters["image_missing"] = result.counts["skipped_missing_image"]
    if result.messages:
        build.examples["messages"] = result.messages[:10]
    if result.counts["unmapped_mesh_terms"]:
        build.notes["unmapped_mesh_terms"] = result.counts["unmapped_mesh_terms"]
    for record in result.records:
        report = one_line(record.findings or record.impression or "")
        build.entries.append(R2GenEntry(id=record.study_id, report=report,
                                        image_path=[_relative(p, root.resolve()) for p in record.images], split=record.split))
        build.records.append(record)
    return build


def _from_annotation(root: Path, annotation: Path) -> DatasetBuild:
    build = DatasetBuild("iu-xray", inputs={"annotation": str(annotation), "images_root": str(root)})
    build.filters.update({name: 0 for name in FILTERS})
    n_labels = len(label_schema().chexpert)
    for entry in read_r2gen_annotation(annotation):
        paths = [(root / p).resolve() for p in entry.image_path]
        if not all(p.is_file() for p in paths):
            build.drop("image_missing", entry.id)
            continue
        build.entries.append(entry)
        build.records.append(ManifestRecord(
            study_id=entry.study_key, image=[str(p) for p in paths] if len(paths) > 1 else str(paths[0]),
            report=entry.report, labels=[None] * n_labels, split=entry.split,
        ))
    return build
