"""Configuration of the co-attention building blocks shared by M3AE and ARL.

Four small dataclasses, one per part, gathered by :class:`CoAttentionConfig` and loadable from
a YAML mapping with one sub-mapping per part::

    fusion: {width: 768, layers: 6, heads: 12, intermediate: 3072, dropout: 0.1}
    mlm: {enabled: true, probability: 0.15}
    mim: {enabled: true, ratio: 0.75, layer: -1, decoder_width: 384, decoder_layers: 4, decoder_heads: 6}
    knowledge: {ak: true, rk: true, lk: true, entity_dim: 256, entity_heads: 4, entity_intermediate: 1024}

A part that is switched off (``mlm.enabled``, ``mim.enabled``, ``knowledge.ak`` / ``rk`` /
``lk`` false) has no parameters and does no work (:class:`model.coattention.CoAttentionParts`).
M3AE is MLM + MIM with ``knowledge`` all off; ARL switches on ``ak`` / ``rk`` / ``lk`` on top
(its reference pretraining keeps M3AE's MIM and ITM).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


from kg.errors import InputError
from kg.files import read_yaml

EMBEDDING_KINDS = ("transe", "gat")

_Config = TypeVar("_Config")


@dataclass
class FusionConfig:
    """The co-attention fusion module (M3AE / ARL / METER layout).

    Attributes:
        width: D, the width of both fusion streams (text and image features are projected to it).
        layers: L_m, co-attention layers.
        heads: attention heads of every fusion sub-layer (divides ``width``).
        intermediate: hidden size of the feed-forward sub-layers.
        dropout: dropout after attention and feed-forward sub-layers.
    """

    width: int = 768
    layers: int = 6
    heads: int = 12
    intermediate: int = 3072
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _positive(self, "width", "layers", "heads", "intermediate")
        _divides(self.width, self.heads, "heads", "width")
        _unit_interval(self, "dropout")


@dataclass
class MLMConfig:
    """Masked language modelling (BERT's 15 % with 80 / 10 / 10 replacement).

    Attributes:
        enabled: whether the MLM head exists and the objective is trained.
        probability: share of maskable tokens masked per report (see :mod:`model.masking` for the
            exact count rule).
    """

    enabled: bool = True
    probability: float = 0.15

    def __post_init__(self) -> None:
        _boolean(self, "enabled")
        _open_unit_interval(self, "probability")


@dataclass
class MIMConfig:
    """Masked image modelling (MAE-style random patch masking and a small decoder).

    Attributes:
        enabled: whether the MIM decoder exists and the objective is trained.
        ratio: share of patches masked per image (MAE and M3AE use 0.75).
        layer: which image-stream output of the fusion the decoder reads: 0 is the fusion input
            (the projected visible patches), k the output of fusion layer k, -1 the last layer
            (negative values count from the end as in Python).
        decoder_width / decoder_layers / decoder_heads: the MIM decoder's transformer.
        normalise_pixels: regress per-patch normalised pixels (MAE's ``norm_pix_loss``).
    """

    enabled: bool = True
    ratio: float = 0.75
    layer: int = -1
    decoder_width: int = 384
    decoder_layers: int = 4
    decoder_heads: int = 6
    normalise_pixels: bool = True

    def __post_init__(self) -> None:
        _boolean(self, "enabled", "normalise_pixels")
        _open_unit_interval(self, "ratio")
        _positive(self, "decoder_width", "decoder_layers", "decoder_heads")
        _divides(self.decoder_width, self.decoder_heads, "decoder_heads", "decoder_width")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise InputError(f"must be an integer; got {self.layer!r}", field="layer")


@dataclass
class ARLKnowledgeConfig:
    """ARL's knowledge parts (Sec. 3.3): aligning (AK), reasoning (RK) and learning (LK), each off by default.

    Attributes:
        ak: knowledge alignment, Eq. 10–14 (:class:`model.pretraining_heads.KnowledgeAlignmentHead`).
        rk: knowledge reasoning in every fusion layer, Eq. 15–17
            (:class:`model.arl_knowledge.KnowledgeReasoningBlock`).
        lk: knowledge-induced (whole entity span) MLM masking; no parameters.
        entity_dim: D_e, the entity embedding width; must equal the dimension of ``embeddings``.
        entity_heads / entity_intermediate: attention heads and feed-forward size of the RK
            entity sub-layers.
        embeddings: a ``kg embed`` output directory whose vectors initialise the entity table, or
            ``None`` for a randomly initialised table.
        embedding_kind: ``transe`` or ``gat`` vectors of that directory.
        dropout: dropout of the RK sub-layers.
    """

    ak: bool = False
    rk: bool = False
    lk: bool = False
    entity_dim: int = 256
    entity_heads: int = 4
    entity_intermediate: int = 1024
    embeddings: str | None = None
    embedding_kind: str = "transe"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _boolean(self, "ak", "rk", "lk")
        _positive(self, "entity_dim", "entity_heads", "entity_intermediate")
        _divides(self.entity_dim, self.entity_heads, "entity_heads", "entity_dim")
        if self.embedding_kind not in EMBEDDING_KINDS:
            raise InputError(f"must be one of {', '.join(EMBEDDING_KINDS)}; got {self.embedding_kind!r}",
                             field="embedding_kind")
        if self.embeddings is not None and not isinstance(self.embeddings, str):
            raise InputError(f"must be a directory path or null; got {self.embeddings!r}", field="embeddings")
        _unit_interval(self, "dropout")

    @property
    def uses_entities(self) -> bool:
        """Whether the entity table exists (AK and RK read it; LK needs only the entity spans)."""
        return self.ak or self.rk


@dataclass
class CoAttentionConfig:
    """All co-attention parts: ``fusion``, ``mlm``, ``mim`` and ARL ``knowledge``."""

    fusion: FusionConfig = field(default_factory=FusionConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    mim: MIMConfig = field(default_factory=MIMConfig)
    knowledge: ARLKnowledgeConfig = field(default_factory=ARLKnowledgeConfig)

    def __post_init__(self) -> None:
        if not -(self.fusion.layers + 1) <= self.mim.layer <= self.fusion.layers:
            raise InputError(
                f"must index the fusion's image-stream outputs 0..{self.fusion.layers} (or -1 for the last); "
                f"got {self.mim.layer}", field="mim.layer")
        if self.knowledge.lk and not self.mlm.enabled:
            raise InputError("knowledge-induced masking (lk) needs MLM (mlm.enabled)", field="knowledge.lk")

    @property
    def mim_layer_index(self) -> int:
        """``mim.layer`` as a non-negative index into the fusion's ``image_layers`` (0..L_m)."""
        return self.mim.layer % (self.fusion.layers + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested mappings, the inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path | None = None) -> CoAttentionConfig:
        """Build from ``{part: {field: value}}``; unknown keys and bad values raise :class:`InputError`.

        The error names ``source`` and the field as ``part.field``.
        """
        if not isinstance(data, dict):
            raise InputError("expected a mapping of fusion / mlm / mim / knowledge sections", file=source)
        parts = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # each factory is the part's class
        built = {}
        for key, value in data.items():
            if key not in parts:
                raise InputError(f"unknown section; known: {', '.join(parts)}", file=source, field=key)
            built[key] = _part_from_dict(parts[key], value, key, source)
        try:
            return cls(**built)
        except InputError as err:
            raise InputError(err.message, file=source, field=err.field) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> CoAttentionConfig:
        """Load a YAML file of sections (every section and field optional)."""
        return cls.from_dict(read_yaml(path, missing="co-attention config file not found") or {}, source=path)


def _part_from_dict(part_type: type[_Config], data: Any, section: str, source: str | Path | None) -> _Config:
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of {part_type.__name__} fields", file=source, field=section)
    names = {f.name for f in dataclasses.fields(part_type)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise InputError(f"unknown field; known: {', '.join(sorted(names))}", file=source, field=f"{section}.{key}")
    try:
        return part_type(**data)
    except InputError as err:
        raise InputError(err.message, file=source, field=f"{section}.{err.field}") from None


def _positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"must be a positive integer; got {value!r}", field=name)


def _boolean(config: Any, *names: str) -> None:
    for name in names:
        if not isinstance(getattr(config, name), bool):
            raise InputError(f"must be true or false; got {getattr(config, name)!r}", field=name)


def _divides(width: int, heads: int, heads_name: str, width_name: str) -> None:
    if width % heads:
        raise InputError(f"{width_name} {width} is not divisible by {heads_name} {heads}", field=heads_name)


def _unit_interval(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InputError(f"must lie in [0, 1]; got {value!r}", field=name)


def _open_unit_interval(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InputError(f"must lie strictly between 0 and 1; got {value!r}", field=name)
