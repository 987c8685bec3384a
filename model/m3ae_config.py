"""Configuration of the co-attention methods M3AE and ARL: MOTOR's encoder fields plus their parts.

:class:`M3AEConfig` extends :class:`model.config.MotorConfig`, so the image encoder E_v, the
report encoder E_t, the tokenizer lengths and image normalisation are configured (and built) the
same way for every method; MOTOR's own paths (GK, SK, queues, decoder) are not built by these
methods, so ``knowledge`` must stay ``none``. What M3AE and ARL add is one ``coattention``
mapping, read as :class:`model.coattention_config.CoAttentionConfig` (``fusion``, ``mlm``,
``mim``, ``knowledge`` sections), and the weights of their objectives::

    loss = itm_weight·L_itm + itc_weight·L_itc + mlm_weight·L_mlm + mim_weight·L_mim + ak_weight·L_ak

``objectives`` names the losses trained, from :data:`OBJECTIVES` of the method (``[itm, mlm]``:
M3AE without MIM); it sets the ``mlm`` / ``mim`` / ``knowledge.ak`` switches, so a run without an
objective is the method with that part switched off. ``itc`` (ALBEF's contrastive loss on the
uni-modal ``[CLS]`` features) is not in the papers: it gives ITM its hard negatives (below).

A preset is looked up as ``<method>_<name>.yaml`` first (``M3AEConfig.preset("tiny")`` reads
``model/presets/m3ae_tiny.yaml``), so ``model: {method: m3ae, preset: tiny}`` picks the method's
own tiny preset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kg.errors import InputError
from model.coattention_config import CoAttentionConfig
from model.config import PRESETS_DIR, MotorConfig

#: The objectives each co-attention method can train, by name. ``ak`` needs ARL's entity table.
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "m3ae": ("itm", "itc", "mlm", "mim"),
    "arl": ("itm", "itc", "mlm", "mim", "ak"),
}


@dataclass
class M3AEConfig(MotorConfig):
    """MOTOR's encoder fields (sizes of E_v and E_t, text lengths, normalisation) plus:

    Attributes:
        coattention: the ``CoAttentionConfig`` sections (``fusion``, ``mlm``, ``mim``,
            ``knowledge``); a missing section or field takes its default.
        entities_file: ARL only: the entity vocabulary, one name per line (``None``: the
            vocabulary is read from the training reports' entities when the model is built by
            the pretraining pipeline).
        objectives: the losses trained, a list or a comma-separated string of names from
            :data:`OBJECTIVES` (``None``: ITM plus the switched-on parts). When given, it sets
            ``coattention.mlm.enabled``, ``mim.enabled`` and ``knowledge.ak``.
        mlm_weight / mim_weight / ak_weight: weights of the MLM, MIM and knowledge-alignment
            losses (``itm_weight``, ``itc_weight``, ``embed_dim`` and ``temperature`` are MotorConfig's).
        report_decoder: the model carries a report decoder (set when report generation attached
            one, :meth:`model.m3ae.M3AEModel.attach_report_decoder`; the methods have none).
    """

    method: ClassVar[str] = "m3ae"

    knowledge: str = "none"
    coattention: dict[str, Any] = field(default_factory=dict)
    entities_file: str | None = None
    objectives: list[str] | str | None = None
    mlm_weight: float = 1.0
    mim_weight: float = 1.0
    ak_weight: float = 1.0
    report_decoder: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.knowledge != "none":
            raise InputError(f"{self.method} has none of MOTOR's knowledge paths (GK, SK, MLC); set knowledge: none "
                             "and switch ARL's parts with coattention.knowledge.ak / rk / lk", field="knowledge")
        if not isinstance(self.coattention, dict):
            raise InputError("expected a mapping of fusion / mlm / mim / knowledge sections", field="coattention")
        if self.objectives is not None:  # validated by MotorConfig._check_objectives with this method's rules
            knowledge = self.coattention.get("knowledge", {})
            if "ak" not in OBJECTIVES[self.method]:
                knowledge = {k: v for k, v in knowledge.items() if k != "ak"}
            else:
                knowledge = {**knowledge, "ak": "ak" in self.objectives}
            self.coattention = {**self.coattention,
                                "mlm": {**self.coattention.get("mlm", {}), "enabled": "mlm" in self.objectives},
                                "mim": {**self.coattention.get("mim", {}), "enabled": "mim" in self.objectives},
                                "knowledge": knowledge}
        parts = self.parts  # validates every section now, not at build time
        if parts.mim.enabled and self.image_size % self.patch_size:
            raise InputError("MIM needs whole patches", field="image_size")
        for name in ("mlm_weight", "mim_weight", "ak_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"must be non-negative; got {getattr(self, name)!r}", field=name)

    def _objective_vocabulary(self) -> tuple[str, tuple[str, ...]]:
        return self.method, OBJECTIVES[self.method]

    def _check_objective_set(self, names: list[str]) -> None:
        if "itm" not in names:
            # Zero-shot retrieval, validation and the retrieval task rank by ITM.
            raise InputError(f"{self.method} needs itm (its retrieval ranks by ITM); got {', '.join(names) or 'none'}",
                             field="objectives")

    @property
    def active_objectives(self) -> list[str]:
        """The losses this config trains: ``objectives``, or ITM plus every switched-on part."""
        if self.objectives is not None:
            return list(self.objectives)
        parts = self.parts
        return ["itm"] + [name for name, on in (("mlm", parts.mlm.enabled), ("mim", parts.mim.enabled),
                                                ("ak", parts.knowledge.ak)) if on]

    @property
    def parts(self) -> CoAttentionConfig:
        """``coattention`` as a validated :class:`CoAttentionConfig`."""
        try:
            return CoAttentionConfig.from_dict(self.coattention)
        except InputError as err:
            raise InputError(err.message, field=f"coattention.{err.field}" if err.field else "coattention") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form; ``coattention`` holds every section in full (defaults written out)."""
        data = super().to_dict()
        data["coattention"] = self.parts.to_dict()
        return data

    @classmethod
    def preset(cls, name: str) -> MotorConfig:
        """``<method>_<name>.yaml`` (``tiny`` / ``base``), else the preset file ``<name>.yaml`` itself."""
        for stem in (f"{cls.method}_{name}", name):
            path = PRESETS_DIR / f"{stem}.yaml"
            if path.is_file() and (stem != name or stem.startswith(f"{cls.method}_")):
                return cls.from_yaml(path)
        names = sorted(p.stem for p in PRESETS_DIR.glob(f"{cls.method}_*.yaml"))
        raise InputError(f"no {cls.method} preset {name!r}; available: {', '.join(names)} "
                         f"(or their short names {', '.join(n.split('_', 1)[1] for n in names)})", field="preset")

    def with_parts(self, **sections: dict[str, Any]) -> M3AEConfig:
        """A copy with ``coattention`` sections updated field by field (``with_parts(mim={"enabled": False})``)."""
        data = self.parts.to_dict()
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return dataclasses.replace(self, coattention=data)


@dataclass
class ARLConfig(M3AEConfig):
    """M3AE's fields; ARL's presets switch on ``coattention.knowledge`` ``ak`` / ``rk`` / ``lk``."""

    method: ClassVar[str] = "arl"
