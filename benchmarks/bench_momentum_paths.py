"""Side-by-side cost of the momentum knowledge path and the optimizer, in one process.

Four arms of the tiny `full` model, stepped in a shuffled order every round so that load on the
machine falls on all of them alike (one thread, batch 8, CPU seconds per step):

* ``copies+plain``: E_gk, E_sk and E_{sk→v} with EMA copies of their own (``momentum_knowledge:
  true``, the layout before the shared path) and plain AdamW;
* ``copies+fused``: the same with PyTorch's fused AdamW;
* ``shared+plain``: the momentum path reusing the online GK output and SK encoders (the default);
* ``shared+fused``: the default with fused AdamW (what ``pipelines.loop.build_optimizer`` builds).

Prints each arm's median step time and its speed ratio against ``copies+plain`` (median and
interquartile range of the per-round ratios)::

    python benchmarks/bench_momentum_paths.py [--steps 80] [--sk-queue-size 256]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_step  # noqa: E402  (the synthetic batch and queue helpers)

ARMS = {
    "copies+plain": ({"momentum_knowledge": True}, False),
    "copies+fused": ({"momentum_knowledge": True}, True),
    "shared+plain": ({}, False),
    "shared+fused": ({}, True),
}


def main(argv: list[str] | None = None) -> int:
    from model import MotorConfig, build_model, train_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80, help="rounds (one step of every arm each)")
    parser.add_argument("--sk-queue-size", type=int, default=256, help="SK queue entries (n_Q)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        reports, sentences = bench_step.synthetic_texts(2000, 0)
        tokenizer = train_tokenizer(reports + sentences, tmp, vocab_size=1000)
        arms = {}
        for name, (overrides, fused) in ARMS.items():
            config = MotorConfig.preset("tiny").replace(sk_queue_size=args.sk_queue_size, **overrides)
            torch.manual_seed(0)
            model = build_model(config, tokenizer).train()
            bench_step.fill_queues(model, tokenizer, 0)
            batch = bench_step.synthetic_batch(tokenizer, config, 8, 0)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True if fused else None)

            def step(model=model, optimizer=optimizer, batch=batch) -> None:
                loss = model(batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            for _ in range(3):  # warm-up
                step()
            arms[name] = (step, [])
        names = list(ARMS)
        for round_ in range(args.steps):
            random.Random(round_).shuffle(names)
            for name in names:
                step, times = arms[name]
                start = time.process_time()
                step()
                times.append(time.process_time() - start)
    base = arms["copies+plain"][1]
    for name, (_, times) in arms.items():
        ratios = sorted(b / t for b, t in zip(base, times))
        low, _, high = statistics.quantiles(ratios, n=4)
        print(f"{name:14s} median {statistics.median(times) * 1000:7.2f} ms/step   speed vs copies+plain: "
              f"{statistics.median(ratios):.3f} (IQR {low:.3f}-{high:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
