"""Masked language modelling for the single-stream encoder: token masking, a tied head and the loss.

MedViLL's MLM (BERT's recipe): 15 % of the text tokens are selected; a selected token becomes
[MASK] 80 % of the time, a random token 10 % and stays itself 10 %; the model predicts the
original token at every selected position from the (masked) sequence, under the pretraining
mask scheme. Under S2S the same objective finetunes report generation (each masked word sees
the image and the words before it), which is why decoding appends a [MASK] and reads its
prediction (:mod:`model.single_stream_generation`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.losses import IGNORE_INDEX


def mask_text_tokens(
    text_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    random_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select and corrupt text tokens for MLM.

    Args:
        text_ids: (B, T) text-segment ids.
        maskable: (B, T) bool, the positions that may be selected (words; [SEP_L] too when the
            model must learn where a report ends, as for report generation).
        mask_id: id of [MASK]. vocab_size: random replacements are drawn from ``random_ids`` or,
            without it, from ``[0, vocab_size)``.
        probability: share of maskable tokens selected. Every row with a maskable token gets at
            least one selection (as MedViLL does), so no sample contributes nothing.
        generator: source of every draw (``None``: torch's global generator).
        random_ids: (R,) ids a random replacement may take (e.g. the non-special tokens).

    Returns:
        ``(corrupted_ids (B, T), labels (B, T))``: labels hold the original id at selected
        positions and ``IGNORE_INDEX`` elsewhere.
    """
    device = text_ids.device
    maskable = maskable.bool()

    def uniform(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=generator.device if generator else device).to(device)

    draw = uniform(tuple(text_ids.shape))
    selected = (draw < probability) & maskable
    # Rows left without a selection get their maskable position with the smallest draw.
    forced = draw.masked_fill(~maskable, 2.0).argmin(dim=1)
    lacking = ~selected.any(dim=1) & maskable.any(dim=1)
    selected[lacking, forced[lacking]] = True

    action = uniform(tuple(text_ids.shape))
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    if random_ids is None:
        replacement = (uniform(tuple(text_ids.shape)) * vocab_size).long().clamp_max(vocab_size - 1)
    else:
        pick = (uniform(tuple(text_ids.shape)) * random_ids.numel()).long().clamp_max(random_ids.numel() - 1)
        replacement = random_ids.to(device)[pick]
    corrupted = torch.where(to_mask, torch.full_like(text_ids, mask_id), text_ids)
    corrupted = torch.where(to_random, replacement, corrupted)
    labels = torch.where(selected, text_ids, torch.full_like(text_ids, IGNORE_INDEX))
    return corrupted, labels


class MaskedLMHead(nn.Module):
    """BERT's prediction head: dense → GELU → LayerNorm → the word-embedding matrix (tied) + bias.

    ``forward(hidden (..., width)) -> logits (..., vocab_size)``.

    Args:
        word_embeddings: the encoder's word table, shared as the output projection.
    """

    def __init__(self, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        vocab_size, width = word_embeddings.weight.shape
        self.transform = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.decoder = nn.Linear(width, vocab_size)
        self.decoder.weight = word_embeddings.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.transform(hidden))))


class MaskedLanguageModelingLoss(nn.Module):
    """MLM: cross-entropy at the selected positions.

    ``forward(logits (B, T, V), labels (B, T)) -> loss``: the mean over positions whose label is
    not ``IGNORE_INDEX`` (0 with a gradient path when there is none).
    """

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        counted = labels != IGNORE_INDEX
        if not bool(counted.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[counted].float(), labels[counted])
