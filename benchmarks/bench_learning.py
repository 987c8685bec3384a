"""Does MOTOR learn? The demo budget end to end, with each task's figure next to its target.

Runs :func:`pipelines.demo.demo` (synthetic set → SK store → tiny pretraining → brief finetuning of
the four downstream tasks) into a temporary or given directory, then prints the wall time and, per
task, the figure, its reference (chance or baseline) and whether the target is met:

* zero-shot report retrieval R@10 above chance;
* diagnosis mean AUROC >= 0.80;
* generation CIDEr (greedy) above the most-frequent-report baseline;
* VQA overall accuracy above the majority answer.

Usage::

    python benchmarks/bench_learning.py                       # the demo's defaults (600 studies, 64 px)
    python benchmarks/bench_learning.py --n 1000 --steps 900 --out runs/bench-learning
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipelines.demo import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="synthetic studies (default: 600)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default: 64)")
    parser.add_argument("--steps", type=int, help="pretraining steps (default: the tiny config's epochs)")
    parser.add_argument("--finetune-epochs", type=int, help="epochs per task (default: each task config's)")
    parser.add_argument("--out", help="run directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "demo"
        started = time.perf_counter()
        result = demo(out, n=args.n, image_size=args.image_size, steps=args.steps,
                      finetune_epochs=args.finetune_epochs, show_progress=False, echo=lambda message: None)
        elapsed = time.perf_counter() - started

    rows = {(row["task"], row["metric"]): row for row in result.summary}
    checks = [
        ("zero-shot report R@10 > chance", rows[("retrieval (zero-shot)", "report R@10")], None),
        ("diagnosis mean AUROC >= 0.80", rows[("diagnosis", "mean AUROC")], 0.80),
        ("generation CIDEr > most frequent report", rows[("generation", "CIDEr (greedy)")], None),
        ("VQA overall > majority answer", rows[("vqa", "overall accuracy")], None),
    ]
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"demo budget: n={args.n}, {args.image_size} px, "
          f"{result.pretrain.metrics['training']['steps']} pretraining steps; wall time {elapsed:.0f} s")
    for task, run in result.finetune.items():
        print(f"  {task}: {run.metrics['training']['steps']} finetuning steps, {run.metrics['training']['seconds']:.0f} s")
    print(f"{'target':44s}{'MOTOR':>8s}{'reference':>11s}  met")
    for name, row, threshold in checks:
        reference = threshold if threshold is not None else row["baseline"]
        met = row["motor"] is not None and (row["motor"] >= reference if threshold is not None else row["motor"] > reference)
        print(f"{name:44s}{row['motor']:8.3f}{reference:11.3f}  {'yes' if met else 'NO'}")
    print()
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
