"""Synthetic dataset speed: ``motor synth`` end to end, and where the time goes.

Runs :func:`pipelines.data.synthetic.generate` into a temporary directory (images, manifests,
RadGraph, labels) with one worker and, optionally, with several, and prints wall-clock seconds,
studies per second and the CPU seconds of the main process. A second pass times the stages of one
study (scene sampling, rendering, report writing, PNG encoding) on the first ``--profile`` studies.

Target: 1,000 studies at 224 px in under 60 s on one core.

Usage::

    python benchmarks/bench_synth.py                       # 1,000 studies, 224 px, 1 worker
    python benchmarks/bench_synth.py --n 2000 --workers 1 2
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image

from pipelines.data.synthetic import generate
from pipelines.data.synthetic.render import render_scene
from pipelines.data.synthetic.report_writer import write_report
from pipelines.data.synthetic.scene import sample_scene, study_rng

TARGET_SECONDS_PER_1000 = 60.0


def time_generate(n: int, image_size: int, workers: int) -> tuple[float, float]:
    """(wall seconds, main-process CPU seconds) of one ``generate`` run into a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu, start = time.process_time(), time.perf_counter()
        generate(os.path.join(tmp, "synth"), n=n, seed=0, image_size=image_size, workers=workers)
        return time.perf_counter() - start, time.process_time() - cpu


def time_stages(count: int, image_size: int) -> dict[str, float]:
    """Mean CPU milliseconds per study of each stage, over the first ``count`` studies."""
    totals = dict.fromkeys(("scene", "render", "report", "png"), 0.0)
    for index in range(count):
        t0 = time.process_time()
        scene = sample_scene(study_rng(0, index))
        t1 = time.process_time()
        image = render_scene(scene, image_size)
        t2 = time.process_time()
        write_report(scene, f"s{index}")
        t3 = time.process_time()
        Image.fromarray(image, mode="L").save(io.BytesIO(), format="PNG")
        t4 = time.process_time()
        for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[key] += seconds
    return {key: 1000.0 * value / count for key, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="studies per run (default: 1000)")
    parser.add_argument("--image-size", type=int, default=224, help="pixels (default: 224)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker counts to time (default: 1)")
    parser.add_argument("--profile", type=int, default=100, help="studies timed per stage (default: 100)")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; numpy {np.__version__}")
    print(f"generate n={args.n} image_size={args.image_size}")
    for workers in args.workers:
        wall, cpu = time_generate(args.n, args.image_size, workers)
        per_1000 = 1000.0 * wall / args.n
        verdict = "meets" if workers > 1 or per_1000 < TARGET_SECONDS_PER_1000 else "MISSES"
        print(f"  workers={workers}: {wall:.1f} s wall ({args.n / wall:.1f} studies/s, {per_1000:.1f} s per 1,000; "
              f"main-process CPU {cpu:.1f} s)" + (f" — {verdict} the {TARGET_SECONDS_PER_1000:.0f} s target" if workers == 1 else ""))
    stages = time_stages(args.profile, args.image_size)
    print(f"per study, CPU ms (first {args.profile} studies): "
          + ", ".join(f"{key} {value:.2f}" for key, value in stages.items())
          + f"; total {sum(stages.values()):.1f}")


if __name__ == "__main__":
    main()
