"""Label sets of the manifests (read from ``graphs/``) and the synthetic studies' labelling rules.

A manifest row carries two label vectors, coded ``1`` positive, ``0`` negative, ``-1`` uncertain,
``None`` not mentioned:

* ``labels``: the 14 CheXpert classes in the order of ``graphs/labels.yaml``;
* ``gk_labels``: the 20 GK findings in the order of ``graphs/chest_gk.yaml``.

Synthetic studies are labelled as follows.

* ``gk_labels`` is the image's ground truth, complete: 1 when the finding is drawn, 0 when it is
  not, -1 for a pneumonia the report hedges (its opacity is drawn; whether it is a pneumonia is
  not known). ``normal`` is 1 exactly when no other finding is present.
* ``labels`` follows CheXpert's report semantics, from what the report says: a class is 1 when one
  of its concepts is mentioned positively, else -1 when one is mentioned with uncertainty, else 0
  when one is negated ("No pleural effusion"), else ``None``. A class's concepts are the GK
  findings of its ``gk:`` list plus its own snake-case name, which the writer uses for the two
  classes without a GK node:

  - ``Consolidation``: lobar consolidation (a consolidated ``airspace_disease``, incl. lobar
    pneumonia) is always written with the word "consolidation" and is positive; "No focal
    consolidation" negates it.
  - ``Enlarged Cardiomediastinum``: positive when the cardiomediastinal silhouette is written as
    enlarged (one of the cardiomegaly phrasings), 0 when written "within normal limits".
  - ``No Finding``: 1 when no class other than No Finding and Support Devices is 1 or -1, else
    ``None`` (CheXpert's rule; a study with only, say, scoliosis is "No Finding" in CheXpert terms).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import yaml

from graphs import LABELS, graph_file
from kg.errors import InputError
from kg.gk import load_gk

if TYPE_CHECKING:
    from pipelines.data.scene import Scene

#: CheXpert class names with a rule of their own (see module docstring).
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

LabelValue = int | None


@dataclass(frozen=True)
class LabelSchema:
    """The label vocabularies of a manifest.

    Attributes:
        chexpert: CheXpert class names in ``labels`` order.
        chexpert_concepts: per class, the concepts whose mentions decide it (GK ids + own name).
        gk_findings: GK finding ids in ``gk_labels`` order.
    """

    chexpert: tuple[str, ...]
    chexpert_concepts: tuple[tuple[str, ...], ...]
    gk_findings: tuple[str, ...]


@lru_cache(maxsize=1)
def gk_finding_ids() -> tuple[str, ...]:
    """Ids of the shipped GK graph's findings, in graph order (the order of ``gk_labels``)."""
    return tuple(f.id for f in load_gk().findings)


def concept_name(class_name: str) -> str:
    """Snake-case concept of a CheXpert class, e.g. ``"Enlarged Cardiomediastinum"`` → ``"enlarged_cardiomediastinum"``."""
    return class_name.lower().replace(" ", "_")


@lru_cache(maxsize=1)
def label_schema() -> LabelSchema:
    """The shipped label schema (``graphs/labels.yaml`` + ``graphs/chest_gk.yaml``)."""
    path = graph_file(LABELS)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = data.get("chexpert") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError("missing or empty list", file=path, field="chexpert")
    gk_findings = gk_finding_ids()
    names, concepts = [], []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise InputError("a class needs a name", file=path, record=f"chexpert[{i}]", field="name")
        gk = tuple(entry.get("gk") or ())
        unknown = [g for g in gk if g not in gk_findings]
        if unknown:
            raise InputError(f"unknown GK findings {unknown}", file=path, record=name, field="gk")
        names.append(name)
        concepts.append(gk + (concept_name(name),))
    for required in (NO_FINDING, SUPPORT_DEVICES):
        if required not in names:
            raise InputError(f"the CheXpert class {required!r} is missing", file=path, field="chexpert")
    return LabelSchema(tuple(names), tuple(concepts), gk_findings)


def gk_truth(scene: "Scene") -> list[int]:
    """Image ground truth over the GK findings (length 20): 1 drawn, 0 absent, -1 hedged pneumonia."""
    values = []
    for fid in label_schema().gk_findings:
        instance = scene.get(fid)
        if fid == "normal":
            values.append(int(scene.is_normal))
        elif instance is None:
            values.append(0)
        else:
            values.append(-1 if instance.uncertain else 1)
    return values


def chexpert_from_mentions(mentions: dict[str, str]) -> list[LabelValue]:
    """CheXpert labels (length 14) from a report's concept mentions (``"+"``, ``"?"``, ``"-"``)."""
    schema = label_schema()
    values: list[LabelValue] = []
    for concepts in schema.chexpert_concepts:
        polarities = {mentions.get(c) for c in concepts}
        values.append(1 if "+" in polarities else -1 if "?" in polarities else 0 if "-" in polarities else None)
    pathology = [
        v for name, v in zip(schema.chexpert, values) if name not in (NO_FINDING, SUPPORT_DEVICES)
    ]
    values[schema.chexpert.index(NO_FINDING)] = None if any(v in (1, -1) for v in pathology) else 1
    return values
