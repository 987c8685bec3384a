"""The embedded synthetic chest X-ray dataset: images, reports, labels, RadGraph and VQA from a seed.

Every command of the project runs offline on this data. Study ``i`` under seed ``s`` is drawn from
its own random stream (:func:`~pipelines.data.synthetic.scene.study_rng`), so a study's content does not depend
on how many studies are generated, nor on the number of worker processes; only its image depends on
``image_size``.

``generate(out_dir, n, seed, image_size, workers)`` writes::

    out_dir/
      images/syn000000.png ...   8-bit grayscale PA radiographs
      manifest.jsonl             studies (kg.manifest format)
      vqa.jsonl                  questions (kg.manifest VQA format)
      radgraph.json              gold RadGraph annotation per study: {study_id: {text, entities, data_source, data_split}}
      labels.csv                 study_id, split, the 14 CheXpert classes (1.0 / 0.0 / -1.0 / blank), gk_<finding> x 20
      splits.json                {"train": [ids], "val": [ids], "test": [ids]} (80 / 10 / 10 %)
      summary.json               arguments and prevalence figures

Labels follow :mod:`pipelines.data.synthetic.labels`. The files are written to a temporary directory beside
``out_dir`` and renamed into place at the end; the same arguments give byte-identical files.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kg.atomic import has_format_marker, replace_directory, write_text_atomic
from kg.errors import InputError
from kg.label_schema import LabelValue, label_schema
from kg.manifest import ManifestRecord, VQARecord, write_manifest, write_vqa_manifest
from pipelines.data.synthetic.labels import chexpert_from_mentions, gk_truth
from pipelines.data.synthetic.render import render_scene
from pipelines.data.synthetic.report_writer import WrittenReport, write_report
from pipelines.data.synthetic.scene import Scene, sample_scene, study_rng
from pipelines.data.synthetic.vqa import QAPair, make_questions

GENERATOR = "motor-kg synthetic chest X-ray"
DATA_SOURCE = "synthetic"
SUMMARY_FILE = "summary.json"
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}
# Entropy tag of the split permutation's stream, distinct from every study stream ([seed, index]).
_SPLIT_STREAM = 0x5B117


def study_id(index: int) -> str:
    """Id of synthetic study ``index``, e.g. ``"syn000042"``."""
    return f"syn{index:06d}"


@dataclass(frozen=True)
class SyntheticStudy:
    """One generated study.

    Attributes:
        study_id: e.g. ``"syn000042"``.
        scene: what the study shows.
        image: ``uint8`` array ``(image_size, image_size)``.
        report: the written report with its RadGraph record and mentions.
        labels: CheXpert labels (14), report semantics.
        gk_labels: GK findings (20), image ground truth.
        questions: VQA pairs.
    """

    study_id: str
    scene: Scene
    image: np.ndarray
    report: WrittenReport
    labels: list[LabelValue]
    gk_labels: list[int]
    questions: list[QAPair]


def make_study(seed: int, index: int, image_size: int = 224) -> SyntheticStudy:
    """Generate study ``index`` of the dataset with ``seed`` (deterministic)."""
    rng = study_rng(seed, index)
    scene = sample_scene(rng)
    sid = study_id(index)
    report = write_report(scene, sid, data_source=DATA_SOURCE)
    return SyntheticStudy(
        study_id=sid,
        scene=scene,
        image=render_scene(scene, image_size),
        report=report,
        labels=chexpert_from_mentions(report.mentions),
        gk_labels=gk_truth(scene),
        questions=make_questions(scene, rng),
    )


def assign_splits(n: int, seed: int) -> list[str]:
    """Split of each of ``n`` studies: a seeded permutation cut into 80 % train, 10 % val, 10 % test."""
    order = np.random.default_rng(np.random.SeedSequence([int(seed), int(n), _SPLIT_STREAM])).permutation(n)
    splits = ["train"] * n
    start = 0
    for name, fraction in SPLIT_FRACTIONS.items():
        count = int(round(fraction * n))
        for index in order[start : start + count]:
            splits[int(index)] = name
        start += count
    return splits


@dataclass
class SyntheticSummary:
    """What :func:`generate` wrote.

    Attributes:
        out_dir: the dataset directory.
        n, seed, image_size: the arguments.
        splits: studies per split.
        normal_fraction: fraction of studies without any finding.
        prevalence: GK finding id → number of studies showing it (hedged pneumonia included).
        questions: VQA questions per answer type, and closed answers ``yes`` / ``no``.
    """

    out_dir: Path
    n: int
    seed: int
    image_size: int
    splits: dict[str, int] = field(default_factory=dict)
    normal_fraction: float = 0.0
    prevalence: dict[str, int] = field(default_factory=dict)
    questions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The summary as written to ``summary.json`` (no paths or times, so re-runs are identical)."""
        return {
            "generator": GENERATOR,
            "n": self.n,
            "seed": self.seed,
            "image_size": self.image_size,
            "splits": self.splits,
            "normal_fraction": round(self.normal_fraction, 4),
            "prevalence": self.prevalence,
            "questions": self.questions,
        }


@dataclass(frozen=True)
class _StudyRow:
    """What a worker returns for one study (its image is already on disk)."""

    study_id: str
    report: WrittenReport
    labels: list[LabelValue]
    gk_labels: list[int]
    questions: list[QAPair]


def _build(task: tuple[int, int, int, str]) -> _StudyRow:
    from PIL import Image

    seed, index, image_size, images_dir = task
    study = make_study(seed, index, image_size)
    Image.fromarray(study.image, mode="L").save(Path(images_dir) / f"{study.study_id}.png", format="PNG")
    return _StudyRow(study.study_id, study.report, study.labels, study.gk_labels, study.questions)


def generate(
    out_dir: str | os.PathLike,
    n: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    workers: int = 1,
    progress: bool = False,
) -> SyntheticSummary:
    """Generate the synthetic dataset into ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: target directory; replaced when it holds an earlier synthetic dataset, refused when
            it holds anything else.
        n: number of studies.
        seed: dataset seed.
        image_size: image width and height in pixels.
        workers: processes rendering in parallel; the output is identical for any value.
        progress: show a progress bar.

    Raises:
        InputError: bad arguments, or ``out_dir`` exists and is not a synthetic dataset.
    """
    if n < 1:
        raise InputError(f"need at least one study, got {n}", field="n")
    if image_size < 32:
        raise InputError(f"images must be at least 32 pixels wide, got {image_size}", field="image_size")
    if workers < 1:
        raise InputError(f"need at least one worker, got {workers}", field="workers")
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    with replace_directory(out_dir) as tmp:
        images_dir = tmp / "images"
        images_dir.mkdir()
        tasks = [(seed, i, image_size, str(images_dir)) for i in range(n)]
        rows = _run(tasks, workers, progress)
        summary = _write_tables(tmp, rows, assign_splits(n, seed), n=n, seed=seed, image_size=image_size)
    summary.out_dir = out_dir
    return summary


def _run(tasks: list[tuple[int, int, int, str]], workers: int, progress: bool) -> list[_StudyRow]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="study", disable=not progress)
    rows: list[_StudyRow] = []
    if workers == 1:
        for task in tasks:
            rows.append(_build(task))
            bar.update()
    else:
        # Spawned workers start clean (no inherited threads or GPU state); order is kept by imap.
        chunk = max(1, len(tasks) // (workers * 8))
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for row in pool.imap(_build, tasks, chunksize=chunk):
                rows.append(row)
                bar.update()
    bar.close()
    return rows


def _label_cell(value: LabelValue) -> str:
    return "" if value is None else f"{float(value):.1f}"


def _write_tables(directory: Path, rows: list[_StudyRow], splits: list[str], **arguments: int) -> SyntheticSummary:
    schema = label_schema()
    records, questions, radgraph = [], [], {}
    for row, split in zip(rows, splits):
        image = f"images/{row.study_id}.png"
        records.append(ManifestRecord(
            study_id=row.study_id, image=image, report=row.report.text, labels=row.labels, split=split,
            gk_labels=list(row.gk_labels), findings=row.report.findings, impression=row.report.impression,
        ))
        for k, qa in enumerate(row.questions):
            questions.append(VQARecord(f"{row.study_id}-{k:02d}", row.study_id, image, qa.question, qa.answer,
                                       qa.answer_type, split))
        record = row.report.record
        record.data_split = split
        radgraph[row.study_id] = record.to_json()
    write_manifest(records, directory / "manifest.jsonl")
    write_vqa_manifest(questions, directory / "vqa.jsonl")
    write_text_atomic(directory / "radgraph.json", json.dumps(radgraph, ensure_ascii=False) + "\n")

    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["study_id", "split", *schema.chexpert, *(f"gk_{g}" for g in schema.gk_findings)])
    for record in records:
        writer.writerow([record.study_id, record.split, *map(_label_cell, record.labels),
                         *map(_label_cell, record.gk_labels or [])])
    write_text_atomic(directory / "labels.csv", table.getvalue())
    by_split = {name: [r.study_id for r in records if r.split == name] for name in ("train", "val", "test")}
    write_text_atomic(directory / "splits.json", json.dumps(by_split) + "\n")

    normal = schema.gk_findings.index("normal")
    prevalence = Counter()
    for row in rows:
        prevalence.update(g for g, v in zip(schema.gk_findings, row.gk_labels) if v != 0)
    answers = Counter(q.answer_type for q in questions)
    answers.update(q.answer for q in questions if q.answer_type == "closed")
    summary = SyntheticSummary(
        out_dir=directory,
        splits={name: len(ids) for name, ids in by_split.items()},
        normal_fraction=sum(row.gk_labels[normal] == 1 for row in rows) / len(rows),
        prevalence={g: prevalence[g] for g in schema.gk_findings},
        questions={key: answers[key] for key in ("closed", "open", "yes", "no")},
        **arguments,
    )
    write_text_atomic(directory / SUMMARY_FILE, json.dumps(summary.to_json(), indent=1) + "\n")
    return summary


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError("exists and is not a directory", file=out_dir)
    if not has_format_marker(out_dir, SUMMARY_FILE, GENERATOR, key="generator"):
        raise InputError(
            "refusing to replace: the directory is not empty and holds no synthetic dataset "
            f"({SUMMARY_FILE} missing); choose another --out", file=out_dir,
        )
