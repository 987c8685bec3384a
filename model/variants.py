"""The knowledge variants of MOTOR (the paper's Table 1): the one list of knowledge switches.

The model config validates ``knowledge`` against it and derives its switches from it, the SK
preparation asks it whether a variant reads SK sentences, the ablation takes its check marks and
default order from it, and the command line offers its names as choices.

=========  ====  ====  ====
variant    GK    SK    MLC
=========  ====  ====  ====
``none``
``gk``     ✓
``sk``           ✓
``gk+sk``  ✓     ✓
``full``   ✓     ✓     ✓
=========  ====  ====  ====
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kg.errors import InputError


@dataclass(frozen=True)
class KnowledgeVariant:
    """One knowledge switch and the paths it enables.

    Attributes:
        name: the switch as configs and the command line write it (``"gk+sk"``).
        gk: the GK encoder and GK-image encoder exist.
        sk: the SK encoder, SK-image encoder and report queue exist (SK sentences are read).
        mlc: text-based multi-label classification (Eq. 7–9) is trained.
    """

    name: str
    gk: bool
    sk: bool
    mlc: bool


#: Every knowledge variant, in the order of the paper's Table 1.
VARIANTS: tuple[KnowledgeVariant, ...] = (
    KnowledgeVariant("none", gk=False, sk=False, mlc=False),
    KnowledgeVariant("gk", gk=True, sk=False, mlc=False),
    KnowledgeVariant("sk", gk=False, sk=True, mlc=False),
    KnowledgeVariant("gk+sk", gk=True, sk=True, mlc=False),
    KnowledgeVariant("full", gk=True, sk=True, mlc=True),
)
KNOWLEDGE_VARIANTS: tuple[str, ...] = tuple(v.name for v in VARIANTS)
_BY_NAME = {v.name: v for v in VARIANTS}


def knowledge_variant(name: str, field: str = "knowledge") -> KnowledgeVariant:
    """The variant called ``name``.

    Raises:
        InputError: ``name`` is not a variant (naming ``field`` and the choices).
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise InputError(f"must be one of {', '.join(KNOWLEDGE_VARIANTS)}; got {name!r}", field=field) from None


@dataclass(frozen=True)
class MethodVariant:
    """A variant of another method, for the ablation (``motor ablate``).

    Attributes:
        name: ``"<method>:<variant>"`` as the command line writes it (``"arl:rk"``).
        method: the registered method (``m3ae``, ``arl``, ``medvill``).
        coattention: the ``model.coattention`` sections it sets (``{"mim": {"enabled": False}}``).
        settings: flat model-config fields it sets (MedViLL's ``{"attention_mask": "s2s"}``).
    """

    name: str
    method: str
    coattention: dict
    settings: dict = field(default_factory=dict)


_ARL_OFF = {"ak": False, "rk": False, "lk": False}

#: M3AE's objective variants, ARL's Table 4 (its knowledge parts one at a time, then all) and
#: MedViLL's mask schemes (:mod:`model.attention_masks`).
METHOD_VARIANTS: tuple[MethodVariant, ...] = (
    MethodVariant("m3ae:mlm", "m3ae", {"mlm": {"enabled": True}, "mim": {"enabled": False}}),
    MethodVariant("m3ae:mim", "m3ae", {"mlm": {"enabled": False}, "mim": {"enabled": True}}),
    MethodVariant("m3ae:full", "m3ae", {"mlm": {"enabled": True}, "mim": {"enabled": True}}),
    MethodVariant("arl:none", "arl", {"knowledge": _ARL_OFF}),
    MethodVariant("arl:ak", "arl", {"knowledge": {**_ARL_OFF, "ak": True}}),
    MethodVariant("arl:rk", "arl", {"knowledge": {**_ARL_OFF, "rk": True}}),
    MethodVariant("arl:lk", "arl", {"knowledge": {**_ARL_OFF, "lk": True}}),
    MethodVariant("arl:full", "arl", {"knowledge": {"ak": True, "rk": True, "lk": True}}),
    # MedViLL's mask study (its Table 3 / Fig. 4): one self-attention mask scheme each.
    *(MethodVariant(f"medvill:{mask}", "medvill", {}, {"attention_mask": mask})
      for mask in ("bi", "s2s", "bar", "bi+s2s", "non_crossing")),
)
METHOD_VARIANT_NAMES: tuple[str, ...] = tuple(v.name for v in METHOD_VARIANTS)
_METHOD_BY_NAME = {v.name: v for v in METHOD_VARIANTS}


def method_variant(name: str) -> MethodVariant | None:
    """The method variant called ``name``, or ``None`` for a MOTOR knowledge variant or an unknown name."""
    return _METHOD_BY_NAME.get(name)
