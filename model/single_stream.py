"""MedViLL's single-stream joint encoder: one BERT over ``[CLS] v_1 … v_K [SEP_V] w_1 … w_N [SEP_L]``.

Top to bottom, as :meth:`SingleStreamEncoder.forward` runs it:

1. A timm CNN gives the last feature map (B, C, h, w) of the image; K of its h·w positions are
   kept (:class:`VisualFeatureSampler`: random while training, evenly spaced in eval), each a
   C-dimensional visual feature v_k with its flat map position.
2. Embeddings (:class:`JointEmbeddings`, MedViLL Eq. 1–4): a visual token is ``LN(W_v v_k +
   p^v_{pos(k)} + s_v)``, a word ``LN(e_w + p^t_n + s_t)``, where p^v is a table over map
   positions (plus one row each for [CLS] and [SEP_V]), p^t a table over text positions
   (restarting at 0 in the text segment) and s_v / s_t the two semantic (modality) embeddings.
   [CLS] and [SEP_V] are word embeddings placed in the visual segment (semantic s_v).
3. ``text_layers`` post-LN BERT layers; each applies the boolean mask of
   :func:`model.attention_masks.attention_mask` through ``F.scaled_dot_product_attention``.
4. The joint [CLS] (position 0) summarises the pair; with ``non_crossing`` the text [CLS_T]
   (first text-segment position) summarises the report alone.

Incremental decoding (:meth:`SingleStreamEncoder.start_decoding` / :meth:`decode_step`) runs the
same layers with cached keys and values: under the S2S mask the visual segment never sees the
text and a text token never sees later text, so the states of everything already decoded do not
change when a token is appended.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kg.errors import InputError, MissingResourceError
from model.attention_masks import attention_mask
from model.medvill_config import MedVillConfig

VISUAL_SEGMENT, TEXT_SEGMENT = 0, 1


class VisualFeatureSampler(nn.Module):
    """A timm CNN's last feature map, sampled at K positions.

    ``forward(images (B, C_in, H, W)) -> (features (B, K, C), positions (B, K))``: the features at
    K distinct positions of the h × w map and those positions as flat indices ``row·w + col`` in
    increasing order. While training each image draws its own K positions uniformly (MedViLL's
    random pixel sampling); in eval the K positions are evenly spaced over the map, so inference
    is deterministic. ``K = h·w`` keeps every position.

    Args:
        backbone: a timm CNN name (random initialisation; nothing is downloaded).
        image_size / in_chans: the input the CNN receives (``image_size`` a multiple of the CNN's
            output stride). num_tokens: K.
    """

    def __init__(self, backbone: str, image_size: int, in_chans: int, num_tokens: int) -> None:
        super().__init__()
        import timm

        try:
            self.cnn = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
        except RuntimeError as err:  # timm raises RuntimeError for an unknown model name
            raise InputError(f"not a timm model: {err}", field="backbone") from None
        info = getattr(self.cnn, "feature_info", None)
        if not info:
            raise InputError(f"{backbone!r} does not report its feature maps; choose a timm CNN", field="backbone")
        stride = info[-1]["reduction"]
        if image_size % stride:
            raise InputError(f"image_size {image_size} is not a multiple of {backbone}'s output stride {stride}",
                             field="image_size")
        self.side = image_size // stride
        self.grid = self.side * self.side
        if num_tokens > self.grid:
            raise InputError(f"{num_tokens} visual tokens exceed the {self.side}×{self.side} = {self.grid} positions "
                             f"of {backbone}'s last feature map at {image_size} px", field="num_visual_tokens")
        self.num_tokens = num_tokens
        self.width = int(self.cnn.num_features)
        self.image_size = image_size
        self.in_chans = in_chans

    def load_weights(self, path: str) -> None:
        """Initialise the CNN from a local checkpoint in timm's naming (never unpickled).

        ``.safetensors`` files are read with safetensors, anything else with
        ``torch.load(weights_only=True)``; classifier tensors (``fc.`` / ``head.`` /
        ``classifier.``) are dropped, and a 3-channel stem is adapted to ``in_chans``.

        Raises:
            MissingResourceError: ``path`` does not exist. InputError: the tensors do not fit.
        """
        from timm.models._manipulate import adapt_input_conv

        from model.encoders import _read_state_dict

        if not Path(path).is_file():
            raise MissingResourceError(f"CNN weights not found: {path} (set backbone_weights to a local file)")
        state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(("fc.", "head.", "classifier."))}
        own = self.cnn.state_dict()
        for name, value in list(state.items()):
            target = own.get(name)
            if target is not None and value.dim() == 4 and target.dim() == 4 and value.shape[1] != target.shape[1]:
                state[name] = adapt_input_conv(target.shape[1], value)
        try:
            result = self.cnn.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise InputError(f"CNN weights do not fit the backbone: {err}", file=path) from None
        problems = list(result.missing_keys) + list(result.unexpected_keys)
        if problems:
            raise InputError(f"CNN weights do not fit the backbone; mismatched: {', '.join(problems[:8])}", file=path)

    def sample_positions(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, K) sorted flat positions: random per image while training, evenly spaced in eval."""
        if self.training and self.num_tokens < self.grid:
            scores = torch.rand(batch, self.grid, generator=generator, device=generator.device if generator else device)
            return scores.argsort(dim=1)[:, : self.num_tokens].sort(dim=1).values.to(device)
        # K ≤ h·w points spaced ≥ 1 apart round to distinct integers.
        even = torch.linspace(0, self.grid - 1, self.num_tokens, device=device).round().long()
        return even.unsqueeze(0).expand(batch, -1)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.in_chans, self.image_size, self.image_size):
            raise InputError(f"expected images of shape (B, {self.in_chans}, {self.image_size}, {self.image_size}); "
                             f"got {tuple(images.shape)}", field="image")
        feature_map = self.cnn.forward_features(images)  # (B, C, h, w)
        flat = feature_map.flatten(2).transpose(1, 2)  # (B, h·w, C)
        positions = self.sample_positions(images.shape[0], images.device, generator)
        features = flat.gather(1, positions.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
        return features, positions


class JointEmbeddings(nn.Module):
    """Token, position and semantic embeddings of both segments (MedViLL Eq. 1–4).

    Args:
        vocab_size / width: word table. visual_width: C of the CNN features.
        grid: positions of the CNN feature map. max_text_positions: rows of the text position table.
        dropout: after the layer norm.
    """

    def __init__(self, vocab_size: int, width: int, visual_width: int, grid: int, max_text_positions: int,
                 dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, width)
        self.visual_projection = nn.Linear(visual_width, width)
        # Row 0: [CLS]; rows 1..grid: feature-map positions; row grid + 1: [SEP_V].
        self.visual_positions = nn.Embedding(grid + 2, width)
        self.text_positions = nn.Embedding(max_text_positions, width)
        self.semantic_embeddings = nn.Embedding(2, width)  # s_v, s_t
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.grid = grid
        for table in (self.word_embeddings, self.visual_positions, self.text_positions, self.semantic_embeddings):
            nn.init.normal_(table.weight, std=0.02)

    def visual(self, features: torch.Tensor, positions: torch.Tensor, cls_id: int, sep_id: int) -> torch.Tensor:
        """Visual segment ``[CLS] v_1 … v_K [SEP_V]``: features (B, K, C), positions (B, K) → (B, K + 2, width)."""
        batch = features.shape[0]
        device = features.device
        cls = self.word_embeddings(torch.full((batch, 1), cls_id, device=device))
        sep = self.word_embeddings(torch.full((batch, 1), sep_id, device=device))
        tokens = torch.cat([cls, self.visual_projection(features), sep], dim=1)  # W_v v_k
        index = torch.cat([
            positions.new_zeros(batch, 1), positions + 1, positions.new_full((batch, 1), self.grid + 1)
        ], dim=1)
        semantic = self.semantic_embeddings.weight[VISUAL_SEGMENT]
        return self.dropout(self.norm(tokens + self.visual_positions(index) + semantic))

    def text(self, ids: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        """Text tokens (B, T) at text positions ``first_position …`` → (B, T, width)."""
        if first_position + ids.shape[1] > self.text_positions.num_embeddings:
            raise InputError(f"text segment of {first_position + ids.shape[1]} tokens exceeds the "
                             f"{self.text_positions.num_embeddings} text positions", field="input_ids")
        positions = torch.arange(first_position, first_position + ids.shape[1], device=ids.device)
        semantic = self.semantic_embeddings.weight[TEXT_SEGMENT]
        return self.dropout(self.norm(self.word_embeddings(ids) + self.text_positions(positions) + semantic))


class JointLayer(nn.Module):
    """One post-LN BERT layer whose self-attention takes a boolean mask and optional cached keys/values.

    ``forward(x (B, n, D), mask (B, n, m) bool, past=None) -> (y (B, n, D), (keys, values))``,
    where m counts the cached positions plus the n new ones and keys / values are
    (B, heads, m, D / heads), ready to be passed back as ``past``.
    """

    def __init__(self, width: int, heads: int, intermediate: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attention_output = nn.Linear(width, width)
        self.attention_norm = nn.LayerNorm(width, eps=1e-12)
        self.intermediate = nn.Linear(width, intermediate)
        self.output = nn.Linear(intermediate, width)
        self.output_norm = nn.LayerNorm(width, eps=1e-12)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        query, key, value = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask.unsqueeze(1), dropout_p=dropout)
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = self.attention_norm(x + F.dropout(self.attention_output(attended), dropout, self.training))
        hidden = self.output(F.gelu(self.intermediate(x)))
        return self.output_norm(x + F.dropout(hidden, dropout, self.training)), (key, value)


@dataclass
class SingleStreamOutput:
    """Hidden states of the joint sequence.

    Attributes:
        hidden: (B, V + T, width), visual segment first. visual_len: V = K + 2. scheme: the mask used.
    """

    hidden: torch.Tensor
    visual_len: int
    scheme: str

    @property
    def joint_cls(self) -> torch.Tensor:
        """(B, width): the joint [CLS] (position 0)."""
        return self.hidden[:, 0]

    @property
    def text_cls(self) -> torch.Tensor | None:
        """(B, width): [CLS_T], the first text-segment token, under ``non_crossing``; else ``None``."""
        return self.hidden[:, self.visual_len] if self.scheme == "non_crossing" else None

    @property
    def text_hidden(self) -> torch.Tensor:
        """(B, T, width): the text segment, aligned with the text ids given to the encoder."""
        return self.hidden[:, self.visual_len:]


@dataclass
class DecodingCache:
    """Keys and values of every layer for the positions decoded so far (visual segment first).

    Attributes:
        layers: per layer, ``(keys, values)`` of shape (B, heads, V + text_len, width / heads).
        text_len: text tokens cached (the next token sits at text position ``text_len``).
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    text_len: int = 0

    def select(self, rows: torch.Tensor) -> DecodingCache:
        """The cache of batch rows ``rows`` (B',) (e.g. the beams that survive a step)."""
        return DecodingCache([(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.layers], self.text_len)


class SingleStreamEncoder(nn.Module):
    """MedViLL's joint encoder (module docstring).

    Args:
        config: sizes, backbone and K. vocab_size: tokenizer length.
        cls_id / sep_id: ids of [CLS] (the joint [CLS], and [CLS_T] in the text) and [SEP]
            ([SEP_V] and [SEP_L]).
    """

    def __init__(self, config: MedVillConfig, vocab_size: int, cls_id: int, sep_id: int) -> None:
        super().__init__()
        self.config = config
        self.cls_id, self.sep_id = cls_id, sep_id
        self.visual_sampler = VisualFeatureSampler(
            config.backbone, config.image_size, config.in_chans, config.num_visual_tokens
        )
        self.embeddings = JointEmbeddings(
            vocab_size, config.text_width, self.visual_sampler.width, self.visual_sampler.grid,
            config.max_position_embeddings, config.dropout,
        )
        self.layers = nn.ModuleList(
            JointLayer(config.text_width, config.text_heads, config.text_intermediate, config.dropout)
            for _ in range(config.text_layers)
        )
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, nn.Linear):  # BERT's initialisation
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)

    @torch.no_grad()
    def initialise_from_bert(self, state: dict[str, torch.Tensor], source: str | None = None) -> None:
        """Copy a ``BertModel`` state dict (e.g. :class:`model.encoders.LocalBert`'s) into the text side.

        MedViLL starts from BERT: word, position and token-type embeddings become the word table,
        the text positions and the two semantic embeddings (type 0 → s_v, type 1 → s_t, as the
        reference code assigns them); each BERT layer fills the joint layer of the same index.
        Word and position rows beyond the checkout keep their random initialisation; the CNN,
        the visual projection and the visual positions are not in a BERT checkout. The sizes
        (width, heads, intermediate) must match.

        Raises:
            InputError: a tensor has the wrong shape, or the checkout has fewer layers.
        """
        names = {
            "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight": "embeddings.text_positions.weight",
            "embeddings.token_type_embeddings.weight": "embeddings.semantic_embeddings.weight",
            "embeddings.LayerNorm.weight": "embeddings.norm.weight",
            "embeddings.LayerNorm.bias": "embeddings.norm.bias",
        }
        parts = {
            "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
            "attention.output.dense": "attention_output", "attention.output.LayerNorm": "attention_norm",
            "intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "output_norm",
        }
        for index in range(len(self.layers)):
            for bert_part, own_part in parts.items():
                for tensor in ("weight", "bias"):
                    names[f"encoder.layer.{index}.{bert_part}.{tensor}"] = f"layers.{index}.{own_part}.{tensor}"
        own = self.state_dict()
        missing = [name for name in names if name not in state]
        if missing:
            raise InputError(f"BERT checkout lacks {', '.join(missing[:4])} (needs {len(self.layers)} layers)",
                             file=source)
        for bert_name, own_name in names.items():
            value, target = state[bert_name], own[own_name]
            if bert_name.endswith(("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")):
                if value.shape[1:] != target.shape[1:]:
                    raise InputError(f"tensor {bert_name} has width {value.shape[1]}, expected {target.shape[1]}",
                                     file=source)
                rows = min(value.shape[0], target.shape[0])
                target[:rows].copy_(value[:rows])
            elif value.shape != target.shape:
                raise InputError(f"tensor {bert_name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}",
                                 file=source)
            else:
                target.copy_(value)

    @property
    def visual_len(self) -> int:
        """V = K + 2: [CLS], the K visual tokens and [SEP_V]."""
        return self.config.num_visual_tokens + 2

    def embed_visual(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, C, H, W) → visual segment embeddings (B, V, width)."""
        features, positions = self.visual_sampler(images, generator)
        return self.embeddings.visual(features, positions, self.cls_id, self.sep_id)

    def run_layers(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The transformer stack over embeddings (B, S, width) with the (B, S, S) boolean mask in every layer."""
        mask = _guard_empty_rows(mask)
        for layer in self.layers:
            x, _ = layer(x, mask)
        return x

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        scheme: str,
        generator: torch.Generator | None = None,
    ) -> SingleStreamOutput:
        """Encode image-report pairs.

        Args:
            images: (B, C, H, W) normalised images.
            text_ids / text_mask: (B, T) text segment and its real-token mask (see
                :func:`text_segment`; ``non_crossing`` needs the leading [CLS_T]).
            scheme: a mask of :data:`model.attention_masks.MASK_SCHEMES`.
            generator: source of the training-time visual sampling (``None``: torch's global one).
        """
        if text_ids.shape[1] > self.config.max_text_len:  # checked before the CNN runs
            raise InputError(f"text segment of {text_ids.shape[1]} tokens exceeds max_text_len "
                             f"{self.config.max_text_len}", field="input_ids")
        return self.encode_embedded(self.embed_visual(images, generator), text_ids, text_mask, scheme)

    def encode_embedded(self, visual: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
                        scheme: str) -> SingleStreamOutput:
        """:meth:`forward` from an already embedded visual segment (B, V, width) (:meth:`embed_visual`),
        so that scoring every image against every report embeds each image once."""
        if text_ids.shape != text_mask.shape:
            raise InputError(f"text ids {tuple(text_ids.shape)} and mask {tuple(text_mask.shape)} differ", field="text_mask")
        if text_ids.shape[1] > self.config.max_text_len:
            raise InputError(f"text segment of {text_ids.shape[1]} tokens exceeds max_text_len "
                             f"{self.config.max_text_len}", field="input_ids")
        x = torch.cat([visual, self.embeddings.text(text_ids)], dim=1)
        mask = attention_mask(scheme, self.visual_len, text_mask)
        return SingleStreamOutput(self.run_layers(x, mask), self.visual_len, scheme)

    # ------------------------------------------------------------------ incremental decoding (S2S)
    def start_decoding(self, images: torch.Tensor) -> DecodingCache:
        """Cache the visual segment of ``images`` (B, C, H, W) for left-to-right decoding under S2S.

        Under S2S the visual segment attends only to itself, so its states are final before any
        text exists.
        """
        x = self.embed_visual(images)
        mask = torch.ones(x.shape[0], x.shape[1], x.shape[1], dtype=torch.bool, device=x.device)
        cache = DecodingCache()
        for layer in self.layers:
            x, key_value = layer(x, mask)
            cache.layers.append(key_value)
        return cache

    def decode_step(self, tokens: torch.Tensor, cache: DecodingCache, keep: int) -> tuple[torch.Tensor, DecodingCache]:
        """Append ``tokens`` (B, n) at the next text positions and run them under S2S.

        Each new token attends to everything cached and to the new tokens up to itself. Only the
        first ``keep`` new tokens enter the returned cache (a trailing [MASK] that only asks for
        the next word is not kept).

        Returns:
            ``(hidden (B, n, width), cache)``.
        """
        if not 0 <= keep <= tokens.shape[1]:
            raise ValueError(f"keep must lie in [0, {tokens.shape[1]}]; got {keep}")
        x = self.embeddings.text(tokens, first_position=cache.text_len)
        past_len = cache.layers[0][0].shape[2]
        new = tokens.shape[1]
        mask = torch.ones(new, past_len + new, dtype=torch.bool, device=tokens.device)
        mask[:, past_len:] = torch.ones(new, new, dtype=torch.bool, device=tokens.device).tril()
        mask = mask.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        kept = []
        for layer, past in zip(self.layers, cache.layers):
            x, (key, value) = layer(x, mask, past)
            kept.append((key[:, :, : past_len + keep], value[:, :, : past_len + keep]))
        return x, DecodingCache(kept, cache.text_len + keep)


def text_segment(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, scheme: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The text segment of tokenised reports ``[CLS] w_1 … w_N [SEP] [PAD] …`` (B, L).

    The joint [CLS] opens the visual segment, so the reports' own [CLS] is dropped
    (``w_1 … w_N [SEP_L]``), except under ``non_crossing``, where it stays as the text [CLS_T].

    Returns:
        ``(text_ids (B, T), text_mask (B, T) bool)``.
    """
    if scheme == "non_crossing":
        return input_ids, attention_mask.bool()
    return input_ids[:, 1:], attention_mask[:, 1:].bool()


def _guard_empty_rows(mask: torch.Tensor) -> torch.Tensor:
    # A query with no key (a padding position) would make softmax return NaN, and NaN hidden
    # states would leak into gradients; it attends to itself instead. Its output is never read.
    empty = ~mask.any(dim=-1, keepdim=True)
    own = torch.eye(mask.shape[-2], mask.shape[-1], dtype=torch.bool, device=mask.device)
    return mask | (empty & own)

