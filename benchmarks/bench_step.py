"""Pretraining-step throughput and peak memory per knowledge variant; the SK path against the reference approach.

Part 1 — training steps. For every knowledge variant (``none``, ``gk``, ``sk``, ``gk+sk``,
``full``) a fresh process builds the preset's model, fills the SK report queue and the ITC queues
to capacity (so retrieval searches a full n_Q), runs ``--warmup`` untimed steps and then
``--steps`` timed steps of forward, backward and an AdamW update (built as ``motor pretrain``
builds it) on a synthetic batch; steps/s is
the reciprocal of the median step time (robust to stalls on a shared machine). Peak memory
is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set size on CPU
(with the resident size just before the model was built, to separate the interpreter and
libraries from the model's share). For the variants with SK, the share of the median step spent in
training-time SK retrieval (timed inside further steps) and in SK encoding (E_sk forward and
backward on a step's retrieved sentences, timed apart) follows; ``--sk-queue-size 65536`` runs the
tiny model against the paper's n_Q.

Part 2 — the SK path of one training step (retrieval, then E_sk → E_{sk→v} for the online path
with forward and backward, and E_{sk→v} without gradient for the momentum path) on one model and
one full report queue, two ways:

* ``batched`` (this project): the top-k slots' token ids are gathered from the queue and the B·k
  sentences go through E_sk in one (B·k, L) pass, whose f_sk the momentum path reuses;
* ``reference`` (the approach of the original research code): for each of the k ranks, the
  retrieved reports' SK token ids are decoded back to strings and re-tokenised (once per step,
  shared by both paths), then encoded by E_sk as one (B, L) batch per rank, once for each path;
  the k encodings are concatenated as E_{sk→v}'s keys and values. The research code tokenises SK sentences to a fixed
  ``sk_max_len`` (90) tokens; ``--reference-padding longest`` pads each rank only to its longest
  sentence instead, a kinder baseline.

Both use the same retrieval and the same weights, and the script checks that their outputs agree.

The data are synthetic: random images, and reports / SK sentences composed from the GK graph's
words (``graphs/chest_gk.yaml``), tokenised by a WordPiece vocabulary trained on them.

The device defaults to CUDA when available, and the preset to ``base`` on CUDA, ``tiny`` on CPU.
The other methods (M3AE, ARL, MedViLL with each of its mask schemes) have the same training-step
table in ``bench_methods_step.py``, which reuses this script's batch, timing and memory report.

Usage::

    python benchmarks/bench_step.py                                  # tiny on CPU, or base on a GPU
    python benchmarks/bench_step.py --variants none full --steps 20
    python benchmarks/bench_step.py --threads 1                      # on a machine shared with other jobs
    python benchmarks/bench_step.py --threads 1 --variants full --sk-queue-size 65536
    python benchmarks/bench_step.py --variants full --set momentum_knowledge=true   # EMA copies of E_gk, E_sk, E_sk->v
    python benchmarks/bench_step.py --device cuda --preset base --batch-size 32
"""
from __future__ import annotations

import argparse
import multiprocessing
import platform
import random
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from kg.gk import load_gk
from model import KNOWLEDGE_VARIANTS, MotorCollator, MotorConfig, build_model, train_tokenizer
from model.motor import MotorModel, encode_sk, sk_stage
from pipelines.config import OptimConfig
from pipelines.loop import build_optimizer

RELATIONS = ("located_at", "suggestive_of", "modify")


@dataclass(frozen=True)
class Setting:
    """What one measurement needs (picklable, sent to a fresh process)."""

    preset: str
    knowledge: str
    device: str
    batch_size: int
    steps: int
    warmup: int
    seed: int
    threads: int
    tokenizer_dir: str
    overrides: tuple[tuple[str, object], ...] = ()

    def config(self) -> MotorConfig:
        """The preset with this setting's knowledge switch and ``--set`` overrides."""
        return MotorConfig.preset(self.preset).replace(knowledge=self.knowledge, **dict(self.overrides))


def synthetic_texts(count: int, seed: int) -> tuple[list[str], list[str]]:
    """``count`` reports and SK sentences built from GK finding and organ words."""
    rng = random.Random(seed)
    graph = load_gk()
    findings = [w for node in graph.findings for w in node.surface_forms]
    organs = [w for node in graph.organs for w in node.surface_forms]
    reports, sentences = [], []
    for _ in range(count):
        chosen = rng.sample(findings, rng.randint(1, 3))
        places = [rng.choice(organs) for _ in chosen]
        reports.append(" . ".join(f"there is {f} in the {o}" for f, o in zip(chosen, places)) + " .")
        sentences.append(" ; ".join(f"{f} {rng.choice(RELATIONS)} {o}" for f, o in zip(chosen, places)))
    return reports, sentences


def synthetic_batch(tokenizer, config: MotorConfig, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """A collated batch of random images with synthetic reports, SK sentences and labels."""
    generator = torch.Generator().manual_seed(seed)
    reports, sentences = synthetic_texts(batch_size, seed)
    samples = [
        {
            "image": torch.rand(config.in_chans, config.image_size, config.image_size, generator=generator),
            "report": report,
            "sk_sentence": sentence,
            "labels": torch.randint(-1, 2, (14,), generator=generator).float(),
            "index": i,
        }
        for i, (report, sentence) in enumerate(zip(reports, sentences))
    ]
    return MotorCollator.from_config(tokenizer, config)(samples)


@torch.no_grad()
def fill_queues(model: MotorModel, tokenizer, seed: int) -> None:
    """Fill the ITC queues and the SK report queue to capacity with random features and real SK ids.

    Queued dataset indices start at 10**9, so no queued entry is a batch sample's own study.
    """
    cfg = model.config
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)

    def features(n: int) -> torch.Tensor:
        return F.normalize(torch.randn(n, cfg.embed_dim, generator=generator), dim=1).to(device)

    model.itc_queue.enqueue(
        image=features(cfg.queue_size), text=features(cfg.queue_size),
        index=torch.arange(cfg.queue_size, device=device) + 10**9,
    )
    if not cfg.uses_sk:
        return
    _, sentences = synthetic_texts(min(cfg.sk_queue_size, 4096), seed)
    sk = tokenizer(sentences, padding="max_length", truncation=True, max_length=cfg.sk_max_len, return_tensors="pt")
    repeats = -(-cfg.sk_queue_size // len(sentences))
    ids = sk["input_ids"].repeat(repeats, 1)[: cfg.sk_queue_size].to(device)
    mask = sk["attention_mask"].repeat(repeats, 1)[: cfg.sk_queue_size].bool().to(device)
    model.report_queue.enqueue(
        feature=features(cfg.sk_queue_size), sk_ids=ids, sk_mask=mask,
        has_sk=torch.ones(cfg.sk_queue_size, dtype=torch.bool, device=device),
        index=torch.arange(cfg.sk_queue_size, device=device) + 10**9,
    )


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _current_rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure_training(setting: Setting) -> dict[str, float | str]:
    """Steps/s and peak memory of one variant (run in a fresh process)."""
    from model import load_tokenizer

    torch.set_num_threads(setting.threads)
    device = torch.device(setting.device)
    tokenizer = load_tokenizer(setting.tokenizer_dir)
    config = setting.config()
    rss_before = _current_rss_mib()
    torch.manual_seed(setting.seed)
    model = build_model(config, tokenizer).to(device).train()
    fill_queues(model, tokenizer, setting.seed)
    batch = {k: v.to(device) for k, v in synthetic_batch(tokenizer, config, setting.batch_size, setting.seed).items()}
    optimiser = build_optimizer(model, OptimConfig(lr=1e-5))  # as `motor pretrain` builds it

    step, seconds = time_training_steps(model, batch, optimiser, device, setting.warmup, setting.steps)
    counts = model.parameter_counts()
    result: dict[str, float | str] = {
        "knowledge": setting.knowledge,
        "steps_per_s": 1 / seconds,
        "samples_per_s": setting.batch_size / seconds,
        "trainable_m": counts["trainable"] / 1e6,
        "momentum_m": counts.get("momentum", 0) / 1e6,
    }
    if config.uses_sk:
        retrieval_ms, encoding_ms = sk_costs(model, step, device, min(setting.steps, 10))
        result["retrieval_share"] = retrieval_ms / 1000 / seconds
        result["sk_encoding_share"] = encoding_ms / 1000 / seconds
    result.update(memory_figures(device, rss_before))
    return result


def time_training_steps(model, batch: dict, optimiser, device: torch.device, warmup: int, steps: int,
                        clock=time.perf_counter) -> tuple:
    """``(step, seconds)``: one training step as a function, and its median time over ``steps``
    runs after ``warmup`` untimed ones (the median is robust to the stalls other processes on a
    shared machine cause). Peak CUDA memory is counted from after the warm-up."""

    def step() -> None:
        output = model(batch)
        optimiser.zero_grad(set_to_none=True)
        output.loss.backward()
        optimiser.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        _synchronise(device)
        started = clock()
        step()
        _synchronise(device)
        times.append(clock() - started)
    return step, statistics.median(times)


def memory_figures(device: torch.device, rss_before: float) -> dict[str, float]:
    """Peak memory in MiB: CUDA allocations, or the process's peak RSS (with the RSS before the
    model was built, most of it libraries) on CPU."""
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    return {"peak_mib": _peak_rss_mib(), "baseline_mib": rss_before}


def sk_costs(model: MotorModel, step, device: torch.device, steps: int) -> tuple[float, float]:
    """Median ms per training step of SK retrieval and of SK encoding (E_sk forward + backward).

    Retrieval is timed inside ``steps`` further training steps (it runs without gradient, so its
    call is all of it). E_sk's backward runs inside autograd's pass over the whole graph, so the
    encoding is timed apart: forward and backward of E_sk on the sentences the last step retrieved.
    """
    retrieve, retrieval_times, retrieved = model.retrieve_knowledge, [], []

    def timed_retrieve(*args, **kwargs):
        _synchronise(device)
        started = time.perf_counter()
        knowledge = retrieve(*args, **kwargs)
        _synchronise(device)
        retrieval_times.append(time.perf_counter() - started)
        retrieved[:] = [knowledge]
        return knowledge

    model.retrieve_knowledge = timed_retrieve
    try:
        for _ in range(steps):
            step()
    finally:
        del model.retrieve_knowledge  # back to the method
    encoding_times = []
    for attempt in range(steps + 1):
        _synchronise(device)
        started = time.perf_counter()
        features, _ = encode_sk(model, retrieved[0])
        features.float().square().mean().backward()
        _synchronise(device)
        if attempt:  # the first call warms caches
            encoding_times.append(time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    return statistics.median(retrieval_times) * 1000, statistics.median(encoding_times) * 1000


# ---------------------------------------------------------------------------- the SK path
def reference_sk_inputs(
    model: MotorModel, tokenizer, slots: torch.Tensor, padding: str = "max_length"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The research code's SK inputs: per rank, the retrieved SK ids decoded to text and re-tokenised.

    ``padding="max_length"`` pads every sentence to ``sk_max_len`` as the research code does;
    ``"longest"`` pads each rank to its longest sentence (a kinder baseline).
    """
    queue, cfg = model.report_queue, model.config
    inputs = []
    for rank in range(slots.shape[1]):
        texts = []
        for slot in slots[:, rank].tolist():
            ids = queue.sk_ids[slot][queue.sk_mask[slot]]
            texts.append(tokenizer.decode(ids.tolist(), skip_special_tokens=True))
        tokens = tokenizer(texts, padding=padding, truncation=True, max_length=cfg.sk_max_len, return_tensors="pt")
        inputs.append((tokens["input_ids"].to(slots.device), tokens["attention_mask"].to(slots.device)))
    return inputs


def reference_sk_encode(
    towers: nn.Module, image_tokens: torch.Tensor, inputs: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The research code's SK encoding: E_sk once per rank on (B, L), the k results concatenated for E_{sk→v}."""
    features = [towers.sk_encoder.encoder(input_ids=ids, attention_mask=mask).last_hidden_state for ids, mask in inputs]
    padding = torch.cat([mask == 0 for _, mask in inputs], dim=1)
    return towers.sk_image_encoder(image_tokens, torch.cat(features, dim=1), padding)


def measure_sk_path(
    config: MotorConfig, device: str, batch_size: int, repeats: int, seed: int, tokenizer, padding: str = "max_length"
) -> dict[str, float]:
    """Time (ms) of one training step's SK path, batched and reference, and their largest output difference."""
    device_ = torch.device(device)
    config = config.replace(knowledge="sk", dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(config, tokenizer).to(device_).train()
    fill_queues(model, tokenizer, seed)
    generator = torch.Generator().manual_seed(seed)
    image_tokens = torch.randn(batch_size, 1 + config.num_patches, config.vision_width, generator=generator).to(device_)
    queries = F.normalize(torch.randn(batch_size, config.embed_dim, generator=generator), dim=1).to(device_)
    index = torch.arange(batch_size, device=device_)

    # One training step's SK work as MotorModel.forward runs it: retrieval, E_sk once (forward and
    # backward), E_{sk→v} for the online path (forward and backward) and, on the same f_sk without
    # gradient, for the momentum path.
    def batched() -> torch.Tensor:
        knowledge = model.retrieve_knowledge(queries, exclude_index=index)
        sk_feats = encode_sk(model, knowledge)
        with torch.no_grad():
            sk_stage(model, image_tokens, knowledge, sk_feats)
        return sk_stage(model, image_tokens, knowledge, sk_feats)

    # The research code runs its (online) E_sk and E_{sk→v} twice: without gradient for the
    # momentum path, then with gradient for the online path.
    def reference() -> torch.Tensor:
        knowledge = model.retrieve_knowledge(queries, exclude_index=index)
        inputs = reference_sk_inputs(model, tokenizer, knowledge.slots, padding)
        with torch.no_grad():
            reference_sk_encode(model, image_tokens, inputs)
        return reference_sk_encode(model, image_tokens, inputs)

    with torch.no_grad():
        difference = float((batched() - reference()).abs().max())
    timings = {}
    for name, path in (("batched", batched), ("reference", reference)):
        times = []
        for attempt in range(repeats + 1):
            model.zero_grad(set_to_none=True)
            _synchronise(device_)
            started = time.perf_counter()
            path().float().square().mean().backward()
            _synchronise(device_)
            if attempt:  # the first call warms caches
                times.append(time.perf_counter() - started)
        timings[name] = statistics.median(times) * 1000
    return {"batched_ms": timings["batched"], "reference_ms": timings["reference"],
            "speedup": timings["reference"] / timings["batched"], "max_abs_difference": difference}


# ---------------------------------------------------------------------------- main
def _override(text: str) -> tuple[str, object]:
    """``--set name=value``: a MotorConfig field and its YAML-parsed value."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected name=value; got {text!r}")
    return name, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    parser.add_argument("--preset", default="auto", help="model preset: tiny, base or auto (default: base on CUDA, tiny on CPU)")
    parser.add_argument("--variants", nargs="+", default=list(KNOWLEDGE_VARIANTS), choices=KNOWLEDGE_VARIANTS)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--sk-queue-size", type=int, default=None, help="n_Q, report queue entries (default: the preset's)")
    parser.add_argument("--set", dest="overrides", type=_override, action="append", default=[], metavar="NAME=VALUE",
                        help="override a MotorConfig field, e.g. --set momentum_knowledge=true (repeatable)")
    parser.add_argument("--sk-batch-size", type=int, default=None, help="SK-path batch size (default: --batch-size)")
    parser.add_argument("--sk-repeats", type=int, default=20, help="timed SK-path calls per approach (median)")
    parser.add_argument("--reference-padding", default="max_length", choices=("max_length", "longest"),
                        help="padding of the reference SK path's re-tokenised sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.preset == "auto":
        args.preset = "base" if args.device.startswith("cuda") else "tiny"
    overrides = list(args.overrides)
    if args.sk_queue_size:
        overrides.append(("sk_queue_size", args.sk_queue_size))

    config = MotorConfig.preset(args.preset).replace(**dict(overrides))
    threads = torch.get_num_threads()
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# bench_step: preset {args.preset}, device {args.device} ({device_name}), torch {torch.__version__}, "
          f"{threads} CPU threads")
    print(f"# image {config.image_size} px, vision width {config.vision_width} x {config.vision_layers}, text width "
          f"{config.text_width} x {config.text_layers}, n_Q {config.sk_queue_size}, k {config.sk_top_k}, "
          f"ITC queue {config.queue_size}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}")
    if args.overrides:
        print("# overrides: " + ", ".join(f"{name}={value}" for name, value in args.overrides))

    with tempfile.TemporaryDirectory() as tmp:
        reports, sentences = synthetic_texts(2000, args.seed)
        tokenizer = train_tokenizer(reports + sentences, tmp, vocab_size=1000)
        settings = [
            Setting(args.preset, knowledge, args.device, args.batch_size, args.steps, args.warmup, args.seed,
                    torch.get_num_threads(), tmp, tuple(overrides))
            for knowledge in args.variants
        ]
        # One fresh process per variant: peak memory must not carry over from the previous one.
        context = multiprocessing.get_context("spawn")
        rows = []
        for setting in settings:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                rows.append(pool.submit(measure_training, setting).result())
        memory = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB (before model)"
        print("\n## Training step (forward + backward + AdamW; median step)\n")
        print(f"| knowledge | trainable params (M) | momentum params (M) | steps/s | samples/s | {memory} | "
              "SK retrieval | SK encoding |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            peak = f"{row['peak_mib']:.0f}"
            if "baseline_mib" in row:
                peak += f" ({row['baseline_mib']:.0f})"
            shares = " | ".join(f"{100 * row[key]:.1f} %" if key in row else "-"
                                for key in ("retrieval_share", "sk_encoding_share"))
            print(f"| {row['knowledge']} | {row['trainable_m']:.2f} | {row['momentum_m']:.2f} | "
                  f"{row['steps_per_s']:.2f} | {row['samples_per_s']:.1f} | {peak} | {shares} |")
        print("\nSK retrieval and SK encoding (E_sk forward + backward, timed apart on a step's retrieved "
              "sentences): share of the median step.")

        sk = measure_sk_path(config, args.device, args.sk_batch_size or args.batch_size, args.sk_repeats,
                             args.seed, tokenizer, args.reference_padding)
    print(f"\n## SK path of one training step (retrieval from a full n_Q = {config.sk_queue_size} queue, "
          f"k = {config.sk_top_k}; E_sk + E_sk->v online forward + backward, momentum-path E_sk->v forward; "
          f"median of {args.sk_repeats})\n")
    print("| approach | ms per batch |")
    print("|---|---:|")
    print(f"| batched: one (B*k, L) pass over queued token ids | {sk['batched_ms']:.1f} |")
    print(f"| reference: per rank decode, re-tokenise ({args.reference_padding} padding), encode (B, L) | "
          f"{sk['reference_ms']:.1f} |")
    print(f"\nspeed-up {sk['speedup']:.2f}x; largest output difference {sk['max_abs_difference']:.2e}")


if __name__ == "__main__":
    main()
