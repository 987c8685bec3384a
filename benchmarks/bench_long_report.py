"""Cost of one long report in `kg extract` / `kg label` (rules back-end): it must grow linearly.

Usage::

    python benchmarks/bench_long_report.py [--sizes 16,64,256,1024] [--limit 2.0]

Builds one report of each size (KiB) by repeating IU-Xray-like sentences, annotates it with the
extractor and labels it (the labeller reads the same annotation), and prints CPU seconds and CPU
seconds per MiB for each size. CPU time, not wall-clock time, so other processes on a shared
machine disturb the figure less. The last line compares the largest size with the smallest: the
per-MiB cost may grow at most ``--limit`` times (exit status 1 otherwise). Before reports were
annotated in parts (``kg.long_reports``), 64 KiB cost 6.6 times as much per MiB as 8 KiB.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

from bench_extract import generated_reports  # noqa: E402


def long_report(kib: int) -> str:
    """About ``kib`` KiB of report text made of whole generated reports (deterministic)."""
    parts: list[str] = []
    size = 0
    seed = 0
    while size < kib * 1024:
        for text in generated_reports(64, seed=seed):
            parts.append(text)
            size += len(text) + 2
        seed += 1
    return "\n\n".join(parts)[: kib * 1024].rsplit(".", 1)[0] + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,64,256,1024", help="report sizes in KiB, comma-separated")
    parser.add_argument("--limit", type=float, default=2.0,
                        help="largest allowed ratio of per-MiB cost, largest size to smallest")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from kg.extract import cached_extractor
    from kg.label import label_text

    extractor = cached_extractor("rules")
    label_text("No pleural effusion.")  # builds the pipeline before timing
    per_mib: dict[str, list[float]] = {"extract": [], "label": []}
    print(f"{'KiB':>6} {'extract s':>10} {'s/MiB':>7} {'label s':>9} {'s/MiB':>7}")
    for kib in sizes:
        text = long_report(kib)
        mib = len(text.encode()) / (1 << 20)
        started = time.process_time()
        extractor.annotate_text("long", text)
        extract_s = time.process_time() - started
        started = time.process_time()
        label_text(text)
        label_s = time.process_time() - started
        per_mib["extract"].append(extract_s / mib)
        per_mib["label"].append(label_s / mib)
        print(f"{kib:>6} {extract_s:>10.2f} {extract_s / mib:>7.1f} {label_s:>9.2f} {label_s / mib:>7.1f}", flush=True)
    ratios = {name: costs[-1] / costs[0] for name, costs in per_mib.items()}
    print(f"per-MiB cost, {sizes[-1]} KiB / {sizes[0]} KiB: "
          + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()) + f" (limit {args.limit}x)")
    return 0 if all(ratio <= args.limit for ratio in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
