"""Field-format speed: ``motor build-dataset mimic-cxr`` and ``kg export-motor`` at MIMIC-CXR scale.

Both run on invented data written to a temporary directory (nothing of MIMIC-CXR is used):

* build: a report tree of ``--n`` studies (four per subject, template reports, one in fifty
  lateral-only, one in a hundred without findings or impression) with gzip split / metadata /
  CheXpert CSVs of three images per study; timed from reading to the three written files;
* export: a store of ``--n`` reports with eight triplets each (written directly with DuckDB), and
  the studies with their CheXpert labels; timed from opening the store to the written JSON.

Prints seconds and studies per second of each, and the time MIMIC-CXR's 227,835 studies would
take at that rate. Targets: both above 2,000 studies/s on one core (the full dataset in under
two minutes each).

Usage::

    python benchmarks/bench_formats.py             # 20,000 studies
    python benchmarks/bench_formats.py --n 50000
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import platform
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from kg.label_schema import chexpert_names
from kg.motor_json import MotorStudy, export_motor_annotation
from kg.store import atomic_build
from pipelines.builders import build_mimic_cxr, write_dataset

MIMIC_STUDIES = 227_835
TARGET_STUDIES_PER_SECOND = 2_000
FINDINGS = ("The heart size is normal.", "There is a small left pleural effusion.", "Mild cardiomegaly.",
            "No pneumothorax.", "Patchy opacity at the right base may reflect atelectasis.", "Lungs are clear.")


def _write_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    with gzip.open(path, "wt") as handle:
        handle.write(text.getvalue())


def make_tree(root: Path, n: int, rng: random.Random) -> None:
    """An invented MIMIC-CXR-like tree of ``n`` studies under ``root``."""
    split_rows, meta_rows, label_rows = [], [], []
    names = list(chexpert_names())
    for i in range(n):
        subject, study = str(10_000_000 + i // 4), str(50_000_000 + i)
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        findings = " ".join(rng.sample(FINDINGS, 3))
        body = f"INDICATION: Invented.\n \n FINDINGS: {findings}\n \n IMPRESSION: {FINDINGS[i % 6]}\n"
        if i % 100 == 99:
            body = "INDICATION: Invented.\n"
        (folder / f"s{study}.txt").write_text(f"                FINAL REPORT\n {body}")
        split = "test" if i % 50 == 1 else "validate" if i % 100 == 2 else "train"
        views = ("LATERAL", "LATERAL", "LATERAL") if i % 50 == 49 else ("PA", "LATERAL", "AP")
        for j, view in enumerate(views):
            dicom = f"{study}-{j}"
            split_rows.append([dicom, study, subject, split])
            meta_rows.append([dicom, subject, study, view])
        label_rows.append([subject, study] + [rng.choice(["", "1.0", "0.0", "-1.0"]) for _ in names])
    _write_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    _write_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
              meta_rows)
    _write_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *names], label_rows)


def make_store(path: Path, report_ids: list[str], rng: random.Random) -> None:
    """A store with eight triplets per report drawn from a small vocabulary."""
    heads = ["effusion", "opacity", "atelectasis", "cardiomegaly", "no pneumothorax", "edema", "nodule", "clear"]
    tails = ["pleural", "lung", "base", "heart", "right", "left", "upper lobe", "hilar"]
    rows = [(rid, rng.choice(heads), rng.choice(["located_at", "modify", "suggestive_of"]), rng.choice(tails),
             rng.choice(["OBS-DP", "OBS-U", "OBS-DA"]), "ANAT-DP") for rid in report_ids for _ in range(8)]
    columns = ["report_id", "head", "relation", "tail", "head_label", "tail_label"]
    staged = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
    reports = pa.table({"report_id": report_ids})
    with atomic_build(path) as con:
        con.register("staged", staged)
        con.register("report_ids", reports)
        con.execute("INSERT INTO reports SELECT report_id, 'text', 'bench', 'train' FROM report_ids")
        con.execute("INSERT INTO report_triplets SELECT DISTINCT * FROM staged")
        con.execute("INSERT INTO triplets SELECT head, relation, tail, head_label, tail_label, count(*), "
                    "count(DISTINCT report_id) FROM staged GROUP BY ALL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="studies (default: 20,000)")
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, {args.n:,} studies")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tree(root / "mimic", args.n, rng)
        start = time.perf_counter()
        build = build_mimic_cxr(root / "mimic")
        write_dataset(build, root / "out")
        build_seconds = time.perf_counter() - start
        kept = len(build.records)
        print(f"build-dataset mimic-cxr: {build_seconds:.2f} s, {args.n / build_seconds:,.0f} studies/s "
              f"(kept {kept:,}; filters {dict(build.filters)}); all of MIMIC-CXR: "
              f"~{MIMIC_STUDIES / (args.n / build_seconds):.0f} s")
        make_store(root / "k.duckdb", [f"s{r.study_id}" for r in build.records], rng)
        studies = [MotorStudy(r.study_id, r.images, r.report, r.split, r.labels) for r in build.records]
        start = time.perf_counter()
        summary = export_motor_annotation(root / "k.duckdb", studies, root / "motor_knowledge.json")
        export_seconds = time.perf_counter() - start
        print(f"export-motor: {export_seconds:.2f} s, {kept / export_seconds:,.0f} studies/s "
              f"({summary.studies}); all of MIMIC-CXR: ~{MIMIC_STUDIES / (kept / export_seconds):.0f} s")
    for name, rate in (("build", args.n / build_seconds), ("export", kept / export_seconds)):
        verdict = "meets" if rate >= TARGET_STUDIES_PER_SECOND else "misses"
        print(f"{name}: {verdict} the target of {TARGET_STUDIES_PER_SECOND:,} studies/s")


if __name__ == "__main__":
    main()
