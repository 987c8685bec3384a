"""Specific-knowledge lookup speed: FAISS exact / IVF / HNSW report indexes against torch matmul + topk.

The reference MOTOR code retrieves reports with ``torch.topk(queries @ keys.T, k)`` over every
report embedding. This script times that baseline and the three :class:`kg.index.ReportIndex` types
on the same data, one size after another, and prints per method: build time, queries per second,
median latency of a query batch, and recall@k against exact search.

Data are synthetic and clustered: a Gaussian mixture (``--clusters`` centres, noise ``--spread``),
L2-normalised. Real report and image embeddings cluster by finding and view; uniform noise would
be the worst case for IVF and HNSW and says little about them. Queries are fresh draws from the
same mixture, never indexed vectors.

FAISS and torch each bring an OpenMP runtime whose idle threads spin after every parallel region.
When their threads outnumber the cores (a few cores, or both libraries busy in one process, as
here where batches alternate between methods), the spinning threads starve the working ones and
exact FAISS search slows by an order of magnitude. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads
sleep; it must be set before the process starts.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_lookup.py     # N = 65,536 and 1,000,000
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_lookup.py --sizes 65536 --methods torch flat ivf
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import faiss
import numpy as np
import torch

from kg.index import IndexConfig, ReportIndex

METHODS = ("torch", "flat", "ivf", "hnsw")
Searcher = Callable[[np.ndarray], np.ndarray]


def mixture(count: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` L2-normalised float32 draws from the Gaussian mixture around ``centres``."""
    points = rng.standard_normal((count, centres.shape[1]), dtype=np.float32)
    points *= spread
    points += centres[rng.integers(0, len(centres), count)]
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k that ``found`` contains."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def build_searchers(vectors: np.ndarray, args: argparse.Namespace) -> dict[str, tuple[Searcher, float, str]]:
    """Per method: a batch search function returning ``(batch, k)`` rows, build seconds, parameters."""
    ids = [f"report-{i}" for i in range(len(vectors))]
    searchers: dict[str, tuple[Searcher, float, str]] = {}
    for method in args.methods:
        start = time.perf_counter()
        if method == "torch":
            keys = torch.from_numpy(vectors)

            def search(batch: np.ndarray) -> np.ndarray:
                return torch.topk(torch.from_numpy(batch) @ keys.T, args.k, dim=1).indices.numpy()

            params = ""
        else:
            overrides = {"ef_search": args.ef_search} if method == "hnsw" and args.ef_search else {}
            config = IndexConfig(method, **overrides)
            index = ReportIndex.build(vectors, ids, config, embedding="synthetic", use_gpu=False)

            def search(batch: np.ndarray, index: ReportIndex = index) -> np.ndarray:
                return index.search(batch, args.k)[1]

            params = ", ".join(f"{key}={value}" for key, value in sorted(index.meta["params"].items()))
        searchers[method] = (search, time.perf_counter() - start, params)
        build_s = searchers[method][1]
        print(f"# built {method} on {len(vectors):,} vectors in {build_s:.1f} s", file=sys.stderr, flush=True)
    return searchers


def bench_size(count: int, args: argparse.Namespace) -> list[dict]:
    """Build every method on ``count`` vectors, then time them; returns one row per method.

    Batches are timed round-robin across methods (batch 1 with every method, then batch 2, ...), so
    load from other processes on a shared machine falls on all methods alike.
    """
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = args.spread / np.sqrt(args.dim)
    vectors = mixture(count, centres, spread, rng)
    queries = mixture(args.batches * args.batch, centres, spread, rng)
    batches = np.split(queries, args.batches)
    searchers = build_searchers(vectors, args)
    truth = faiss.knn(queries, vectors, args.k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    seconds: dict[str, list[float]] = {method: [] for method in searchers}
    found: dict[str, list[np.ndarray]] = {method: [] for method in searchers}
    for search, _, _ in searchers.values():
        search(batches[0])  # warm-up: first-touch page faults and thread start-up
    for batch in batches:
        for method, (search, _, _) in searchers.items():
            start = time.perf_counter()
            found[method].append(search(batch))
            seconds[method].append(time.perf_counter() - start)
    rows = []
    for method, (_, build_s, params) in searchers.items():
        rows.append(
            {
                "n": count,
                "load": os.getloadavg()[0],
                "method": method,
                "params": params,
                "build_s": build_s,
                "qps": len(queries) / sum(seconds[method]),
                "p50_ms": 1000 * statistics.median(seconds[method]),
                "recall": recall(np.concatenate(found[method]), truth),
            }
        )
        _print_row(rows[-1])
    return rows


COLUMNS = (
    ("N", 9, lambda r: f"{r['n']:,}"),
    ("method", 6, lambda r: r["method"]),
    ("params", 44, lambda r: r["params"]),
    ("build s", 7, lambda r: f"{r['build_s']:.1f}"),
    ("queries/s", 9, lambda r: f"{r['qps']:,.0f}"),
    ("p50 ms/batch", 12, lambda r: f"{r['p50_ms']:.2f}"),
    ("recall@k", 8, lambda r: f"{r['recall']:.3f}"),
)


def _print_header() -> None:
    print("| " + " | ".join(f"{name:<{width}}" for name, width, _ in COLUMNS) + " |")
    print("|" + "|".join("-" * (width + 2) for _, width, _ in COLUMNS) + "|")


def _print_row(row: dict) -> None:
    print("| " + " | ".join(f"{cell(row):<{width}}" for _, width, cell in COLUMNS) + " |", flush=True)


def main() -> None:
    """Parse arguments, run every size, print a markdown table and the speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[65_536, 1_000_000], help="report counts N")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--batch", type=int, default=32, help="queries per batch")
    parser.add_argument("--batches", type=int, default=30, help="timed query batches")
    parser.add_argument("-k", "--k", type=int, default=3, help="reports retrieved per query")
    parser.add_argument("--clusters", type=int, default=1024, help="mixture components")
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm relative to a centre (unit norm)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--ef-search", type=int, help="HNSW efSearch (default: the index default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"# SK lookup: d={args.dim}, batch={args.batch}, k={args.k}, {args.batches} timed batches; "
        f"synthetic clustered data (Gaussian mixture, {args.clusters} centres, noise {args.spread} x centre "
        f"norm, L2-normalised; real embeddings cluster, uniform noise would not)"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, FAISS {faiss.__version__} threads {faiss.omp_get_max_threads()}, "
        f"FAISS GPUs {faiss.get_num_gpus()} (benchmark runs on CPU), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    _print_header()
    for count in args.sizes:
        rows = bench_size(count, args)
        baseline = next((r for r in rows if r["method"] == "torch"), None)
        if baseline:
            speedups = ", ".join(f"{r['method']} {r['qps'] / baseline['qps']:.1f}x" for r in rows if r is not baseline)
            print(f"# N={count:,}: speed-up over torch matmul+topk: {speedups}", flush=True)
        load = rows[0]["load"]
        shared = " (above the CPU count: other processes shared the machine)" if load > (os.cpu_count() or 1) else ""
        print(f"# N={count:,}: 1-minute load average after timing {load:.2f} on {os.cpu_count()} CPUs{shared}", flush=True)


if __name__ == "__main__":
    main()
