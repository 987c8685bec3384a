"""Pretraining-step throughput and peak memory of M3AE, ARL and MedViLL, per variant.

The counterpart of ``bench_step.py``'s MOTOR table for the other methods: for each variant of
``model.variants.METHOD_VARIANTS`` (``m3ae:mlm``, ``m3ae:mim``, ``m3ae:full``, ``arl:none``,
``arl:ak``, ``arl:rk``, ``arl:lk``, ``arl:full``, ``medvill:bi``, ``medvill:s2s``, ``medvill:bar``,
``medvill:bi+s2s``, ``medvill:non_crossing``) a fresh process builds the method's preset model,
runs ``--warmup`` untimed steps and ``--steps`` timed steps of forward (M3AE / ARL: ITM on the
unmasked pass, then the masked MLM / MIM pass, plus AK / RK / LK where on; MedViLL: one pass of
the joint encoder under the variant's mask with MLM and IRM), backward and an AdamW update on
one synthetic batch; steps/s is the reciprocal of the median step time (CPU time of the process on
CPU, so use ``--threads 1`` there; wall time on CUDA). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set size on CPU (with
the resident size before the model was built). The batch and tokenizer are ``bench_step.py``'s
(reports composed from the GK graph's words); ARL's entity sequences are extracted from those
reports with ``kg.extract`` (``pipelines.arl_entities``), the vocabulary being all their entities.

Usage::

    python benchmarks/bench_methods_step.py                         # tiny presets on CPU
    python benchmarks/bench_methods_step.py --variants m3ae:full arl:full --steps 10 --threads 1
    python benchmarks/bench_methods_step.py --variants medvill:bar medvill:s2s --threads 1
    python benchmarks/bench_methods_step.py --device cuda --preset base --batch-size 32
"""
from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
from bench_step import _current_rss_mib, memory_figures, synthetic_batch, synthetic_texts, time_training_steps

from model import train_tokenizer
from model.variants import METHOD_VARIANT_NAMES, method_variant


@dataclass(frozen=True)
class Setting:
    """What one measurement needs (picklable, sent to a fresh process)."""

    variant: str
    preset: str
    device: str
    batch_size: int
    steps: int
    warmup: int
    seed: int
    threads: int
    tokenizer_dir: str


def measure(setting: Setting) -> dict[str, float | str]:
    """Steps/s and peak memory of one variant (run in a fresh process)."""
    from model import load_tokenizer
    from model.registry import get_method
    from pipelines.arl_entities import EntityData, needs_entities

    torch.set_num_threads(setting.threads)
    device = torch.device(setting.device)
    tokenizer = load_tokenizer(setting.tokenizer_dir)
    switches = method_variant(setting.variant)
    method = get_method(switches.method)
    config = method.config_class().preset(setting.preset)
    if switches.coattention:
        config = config.with_parts(**switches.coattention)
    if switches.settings:
        config = config.replace(**switches.settings)
    batch = synthetic_batch(tokenizer, config, setting.batch_size, setting.seed)
    inputs = {}
    if needs_entities(config):
        reports, _ = synthetic_texts(setting.batch_size, setting.seed)
        studies = [(str(i), report) for i, report in enumerate(reports)]
        entities = EntityData.prepare({"train": studies}, None)
        samples = [{"image": image, "report": report, "index": i, "mentions": entities.mentions[str(i)]}
                   for i, (image, report) in enumerate(zip(batch["image"] * 0.5 + 0.5, reports))]
        from model.processing import MotorCollator

        batch = entities.collator(MotorCollator.from_config(tokenizer, config))(samples)
        inputs["entity_names"] = entities.names
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    rss_before = _current_rss_mib()
    torch.manual_seed(setting.seed)
    model = method.build(config, tokenizer, **inputs).to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)
    # On CPU, process CPU time: wall time on a machine shared with other jobs varied 2x between
    # runs; with one thread CPU time is the step's own work. On CUDA, wall time.
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    _, seconds = time_training_steps(model, batch, optimiser, device, setting.warmup, setting.steps, clock)
    result: dict[str, float | str] = {
        "variant": setting.variant,
        "steps_per_s": 1 / seconds,
        "samples_per_s": setting.batch_size / seconds,
        "trainable_m": model.parameter_counts()["trainable"] / 1e6,
    }
    result.update(memory_figures(device, rss_before))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="preset of each method (tiny, base)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--variants", nargs="+", default=list(METHOD_VARIANT_NAMES), choices=METHOD_VARIANT_NAMES)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# bench_methods_step: preset {args.preset}, device {args.device} ({device_name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}")
    with tempfile.TemporaryDirectory() as tmp:
        reports, sentences = synthetic_texts(2000, args.seed)
        train_tokenizer(reports + sentences, tmp, vocab_size=1000)
        context = multiprocessing.get_context("spawn")
        rows = []
        for variant in args.variants:
            setting = Setting(variant, args.preset, args.device, args.batch_size, args.steps, args.warmup, args.seed,
                              torch.get_num_threads(), tmp)
            # One fresh process per variant: peak memory must not carry over from the previous one.
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                rows.append(pool.submit(measure, setting).result())
    memory = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB (before model)"
    clock = "wall time" if args.device.startswith("cuda") else "process CPU time"
    print(f"\n## Training step (forward + backward + AdamW; median step, {clock})\n")
    print(f"| variant | trainable params (M) | steps/s | samples/s | {memory} |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        peak = f"{row['peak_mib']:.0f}" + (f" ({row['baseline_mib']:.0f})" if "baseline_mib" in row else "")
        print(f"| {row['variant']} | {row['trainable_m']:.2f} | {row['steps_per_s']:.2f} | "
              f"{row['samples_per_s']:.1f} | {peak} |")


if __name__ == "__main__":
    main()
