"""MOTOR's knowledge modules: GK encoder, SK encoder, the knowledge-image encoders and the MLC scorer.

* :class:`GKEncoder` E_gk (Eq. 1–2) turns the 28-node general-knowledge graph into node features
  f_gk, attending only along the graph's edges.
* :class:`GKImageEncoder` E_{gk→v} (Eq. 5) lets image tokens attend to f_gk → f_v^gk.
* :class:`SKEncoder` E_sk (Eq. 3–4) encodes the SK sentences (RadGraph triplets) of the k
  retrieved reports in one batched pass → f_sk (the k encodings concatenated, or their
  similarity-weighted sum as in the reference code: ``sk_fusion``).
* :class:`SKImageEncoder` E_{sk→v} (Eq. 6) lets image tokens attend to f_sk → f_v^sk.
* :func:`retrieve_knowledge` picks each image's top-k reports from the report queue Q.
* :class:`LabelScorer` (Eq. 7–9) scores image features against label-prompt features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kg.gk import GeneralKnowledgeGraph
from model.config import SK_FUSIONS
from model.queues import FeatureQueue

NODE_TYPES = 3  # root, organ, finding (kg.gk node types 0/1/2)


class GKEncoder(nn.Module):
    """E_gk: graph-masked transformer over the GK nodes.

    Node embedding (Eq. 1): ``e_n = e_w + e_l`` with e_w a learned per-node table initialised by
    :meth:`init_word_embeddings` to the mean word-piece embedding of the node's words (the table
    keeps the GK path independent of the report encoder once training starts) and e_l a learned
    structure embedding of the node type (root / organ / finding). The layers attend with the
    graph's visible mask (Eq. 2): node i sees node j only if ``visible_mask[i, j]``.

    ``forward() -> (N, width)`` node features f_gk; they do not depend on the batch, so they are
    computed once per step and shared by every image. ``intermediate`` is the feed-forward width
    (``None``: 4 · width).
    """

    def __init__(
        self, graph: GeneralKnowledgeGraph, width: int, layers: int, heads: int, dropout: float,
        intermediate: int | None = None,
    ) -> None:
        super().__init__()
        self.node_ids = list(graph.node_ids)
        self.word_embedding = nn.Parameter(torch.zeros(len(graph), width))
        self.type_embedding = nn.Embedding(NODE_TYPES, width)
        self.register_buffer("node_types", graph.node_type_ids(), persistent=False)
        self.register_buffer("visible_mask", graph.visible_mask(), persistent=False)
        layer = nn.TransformerEncoderLayer(
            width, heads, intermediate or 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    @torch.no_grad()
    def init_word_embeddings(self, token_embedding: nn.Embedding, node_token_ids: list[list[int]]) -> None:
        """Set e_w of node i to the mean of ``token_embedding`` over ``node_token_ids[i]``."""
        for row, ids in enumerate(node_token_ids):
            index = torch.tensor(ids, dtype=torch.long, device=token_embedding.weight.device)
            self.word_embedding[row] = token_embedding(index).mean(0).to(self.word_embedding.dtype)

    def forward(self) -> torch.Tensor:
        """f_gk: (N, width) node features."""
        nodes = self.word_embedding + self.type_embedding(self.node_types)  # Eq. 1
        # nn.TransformerEncoder masks where the mask is True: the complement of "visible" (Eq. 2).
        return self.layers(nodes.unsqueeze(0), mask=~self.visible_mask).squeeze(0)


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN(x), LN(kv))`` then ``x + MLP(LN(x))``; the MLP is
    ``intermediate`` wide (``None``: 4 · width).

    ``forward(x (B, Q, width), kv (B, K, kv_width), kv_padding (B, K) bool True=ignore | None)``
    returns ``(x (B, Q, width), attention (B, heads, Q, K) or None)``.
    """

    def __init__(self, width: int, kv_width: int, heads: int, dropout: float, intermediate: int | None = None) -> None:
        super().__init__()
        from timm.layers import Mlp

        self.norm_query = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(kv_width)
        self.attention = nn.MultiheadAttention(
            width, heads, dropout=dropout, kdim=kv_width, vdim=kv_width, batch_first=True
        )
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = Mlp(width, intermediate or 4 * width, act_layer=nn.GELU, drop=dropout)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor, kv_padding: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        kv = self.norm_kv(kv)
        attended, weights = self.attention(
            self.norm_query(x), kv, kv, key_padding_mask=kv_padding, need_weights=need_weights,
            average_attn_weights=False,
        )
        x = x + attended
        return x + self.mlp(self.norm_mlp(x)), weights


class KnowledgeImageEncoder(nn.Module):
    """Image tokens (queries) attend to knowledge tokens (keys/values) through cross-attention blocks.

    ``layers`` pre-norm blocks (cross-attention + feed-forward, each ``intermediate`` wide) and
    (``final_norm``) a final LayerNorm, the shape of the reference code's ``Decoder`` (2 blocks there): pre-norm
    residual streams grow with depth, and the norm hands the next stage (ITC projection, E_{v→t}
    cross-attention) tokens of the scale the ViT's own final norm gives.

    ``forward(image_tokens (B, T, vision_width), knowledge (B, K, kv_width), padding (B, K) | None,
    return_attention=False)`` returns the enhanced tokens (B, T, vision_width), and with
    ``return_attention`` also a list with each block's attention (B, heads, T, K).
    """

    def __init__(
        self, width: int, kv_width: int, layers: int, heads: int, dropout: float, intermediate: int | None = None,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(width, kv_width, heads, dropout, intermediate) for _ in range(layers)
        )
        # Models saved before the final norm existed load without it (``cross_final_norm: false``).
        self.norm = nn.LayerNorm(width) if final_norm else nn.Identity()

    def forward(
        self,
        image_tokens: torch.Tensor,
        knowledge: torch.Tensor,
        padding: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x, maps = image_tokens, []
        for block in self.blocks:
            x, weights = block(x, knowledge, padding, need_weights=return_attention)
            maps.append(weights)
        x = self.norm(x)
        return (x, maps) if return_attention else x


class GKImageEncoder(KnowledgeImageEncoder):
    """E_{gk→v} (Eq. 5): f_v^gk = CrossAttn(query = f_v, key = value = f_gk)."""


class SKImageEncoder(KnowledgeImageEncoder):
    """E_{sk→v} (Eq. 6): f_v^sk = CrossAttn(query = image tokens, key = value = f_sk).

    A learned "no knowledge" token is always appended to the keys: an image whose retrieval
    found fewer than k reports (an empty queue at the start of training or at inference) still
    has something to attend to, so the output is defined and the computation graph does not
    change with the queue's fill level.
    """

    def __init__(
        self, width: int, kv_width: int, layers: int, heads: int, dropout: float, intermediate: int | None = None,
        final_norm: bool = True,
    ) -> None:
        super().__init__(width, kv_width, layers, heads, dropout, intermediate, final_norm)
        self.null_knowledge = nn.Parameter(torch.zeros(1, 1, kv_width))
        nn.init.normal_(self.null_knowledge, std=0.02)

    def forward(
        self,
        image_tokens: torch.Tensor,
        knowledge: torch.Tensor,
        padding: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        batch = image_tokens.shape[0]
        knowledge = torch.cat([knowledge, self.null_knowledge.expand(batch, -1, -1).to(knowledge.dtype)], dim=1)
        if padding is not None:
            padding = torch.cat([padding, padding.new_zeros(batch, 1)], dim=1)
        return super().forward(image_tokens, knowledge, padding, return_attention)


class SKEncoder(nn.Module):
    """E_sk: a BERT stack over the SK sentences of the retrieved reports.

    ``forward(ids (B, k, L), mask (B, k, L), slots (B, k) | None, scores (B, k) | None) ->
    (f_sk, padding)``. The sentences go through the encoder as one batch; given the report-queue
    ``slots``, a report retrieved by several images of the batch is encoded once (popular reports
    are: similar images retrieve the same neighbours) and its encoding shared. ``fusion`` then
    decides what E_{sk→v} attends to:

    * ``concat``: the k encodings laid end to end, f_sk (B, k·L, width), with ``padding`` (B, k·L)
      True at padding tokens and at the slots of reports that were not retrieved;
    * ``weighted_sum`` (the reference code's ``get_image_knowledge``): the k encodings summed
      position by position with weights softmax(retrieval ``scores``) over the retrieved reports,
      f_sk (B, L, width); a position is padding only when it is padding in every retrieved
      sentence. Unlike the reference, padding tokens add nothing to the sum (the reference also
      sums the encodings of its pad tokens), and an image without any retrieved report gets
      zeros, all padding.
    """

    def __init__(self, text_encoder: nn.Module, fusion: str = "concat") -> None:
        super().__init__()
        if fusion not in SK_FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(SK_FUSIONS)}; got {fusion!r}")
        self.encoder = text_encoder
        self.fusion = fusion

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        slots: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, k, length = ids.shape
        flat_ids, flat_mask = ids.reshape(batch * k, length), mask.reshape(batch * k, length)
        if slots is None:
            hidden = self.encoder(input_ids=flat_ids, attention_mask=flat_mask.long()).last_hidden_state
        else:
            # Every empty slot (-1) becomes one fully masked row; the padding mask hides it downstream.
            unique, inverse = torch.unique(slots.reshape(-1), return_inverse=True)
            positions = torch.arange(batch * k, device=ids.device)
            first = positions.new_full((unique.numel(),), batch * k).scatter_reduce_(0, inverse, positions, reduce="amin")
            hidden = self.encoder(input_ids=flat_ids[first], attention_mask=flat_mask[first].long()).last_hidden_state
            hidden = hidden[inverse]
        if self.fusion == "concat":
            return hidden.reshape(batch, k * length, -1), ~flat_mask.reshape(batch, k * length).bool()
        return _weighted_sum(hidden.reshape(batch, k, length, -1), mask.bool(), scores)


def _weighted_sum(
    hidden: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k, L, W) encodings → (B, L, W) sum weighted by softmax(scores) over retrieved reports."""
    if scores is None:
        raise ValueError("sk_fusion 'weighted_sum' needs the retrieval scores of the k reports")
    retrieved = mask.any(-1)  # (B, k): a slot without a single token was not retrieved
    logits = scores.to(hidden.dtype).masked_fill(~retrieved, float("-inf"))
    # An image without any retrieved report has all -inf logits: its weights become 0, not NaN.
    weights = torch.nan_to_num(logits.softmax(-1), nan=0.0)
    fused = (hidden * (mask.unsqueeze(-1) * weights[..., None, None]).to(hidden.dtype)).sum(1)
    return fused, ~mask.any(1)


@dataclass
class RetrievedKnowledge:
    """SK sentences retrieved for a batch.

    Attributes:
        ids: (B, k, L) token ids. mask: (B, k, L) bool, False at padding and at empty slots.
        slots: (B, k) report-queue slots, -1 where fewer than k reports were available.
        scores: (B, k) float32 inner products of the query with each retrieved report (0 at
            empty slots), the weights of ``sk_fusion: weighted_sum``.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    slots: torch.Tensor
    scores: torch.Tensor | None = None


@torch.no_grad()
def retrieve_knowledge(
    queue: FeatureQueue, queries: torch.Tensor, k: int, exclude_index: torch.Tensor | None = None
) -> RetrievedKnowledge:
    """Top-k SK sentences of the report queue for each query, by exact inner product.

    The queue holds fields ``feature`` (report features), ``sk_ids`` / ``sk_mask`` (the SK
    sentence), ``has_sk`` and ``index`` (dataset index). Only filled slots with an SK sentence are
    candidates; ``kg.retrieval.knn`` (FAISS exact inner product) ranks them.

    Args:
        queue: the report queue Q.
        queries: (B, D) L2-normalised image features.
        k: reports per query.
        exclude_index: (B,) dataset indices whose own entries must not be returned (training), or
            ``None``. The search asks for k plus the largest number of own entries of any query,
            then drops own entries, so every query still gets its k best other reports.

    Returns:
        :class:`RetrievedKnowledge`, L trimmed to the longest retrieved sentence (at least 1).
    """
    from kg.retrieval import knn

    batch, device = queries.shape[0], queries.device
    has_sk = queue.entries("has_sk")
    # When every filled slot has an SK sentence (the usual case) the search reads the queue in
    # place: gathering the candidates would copy the whole (n_Q, D) feature table every step.
    everyone = bool(has_sk.all())
    candidates = torch.arange(has_sk.shape[0], device=has_sk.device) if everyone else has_sk.nonzero().squeeze(1)
    chosen = torch.full((batch, k), -1, dtype=torch.long, device=device)
    chosen_scores = torch.zeros((batch, k), dtype=torch.float32, device=device)
    if candidates.numel() > 0:
        own = None
        extra = 0
        if exclude_index is not None:
            indices = queue.entries("index") if everyone else queue.entries("index")[candidates]
            own = indices.unsqueeze(0) == exclude_index.unsqueeze(1)
            extra = int(own.sum(1).max())
        depth = min(k + extra, candidates.numel())
        features = queue.entries("feature") if everyone else queue.entries("feature")[candidates]
        found, neighbours = knn(queries.detach().float(), features, depth)
        neighbours, found = neighbours.to(device), found.to(device)
        usable = torch.ones_like(neighbours, dtype=torch.bool) if own is None else ~own.gather(1, neighbours)
        # A stable sort moves excluded hits behind the usable ones and keeps the rank order.
        order = torch.sort((~usable).to(torch.int8), dim=1, stable=True).indices[:, :k]
        picked = candidates[neighbours.gather(1, order)]
        kept = usable.gather(1, order)
        picked[~kept] = -1
        chosen[:, : picked.shape[1]] = picked
        chosen_scores[:, : picked.shape[1]] = found.gather(1, order).float().masked_fill(~kept, 0.0)
    present = chosen >= 0
    slots = chosen.clamp(min=0)
    mask = queue.sk_mask[slots] & present.unsqueeze(-1)
    length = max(int(mask.sum(-1).max()), 1)
    return RetrievedKnowledge(
        ids=queue.sk_ids[slots][..., :length].long(), mask=mask[..., :length], slots=chosen, scores=chosen_scores
    )


class LabelScorer(nn.Module):
    """Text-based multi-label classification scores (Eq. 7–9).

    ``forward(image_feats (B, D), label_feats (C, D)) -> logits (B, C)`` with
    ``logit = s · ⟨f_v^gk, f_C⟩ + b`` on L2-normalised features in the ITC space. The paper's
    ``σ(f_v^gk · f_C)`` on unit vectors can only reach probabilities in [0.27, 0.73]; the learned
    scale s (initialised to 10) and bias b (to 0) let the classifier become confident.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, image_feats: torch.Tensor, label_feats: torch.Tensor) -> torch.Tensor:
        return self.scale * image_feats @ label_feats.T + self.bias
