"""Masking for masked language and image modelling, reproducible through a ``torch.Generator``.

**Tokens (MLM, BERT).** A token is *maskable* when it is not padding and not a special token
(``[PAD]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, ``[ENC]``, ``[DEC]``, ``[UNK]`` included: an
unknown piece is no target worth predicting). Count rule: a report with n maskable tokens has
exactly ``k = max(1, floor(p · n + 0.5))`` of them chosen (p = 0.15; round half up; at least one so
that every report contributes, none when n = 0). Each chosen token independently becomes
``[MASK]`` with probability 0.8, a random non-special token with 0.1, and stays itself with 0.1;
its label is the original id, every other label is ``-100`` (ignored).

* :meth:`TokenMasker.random` picks the k tokens uniformly (BERT, M3AE).
* :meth:`TokenMasker.knowledge_induced` (ARL's LK) visits the report's entities in random order
  and chooses each entity's whole token span when it fits in what is left of the budget k; the
  rest of the budget is filled with random maskable tokens outside entity spans, and only when
  those run out with tokens of entities that were not chosen. The count is k either way.

**Patches (MIM, MAE).** :func:`random_patch_mask` masks exactly ``round_half_up(ratio · N)`` of the
N patches of each image (at least one is kept) and returns the kept indices, the mask and the
indices that restore the original order; :func:`encode_visible_patches` runs a timm ViT on the
kept patches only, and :func:`patchify` cuts images into the per-patch pixel targets.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from model.losses import IGNORE_INDEX

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
"""BERT's replacement: 80 % ``[MASK]``, 10 % a random token, the remaining 10 % unchanged."""


def round_half_up(value: float) -> int:
    """``floor(value + 0.5)``: the rounding every mask count uses (Python's ``round`` rounds half to even)."""
    return int(math.floor(value + 0.5))


def mlm_budget(maskable: int, probability: float) -> int:
    """How many of ``maskable`` tokens a report masks: ``max(1, round_half_up(p · n))``, 0 when n = 0."""
    return 0 if maskable == 0 else max(1, round_half_up(probability * maskable))


@dataclass
class MaskedTokens:
    """A masked batch of token ids.

    Attributes:
        input_ids: (B, L) ids after replacement (what the model reads).
        labels: (B, L) original ids at chosen positions, ``-100`` elsewhere.
        chosen: (B, L) bool, the positions chosen for prediction.
        masked_entities: (B, E) bool, entities with at least one chosen token (knowledge-induced
            masking only, else ``None``). Their knowledge must not reach the text they describe in
            the masked pass: drop them from P (``position_map * ~masked_entities[..., None]``).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    chosen: torch.Tensor
    masked_entities: torch.Tensor | None = None


class TokenMasker:
    """Chooses and replaces tokens for MLM (module docstring); holds no parameters.

    Args:
        mask_id: id of ``[MASK]``.
        vocab_size: size of the id space random replacements are drawn from.
        special_ids: ids never chosen and never drawn as random replacements.
        probability: p, the share of maskable tokens chosen.
    """

    def __init__(self, mask_id: int, vocab_size: int, special_ids: Iterable[int], probability: float = 0.15) -> None:
        if not 0.0 < probability < 1.0:
            raise ValueError(f"probability must lie strictly between 0 and 1; got {probability}")
        self.mask_id = mask_id
        self.probability = probability
        special = torch.zeros(vocab_size, dtype=torch.bool)
        special[torch.tensor(sorted({*special_ids, mask_id}), dtype=torch.long)] = True
        self.special = special
        self.replacements = (~special).nonzero().squeeze(1)
        if self.replacements.numel() == 0:
            raise ValueError("the vocabulary has no non-special token to draw random replacements from")

    @classmethod
    def from_tokenizer(cls, tokenizer, probability: float = 0.15) -> TokenMasker:
        """A masker for a tokenizer of :mod:`model.tokenizer` (special ids from ``special_token_ids``)."""
        from model.tokenizer import special_token_ids

        ids = special_token_ids(tokenizer)
        return cls(ids["mask"], len(tokenizer), ids.values(), probability)

    def maskable(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: real tokens that are not special."""
        return attention_mask.bool() & ~self.special.to(input_ids.device)[input_ids]

    def budgets(self, maskable: torch.Tensor) -> torch.Tensor:
        """(B,) how many tokens each report masks (the count rule)."""
        counts = maskable.sum(1)
        budget = torch.floor(counts.double() * self.probability + 0.5).long().clamp(min=1)
        return torch.where(counts > 0, budget, torch.zeros_like(budget))

    def random(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None,
        also_maskable: torch.Tensor | None = None,
    ) -> MaskedTokens:
        """BERT masking: k uniformly chosen maskable tokens per report, then 80 / 10 / 10.

        Args:
            also_maskable: (B, L) bool, special-token positions that may be chosen too (MedViLL's
                closing [SEP] under S2S, so that generation learns where a report ends); they
                count towards n in the count rule. ``generator``: ``None`` draws from torch's
                global generator.
        """
        maskable = self.maskable(input_ids, attention_mask)
        if also_maskable is not None:
            maskable = maskable | (also_maskable.bool() & attention_mask.bool())
        chosen = _choose(maskable, self.budgets(maskable), generator)
        return self._replace(input_ids, chosen, generator)

    def knowledge_induced(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_spans: Sequence[Sequence[tuple[int, int]]],
        generator: torch.Generator,
    ) -> MaskedTokens:
        """ARL's LK: whole entity spans first, the budget filled with random tokens (module docstring).

        Args:
            token_spans: per report, the ``[start, end)`` token span of each entity mention (the
                spans :func:`model.arl_knowledge.entity_position_map` turns into P; E slots).
        """
        if len(token_spans) != input_ids.shape[0]:
            raise ValueError(f"need entity spans for each of the {input_ids.shape[0]} reports; got {len(token_spans)}")
        maskable = self.maskable(input_ids, attention_mask)
        budgets = self.budgets(maskable)
        batch, length = input_ids.shape
        entities = max((len(s) for s in token_spans), default=0)
        # One random visiting order of the entities per report, drawn for the whole batch at once.
        orders = torch.rand(batch, entities, generator=generator).argsort(dim=1).tolist()
        # Fill priority per token: 2 inside a chosen entity, 1 outside every entity, 0 inside an
        # unchosen one. Plain lists: a handful of short spans per report costs more as tensor ops.
        priority = [[1] * length for _ in range(batch)]
        positions = []
        for b, (spans, row, left) in enumerate(zip(token_spans, maskable.tolist(), budgets.tolist())):
            # Spans past the padded length (truncated mentions) keep only their tokens that remain.
            positions.append([[i for i in range(min(s, length), min(e, length)) if row[i]] for s, e in spans])
            for tokens in positions[b]:
                for i in tokens:
                    priority[b][i] = 0
            for e in (e for e in orders[b] if e < len(spans)):
                new = [i for i in positions[b][e] if priority[b][i] != 2]  # overlapping mentions count once
                if new and len(new) <= left:
                    for i in new:
                        priority[b][i] = 2
                    left -= len(new)
        noise = torch.rand(maskable.shape, generator=generator)
        scores = (torch.tensor(priority, dtype=noise.dtype) + noise).to(maskable.device)
        chosen = _choose(maskable, budgets, generator, scores=scores)
        picked = chosen.tolist()
        masked_entities = torch.tensor(
            [[any(picked[b][i] for i in tokens) for tokens in row] + [False] * (entities - len(row))
             for b, row in enumerate(positions)], dtype=torch.bool,
        ).reshape(batch, entities).to(input_ids.device)
        result = self._replace(input_ids, chosen, generator)
        result.masked_entities = masked_entities
        return result

    def _replace(self, input_ids: torch.Tensor, chosen: torch.Tensor, generator: torch.Generator) -> MaskedTokens:
        draw = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
        pick = torch.randint(len(self.replacements), input_ids.shape, generator=generator)
        random_ids = self.replacements[pick].to(input_ids.device)
        masked = input_ids.clone()
        masked[chosen & (draw < MASK_SHARE)] = self.mask_id
        swap = chosen & (draw >= MASK_SHARE) & (draw < MASK_SHARE + RANDOM_SHARE)
        masked[swap] = random_ids[swap]
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        return MaskedTokens(input_ids=masked, labels=labels, chosen=chosen)


def _choose(
    allowed: torch.Tensor, counts: torch.Tensor, generator: torch.Generator, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, L) bool with the ``counts[b]`` highest-scoring allowed positions of each row set.

    ``scores`` default to uniform noise (a uniform choice); disallowed positions never win.
    """
    if scores is None:
        scores = torch.rand(allowed.shape, generator=generator).to(allowed.device)
    scores = scores.masked_fill(~allowed, -math.inf)
    ranks = scores.argsort(dim=1, descending=True).argsort(dim=1)
    return allowed & (ranks < counts.unsqueeze(1))


# ---------------------------------------------------------------------------- patches
@dataclass
class MaskedPatches:
    """A random patch mask for a batch (MAE's ``random_masking``).

    Attributes:
        keep: (B, K) indices of the kept (visible) patches, in the order the encoder sees them.
        mask: (B, N) bool, True at masked patches, in the original patch order.
        restore: (B, N) indices that put ``[kept, masked]`` tokens back in the original order.
    """

    keep: torch.Tensor
    mask: torch.Tensor
    restore: torch.Tensor


def masked_patch_count(num_patches: int, ratio: float) -> int:
    """How many of N patches are masked: ``round_half_up(ratio · N)``, leaving at least one visible."""
    return min(round_half_up(ratio * num_patches), num_patches - 1)


def random_patch_mask(
    batch: int, num_patches: int, ratio: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> MaskedPatches:
    """Mask :func:`masked_patch_count` patches of each image, chosen uniformly."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must lie strictly between 0 and 1; got {ratio}")
    kept = num_patches - masked_patch_count(num_patches, ratio)
    shuffle = torch.rand(batch, num_patches, generator=generator).argsort(dim=1).to(device)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(batch, num_patches, dtype=torch.bool, device=device)
    mask[:, :kept] = False
    return MaskedPatches(keep=shuffle[:, :kept], mask=mask.gather(1, restore), restore=restore)


def encode_visible_patches(vit: nn.Module, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Run a timm ``VisionTransformer`` on the kept patches only (MAE's encoder).

    Patches are embedded and given their positional embeddings first, so each visible patch keeps
    its position; the ``[CLS]`` token stays in front.

    Args:
        vit: e.g. ``model.encoders.ImageEncoder(config).vit``.
        images: (B, C, H, W) normalised images.
        keep: (B, K) kept patch indices (:attr:`MaskedPatches.keep`).

    Returns:
        (B, prefix + K, width) features after the final norm (prefix = 1 for the ``[CLS]`` token).
    """
    # timm's own positional step (class token, position table, its dropout), so a visible patch
    # gets exactly what forward_features would give it; the patches are picked afterwards.
    x = vit._pos_embed(vit.patch_embed(images))
    prefix = vit.num_prefix_tokens
    patches = x[:, prefix:].gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    x = torch.cat([x[:, :prefix], patches], dim=1)
    x = vit.norm_pre(vit.patch_drop(x))
    return vit.norm(vit.blocks(x))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, patch_size² · C) pixels per patch, patches in row-major order (as the ViT)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image {height}x{width} is not a multiple of patch size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)
