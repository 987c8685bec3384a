"""Co-attention fusion (M3AE, ARL): two streams that attend to themselves and then to each other.

Each of the L_m :class:`CoAttentionLayer` s runs, with residual + LayerNorm after every sub-layer
(BERT's post-norm layout, as the reference M3AE / ARL / METER code)::

    text:  t ← LN(t + SelfAttn(t));  t ← LN(t + CrossAttn(t, v_in) [+ a]);  t ← LN(t + FFN(t))
    image: v ← LN(v + SelfAttn(v));  v ← LN(v + CrossAttn(v, t_in));        v ← LN(v + FFN(v))

where ``t_in`` / ``v_in`` are the streams as they entered the layer (both streams read the other's
layer input, so the two updates are symmetric and could run in parallel) and ``a`` is an optional
per-token addition to the text stream (ARL's knowledge path, :mod:`model.arl_knowledge`).

:class:`CoAttentionFusion` projects the uni-modal text and image features to the fusion width,
adds a modality embedding, runs the layers and returns every image-stream output (MIM reads the
output of a chosen layer) and the pooled ``[CLS]`` of both streams (ITM).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.coattention_config import FusionConfig


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``.

    ``forward(x (B, Q, width), kv (B, K, kv_width), kv_padding (B, K) bool, True = ignore | None)
    -> (B, Q, width)``.
    """

    def __init__(self, width: int, heads: int, kv_width: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        kv_width = kv_width or width
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, kv_padding: torch.Tensor | None = None) -> torch.Tensor:
        batch, queries, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, width) → (B, heads, N, width / heads)
            return t.reshape(batch, t.shape[1], self.heads, width // self.heads).transpose(1, 2)

        mask = None
        if kv_padding is not None:
            keep = ~kv_padding.bool()
            # A row with no key at all (a report without entities) would give NaN; let it attend to
            # every key instead. Its output sits at padded positions that nothing downstream reads.
            keep = keep | ~keep.any(dim=1, keepdim=True)
            mask = keep[:, None, None, :]
        attended = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(kv)), split(self.value(kv)), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attended.transpose(1, 2).reshape(batch, queries, width))


class AttentionSublayer(nn.Module):
    """``LN(x + Dropout(Attn(x, kv)) [+ addition])``: self-attention when ``kv`` is ``x``, else cross.

    ``forward(x (B, Q, width), kv (B, K, kv_width), kv_padding (B, K) | None, addition (B, Q, width)
    | None) -> (B, Q, width)``. ``addition`` joins the residual sum before the LayerNorm.
    """

    def __init__(self, width: int, heads: int, kv_width: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = Attention(width, heads, kv_width, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width)

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor,
        kv_padding: torch.Tensor | None = None,
        addition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = x + self.dropout(self.attention(x, kv, kv_padding))
        if addition is not None:
            residual = residual + addition
        return self.norm(residual)


class FeedForwardSublayer(nn.Module):
    """``LN(x + MLP(x))`` with a GELU MLP (timm's ``Mlp``). ``forward((B, N, width)) -> (B, N, width)``."""

    def __init__(self, width: int, intermediate: int, dropout: float = 0.0) -> None:
        super().__init__()
        from timm.layers import Mlp

        self.mlp = Mlp(width, intermediate, act_layer=nn.GELU, drop=dropout)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.mlp(x))


class CoAttentionLayer(nn.Module):
    """One co-attention layer (module docstring).

    ``forward(text (B, L, D), image (B, T, D), text_padding (B, L) | None, image_padding (B, T) |
    None, text_addition (B, L, D) | None) -> (text (B, L, D), image (B, T, D))``; padding masks are
    bool, True at positions to ignore as keys.
    """

    def __init__(self, width: int, heads: int, intermediate: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.text_self = AttentionSublayer(width, heads, dropout=dropout)
        self.text_cross = AttentionSublayer(width, heads, dropout=dropout)
        self.text_ffn = FeedForwardSublayer(width, intermediate, dropout)
        self.image_self = AttentionSublayer(width, heads, dropout=dropout)
        self.image_cross = AttentionSublayer(width, heads, dropout=dropout)
        self.image_ffn = FeedForwardSublayer(width, intermediate, dropout)

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        text_padding: torch.Tensor | None = None,
        image_padding: torch.Tensor | None = None,
        text_addition: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.text_self(text, text, text_padding)
        t = self.text_cross(t, image, image_padding, addition=text_addition)
        v = self.image_self(image, image, image_padding)
        v = self.image_cross(v, text, text_padding)
        return self.text_ffn(t), self.image_ffn(v)


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(W · x[:, 0] + b)``. ``forward((B, N, D)) -> (B, D)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


@dataclass
class EntityInputs:
    """The entity sequence of each report, for ARL's knowledge reasoning (RK).

    Attributes:
        feats: (B, E, D_e) entity embeddings (zeros at padding).
        padding: (B, E) bool, True at padded entity slots.
        position_map: (B, E, L) P, 1 where text token l belongs to entity e (0 at padded slots).
    """

    feats: torch.Tensor
    padding: torch.Tensor
    position_map: torch.Tensor


@dataclass
class FusionOutput:
    """What :class:`CoAttentionFusion` returns.

    Attributes:
        text: (B, L, D) final text stream (MLM reads it).
        image: (B, T, D) final image stream.
        image_layers: L_m + 1 tensors (B, T, D): the fusion input, then each layer's image output
            (MIM reads ``image_layers[mim_layer]``).
        text_pooled / image_pooled: (B, D) pooled ``[CLS]`` of each stream (ITM reads both).
        entities: (B, E, D_e) entity stream after the last knowledge block, or ``None`` without RK.
    """

    text: torch.Tensor
    image: torch.Tensor
    image_layers: list[torch.Tensor]
    text_pooled: torch.Tensor
    image_pooled: torch.Tensor
    entities: torch.Tensor | None = None


class CoAttentionFusion(nn.Module):
    """The fusion module: projections, modality embeddings, L_m co-attention layers and poolers.

    Args:
        config: widths, depth, heads, dropout.
        text_width / vision_width: widths of the uni-modal encoders' outputs.
        knowledge_blocks: one ARL knowledge-reasoning block per layer
            (:class:`model.arl_knowledge.KnowledgeReasoningBlock`), or ``None`` without RK.

    ``forward(text_feats (B, L, text_width), text_mask (B, L) 1 = token / 0 = padding,
    image_feats (B, T, vision_width), image_mask (B, T) | None, entities: EntityInputs | None)
    -> FusionOutput``. ``[CLS]`` is position 0 of both inputs. The image may be only the visible
    patches of a masked image (MIM); ``image_mask`` is needed only when images are padded.
    """

    def __init__(
        self,
        config: FusionConfig,
        text_width: int,
        vision_width: int,
        knowledge_blocks: Sequence[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        width = config.width
        self.text_proj = nn.Linear(text_width, width)
        self.image_proj = nn.Linear(vision_width, width)
        self.modality_embedding = nn.Embedding(2, width)  # 0: text, 1: image
        self.layers = nn.ModuleList(
            CoAttentionLayer(width, config.heads, config.intermediate, config.dropout) for _ in range(config.layers)
        )
        if knowledge_blocks is not None:
            if len(knowledge_blocks) != config.layers:
                raise ValueError(f"need one knowledge block per fusion layer ({config.layers}); "
                                 f"got {len(knowledge_blocks)}")
            self.knowledge_blocks = nn.ModuleList(knowledge_blocks)
        self.text_pooler = Pooler(width)
        self.image_pooler = Pooler(width)

    @property
    def uses_knowledge(self) -> bool:
        """Whether the layers carry ARL's knowledge-reasoning blocks."""
        return hasattr(self, "knowledge_blocks")

    def forward(
        self,
        text_feats: torch.Tensor,
        text_mask: torch.Tensor,
        image_feats: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        entities: EntityInputs | None = None,
    ) -> FusionOutput:
        if self.uses_knowledge and entities is None:
            raise ValueError("this fusion reasons over knowledge (rk): pass the reports' entities")
        if not self.uses_knowledge and entities is not None:
            raise ValueError("this fusion has no knowledge blocks (rk is off); entities cannot be used")
        text_padding = text_mask == 0
        image_padding = None if image_mask is None else image_mask == 0
        text = self.text_proj(text_feats) + self.modality_embedding.weight[0]
        image = self.image_proj(image_feats) + self.modality_embedding.weight[1]
        z = entities.feats if entities is not None else None
        image_layers = [image]
        for index, layer in enumerate(self.layers):
            addition = None
            if entities is not None:
                z, addition = self.knowledge_blocks[index](
                    z, entities.padding, image, image_padding, entities.position_map
                )
            text, image = layer(text, image, text_padding, image_padding, text_addition=addition)
            image_layers.append(image)
        return FusionOutput(
            text=text, image=image, image_layers=image_layers,
            text_pooled=self.text_pooler(text), image_pooled=self.image_pooler(image), entities=z,
        )
