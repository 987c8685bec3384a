"""Throughput of the rule-based report extractor (`kg extract --backend rules`), one process, one core.

Usage::

    python benchmarks/bench_extract.py [--reports PATH] [--repeat N] [--batch-size B]

Uses the IU-Xray development reports when present (findings + impression of each report), else
generated report text. Prints reports/s and tokens/s over the best of ``--repeat`` passes; the
pipeline build time is reported separately. The project's target is at least 500 reports/s per
core.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORTS = PROJECT_ROOT.parent / "shared" / "data" / "iu_xray" / "reports_dev.csv"


def generated_reports(count: int, seed: int = 0) -> list[str]:
    """Report-like texts assembled from short radiology sentences (deterministic for a seed)."""
    sentences = [
        "The heart size is normal.",
        "The cardiomediastinal silhouette is within normal limits.",
        "Mild cardiomegaly.",
        "No pleural effusion or pneumothorax.",
        "There is no focal airspace consolidation.",
        "Small right pleural effusion.",
        "Calcified granuloma in the right upper lobe.",
        "Degenerative changes of the thoracic spine.",
        "Opacity in the left lower lobe may represent atelectasis or pneumonia.",
        "Low lung volumes with bibasilar atelectasis.",
        "Pneumothorax cannot be excluded.",
        "Normal chest x-XXXX. XXXX XXXX XXXX.",
        "No acute cardiopulmonary abnormality.",
    ]
    rng = random.Random(seed)
    return [" ".join(rng.choice(sentences) for _ in range(rng.randint(4, 8))) for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="IU-Xray reports CSV")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    # One core, as the target is stated per core.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    from kg.extract import Extractor
    from kg.reports_io import RawReport, read_reports

    if args.reports.is_file():
        reports = list(read_reports(args.reports))
        source = f"{args.reports.name} ({len(reports)} IU-Xray reports, findings + impression)"
    else:
        reports = [RawReport(str(i), text) for i, text in enumerate(generated_reports(2000))]
        source = f"{len(reports)} generated reports"
    words = sum(len(r.text.split()) for r in reports)

    start = time.perf_counter()
    extractor = Extractor("rules", batch_size=args.batch_size)
    build = time.perf_counter() - start
    best = best_cpu = float("inf")
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        entities = sum(len(e.record.entities) for e in extractor.annotate(reports))
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    print(f"input: {source}, {words / len(reports):.1f} words/report")
    print(f"pipeline build: {build:.2f} s (imports and lexicon)")
    print(f"extract (rules, 1 core, batch {args.batch_size}): {len(reports) / best:.0f} reports/s, "
          f"{words / best:.0f} words/s, {entities / len(reports):.1f} entities/report (best of {args.repeat})")
    # On a shared machine wall time includes waiting for the core; CPU time does not.
    print(f"per CPU second: {len(reports) / best_cpu:.0f} reports/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
