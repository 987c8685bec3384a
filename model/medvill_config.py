"""The MedViLL model configuration: sizes, visual sampling, mask scheme and objective settings.

A dataclass of its own (MedViLL shares the tokenizer and data with MOTOR but none of its
encoders), loadable from YAML like :class:`model.config.MotorConfig`. A preset is
``model/presets/medvill_<name>.yaml`` (``MedVillConfig.preset("tiny")``), so
``model: {method: medvill, preset: tiny}`` picks MedViLL's own tiny preset.

The shared pipelines read a few settings every method's config answers (``knowledge``,
``uses_sk``, ``alpha``, ``sk_max_len``): MedViLL has none of MOTOR's knowledge paths, no SK
sentences and no distillation, so they are fixed class attributes here, not fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kg.errors import InputError
from model.attention_masks import PRETRAIN_SCHEMES
from model.config import PRESETS_DIR, UNCERTAIN_POLICIES, UNMENTIONED_POLICIES, FlatConfigIO, as_floats


@dataclass
class MedVillConfig(FlatConfigIO):
    """A MedViLL single-stream model.

    Visual features (MedViLL Eq. 1–4 with the embeddings):
        backbone: timm CNN whose last feature map gives the visual features (``resnet50`` as the
            paper; a small one such as ``test_resnet`` for CPU tests). Built with random weights.
        backbone_weights: optional local checkpoint of that CNN in timm's naming (``.safetensors``
            or a ``torch.save`` file of tensors, read without unpickling).
        image_size / in_chans: input side in pixels and channels (the paper: 512 px).
        image_mean / image_std: per-channel (or one shared) normalisation of [0, 1] pixels.
        num_visual_tokens: K, feature-map positions sampled per image (the paper: 180 of the
            16 × 16 = 256 positions of ResNet-50 at 512 px); at most the map's positions.

    Joint transformer (BERT layout):
        text_model_dir: optional local BERT-style checkout (config.json + weights); its sizes
            replace the ``text_*`` fields and its weights initialise the text side
            (:func:`model.medvill.build_medvill`). Nothing is downloaded.
        text_width / text_layers / text_heads / text_intermediate: BERT sizes.
        max_text_len: text-segment tokens (words, [SEP_L], and [CLS_T] for ``non_crossing``).
        max_position_embeddings: rows of the text position table (≥ max_text_len).
        dropout: hidden and attention dropout.

    Pretraining:
        attention_mask: one of ``bi | s2s | bar | bi+s2s | non_crossing``
            (:mod:`model.attention_masks`); MedViLL's proposal is ``bar``.
        s2s_probability: chance of the S2S mask in a ``bi+s2s`` mini-batch.
        mlm_probability: share of text tokens chosen for MLM, in (0, 1) (each then 80 % [MASK],
            10 % a random token, 10 % kept; the count rule of :class:`model.masking.TokenMasker`).
        irm_match_probability: share of IRM pairs that match (1 : 1 in the paper).
        irm_clean_text: score IRM in a second pass over the unmasked reports instead of the MLM
            pass (``False``: one pass, as MedViLL's reference code; at tiny sizes the masked words
            keep IRM at chance for far longer, see ``tests/test_medvill.py``).
        mlm_weight / irm_weight: ``loss = mlm_weight·L_mlm + irm_weight·L_irm``; a weight of 0 switches
            its objective off (not computed; retrieval finetuning sets ``mlm_weight: 0``).

    Labels (IRM negatives, diagnosis):
        labels_file: CheXpert label prompts YAML (``None``: the shipped ``graphs/labels.yaml``);
            fixes the label vectors IRM compares and the diagnosis classes.
        uncertain / unmentioned: how the diagnosis head treats uncertain (-1) and unmentioned
            (NaN) labels, as :class:`model.config.MotorConfig`.
    """

    #: The registered method (:mod:`model.registry`), recorded in a saved model's ``config.json``.
    method: ClassVar[str] = "medvill"
    #: What the shared pipelines ask of every method's config: no MOTOR knowledge path, no SK
    #: sentences (the collator still tokenises an empty one, ``[CLS] [SEP]``), no distillation.
    knowledge: ClassVar[str] = "none"
    uses_sk: ClassVar[bool] = False
    sk_max_len: ClassVar[int] = 3
    alpha: ClassVar[float] = 0.0

    backbone: str = "resnet50"
    backbone_weights: str | None = None
    image_size: int = 512
    in_chans: int = 3
    image_mean: tuple[float, ...] = (0.5,)
    image_std: tuple[float, ...] = (0.5,)
    num_visual_tokens: int = 180
    text_model_dir: str | None = None
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_text_len: int = 128
    max_position_embeddings: int = 512
    dropout: float = 0.1
    attention_mask: str = "bar"
    s2s_probability: float = 0.75
    mlm_probability: float = 0.15
    irm_match_probability: float = 0.5
    irm_clean_text: bool = False
    mlm_weight: float = 1.0
    irm_weight: float = 1.0
    labels_file: str | None = None
    uncertain: str = "ignore"
    unmentioned: str = "negative"

    def __post_init__(self) -> None:
        self.image_mean = as_floats(self.image_mean, "image_mean")
        self.image_std = as_floats(self.image_std, "image_std")
        self._validate()

    def _validate(self) -> None:
        if self.attention_mask not in PRETRAIN_SCHEMES:
            raise InputError(f"must be one of {', '.join(PRETRAIN_SCHEMES)}; got {self.attention_mask!r}",
                             field="attention_mask")
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise InputError(f"must be one of {', '.join(UNCERTAIN_POLICIES)}; got {self.uncertain!r}", field="uncertain")
        if self.unmentioned not in UNMENTIONED_POLICIES:
            raise InputError(f"must be one of {', '.join(UNMENTIONED_POLICIES)}; got {self.unmentioned!r}",
                             field="unmentioned")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise InputError(f"must name a timm CNN; got {self.backbone!r}", field="backbone")
        for name in ("image_size", "in_chans", "num_visual_tokens", "text_width", "text_layers", "text_heads",
                     "text_intermediate", "max_text_len", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"must be a positive integer; got {value!r}", field=name)
        if self.text_width % self.text_heads:
            raise InputError(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}",
                             field="text_heads")
        if self.max_text_len > self.max_position_embeddings:
            raise InputError(f"exceeds max_position_embeddings ({self.max_position_embeddings})", field="max_text_len")
        if self.max_text_len < 2:
            raise InputError("the text segment needs room for a word and [SEP_L] (>= 2)", field="max_text_len")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) not in (1, self.in_chans):
                raise InputError(f"needs 1 or in_chans ({self.in_chans}) values; got {len(getattr(self, name))}", field=name)
        if any(v <= 0 for v in self.image_std):
            raise InputError("standard deviations must be positive", field="image_std")
        for name in ("dropout", "s2s_probability", "irm_match_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"must lie in [0, 1]; got {getattr(self, name)!r}", field=name)
        if not 0.0 < self.mlm_probability < 1.0:
            raise InputError(f"must lie in (0, 1); got {self.mlm_probability!r}", field="mlm_probability")
        for name in ("mlm_weight", "irm_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"must be non-negative; got {getattr(self, name)!r}", field=name)
        if self.mlm_weight == 0 and self.irm_weight == 0:
            raise InputError("MLM and IRM are both switched off; give one a positive weight", field="mlm_weight")

    # ------------------------------------------------------------------ I/O (to_dict, replace, from_dict, from_yaml: FlatConfigIO)
    @classmethod
    def preset(cls, name: str) -> MedVillConfig:
        """A shipped preset ``model/presets/medvill_<name>.yaml``: ``tiny`` (CPU) or ``base`` (the paper's sizes).

        ``name`` may also be the file's full stem (``medvill_tiny``).
        """
        stem = name if name.startswith(f"{cls.method}_") else f"{cls.method}_{name}"
        path = PRESETS_DIR / f"{stem}.yaml"
        if not path.is_file():
            names = sorted(p.stem.split("_", 1)[1] for p in PRESETS_DIR.glob(f"{cls.method}_*.yaml"))
            raise InputError(f"no {cls.method} preset {name!r}; available: {', '.join(names)}", field="preset")
        return cls.from_yaml(path)

