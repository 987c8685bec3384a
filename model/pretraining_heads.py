"""Prediction heads of the co-attention objectives: ITM, MLM, MIM and ARL's knowledge alignment (AK).

The matching losses are in :mod:`model.losses`; a head maps features to logits or pixels and a
loss compares them with targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.batch_standardiser import BatchStandardiser


class PairMatchingHead(nn.Module):
    """ITM on the co-attention fusion: matched / unmatched logits from both pooled ``[CLS]`` features.

    ``forward(text_pooled (B, D), image_pooled (B, D)) -> logits (B, 2)`` of a linear layer over
    their concatenation (M3AE, ARL), standardised feature by feature over the batch first
    (:class:`model.batch_standardiser.BatchStandardiser`; running statistics at evaluation);
    :class:`model.losses.MatchingLoss` takes the logits.

    Why the standardisation (not in the papers, whose encoders start pretrained): from random
    initialisation the pooled ``[CLS]`` of both streams is nearly the same vector for every input
    (cosine 0.997 between different pairs at the tiny preset; the text encoder's own ``[CLS]``
    0.99996), because ``[CLS]`` is dominated by its own embedding and the attention is near
    uniform. A plain linear head then sees a constant, fits the 1 : 2 matched / unmatched prior
    (loss 0.637) and stays there; standardising removes the shared part, so the head reads what
    differs between pairs from the first step.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = BatchStandardiser(2 * width)
        self.classifier = nn.Linear(2 * width, 2)

    def forward(self, text_pooled: torch.Tensor, image_pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(torch.cat([text_pooled, image_pooled], dim=-1)))


class MaskedLanguageModelingHead(nn.Module):
    """BERT's MLM head: ``logits = E · LN(GELU(W x + b)) + b_V``, with E the word-embedding matrix.

    The output projection is the text encoder's word-embedding weight itself (tied, as BERT), so
    the head adds only the transform and an output bias.

    Args:
        width: D, the fusion width of the text stream it reads.
        word_embeddings: the text encoder's ``nn.Embedding`` (V, text_width).

    ``forward(text (..., D)) -> logits (..., V)``; pass only the chosen positions
    (``text[labels != -100]``) to skip the vocabulary projection everywhere else.
    """

    def __init__(self, width: int, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        vocab_size, embedding_width = word_embeddings.weight.shape
        self.dense = nn.Linear(width, embedding_width)
        self.norm = nn.LayerNorm(embedding_width)
        self.word_embeddings = word_embeddings
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(F.gelu(self.dense(text)))
        return F.linear(hidden, self.word_embeddings.weight, self.bias)


class MIMDecoder(nn.Module):
    """MAE's decoder: visible tokens plus mask tokens, positional embeddings, transformer, pixels.

    Args:
        input_width: width of the image-stream features it reads (the fusion width D).
        num_patches: N, patches per image (a square grid).
        patch_dim: pixels per patch, ``patch_size² · channels``.
        width / layers / heads: the decoder transformer (timm ViT ``Block`` s).

    ``forward(visible (B, 1 + K, input_width), restore (B, N)) -> (B, N, patch_dim)``:
    ``visible`` is ``[CLS]`` then the K kept patches in :attr:`model.masking.MaskedPatches.keep`
    order; ``restore`` puts ``[kept, masked]`` back in patch order. The fixed 2-D sine-cosine
    positional embeddings (MAE) tell the mask tokens where they are.
    """

    def __init__(self, input_width: int, num_patches: int, patch_dim: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        from timm.layers import build_sincos2d_pos_embed
        from timm.models.vision_transformer import Block

        side = int(round(num_patches**0.5))
        if side * side != num_patches:
            raise ValueError(f"MIM needs a square patch grid; got {num_patches} patches")
        self.embed = nn.Linear(input_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mask_token, std=0.02)
        positions = torch.cat([torch.zeros(1, width), build_sincos2d_pos_embed([side, side], width)])
        self.register_buffer("position_embedding", positions.unsqueeze(0), persistent=False)
        self.blocks = nn.Sequential(*(Block(width, heads, qkv_bias=True) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.predict = nn.Linear(width, patch_dim)

    def forward(self, visible: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(visible)
        batch, patches = restore.shape
        masked = self.mask_token.to(x.dtype).expand(batch, patches + 1 - x.shape[1], -1)
        tokens = torch.cat([x[:, 1:], masked], dim=1)
        tokens = tokens.gather(1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.position_embedding.to(x.dtype)
        return self.predict(self.norm(self.blocks(x)))[:, 1:]


class KnowledgeAlignmentHead(nn.Module):
    """ARL's AK scores (Eq. 10–14): ``p_i = σ(e_iᵀ W h)`` for every entity i of the vocabulary.

    One bilinear map W per modality, from its representation h to the entity space D_e; the entity
    vectors e_i are the shared :class:`model.arl_knowledge.EntityTable`'s. h is each modality's
    own uni-modal ``[CLS]`` feature, before fusion (as the reference ARL code): a pooled output of
    the fusion has already read the report, so its image side could name the report's entities
    without looking at the image.

    Args:
        image_width / text_width: widths of the image and text encoders' outputs.
        entity_dim: D_e.

    ``forward(image_cls (B, image_width), text_cls (B, text_width), entities (N, D_e)) ->
    (image_logits (B, N), text_logits (B, N))``; logits, σ is applied by the loss.
    """

    def __init__(self, image_width: int, text_width: int, entity_dim: int) -> None:
        super().__init__()
        self.image_map = nn.Linear(image_width, entity_dim, bias=False)
        self.text_map = nn.Linear(text_width, entity_dim, bias=False)

    def forward(
        self, image_cls: torch.Tensor, text_cls: torch.Tensor, entities: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_map(image_cls) @ entities.T, self.text_map(text_cls) @ entities.T
