"""The MOTOR model configuration: one dataclass, loaded from the YAML presets in ``model/presets``.

Every number the model needs lives here; classes take only the numbers they use. The
``knowledge`` switch selects the knowledge paths that exist in the model (an absent path has no
parameters and costs nothing):

=========  ============================================  ===================================
switch     knowledge paths                               feature used by ITC / ITM / LM
=========  ============================================  ===================================
``none``   none (BLIP)                                   f_v
``gk``     GK encoder + GK-image encoder                 f_v^gk
``sk``     SK encoder + SK-image encoder + report queue  f_v^sk
``gk+sk``  both                                          f_v^{gk→sk}
``full``   both + text-based multi-label classification  f_v^{gk→sk}
=========  ============================================  ===================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


from kg.errors import InputError
from kg.files import read_yaml
from kg.sk_order import DEFAULT_SK_ORDER, check_sk_order
from model.variants import knowledge_variant

_Config = TypeVar("_Config")

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
UNCERTAIN_POLICIES = ("ignore", "positive", "negative")
UNMENTIONED_POLICIES = ("negative", "ignore")
#: ``views`` values: one image per study, or every view (up to ``num_views``) fused.
VIEWS = ("first", "all")
#: ``sk_fusion`` values: how E_{sk→v} sees the k retrieved reports (:class:`model.knowledge.SKEncoder`).
SK_FUSIONS = ("concat", "weighted_sum")
#: The objectives MOTOR can train, in canonical order; ``mim`` is the only optional one.
MOTOR_OBJECTIVES = ("itc", "itm", "lm", "mlc", "mim")


class FlatConfigIO:
    """Plain-data I/O of a flat config dataclass (one level of fields): the ``to_dict`` /
    ``replace`` / ``from_dict`` / ``from_yaml`` that :class:`MotorConfig` and the other methods'
    configs share."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (tuples as lists), the inverse of :meth:`from_dict`."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    def replace(self: _Config, **changes: Any) -> _Config:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def from_dict(cls: type[_Config], data: dict[str, Any], *, source: str | Path | None = None) -> _Config:
        """Build from a mapping; unknown keys and bad values raise :class:`InputError` naming ``source``."""
        return config_from_dict(cls, data, source=source, name=cls.__name__)

    @classmethod
    def from_yaml(cls: type[_Config], path: str | Path) -> _Config:
        """Load a YAML file of the config's fields (every field optional)."""
        return cls.from_dict(read_yaml(path, missing="model config file not found") or {}, source=path)  # type: ignore[attr-defined]


@dataclass
class MotorConfig(FlatConfigIO):
    """Sizes, knowledge switch, queue sizes and loss weights of a MOTOR model.

    Image encoder E_v (a timm ViT):
        image_size: input side in pixels. in_chans: input channels. patch_size: ViT patch side.
        vision_width / vision_layers / vision_heads: ViT embedding width, depth, heads.
        drop_path_rate: stochastic depth of the ViT.
        image_weights: optional local ViT checkpoint (``.safetensors`` or a ``torch.save`` file of
            tensors) in timm's naming; positional embeddings are resampled to ``image_size``.
        image_mean / image_std: per-channel (or one shared) normalisation of [0, 1] pixels.

        views: ``first`` (one image per study: its first view) or ``all`` (each study's first
            ``num_views`` images, each encoded by E_v; the views' token features are concatenated
            feature-wise and projected back to vision_width, as the reference code's ``iu_proj``
            does for IU-Xray's frontal + lateral pairs). num_views: views per study with ``all``
            (a study with fewer repeats its last one).

    Text encoders (report E_t, image-grounded E_{v→t}, decoder; BERT layout):
        text_model_dir: optional local BERT-style checkout (e.g. SciBERT); its sizes replace the
            ``text_*`` fields and its weights initialise E_t, the decoder and E_sk.
        text_width / text_layers / text_heads / text_intermediate: BERT sizes.
        max_text_len: report tokens, ``[CLS]`` and ``[SEP]`` included.
        max_position_embeddings: position table size (≥ max_text_len and sk_max_len).
        dropout: hidden and attention dropout of the text stacks and knowledge encoders.
        tie_decoder: share the decoder's embeddings, cross-attention and feed-forward layers with
            the text encoder (BLIP pretraining); the decoder keeps its own causal self-attention.
        label_smoothing: of the LM loss (BLIP uses 0.1).

    Knowledge:
        knowledge: one of ``none | gk | sk | gk+sk | full`` (module docstring).
        gk_graph: GK definition YAML (``None``: the shipped chest graph).
        labels_file: CheXpert label prompts YAML (``None``: the shipped ``graphs/labels.yaml``).
        gk_layers / gk_heads: GK encoder depth and heads (width = text_width).
        gk_intermediate: GK encoder feed-forward width (``None``: 4 · text_width).
        gk_image_layers / sk_image_layers: the cross-encoder depth, cross-attention + feed-forward
            blocks of E_{gk→v} / E_{sk→v} (each followed by a final LayerNorm; the reference has 2).
        cross_final_norm: end E_{gk→v} and E_{sk→v} with a LayerNorm (the reference's shape);
            models saved before it existed load with ``false``.
        knowledge_heads: heads of those cross-attention blocks (divides vision_width).
        knowledge_intermediate: their feed-forward width (``None``: 4 · vision_width).
        sk_layers: depth of the SK encoder E_sk (a BERT stack of text_width).
        sk_fusion: how E_{sk→v} sees the k retrieved reports' encodings: ``concat`` (k·L keys,
            the default) or ``weighted_sum`` (L keys, summed with softmax(retrieval score)
            weights, the reference code's choice); see :class:`model.knowledge.SKEncoder`.
        sk_max_len: SK sentence tokens, ``[CLS]`` and ``[SEP]`` included.
        sk_order: triplet order of the SK sentences the pipelines write for this model
            (:mod:`kg.sk_order`): ``report`` (as the report states them, the reference code's
            order and the default), ``specific_first`` or ``frequent_first``; the token cut keeps
            the first ones.
        sk_queue_size: n_Q, reports held in the SK report queue Q.
        sk_top_k: k, reports retrieved per image.
        uncertain: how MLC treats uncertain (-1) labels: ``ignore``, ``positive`` or ``negative``.
        unmentioned: how MLC and the diagnosis heads treat labels a report does not mention
            (NaN): ``negative`` (absent, as the reference MOTOR code's ``label_index``) or ``ignore``.

    Contrastive learning (BLIP):
        embed_dim: ITC embedding size. queue_size: ITC feature queue length.
        momentum: EMA factor of the momentum encoders. alpha: distillation weight.
        momentum_knowledge: give E_gk, E_sk and E_{sk→v} momentum copies of their own (``True``),
            or let the momentum path reuse the online f_gk and f_sk and run the online E_{sk→v}
            without gradient (``False``, the default: what the MOTOR reference code does). E_v,
            E_{gk→v}, E_t and the projections always have momentum copies.
        temperature: initial ITC temperature (learned, clamped to [0.001, 0.5]).

    Loss weights (Eq. 15): ``loss = itc_weight·L_itc + itm_weight·L_itm + lm_weight·L_lm +
    mlc_weight·L_mlc`` (the MLC term only with ``knowledge: full``), plus ``mim_weight·L_mim``
    when ``objectives`` includes ``mim``.

    Objectives:
        objectives: the losses trained, a list or a comma-separated string of names from
            :data:`MOTOR_OBJECTIVES` (``None``: MOTOR's own set, :attr:`active_objectives`).
            ``itc``, ``itm`` and ``lm`` are always required (ITC gives ITM its hard negatives and
            SK retrieval its features, retrieval ranks by ITM, generation needs the LM decoder)
            and ``mlc`` goes with ``knowledge: full`` (it is part of that variant), so the only
            free choice is ``mim``: masked image modelling on a separate pass of E_v over the
            visible patches, with M3AE's MIM decoder at its default sizes (75 % of patches
            masked, per-patch normalised pixels, :class:`model.coattention_config.MIMConfig`).
        mim_weight: weight of the MIM loss.
    """

    knowledge: str = "full"
    # image encoder
    image_size: int = 224
    in_chans: int = 3
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    drop_path_rate: float = 0.0
    image_weights: str | None = None
    image_mean: tuple[float, ...] = (0.5,)
    image_std: tuple[float, ...] = (0.5,)
    views: str = "first"
    num_views: int = 2
    # text encoders
    text_model_dir: str | None = None
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_text_len: int = 128
    max_position_embeddings: int = 512
    dropout: float = 0.1
    tie_decoder: bool = True
    label_smoothing: float = 0.1
    # knowledge
    gk_graph: str | None = None
    labels_file: str | None = None
    gk_layers: int = 2
    gk_heads: int = 12
    gk_intermediate: int | None = None
    gk_image_layers: int = 1
    sk_image_layers: int = 1
    cross_final_norm: bool = True
    knowledge_heads: int = 12
    knowledge_intermediate: int | None = None
    sk_layers: int = 4
    sk_fusion: str = "concat"
    sk_max_len: int = 90
    sk_order: str = DEFAULT_SK_ORDER
    sk_queue_size: int = 65536
    sk_top_k: int = 3
    uncertain: str = "ignore"
    unmentioned: str = "negative"
    # contrastive learning
    embed_dim: int = 256
    queue_size: int = 57600
    momentum: float = 0.995
    momentum_knowledge: bool = False
    alpha: float = 0.4
    temperature: float = 0.07
    # loss weights (Eq. 15)
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    lm_weight: float = 1.0
    mlc_weight: float = 1.0
    # objectives beside MOTOR's own
    objectives: list[str] | str | None = None
    mim_weight: float = 1.0

    def __post_init__(self) -> None:
        self.image_mean = as_floats(self.image_mean, "image_mean")
        self.image_std = as_floats(self.image_std, "image_std")
        self._validate()
        self._check_objectives()

    def _check_objectives(self) -> None:
        """Validate ``objectives`` into the method's canonical order (names from
        :meth:`_objective_vocabulary`, the method's own rules in :meth:`_check_objective_set`)."""
        if self.objectives is None:
            return
        method, known = self._objective_vocabulary()
        value = self.objectives
        names = value.replace("+", ",").split(",") if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise InputError(f"expected a list of objective names from {', '.join(known)}; got {value!r}",
                             field="objectives")
        names = [n.strip() for n in names if n.strip()]
        for name in names:
            if name not in known:
                raise InputError(f"{method} cannot train objective {name!r}; its objectives are "
                                 f"{', '.join(known)}", field="objectives")
        self._check_objective_set(names)
        self.objectives = [n for n in known if n in names]  # canonical order, duplicates dropped

    def _objective_vocabulary(self) -> tuple[str, tuple[str, ...]]:
        """(method name, the objectives it can train in canonical order)."""
        return "motor", MOTOR_OBJECTIVES

    def _check_objective_set(self, names: list[str]) -> None:
        """MOTOR's rules for a set of known objective names."""
        missing = [n for n in ("itc", "itm", "lm") if n not in names]
        if missing:
            raise InputError(f"motor cannot train without {', '.join(missing)} (ITC gives ITM its negatives and SK "
                             "retrieval its features, retrieval ranks by ITM, generation needs LM); "
                             f"got {', '.join(names) or 'none'}", field="objectives")
        if ("mlc" in names) != self.uses_mlc:
            raise InputError("mlc is trained exactly with knowledge: full (it is part of that variant); knowledge is "
                             f"{self.knowledge!r} and objectives {'include' if 'mlc' in names else 'leave out'} mlc",
                             field="objectives")
        if "mim" in names and self.views != "first":
            raise InputError("mim masks the patches of one image per study; it needs views: first", field="objectives")

    @property
    def active_objectives(self) -> list[str]:
        """The losses this config trains: ``objectives``, or ``itc, itm, lm`` plus ``mlc`` with ``full``."""
        if self.objectives is not None:
            return list(self.objectives)
        return ["itc", "itm", "lm"] + (["mlc"] if self.uses_mlc else [])

    @property
    def uses_mim(self) -> bool:
        """Whether MOTOR's masked-image-modelling decoder and loss exist (``mim`` in ``objectives``)."""
        return "mim" in self.active_objectives

    def _validate(self) -> None:
        knowledge_variant(self.knowledge)
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise InputError(f"must be one of {', '.join(UNCERTAIN_POLICIES)}; got {self.uncertain!r}", field="uncertain")
        check_sk_order(self.sk_order)
        if self.views not in VIEWS:
            raise InputError(f"must be one of {', '.join(VIEWS)}; got {self.views!r}", field="views")
        if isinstance(self.num_views, bool) or not isinstance(self.num_views, int) or self.num_views < 2:
            raise InputError(f"must be an integer >= 2; got {self.num_views!r}", field="num_views")
        if self.sk_fusion not in SK_FUSIONS:
            raise InputError(f"must be one of {', '.join(SK_FUSIONS)}; got {self.sk_fusion!r}", field="sk_fusion")
        for name in ("gk_intermediate", "knowledge_intermediate"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"must be a positive integer or null; got {value!r}", field=name)
        if self.unmentioned not in UNMENTIONED_POLICIES:
            raise InputError(f"must be one of {', '.join(UNMENTIONED_POLICIES)}; got {self.unmentioned!r}", field="unmentioned")
        positive = (
            "image_size", "in_chans", "patch_size", "vision_width", "vision_layers", "vision_heads", "text_width",
            "text_layers", "text_heads", "text_intermediate", "max_text_len", "max_position_embeddings",
            "gk_layers", "gk_heads", "gk_image_layers", "sk_image_layers", "knowledge_heads", "sk_layers",
            "sk_max_len", "sk_queue_size", "sk_top_k", "embed_dim", "queue_size",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"must be a positive integer; got {value!r}", field=name)
        if self.image_size % self.patch_size:
            raise InputError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}", field="image_size")
        for width, heads in (("vision_width", "vision_heads"), ("text_width", "text_heads"),
                             ("text_width", "gk_heads"), ("vision_width", "knowledge_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise InputError(f"{width} {getattr(self, width)} is not divisible by {heads} {getattr(self, heads)}", field=heads)
        for name in ("max_text_len", "sk_max_len"):
            if getattr(self, name) > self.max_position_embeddings:
                raise InputError(f"exceeds max_position_embeddings ({self.max_position_embeddings})", field=name)
        if self.sk_max_len < 3 or self.max_text_len < 3:
            raise InputError("text lengths must leave room for [CLS], one token and [SEP] (>= 3)", field="sk_max_len")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if len(values) not in (1, self.in_chans):
                raise InputError(f"needs 1 or in_chans ({self.in_chans}) values; got {len(values)}", field=name)
        if any(v <= 0 for v in self.image_std):
            raise InputError("standard deviations must be positive", field="image_std")
        if not isinstance(self.cross_final_norm, bool):
            raise InputError(f"must be true or false; got {self.cross_final_norm!r}", field="cross_final_norm")
        if not isinstance(self.momentum_knowledge, bool):
            raise InputError(f"must be true or false; got {self.momentum_knowledge!r}", field="momentum_knowledge")
        for name in ("momentum", "alpha", "dropout", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"must lie in [0, 1]; got {getattr(self, name)!r}", field=name)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InputError(f"must lie in [0, 1); got {self.label_smoothing!r}", field="label_smoothing")
        if not 0.001 <= self.temperature <= 0.5:
            raise InputError(f"must lie in [0.001, 0.5]; got {self.temperature!r}", field="temperature")
        for name in ("itc_weight", "itm_weight", "lm_weight", "mlc_weight", "mim_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"must be non-negative; got {getattr(self, name)!r}", field=name)

    # ------------------------------------------------------------------ switches
    @property
    def uses_gk(self) -> bool:
        """Whether the GK encoder and GK-image encoder exist."""
        return knowledge_variant(self.knowledge).gk

    @property
    def uses_sk(self) -> bool:
        """Whether the SK encoder, SK-image encoder and report queue exist."""
        return knowledge_variant(self.knowledge).sk

    @property
    def uses_mlc(self) -> bool:
        """Whether text-based multi-label classification (Eq. 7–9) is trained."""
        return knowledge_variant(self.knowledge).mlc

    @property
    def views_per_study(self) -> int | None:
        """Images per study the data must give (``num_views`` with ``views: all``), or ``None`` for one."""
        return self.num_views if self.views == "all" else None

    @property
    def num_patches(self) -> int:
        """Image patches per image (the ViT adds one [CLS] token to these)."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def preset(cls, name: str) -> MotorConfig:
        """A shipped preset: ``tiny`` (CPU tests, 64 px) or ``base`` (ViT-B/16, BERT-base, 224 px)."""
        path = PRESETS_DIR / f"{name}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise InputError(f"no model preset {name!r}; available: {', '.join(names)}", field="preset")
        return cls.from_yaml(path)



def config_from_dict(cls: type[_Config], data: Any, *, source: str | Path | None, name: str) -> _Config:
    """The flat config dataclass ``cls`` built from a mapping of its fields (the ``from_dict`` of
    :class:`MotorConfig` and the other methods' configs).

    Raises:
        InputError: ``data`` is not a mapping, names an unknown field, or a value is rejected; the
            error names ``source`` and the field.
    """
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of {name} fields", file=source)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise InputError(f"unknown {name} field; known: {', '.join(sorted(names))}", file=source, field=key)
    try:
        return cls(**data)
    except InputError as err:
        raise InputError(err.message, file=source, field=err.field) from None
    except TypeError as err:
        raise InputError(str(err), file=source) from None


def as_floats(value: Any, name: str) -> tuple[float, ...]:
    """A number or a non-empty list of numbers (not booleans) as a tuple of floats; else an error naming ``name``."""
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if is_number(value):
        return (float(value),)
    if isinstance(value, (list, tuple)) and value and all(is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise InputError(f"expected a number or a non-empty list of numbers; got {value!r}", field=name)
