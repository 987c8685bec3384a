"""The label schema: the CheXpert classes of ``graphs/labels.yaml``, the GK findings, the No Finding rule.

Every reader of the label files goes through this module: the labeler (:mod:`kg.label`), the
lexicon (:mod:`kg.lexicon`), the MOTOR annotation (:mod:`kg.motor_json`), the model's label
prompts and heads, the manifests and the clinical-efficacy metric.

A study carries two label vectors, coded ``1`` positive, ``0`` negative, ``-1`` uncertain and
``None`` / NaN not mentioned:

* the CheXpert classes, in the order of ``graphs/labels.yaml``;
* the GK findings, in the order of ``graphs/chest_gk.yaml`` (column ``gk:<id>`` in the labeler).

``No Finding`` is computed, never mentioned: it is 1 when no concept other than No Finding and the
devices (Support Devices, the GK ``foreign_object``) is positive or uncertain, else blank
(CheXpert's rule, :func:`is_no_finding`).

Typical use::

    from kg.label_schema import label_schema
    schema = label_schema()
    schema.chexpert          # ('Atelectasis', 'Cardiomegaly', ...): 14 names in file order
    schema.gk_findings       # ('normal', 'atelectasis', ...): 20 GK finding ids in graph order
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphs import LABELS, graph_file
from kg.errors import InputError
from kg.files import read_yaml
from kg.gk import load_gk

#: CheXpert class names with a rule of their own (see the module docstring).
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
#: Label column prefix of the GK findings (``gk:effusion``).
GK_PREFIX = "gk:"
GK_NORMAL = "gk:normal"
GK_FOREIGN_OBJECT = "gk:foreign_object"
#: Concepts that never make a study abnormal under the No Finding rule.
NOT_FINDINGS = frozenset({NO_FINDING, SUPPORT_DEVICES, GK_FOREIGN_OBJECT})

#: One label of a manifest row: 1, 0, -1 or ``None`` (not mentioned).
LabelValue = int | None


@dataclass(frozen=True)
class ChexpertClass:
    """One CheXpert class of ``graphs/labels.yaml``.

    Attributes:
        name: class name as CheXpert writes it (``"Pleural Effusion"``), also its label column.
        prompt: text encoded for text-based multi-label classification.
        gk: GK finding ids whose mention implies the class.
        terms: extra surface forms of the class.
    """

    name: str
    prompt: str
    gk: tuple[str, ...]
    terms: tuple[str, ...]

    @property
    def concepts(self) -> tuple[str, ...]:
        """The concepts whose mentions decide the class in synthetic reports: its GK ids + its snake-case name."""
        return self.gk + (concept_name(self.name),)


@dataclass(frozen=True)
class LabelSchema:
    """The label vocabularies of a study.

    Attributes:
        classes: the CheXpert classes in ``labels`` order.
        gk_findings: GK finding ids in ``gk_labels`` order.
    """

    classes: tuple[ChexpertClass, ...]
    gk_findings: tuple[str, ...]

    @property
    def chexpert(self) -> tuple[str, ...]:
        """CheXpert class names in ``labels`` order."""
        return tuple(c.name for c in self.classes)

    @property
    def chexpert_concepts(self) -> tuple[tuple[str, ...], ...]:
        """Per class, the concepts whose mentions decide it (:attr:`ChexpertClass.concepts`)."""
        return tuple(c.concepts for c in self.classes)

    @property
    def prompts(self) -> tuple[str, ...]:
        """Per class, the text encoded for text-based multi-label classification."""
        return tuple(c.prompt for c in self.classes)


def concept_name(class_name: str) -> str:
    """Snake-case concept of a CheXpert class, e.g. ``"Enlarged Cardiomediastinum"`` → ``"enlarged_cardiomediastinum"``."""
    return class_name.lower().replace(" ", "_")


def is_no_finding(found: Iterable[str]) -> bool:
    """CheXpert's No Finding rule.

    Args:
        found: the concepts (class names or ``gk:<id>`` columns) mentioned positively or with
            uncertainty in a report.

    Returns:
        True when none of them is a finding, i.e. all are in :data:`NOT_FINDINGS`.
    """
    return not set(found) - NOT_FINDINGS


def load_chexpert_classes(path: str | Path | None = None) -> list[ChexpertClass]:
    """The CheXpert classes of ``graphs/labels.yaml`` (or ``path``) in file order.

    Raises:
        InputError: naming the file, class and field at fault (no ``chexpert`` list, a class
            without a name, ``gk`` / ``terms`` not a list of strings, duplicate names).
    """
    source = Path(path) if path is not None else graph_file(LABELS)
    data = read_yaml(source, missing="label schema file not found")
    entries = data.get("chexpert") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError("expected a non-empty 'chexpert' list", file=source, field="chexpert")
    classes = []
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
            raise InputError("each class needs a 'name'", file=source, record=f"chexpert[{i}]", field="name")
        name = raw["name"].strip()
        classes.append(
            ChexpertClass(
                name=name,
                prompt=str(raw.get("prompt") or name.lower()),
                gk=_strings(raw.get("gk"), source, name, "gk"),
                terms=_strings(raw.get("terms"), source, name, "terms"),
            )
        )
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise InputError("duplicate class names", file=source, field="chexpert")
    return classes


@functools.lru_cache(maxsize=8)
def label_schema(labels_path: str | Path | None = None, gk_path: str | Path | None = None) -> LabelSchema:
    """The label schema of ``labels_path`` and ``gk_path`` (``None``: the files shipped in ``graphs/``).

    Raises:
        InputError: a class lists a GK id that is not a finding of the graph, No Finding or
            Support Devices is missing, or :func:`load_chexpert_classes` rejects the file.
    """
    source = Path(labels_path) if labels_path is not None else graph_file(LABELS)
    classes = tuple(load_chexpert_classes(source))
    gk_findings = tuple(f.id for f in load_gk(gk_path).findings)
    for cls in classes:
        unknown = [g for g in cls.gk if g not in gk_findings]
        if unknown:
            raise InputError(f"unknown GK findings {unknown}", file=source, record=cls.name, field="gk")
    names = {c.name for c in classes}
    for required in (NO_FINDING, SUPPORT_DEVICES):
        if required not in names:
            raise InputError(f"the CheXpert class {required!r} is missing", file=source, field="chexpert")
    return LabelSchema(classes, gk_findings)


@functools.lru_cache(maxsize=8)
def chexpert_names(labels_path: str | Path | None = None) -> tuple[str, ...]:
    """The CheXpert class names of ``labels_path`` (``None``: ``graphs/labels.yaml``) in file order."""
    return tuple(c.name for c in load_chexpert_classes(labels_path))


def gk_finding_ids() -> tuple[str, ...]:
    """Ids of the shipped GK graph's findings, in graph order (the order of ``gk_labels``)."""
    return label_schema().gk_findings


def _strings(value: Any, source: Path, record: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(
            "must be a list of non-empty strings; quote words YAML reads as booleans (no, yes, on, off)",
            file=source, record=record, field=field,
        )
    return tuple(" ".join(v.split()) for v in value)
