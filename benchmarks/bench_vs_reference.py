"""motor-kg's pretraining step against the MOTOR reference code, side by side in one process.

The reference is the public MOTOR repository (``models/blip_pretrain.py``'s ``BLIP_Pretrain``, whose
``forward`` plus ``loss.backward()`` and ``optimizer.step()`` is one step of its ``Pretrain.py``),
imported from ``--reference-dir`` and patched at run time only so that it builds offline on the
installed libraries and at the tiny preset's sizes (see :func:`patched_reference`; each patch says
why). Its files are read where they lie; nothing of it is copied here.

Both models get the tiny preset's sizes (``model/presets/tiny.yaml``): ViT 64 px / patch 16 /
width 64 / 2 layers / 2 heads; text stacks width 64, 2 layers, 2 heads, intermediate 128; GK
encoder 1 layer and E_{gk→v} 1 layer, SK encoder 1 BERT layer and E_{sk→v} 1 layer, all with 2
heads and a feed-forward 4 × width wide; embed_dim 32; k = 3 retrieved reports; SK sentences of 90
tokens; ITC and SK queues of ``--queue-size`` (the reference uses one size for both) with BLIP's
momentum 0.995 and distillation alpha 0.4 on both (the tiny preset's in-batch ITC, queue 1 and no
EMA, cannot be set in the reference, whose queue must hold a multiple of the batch).

Identical inputs: the same images, the same report strings (tokenised by the same WordPiece
vocabulary, padded to ``--text-len`` tokens on both sides), the same SK sentence strings and
0/1 labels. Both SK report queues are filled with the same sentences and the same report
features; each side then retrieves its k = 3 reports through its own path (the reference: top-k
over its queue, each rank's 90-token ids encoded as one batch, once for the online and once for the
momentum path; motor-kg: FAISS top-k, each distinct retrieved report encoded once, trimmed to the
longest retrieved sentence).

Arms, stepped alternately in a shuffled order every round, one torch thread, CPU time per step
(``time.process_time``) after ``--warmup`` steps:

* ``reference+plain``: the reference with its own optimizer (``optim.create_optimizer`` from its
  ``configs/pretrain.yaml``: AdamW, lr 5e-5, weight decay 0.02 off biases and norms; on CPU
  PyTorch runs it as a per-tensor loop);
* ``reference+fused``: the reference with motor-kg's optimizer (``pipelines.loop.build_optimizer``,
  fused AdamW);
* ``motor-kg+plain``: motor-kg's ``full`` model with the reference's optimizer factory;
* ``motor-kg+fused``: motor-kg's ``full`` model as ``motor pretrain`` trains it;
* ``motor-kg+fused, every report``: as above but every retrieved report encoded (no
  de-duplication of reports retrieved by several images, which random weights favour).

Prints each arm's median ms per step and the per-round speed ratios (reference time / motor-kg
time; median and interquartile range)::

    python benchmarks/bench_vs_reference.py --reference-dir /tmp/motor_ref [--steps 60] [--batch 8] [--threads 1]
        [--text-len 64] [--queue-size 256] [--profile 10]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: A file every usable reference checkout has.
REFERENCE_MODEL = Path("models") / "blip_pretrain.py"


@dataclass(frozen=True)
class Sizes:
    """The sizes both models are built at (the tiny preset's, plus the queue)."""

    image_size: int
    patch_size: int
    in_chans: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    max_position_embeddings: int
    gk_layers: int
    gk_heads: int
    gk_image_layers: int
    sk_image_layers: int
    knowledge_heads: int
    sk_layers: int
    sk_max_len: int
    sk_top_k: int
    embed_dim: int
    dropout: float
    queue_size: int

    @classmethod
    def from_config(cls, config: Any) -> Sizes:
        """The sizes of a :class:`model.MotorConfig` (whose ``queue_size`` is both queues')."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--reference-dir`` must name a MOTOR checkout (``models/blip_pretrain.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, required=True,
                        help="checkout of the MOTOR reference repository (holds models/blip_pretrain.py)")
    parser.add_argument("--steps", type=int, default=60, help="timed rounds (one step of every arm each)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first")
    parser.add_argument("--batch", type=int, default=8, help="batch size (divides --queue-size)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--queue-size", type=int, default=256, help="ITC and SK queue entries, both sides")
    parser.add_argument("--text-len", type=int, default=None,
                        help="report tokens, padding included, both sides (default: the preset's max_text_len)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then profile STEPS steps of reference+plain and motor-kg+fused (top ops, self CPU)")
    args = parser.parse_args(argv)
    if args.batch < 2 or args.queue_size % args.batch:
        parser.error(f"--batch must be at least 2 and divide --queue-size ({args.queue_size}); got {args.batch}")
    return args


def check_reference_dir(directory: Path) -> Path:
    """``directory`` resolved, or ``SystemExit`` with what is missing and where to get it."""
    directory = directory.expanduser().resolve()
    if not (directory / REFERENCE_MODEL).is_file():
        raise SystemExit(
            f"error: {directory} is not a MOTOR reference checkout: {REFERENCE_MODEL} not found there. "
            "Pass --reference-dir a checkout of the public MOTOR repository (github.com/chenzcv7/MOTOR)."
        )
    return directory


# ---------------------------------------------------------------------------- the reference, patched
@contextlib.contextmanager
def patched_reference(directory: Path, sizes: Sizes, tokenizer: Any):
    """Import the reference's pretraining model with the run-time patches it needs; yields its module.

    The reference was written for transformers 4.15 / timm 0.4 with SciBERT and DeiT from the hub
    and distributed training. Every patch below changes where a weight, a vocabulary or a size
    comes from, never what a step computes. The working directory is the checkout's while the
    model is built (the reference reads ``configs/*.json`` by relative path).
    """
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    # transformers 5 moved these helpers out of modeling_utils, where med.py imports them from;
    # head pruning (the only user of find_pruneable_heads_and_indices) is never called.
    modeling_utils.apply_chunking_to_forward = pytorch_utils.apply_chunking_to_forward
    modeling_utils.prune_linear_layer = pytorch_utils.prune_linear_layer
    if not hasattr(modeling_utils, "find_pruneable_heads_and_indices"):
        def find_pruneable_heads_and_indices(*_args, **_kwargs):
            raise NotImplementedError("head pruning is not used by the benchmark")

        modeling_utils.find_pruneable_heads_and_indices = find_pruneable_heads_and_indices

    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    previous_cwd = os.getcwd()
    hub_loader = torch.hub.load_state_dict_from_url
    os.chdir(directory)
    try:
        pretrain = sys.modules.get("models.blip_pretrain")
        if pretrain is None:  # first build: import and patch once (the patches wrap the originals)
            try:
                with warnings_off():
                    med = importlib.import_module("models.med")
                    vit = importlib.import_module("models.vit_blip")
                    gk = importlib.import_module("medical_knowledge.GK_knowledge")
                    sk = importlib.import_module("medical_knowledge.SK_knowledge")
                    tag = importlib.import_module("models.tagencoder")
                    pretrain = importlib.import_module("models.blip_pretrain")
            except Exception as err:  # noqa: BLE001 - any failure to import the checkout is reported alike
                raise SystemExit(
                    f"error: cannot import the reference's models from {directory}: {type(err).__name__}: {err}"
                ) from None
            _patch_reference(med, vit, gk, sk, tag, pretrain, sizes, tokenizer)
        # The DeiT checkpoint the reference downloads: no weights here (random initialisation,
        # as motor-kg's tiny model), so its load_state_dict(strict=False) loads nothing.
        torch.hub.load_state_dict_from_url = lambda *_args, **_kwargs: {"model": {}}
        yield pretrain
    finally:
        torch.hub.load_state_dict_from_url = hub_loader
        os.chdir(previous_cwd)


@contextlib.contextmanager
def warnings_off():
    """Silence the deprecation warnings of the reference's old import paths."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _patch_reference(med, vit, gk, sk, tag, pretrain, sizes: Sizes, tokenizer: Any) -> None:
    base_config = med.BertConfig
    text_layers = {"bert_config_sci.json": sizes.text_layers, "med_config_sci.json": sizes.text_layers,
                   "tag_config_sci.json": sizes.sk_layers, "tag_config_sci_down.json": sizes.sk_layers}

    class SizedBertConfig(base_config):
        """The reference's own BERT JSON configs, at the benchmark's sizes and vocabulary."""

        @classmethod
        def from_json_file(cls, json_file):
            config = base_config.from_json_file(json_file)
            config.update({
                "hidden_size": sizes.text_width, "num_hidden_layers": text_layers[Path(json_file).name],
                "num_attention_heads": sizes.text_heads, "intermediate_size": sizes.text_intermediate,
                "max_position_embeddings": sizes.max_position_embeddings, "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id, "encoder_width": sizes.vision_width,
                "hidden_dropout_prob": sizes.dropout, "attention_probs_dropout_prob": sizes.dropout,
            })
            return config

    for module in (pretrain, sk, tag):
        module.BertConfig = SizedBertConfig

    # transformers 5's init_weights() needs post_init()'s bookkeeping, which 4.15-era models never
    # call; 4.15's init_weights() initialised every module and tied the output embeddings (BertLMHeadModel's
    # prediction layer) to the input embeddings. Do exactly that.
    def init_weights(self):
        self.apply(self._init_weights)
        output = self.get_output_embeddings()
        if output is not None and getattr(self.config, "tie_word_embeddings", True):
            output.weight = self.get_input_embeddings().weight

    med.BertPreTrainedModel.init_weights = init_weights

    # Two PreTrainedModel helpers med.py calls every forward, removed in transformers 5; as 4.15
    # defined them for float32 (no head mask is ever passed; cross-attention padding gets -1e9).
    def get_head_mask(self, head_mask, num_layers):
        if head_mask is not None:
            raise NotImplementedError("head masks are not used by the benchmark")
        return [None] * num_layers

    def invert_attention_mask(self, mask):
        extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
        return (1.0 - extended.to(dtype=self.dtype)) * -1e9

    med.BertPreTrainedModel.get_head_mask = get_head_mask
    med.BertPreTrainedModel.invert_attention_mask = invert_attention_mask

    # SciBERT from the hub → a randomly initialised model of the same class and config (the
    # tiny preset has no pretrained text weights either).
    def random_init(cls, _name, *args, config=None, **kwargs):
        return cls(config, *args, **kwargs)

    med.BertModel.from_pretrained = classmethod(random_init)
    med.BertLMHeadModel.from_pretrained = classmethod(random_init)

    # The hub tokenizer (SciBERT's vocabulary plus [DEC] and [ENC]) → motor-kg's local WordPiece
    # vocabulary with the same two special tokens, under the attribute names the reference reads.
    pretrain.init_tokenizer = lambda: tokenizer
    tag.init_tokenizer = lambda _args: tokenizer

    # Sizes the reference hard-codes (ViT-B/16, 768-wide 6-head GK / SK modules with a 1024-wide
    # feed-forward, 2 layers each) → the tiny preset's.
    def create_vit(_vit, image_size, *_args, **_kwargs):
        return vit.VisionTransformer(
            img_size=image_size, patch_size=sizes.patch_size, in_chans=sizes.in_chans,
            embed_dim=sizes.vision_width, depth=sizes.vision_layers, num_heads=sizes.vision_heads,
        ), sizes.vision_width

    pretrain.create_vit = create_vit
    width, heads, feed_forward = sizes.text_width, sizes.knowledge_heads, 4 * sizes.text_width

    def attention(_heads, _width, dropout=0.1):  # the reference's own default dropout
        return gk.MultiHeadedAttention(heads, width, dropout)

    def feed_forward_layer(_width, _hidden, dropout=0.1):
        return gk.PositionwiseFeedForward(width, feed_forward, dropout)

    def decoder_layer(_width, attn, ff, dropout):
        return gk.DecoderLayer(width, attn, ff, dropout)

    for module in (pretrain, sk):
        module.MultiHeadedAttention = attention
        module.PositionwiseFeedForward = feed_forward_layer
        module.DecoderLayer = decoder_layer
    pretrain.Decoder = lambda layer, _n: gk.Decoder(layer, sizes.gk_image_layers)
    sk.Decoder = lambda layer, _n: gk.Decoder(layer, sizes.sk_image_layers)
    # get_image_knowledge allocates its (B, k, 90, 768) buffer of SK encodings with a literal 768:
    # its module sees torch with that width set to the text width.
    class SizedTorch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def randn(*size, **kwargs):
            if size and size[-1] == 768:
                size = (*size[:-1], width)
            return torch.randn(*size, **kwargs)

    sk.torch = SizedTorch()

    build_tag_encoder = tag.TagEncoder

    def tag_encoder(dropout, args):
        # The tag encoder's classes call super() through their module's globals, so they are
        # built as the reference builds them and their 768-wide layers then replaced.
        encoder = build_tag_encoder(dropout, args)
        attention = tag.MultiHeadedAttention(sizes.gk_heads, width)
        layer = tag.EncoderLayer(width, attention, tag.PositionwiseFeedForward(width, feed_forward, 0.1), dropout)
        encoder.encoder = tag.Encoder(layer, sizes.gk_layers)
        encoder.pe = tag.PositionalEncoding(width, dropout)
        return encoder

    pretrain.TagEncoder = tag_encoder

    # all_gather across processes: one process here, where gathering returns the tensor itself
    # (motor-kg's gather is the same no-op); the reference needs torch.distributed initialised.
    pretrain.concat_all_gather = lambda tensor: tensor
    sk.concat_all_gather = lambda tensor: tensor


def build_reference(directory: Path, sizes: Sizes, tokenizer: Any, text_len: int) -> torch.nn.Module:
    """The reference's ``BLIP_Pretrain`` at ``sizes``, in training mode.

    Its report tokenisation pads to ``text_len`` tokens instead of its fixed 90 (the same report
    length as motor-kg's side); label prompts (5 tokens), GK nodes (32) and SK sentences (90) keep
    the reference's own lengths.
    """
    args = types.SimpleNamespace(task="pretrain", bert="sci")
    with patched_reference(directory, sizes, tokenizer) as pretrain, contextlib.redirect_stdout(io.StringIO()):
        model = pretrain.BLIP_Pretrain(image_size=sizes.image_size, embed_dim=sizes.embed_dim,
                                       queue_size=sizes.queue_size, momentum=0.995, args=args)
    model.tokenizer = ReportLength(tokenizer, text_len)
    return model.train()


class ReportLength:
    """The reference's tokenizer with its report length (``max_length=90``) replaced by ``text_len``.

    Only ``BLIP_Pretrain.forward`` holds this wrapper; the SK and GK modules keep the plain
    tokenizer, so their 90- and 32-token sequences stay as the reference has them.
    """

    def __init__(self, tokenizer: Any, text_len: int) -> None:
        self._tokenizer, self._text_len = tokenizer, text_len

    def __call__(self, texts, **kwargs):
        if kwargs.get("max_length") == 90:
            kwargs["max_length"] = self._text_len
        return self._tokenizer(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def reference_optimizer(directory: Path, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The reference's optimizer as ``Pretrain.py`` builds it (``configs/pretrain.yaml``'s ``optimizer``)."""
    import yaml

    sys.path.insert(0, str(directory))
    with warnings_off():
        factory = importlib.import_module("optim.optim_factory")
    settings = yaml.safe_load((directory / "configs" / "pretrain.yaml").read_text())["optimizer"]
    # The reference reads its YAML with ruamel (YAML 1.2, where "5e-5" is a number); PyYAML's 1.1
    # rules leave it a string.
    settings = {k: float(v) if k in ("lr", "weight_decay") else v for k, v in settings.items()}
    return factory.create_optimizer(types.SimpleNamespace(**settings), model)


def tokenizer_for_reference(tokenizer: Any) -> Any:
    """motor-kg's tokenizer with the attributes BLIP's ``init_tokenizer`` sets ([DEC] as BOS, ``enc_token_id``)."""
    tokenizer.bos_token = "[DEC]"
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


# ---------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """One synthetic batch in both sides' forms, and the queue contents they share."""

    images: torch.Tensor
    reports: list[str]
    sk_sentences: list[str]
    labels: torch.Tensor
    motor_batch: dict[str, torch.Tensor]
    gk_text: list[str]


def make_inputs(tokenizer: Any, config: Any, batch: int, text_len: int, seed: int) -> Inputs:
    """Images, reports, SK sentences and 0/1 labels; motor-kg's batch padded to ``text_len`` tokens."""
    import bench_step

    motor_batch = bench_step.synthetic_batch(tokenizer, config, batch, seed)
    reports, sentences = bench_step.synthetic_texts(batch, seed)
    ids, mask = motor_batch["input_ids"], motor_batch["attention_mask"]
    if ids.shape[1] > text_len:
        raise SystemExit(f"error: reports of {ids.shape[1]} tokens exceed --text-len {text_len}")
    padded = ids.new_full((ids.shape[0], text_len), tokenizer.pad_token_id)
    padded[:, : ids.shape[1]] = ids
    padded_mask = mask.new_zeros((mask.shape[0], text_len))
    padded_mask[:, : mask.shape[1]] = mask
    motor_batch.update(input_ids=padded, attention_mask=padded_mask, labels=motor_batch["labels"].clamp(min=0))
    gk_nodes = importlib.import_module("kg.gk").load_gk().node_words()
    return Inputs(
        images=motor_batch["image"], reports=reports, sk_sentences=sentences, labels=motor_batch["labels"],
        motor_batch=motor_batch, gk_text=[" ".join(gk_nodes)] * batch,
    )


@torch.no_grad()
def fill_reference_queues(reference: torch.nn.Module, motor: torch.nn.Module) -> None:
    """Give the reference's SK queue motor-kg's queued SK sentences (90-token ids) and report features."""
    queue = motor.report_queue
    knowledge = reference.create_knowledge
    knowledge.knowledge_input_ids_queue.copy_(queue.sk_ids.long())
    knowledge.knowledge_attention_mask_queue.copy_(queue.sk_mask.to(knowledge.knowledge_attention_mask_queue.dtype))
    knowledge.text_queue.copy_(queue.entries("feature").T)


# ---------------------------------------------------------------------------- arms
def momentum_parameters(model: torch.nn.Module) -> int:
    """Parameters of the frozen momentum copies (the reference's ``model_pairs``, motor-kg's ``momentum``)."""
    if hasattr(model, "model_pairs"):
        return sum(p.numel() for _, shadow in model.model_pairs for p in shadow.parameters())
    return sum(p.numel() for p in model.momentum.parameters())


def trainable_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters that receive gradients."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


def reference_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: Inputs) -> Callable[[], None]:
    """One step of the reference's ``Pretrain.train`` loop body (alpha at its configured 0.4)."""
    def step() -> None:
        optimizer.zero_grad()
        losses = model(inputs.images, inputs.reports, inputs.gk_text, inputs.sk_sentences, inputs.labels, alpha=0.4)
        sum(losses).backward()
        optimizer.step()

    return step


def motor_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: Inputs) -> Callable[[], None]:
    """One step of ``motor pretrain``: forward, backward, update."""
    def step() -> None:
        loss = model(inputs.motor_batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def encode_every_report(model: torch.nn.Module) -> None:
    """Make motor-kg's E_sk encode all B·k retrieved sentences (no sharing of repeated reports)."""
    encode = model.sk_encoder.forward
    model.sk_encoder.forward = lambda ids, mask, slots=None: encode(ids, mask, None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory = check_reference_dir(args.reference_dir)
    import bench_step
    from model import MotorConfig, build_model, train_tokenizer
    from pipelines.config import OptimConfig
    from pipelines.loop import build_optimizer

    torch.set_num_threads(args.threads)
    config = MotorConfig.preset("tiny").replace(
        knowledge="full", queue_size=args.queue_size, sk_queue_size=args.queue_size, momentum=0.995, alpha=0.4
    )
    text_len = args.text_len or config.max_text_len
    sizes = Sizes.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        reports, sentences = bench_step.synthetic_texts(2000, 0)
        tokenizer = tokenizer_for_reference(train_tokenizer(reports + sentences, tmp, vocab_size=1000))
    inputs = make_inputs(tokenizer, config, args.batch, text_len, args.seed)
    optim = OptimConfig()

    def motor_model(every_report: bool = False) -> torch.nn.Module:
        torch.manual_seed(args.seed)
        model = build_model(config, tokenizer).train()
        bench_step.fill_queues(model, tokenizer, args.seed)
        if every_report:
            encode_every_report(model)
        return model

    def reference_model() -> torch.nn.Module:
        torch.manual_seed(args.seed)
        model = build_reference(directory, sizes, tokenizer, text_len)
        fill_reference_queues(model, motor_model())
        return model

    arms: dict[str, Callable[[], None]] = {}
    model = reference_model()
    arms["reference+plain"] = reference_step(model, reference_optimizer(directory, model), inputs)
    print(f"reference: {trainable_parameters(model):,} trainable parameters, "
          f"{momentum_parameters(model):,} momentum parameters")
    model = reference_model()
    arms["reference+fused"] = reference_step(model, build_optimizer(model, optim), inputs)
    model = motor_model()
    arms["motor-kg+plain"] = motor_step(model, reference_optimizer(directory, model), inputs)
    print(f"motor-kg:  {trainable_parameters(model):,} trainable parameters, "
          f"{momentum_parameters(model):,} momentum parameters")
    model = motor_model()
    arms["motor-kg+fused"] = motor_step(model, build_optimizer(model, optim), inputs)
    model = motor_model(every_report=True)
    arms["motor-kg+fused, every report"] = motor_step(model, build_optimizer(model, optim), inputs)

    for step in arms.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for round_ in range(args.steps):
        random.Random(round_).shuffle(names)
        for name in names:
            start = time.process_time()
            arms[name]()
            times[name].append(time.process_time() - start)

    print(f"\nbatch {args.batch}, {args.threads} thread(s), {args.steps} rounds after {args.warmup} warm-up steps; "
          f"report {text_len} tokens, k {sizes.sk_top_k}, queues {args.queue_size}; CPU ms per step")
    for name, values in times.items():
        print(f"  {name:30s} median {statistics.median(values) * 1000:8.1f} ms")
    comparisons = (
        ("as shipped (reference+plain / motor-kg+fused)", "reference+plain", "motor-kg+fused"),
        ("same optimizer, fused AdamW", "reference+fused", "motor-kg+fused"),
        ("same optimizer, reference's AdamW", "reference+plain", "motor-kg+plain"),
        ("as shipped, every report encoded", "reference+plain", "motor-kg+fused, every report"),
    )
    print("speed ratio (reference time / motor-kg time per round), median (IQR):")
    for label, slow, fast in comparisons:
        ratios = sorted(s / f for s, f in zip(times[slow], times[fast]))
        low, _, high = statistics.quantiles(ratios, n=4)
        print(f"  {label:50s} {statistics.median(ratios):5.2f}x ({low:.2f}-{high:.2f})")
    if args.profile:
        for name in ("reference+plain", "motor-kg+fused"):
            print(f"\n{name}: {args.profile} steps under torch.profiler, top ops by self CPU time")
            print(profile_table(arms[name], args.profile))
    return 0


def profile_table(step: Callable[[], None], steps: int, rows: int = 12) -> str:
    """torch.profiler's table of the ``rows`` ops with the most self CPU time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


if __name__ == "__main__":
    raise SystemExit(main())
