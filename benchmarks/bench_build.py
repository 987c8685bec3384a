"""Store build speed: RadGraph-format files → DuckDB store (``kg build --source radgraph``).

Generates ``--n`` synthetic chest X-ray reports in RadGraph format (sentences built from the GK
graph's organ and finding words, with modifiers, negations and uncertainty; about 15 entities and
11 relations per report, close to RadGraph's MIMIC-CXR annotations), writes them to a temporary
directory as a RadGraph JSON document and/or JSON lines, then times what ``kg build`` does:
reading and validating every record (:class:`kg.radgraph_reader.RadGraphReader`, with ``--workers``
parsing processes; 0 reads in the building process) and writing the store
(:func:`kg.build.build_store`). Prints reports/s, entities/s and peak resident memory of each
build process (one per format and worker count; generation streams to disk, so it does not set
the peak; worker processes are not included). The build process's CPU time (all its threads, not
the workers') is printed beside the wall time.

Usage::

    python benchmarks/bench_build.py                 # 100,000 reports, JSON then JSONL, 0 and 2 workers
    python benchmarks/bench_build.py --n 20000 --formats jsonl --workers 0 4 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kg.build import build_store
from kg.gk import load_gk
from kg.radgraph_reader import RadGraphReader

TARGET_REPORTS_PER_S = 20_000
SIDES = ("left", "right", "bilateral")
LEVELS = ("upper", "lower", "middle")
SIZES = ("small", "mild", "moderate", "large", "trace")


def synthetic_reports(n: int, seed: int) -> Iterator[tuple[str, dict]]:
    """``(report id, RadGraph report mapping)`` for ``n`` reports, deterministic in ``seed``."""
    rng = random.Random(seed)
    gk = load_gk()
    organs = {o.id: [o.text, *o.synonyms] for o in gk.organs}
    findings = [(f.surface_forms, f.organ or rng.choice(list(organs))) for f in gk.findings]
    for number in range(n):
        words: list[str] = []
        entities: dict[str, dict] = {}

        def add(text: str, label: str, relations: list[list[str]]) -> str:
            entity_id = str(len(entities) + 1)
            start = len(words)
            words.extend(text.split())
            entities[entity_id] = {"tokens": text, "label": label, "start_ix": start, "end_ix": len(words) - 1,
                                   "relations": relations}
            return entity_id

        words.append("FINDINGS :")
        for _ in range(rng.randint(3, 5)):
            forms, organ = rng.choice(findings)
            label = rng.choices(("OBS-DP", "OBS-DA", "OBS-U"), weights=(6, 3, 1))[0]
            if label == "OBS-DA":
                words.append("no")
            elif label == "OBS-U":
                words.append("possible")
            size = add(rng.choice(SIZES), label, []) if rng.random() < 0.5 else None
            words.append("in the")
            side = add(rng.choice(SIDES), "ANAT-DP", [])
            anatomy = add(rng.choice(organs[organ]), "ANAT-DP", [])
            entities[side]["relations"].append(["modify", anatomy])
            finding = add(rng.choice(forms), label, [["located_at", anatomy]])
            if size is not None:
                entities[size]["relations"].append(["modify", finding])
            if rng.random() < 0.2:
                words.append("suggestive of")
                other = add(rng.choice(rng.choice(findings)[0]), "OBS-U", [])
                entities[finding]["relations"].append(["suggestive_of", other])
            words.append(".")
        text = " ".join(words)
        yield f"synthetic/{number:07d}", {"text": text, "entities": entities, "data_source": "synthetic",
                                          "data_split": "train"}


def write_corpus(path: Path, fmt: str, n: int, seed: int) -> None:
    """Stream the corpus to ``path`` as a RadGraph JSON document (``json``) or JSON lines."""
    with open(path, "w", encoding="utf-8") as out:
        if fmt == "jsonl":
            for report_id, report in synthetic_reports(n, seed):
                out.write(json.dumps({"id": report_id, **report}) + "\n")
            return
        out.write("{")
        for number, (report_id, report) in enumerate(synthetic_reports(n, seed)):
            out.write(("," if number else "") + "\n" + json.dumps(report_id) + ": " + json.dumps(report))
        out.write("\n}\n")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="reports to generate (default: 100,000)")
    parser.add_argument("--formats", nargs="+", choices=("json", "jsonl"), default=["json", "jsonl"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="parsing processes to time (default: 0 2; 0 reads in the building process)")
    args = parser.parse_args()
    if len(args.formats) > 1 or len(args.workers) > 1:
        # One process per format and worker count, so each peak RSS is that build's own.
        for fmt in args.formats:
            for workers in args.workers:
                subprocess.run([sys.executable, __file__, "--n", str(args.n), "--seed", str(args.seed),
                                "--formats", fmt, "--workers", str(workers)], check=True)
        return
    [workers] = args.workers

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            corpus = Path(tmp) / f"corpus.{fmt}"
            started = time.perf_counter()
            write_corpus(corpus, fmt, args.n, args.seed)
            generated = time.perf_counter() - started
            rss_before = peak_rss_mib()
            started, cpu_started = time.perf_counter(), time.process_time()
            reader = RadGraphReader([corpus], format="jsonl" if fmt == "jsonl" else "radgraph", workers=workers)
            summary = build_store(reader, Path(tmp) / f"store-{fmt}.duckdb", source="radgraph", inputs=[corpus],
                                  options={}, progress=False)
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            rate = summary.reports / seconds
            print(
                f"{fmt:5s} workers={workers} n={summary.reports:,} file={corpus.stat().st_size / 2**20:.0f} MiB "
                f"(generated in {generated:.1f} s) | build {seconds:.2f} s (CPU {cpu_seconds:.2f} s, all threads) = "
                f"{rate:,.0f} reports/s, "
                f"{summary.entities / seconds:,.0f} entities/s | entities {summary.entities:,}, "
                f"relations {summary.relations:,}, distinct triplets {summary.triplets:,} | "
                f"peak RSS {peak_rss_mib():,.0f} MiB (before build {rss_before:,.0f} MiB) | "
                f"target {TARGET_REPORTS_PER_S:,} reports/s: {'met' if rate >= TARGET_REPORTS_PER_S else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
