"""Report generation with the causal decoder: greedy or beam search through transformers' ``generate``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


@torch.no_grad()
def generate_reports(
    decoder: nn.Module,
    tokenizer: Any,
    image_embeds: torch.Tensor,
    token_ids: dict[str, int],
    *,
    max_length: int = 60,
    min_length: int = 1,
    num_beams: int = 1,
    repetition_penalty: float = 1.0,
) -> list[str]:
    """Write one report per image.

    Args:
        decoder: the ``BlipTextLMHeadModel`` report decoder.
        tokenizer: the model's tokenizer (for decoding).
        image_embeds: (B, T, vision_width) image tokens the decoder cross-attends to.
        token_ids: :func:`model.tokenizer.special_token_ids` (``dec`` starts, ``sep`` ends, ``pad``).
        max_length: tokens per report including the start token. min_length: before ``[SEP]`` may end it.
        num_beams: 1 is greedy decoding; more is beam search (the image tokens are repeated per
            beam by ``generate``). repetition_penalty: >1 discourages repeated tokens.

    Returns:
        B strings, special tokens removed.
    """
    batch = image_embeds.shape[0]
    start = torch.full((batch, 1), token_ids["dec"], dtype=torch.long, device=image_embeds.device)
    sequences = decoder.generate(
        input_ids=start,
        encoder_hidden_states=image_embeds,
        max_length=max_length,
        min_length=min_length,
        num_beams=num_beams,
        do_sample=False,
        repetition_penalty=repetition_penalty,
        eos_token_id=token_ids["sep"],
        pad_token_id=token_ids["pad"],
        bos_token_id=token_ids["dec"],
    )
    return [text.strip() for text in tokenizer.batch_decode(sequences, skip_special_tokens=True)]
