"""ARL's knowledge inputs and its reasoning block (Sec. 3.3, RK, Eq. 15–17).

* :class:`EntityTable` holds one D_e-dimensional vector per entity of the vocabulary (UMLS
  concepts after ``kg build --source umls``, RadGraph entities otherwise). Vectors come by
  entity name from a ``kg embed`` output directory (TransE or GAT); an entity the directory does
  not know gets a learned vector of its own, randomly initialised. Both kinds are trained.
* :func:`entity_token_spans` turns character spans of entity mentions into token spans with the
  tokenizer's offsets, :func:`entity_position_map` turns token spans into the token↔entity map
  P, and :func:`entity_targets` turns a report's entity ids into AK's multi-hot targets.
* :class:`KnowledgeReasoningBlock` runs inside each fusion layer: the report's entities attend to
  each other (Eq. 15), then to the image stream (Eq. 16), and their outputs are added to the text
  tokens they were mentioned by, through P (Eq. 17).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from kg.errors import InputError
from model.fusion import AttentionSublayer, EntityInputs, FeedForwardSublayer

PADDING_ENTITY = -1
"""Entity id of padded slots in ``(B, E)`` entity-id tensors."""


class EntityTable(nn.Module):
    """The entity vocabulary and its embeddings.

    Args:
        names: entity labels; row i is ``names[i]``. They define the rows but are not part of the
            ``state_dict``: a saved model must keep them beside its weights.
        dim: D_e.

    Attributes:
        weight: (N, D_e) trainable embeddings.
        pretrained: (N,) bool buffer, True for rows initialised from ``kg embed`` vectors (saved
            with the model, so a loaded model knows which rows were learned from scratch).
    """

    def __init__(self, names: Sequence[str], dim: int) -> None:
        super().__init__()
        if not names:
            raise InputError("the entity vocabulary is empty", field="entities")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InputError(f"entity {name!r} is listed twice", field="entities")
            seen.add(name)
        self.names = list(names)
        self._rows = {name: i for i, name in enumerate(self.names)}
        self.weight = nn.Parameter(torch.empty(len(self.names), dim))
        nn.init.normal_(self.weight, std=0.02)
        self.register_buffer("pretrained", torch.zeros(len(self.names), dtype=torch.bool))

    @property
    def dim(self) -> int:
        """D_e."""
        return self.weight.shape[1]

    def __len__(self) -> int:
        return len(self.names)

    @torch.no_grad()
    def load_embeddings(self, path: str | os.PathLike, kind: str = "transe") -> int:
        """Copy the vectors of a ``kg embed`` directory into the rows of the entities it names.

        Names match exactly, else case-insensitively (as :meth:`kg.embeddings.EntityEmbeddings.index`).
        Rows of entities the directory does not name stay learned-from-scratch vectors, redrawn
        from a normal distribution with the standard deviation of the loaded values.

        Returns:
            How many rows were initialised.

        Raises:
            InputError: the directory is not a ``kg embed`` output, or its dimension is not D_e
                (the message names both and the fix).
        """
        from kg.embeddings import load

        embeddings = load(path)
        matrix = embeddings.matrix(kind)
        if matrix.shape[1] != self.dim:
            raise InputError(
                f"entity embeddings have dimension {matrix.shape[1]}, the model's entity_dim is {self.dim}: "
                f"set knowledge.entity_dim: {matrix.shape[1]} or rerun `kg embed --dim {self.dim}`",
                file=path, field="entity_dim",
            )
        exact = {label: i for i, label in enumerate(embeddings.entities)}
        folded: dict[str, int] = {}
        for label, i in exact.items():
            folded.setdefault(label.casefold(), i)
        rows, sources = [], []
        for row, name in enumerate(self.names):
            source = exact.get(name, folded.get(name.casefold()))
            if source is not None:
                rows.append(row)
                sources.append(source)
        if rows:
            index = torch.tensor(rows, dtype=torch.long, device=self.weight.device)
            values = torch.as_tensor(matrix[sources], dtype=self.weight.dtype, device=self.weight.device)
            self.weight[index] = values
            self.pretrained[index] = True
            # The other rows are redrawn at the loaded vectors' scale (TransE's are near unit
            # norm): at the default 0.02 they would score ~0 in AK and vanish from RK at first.
            others = (~self.pretrained).nonzero().squeeze(1)
            if others.numel() and values.numel() > 1:
                self.weight[others] = torch.randn(others.numel(), self.dim, device=self.weight.device,
                                                  dtype=self.weight.dtype) * values.std()
        return len(rows)

    def ids(self, names: Sequence[str]) -> list[int]:
        """Rows of ``names``; a name outside the vocabulary maps to :data:`PADDING_ENTITY` (dropped)."""
        return [self._rows.get(name, PADDING_ENTITY) for name in names]

    def forward(self, entity_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up ``(B, E)`` entity ids (-1 = padding) → ``(feats (B, E, D_e), padding (B, E))``.

        Padded slots get zero vectors.
        """
        padding = entity_ids == PADDING_ENTITY
        feats = self.weight[entity_ids.clamp(min=0)] * (~padding).unsqueeze(-1).to(self.weight.dtype)
        return feats, padding

    def inputs(self, entity_ids: torch.Tensor, position_map: torch.Tensor) -> EntityInputs:
        """The fusion's :class:`model.fusion.EntityInputs` for ``(B, E)`` ids and ``(B, E, L)`` P."""
        feats, padding = self(entity_ids)
        return EntityInputs(feats=feats, padding=padding, position_map=position_map.to(feats.device, feats.dtype))


def entity_token_spans(
    offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of character spans, from a fast tokenizer's ``offset_mapping``.

    Args:
        offsets: per token ``(char_start, char_end)``; special tokens have ``(0, 0)``.
        char_spans: ``[start, end)`` character spans of the entity mentions in the text.

    Returns:
        One token span per character span: the tokens that overlap it. A mention whose tokens
        were cut off by truncation gets ``(0, 0)`` (empty), so the result stays aligned with the
        entities.
    """
    spans = []
    for start, end in char_spans:
        tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        spans.append((tokens[0], tokens[-1] + 1) if tokens else (0, 0))
    return spans


def entity_position_map(token_spans: Sequence[Sequence[tuple[int, int]]], length: int) -> torch.Tensor:
    """P: ``(B, E, L)`` float with ``P[b, e, l] = 1`` when token l belongs to entity e of report b.

    Args:
        token_spans: per report, one ``[start, end)`` token span per entity mention (E is the
            largest count; shorter reports get zero rows).
        length: L, the padded token length.
    """
    entities = max((len(s) for s in token_spans), default=0)
    position_map = torch.zeros(len(token_spans), entities, length)
    for b, spans in enumerate(token_spans):
        for e, (start, end) in enumerate(spans):
            if not 0 <= start <= end <= length:
                raise InputError(f"token span ({start}, {end}) lies outside 0..{length}", record=b, field="entities")
            position_map[b, e, start:end] = 1.0
    return position_map


def entity_targets(entity_ids: torch.Tensor, num_entities: int) -> torch.Tensor:
    """AK targets y (Eq. 10–14): ``(B, N)`` float, 1 for every entity of the report, 0 elsewhere.

    ``entity_ids`` is ``(B, E)`` with :data:`PADDING_ENTITY` at padded slots; repeated mentions
    count once.
    """
    targets = torch.zeros(entity_ids.shape[0], num_entities + 1, device=entity_ids.device)
    # Padding (-1) is sent to an extra last column that is dropped.
    index = torch.where(entity_ids == PADDING_ENTITY, num_entities, entity_ids)
    targets.scatter_(1, index, 1.0)
    return targets[:, :num_entities]


class KnowledgeReasoningBlock(nn.Module):
    """RK in one fusion layer (Eq. 15–17), every sub-layer with residual + LayerNorm.

    Eq. 15, entity self-attention:  z ← LN(z + SelfAttn(z))
    Eq. 16, entity→image attention: z ← LN(z + CrossAttn(z, v_in))
    Eq. 17, entities into the text: a = Pᵀ · W z, added to the text stream inside the fusion
            layer's text cross-attention sub-layer (``LN(t + CrossAttn(t, v) + a)``), so a text
            token that mentions no entity (a zero column of P) is computed exactly as without RK.
    Then the entity feed-forward: z ← LN(z + FFN(z)), the entity input of the next layer.

    ``forward(entities (B, E, D_e), entity_padding (B, E), image (B, T, D), image_padding (B, T) |
    None, position_map (B, E, L)) -> (entities (B, E, D_e), text_addition (B, L, D))``.
    """

    def __init__(self, width: int, entity_dim: int, heads: int, intermediate: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.entity_self = AttentionSublayer(entity_dim, heads, dropout=dropout)
        self.entity_cross = AttentionSublayer(entity_dim, heads, kv_width=width, dropout=dropout)
        self.entity_to_text = nn.Linear(entity_dim, width)
        self.entity_ffn = FeedForwardSublayer(entity_dim, intermediate, dropout)

    def forward(
        self,
        entities: torch.Tensor,
        entity_padding: torch.Tensor,
        image: torch.Tensor,
        image_padding: torch.Tensor | None,
        position_map: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.entity_self(entities, entities, entity_padding)  # Eq. 15
        z = self.entity_cross(z, image, image_padding)  # Eq. 16
        live = (~entity_padding).unsqueeze(-1).to(z.dtype)
        # Eq. 17: padded slots are zeroed too, so a P with stray ones there adds nothing.
        text_addition = position_map.transpose(1, 2).to(z.dtype) @ (self.entity_to_text(z) * live)
        return self.entity_ffn(z), text_addition


def build_knowledge_blocks(
    layers: int, width: int, entity_dim: int, heads: int, intermediate: int, dropout: float = 0.0
) -> list[KnowledgeReasoningBlock]:
    """One :class:`KnowledgeReasoningBlock` per fusion layer."""
    return [KnowledgeReasoningBlock(width, entity_dim, heads, intermediate, dropout) for _ in range(layers)]
