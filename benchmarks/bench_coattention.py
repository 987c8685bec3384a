"""Cost of the co-attention parts (M3AE, ARL), measured side by side in one process.

Each row is the median CPU time (``time.process_time``, so other jobs on a shared machine count
less than in wall time) of ``--repeats`` calls after one untimed call, on one torch thread unless
``--threads`` says otherwise. Forward-and-backward rows run a forward pass and ``backward`` of the
sum of the outputs. Rows:

* token masking of a (batch, 128) id tensor with 10 two-token entity mentions per report:
  plain MLM (``TokenMasker.random``) against knowledge-induced (LK) masking;
* the ViT image encoder, forward and backward, on the full image against the 25 % visible patches
  MIM leaves (``encode_visible_patches``): what MAE-style masking saves;
* the co-attention fusion, forward and backward, without and with ARL's knowledge reasoning (RK,
  10 entities per report): what RK costs;
* the MIM decoder, forward and backward.

Sizes: ``tiny`` (the tiny preset's 64 px ViT, fusion width 64 with 2 layers) and, with
``--base``, ViT-B/16 at 224 px and a 6-layer fusion of width 768 (the papers' sizes).

Usage::

    python benchmarks/bench_coattention.py                   # tiny sizes
    python benchmarks/bench_coattention.py --base --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from model import MotorConfig
from model.arl_knowledge import EntityTable, build_knowledge_blocks, entity_position_map
from model.coattention_config import FusionConfig
from model.encoders import ImageEncoder
from model.fusion import CoAttentionFusion
from model.masking import TokenMasker, encode_visible_patches, random_patch_mask
from model.pretraining_heads import MIMDecoder

TEXT_LENGTH, ENTITIES = 128, 10


def cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU milliseconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def forward_backward(fn: Callable[[], torch.Tensor | tuple]) -> Callable[[], None]:
    """A call that runs ``fn`` and back-propagates the sum of what it returns."""
    def run() -> None:
        out = fn()
        tensors = out if isinstance(out, tuple) else (out,)
        sum(t.float().sum() for t in tensors).backward()
    return run


def bench(size: str, batch: int, repeats: int) -> list[tuple[str, str, float]]:
    """Rows ``(part, variant, CPU ms)`` for one size."""
    config = MotorConfig.preset("base" if size == "base" else "tiny").replace(dropout=0.0)
    fusion_config = (FusionConfig(width=768, layers=6, heads=12, intermediate=3072, dropout=0.0) if size == "base"
                     else FusionConfig(width=64, layers=2, heads=2, intermediate=128, dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    rows = []

    ids = torch.randint(7, 8000, (batch, TEXT_LENGTH), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3
    attention = torch.ones_like(ids)
    spans = [[(1 + 10 * e, 3 + 10 * e) for e in range(ENTITIES)] for _ in range(batch)]
    masker = TokenMasker(4, 8000, range(7))
    rows.append(("token masking", "random (MLM)", cpu_ms(lambda: masker.random(ids, attention, generator), repeats)))
    rows.append(("token masking", "knowledge-induced (LK)",
                 cpu_ms(lambda: masker.knowledge_induced(ids, attention, spans, generator), repeats)))

    torch.manual_seed(0)
    encoder = ImageEncoder(config)
    images = torch.randn(batch, config.in_chans, config.image_size, config.image_size)
    patches = random_patch_mask(batch, config.num_patches, 0.75, generator)
    rows.append(("ViT forward + backward", "all patches", cpu_ms(forward_backward(lambda: encoder(images)), repeats)))
    rows.append(("ViT forward + backward", "25 % visible (MIM)", cpu_ms(
        forward_backward(lambda: encode_visible_patches(encoder.vit, images, patches.keep)), repeats)))

    text = torch.randn(batch, TEXT_LENGTH, config.text_width)
    image = torch.randn(batch, 1 + config.num_patches, config.vision_width)
    plain = CoAttentionFusion(fusion_config, config.text_width, config.vision_width)
    entity_dim = 256 if size == "base" else 32
    knowing = CoAttentionFusion(fusion_config, config.text_width, config.vision_width, build_knowledge_blocks(
        fusion_config.layers, fusion_config.width, entity_dim, 4, 4 * entity_dim))
    table = EntityTable([f"entity {i}" for i in range(1000)], entity_dim)
    entity_ids = torch.randint(0, 1000, (batch, ENTITIES), generator=generator)
    position_map = entity_position_map(spans, TEXT_LENGTH)
    rows.append(("fusion forward + backward", "co-attention", cpu_ms(
        forward_backward(lambda: plain(text, attention, image).text), repeats)))
    rows.append(("fusion forward + backward", "co-attention + RK", cpu_ms(
        forward_backward(lambda: knowing(text, attention, image, entities=table.inputs(entity_ids, position_map)).text),
        repeats)))

    decoder = MIMDecoder(fusion_config.width, config.num_patches, config.patch_size ** 2 * config.in_chans,
                         *((384, 4, 6) if size == "base" else (64, 1, 2)))
    visible = torch.randn(batch, 1 + patches.keep.shape[1], fusion_config.width)
    rows.append(("MIM decoder forward + backward", "", cpu_ms(
        forward_backward(lambda: decoder(visible, patches.restore)), repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base", action="store_true", help="also the papers' base sizes (slow on a CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, "
          f"median of {args.repeats} (CPU ms per call)")
    print("| size | part | variant | CPU ms |")
    print("|---|---|---|---:|")
    for size in ("tiny", "base") if args.base else ("tiny",):
        for part, variant, ms in bench(size, args.batch_size, args.repeats):
            print(f"| {size} | {part} | {variant} | {ms:.1f} |")


if __name__ == "__main__":
    main()
