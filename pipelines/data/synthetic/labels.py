"""The synthetic studies' labelling rules.

The label vectors (``labels``: the 14 CheXpert classes, ``gk_labels``: the 20 GK findings) and
their coding are those of :mod:`kg.label_schema`. Synthetic studies are labelled as follows.

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
    ``None`` (CheXpert's rule, :func:`kg.label_schema.is_no_finding`; a study with only, say,
    scoliosis is "No Finding" in CheXpert terms).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kg.label_schema import NO_FINDING, LabelValue, is_no_finding, label_schema

if TYPE_CHECKING:
    from pipelines.data.synthetic.scene import Scene


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
    found = [name for name, v in zip(schema.chexpert, values) if v in (1, -1)]
    values[schema.chexpert.index(NO_FINDING)] = 1 if is_no_finding(found) else None
    return values
