"""MedViLL S2S decoding: cached keys/values against re-encoding the whole sequence at every step.

Both ways write the same words (checked); the script prints, per setting, the CPU seconds of greedy
decoding for a batch of images with the cache (:func:`model.single_stream_generation.greedy_decode`)
and without it (each step encodes ``[image] w_1 … w_{n-1} [MASK]`` from scratch, as a decoder
without a cache must), and their ratio. CPU time (``time.process_time``) is used because wall
clock on a shared machine is noisy; the ratio of the two measured in one process is the figure to
compare. Models are randomly initialised; nothing is downloaded.

Usage::

    python benchmarks/bench_medvill_decoding.py                       # tiny and small sizes
    python benchmarks/bench_medvill_decoding.py --widths 256 --layers 4 --length 60 --threads 2
"""
from __future__ import annotations

import argparse
import time

import torch

from model.medvill_config import MedVillConfig
from model.pretraining_heads import MaskedLanguageModelingHead
from model.single_stream import SingleStreamEncoder
from model.single_stream_generation import BANNED_TOKENS, greedy_decode

VOCAB = 1000
TOKEN_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4, "enc": 5, "dec": 6}


@torch.no_grad()
def decode_without_cache(encoder: SingleStreamEncoder, head: MaskedLanguageModelingHead, images: torch.Tensor,
                         length: int) -> list[list[int]]:
    """Greedy decoding that re-encodes the image and every word at each step (no [SEP] stop)."""
    words = torch.empty(images.shape[0], 0, dtype=torch.long)
    mask_token = torch.full((images.shape[0], 1), TOKEN_IDS["mask"], dtype=torch.long)
    banned = [TOKEN_IDS[name] for name in BANNED_TOKENS] + [TOKEN_IDS["sep"]]
    for _ in range(length):
        text = torch.cat([words, mask_token], dim=1)
        hidden = encoder(images, text, torch.ones_like(text, dtype=torch.bool), "s2s").text_hidden
        logits = head(hidden[:, -1])
        logits[:, banned] = -torch.inf
        words = torch.cat([words, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return words.tolist()


def run(width: int, layers: int, length: int, batch: int, visual_tokens: int) -> None:
    config = MedVillConfig(
        backbone="test_resnet", image_size=128, num_visual_tokens=visual_tokens, text_width=width, text_layers=layers,
        text_heads=max(1, width // 64), text_intermediate=4 * width, max_text_len=length + 1,
        max_position_embeddings=length + 1, dropout=0.0,
    )
    torch.manual_seed(0)
    encoder = SingleStreamEncoder(config, VOCAB, TOKEN_IDS["cls"], TOKEN_IDS["sep"]).eval()
    head = MaskedLanguageModelingHead(config.text_width, encoder.embeddings.word_embeddings).eval()
    images = torch.randn(batch, 3, 128, 128)
    # [SEP] is never allowed before ``length`` words, so both ways write exactly ``length`` words.
    start = time.process_time()
    cached = greedy_decode(encoder, head, images, TOKEN_IDS, max_length=length, min_length=length)
    cached_s = time.process_time() - start
    start = time.process_time()
    uncached = decode_without_cache(encoder, head, images, length)
    uncached_s = time.process_time() - start
    same = "yes" if cached == uncached else "NO"
    print(f"| {width} | {layers} | {visual_tokens + 2} | {length} | {batch} | {cached_s:.2f} | {uncached_s:.2f} | "
          f"{uncached_s / cached_s:.1f}× | {same} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--length", type=int, default=40, help="words written per image")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--visual-tokens", type=int, default=16, help="K (at most 16 at 128 px)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU seconds")
    print("| width | layers | visual tokens | words | images | cached s | re-encoded s | ratio | same words |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for width in args.widths:
        run(width, args.layers, args.length, args.batch, args.visual_tokens)


if __name__ == "__main__":
    main()
