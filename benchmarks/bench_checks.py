"""Cost of the checks that run before training: image decoding and checkpoint verification.

Images: writes ``--n`` synthetic-looking PNGs at ``--image-size`` px and a manifest into a temporary
directory, then times :func:`pipelines.data.image_check.verify_images` with each ``--threads`` value
on a cold cache (the side-car removed before each), and once more on a warm cache. Printed: wall
seconds, images per second, and CPU seconds of the process (all threads), so the thread pool's gain
can be read on a shared machine where wall-clock time is noisy.

Checkpoints: saves a checkpoint of a model with ``--params`` million parameters and an AdamW state,
and times the save (which now hashes every file) against a plain ``torch.save`` of the same state,
and :func:`pipelines.checkpoint.verify_checkpoint` against hashing alone.

Targets: a warm re-check decodes nothing and costs about what reading the manifest costs; checkpoint
verification under 5 s per GB.

Usage::

    python benchmarks/bench_checks.py                        # 1,000 images at 224 px; 25M parameters
    python benchmarks/bench_checks.py --n 2000 --threads 1 2 4 --params 50
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.checkpoint import STATE_FILE, TrainingProgress, save_checkpoint, verify_checkpoint
from pipelines.data.image_check import sidecar_path, verify_images
from kg.manifest import ManifestRecord, read_manifest, write_manifest


def write_images(root: Path, n: int, size: int) -> Path:
    """``n`` smooth noisy grayscale PNGs (about the entropy of a radiograph) and their manifest."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, size, dtype=np.float32)[None, :]
    records = []
    for i in range(n):
        pixels = np.clip(ramp + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
        name = f"images/img{i:06d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / name)
        records.append(ManifestRecord(f"s{i}", name, "FINDINGS: Clear.", [None] * 14, ("train", "val", "test")[i % 3]))
    manifest = root / "manifest.jsonl"
    write_manifest(records, manifest)
    return manifest


def time_images(manifest: Path, threads: list[int]) -> None:
    """Cold checks with each thread count, then a warm one."""
    for count in threads:
        sidecar_path(manifest).unlink(missing_ok=True)
        cpu, start = time.process_time(), time.perf_counter()
        check = verify_images(manifest, workers=count)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"cold, {count} thread(s): {check.decoded} images in {wall:.2f} s wall "
              f"({check.decoded / wall:.0f} images/s), {cpu:.2f} s CPU")
    cpu, start = time.process_time(), time.perf_counter()
    check = verify_images(manifest)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    read_cpu = time.process_time()
    read_manifest(manifest)
    read_cpu = time.process_time() - read_cpu
    print(f"warm cache: {check.cached} images, {check.decoded} decoded, {wall * 1000:.1f} ms wall, "
          f"{cpu * 1000:.1f} ms CPU (reading the manifest alone: {read_cpu * 1000:.1f} ms CPU)")


def time_checkpoint(root: Path, millions: float) -> None:
    """Save and verify a checkpoint of four square linear layers holding ``millions`` parameters."""
    width = int((millions * 1e6 / 4) ** 0.5)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(4)))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    optimizer.step()
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    path = save_checkpoint(root / "checkpoints", model, TrainingProgress(step=1), optimizer=optimizer)
    save_seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in path.iterdir())
    start = time.perf_counter()
    torch.save({"optimizer": optimizer.state_dict(), "model": model.state_dict()}, root / "plain.pt")
    plain_seconds = time.perf_counter() - start
    cpu, start = time.process_time(), time.perf_counter()
    verify_checkpoint(path)
    verify_seconds, verify_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    torch.load(path / STATE_FILE, weights_only=True)
    load_seconds = time.perf_counter() - start
    print(f"checkpoint: {params / 1e6:.1f}M parameters, {size / 1e9:.2f} GB; save with checksums {save_seconds:.2f} s, "
          f"plain torch.save of the same state {plain_seconds:.2f} s; verify {verify_seconds:.2f} s wall, "
          f"{verify_cpu:.2f} s CPU ({verify_seconds / (size / 1e9):.2f} s/GB wall); loading the state file alone "
          f"{load_seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--params", type=float, default=25.0, help="checkpointed model size in millions (default 25)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_images(Path(tmp), args.n, args.image_size)
        time_images(manifest, args.threads)
        time_checkpoint(Path(tmp), args.params)


if __name__ == "__main__":
    main()
