"""IU-Xray MeSH annotations → GK findings, the reference for evaluating the labeler on IU-Xray.

IU-Xray's ``MeSH`` column lists ``;``-separated terms, each a heading with ``/``-separated
qualifiers (``"Opacity/lung/base/left/mild"``, ``"Cardiomegaly/borderline"``, ``"normal"``).
``graphs/mesh_to_gk.yaml`` maps headings (and heading + qualifier) to GK finding ids; its header
documents the schema and the mapping choices.

Typical use::

    from kg.mesh import load_mesh_mapping
    mapping = load_mesh_mapping()
    mapping.findings_of("Cardiomegaly/borderline;Pulmonary Artery/enlarged")  # {'cardiomegaly', 'other_finding'}
    mapping.unmapped                                                        # Counter of headings with no GK counterpart
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from graphs import graph_file
from kg.errors import InputError
from kg.gk import load_gk

MESH_TO_GK = "mesh_to_gk.yaml"


@dataclass
class MeshMapping:
    """MeSH heading → GK findings, with qualifier-specific overrides.

    Attributes:
        headings: lower-case heading → (default finding ids, {lower-case qualifier: finding ids}).
        ignore: headings that are not findings.
        exclude: headings marking a report as not annotated.
        unmapped: headings seen by :meth:`findings_of` with no mapping, with their counts.
    """

    headings: dict[str, tuple[frozenset[str], dict[str, frozenset[str]]]]
    ignore: frozenset[str]
    exclude: frozenset[str]
    unmapped: Counter[str] = field(default_factory=Counter)

    def findings_of(self, mesh: str) -> set[str] | None:
        """GK finding ids of one report's MeSH field; ``None`` when the report is to be left out."""
        found: set[str] = set()
        for term in mesh.split(";"):
            parts = [" ".join(p.lower().split()) for p in term.split("/")]
            heading, qualifiers = parts[0], parts[1:]
            if not heading:
                continue
            if heading in self.exclude:
                return None
            if heading in self.ignore:
                continue
            if heading not in self.headings:
                self.unmapped[heading] += 1
                continue
            default, by_qualifier = self.headings[heading]
            hits = [by_qualifier[q] for q in qualifiers if q in by_qualifier]
            found.update(*hits) if hits else found.update(default)
        return found


def load_mesh_mapping(path: str | Path | None = None) -> MeshMapping:
    """Read and validate ``graphs/mesh_to_gk.yaml`` (or ``path``) against the GK findings.

    Raises:
        InputError: naming the file, heading and field at fault (unknown finding id, bad shape).
    """
    source = Path(path) if path is not None else graph_file(MESH_TO_GK)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"cannot read the MeSH mapping: {err}", file=source) from err
    if not isinstance(data, dict) or not isinstance(data.get("headings"), dict):
        raise InputError("expected a mapping with 'headings'", file=source, field="headings")
    findings = {f.id for f in load_gk().findings}

    def ids(value: Any, heading: str, where: str) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError("must be a list of GK finding ids", file=source, record=heading, field=where)
        unknown = sorted(set(value) - findings)
        if unknown:
            raise InputError(f"unknown GK findings {unknown}", file=source, record=heading, field=where)
        return frozenset(value)

    headings = {}
    for heading, value in data["headings"].items():
        key = " ".join(str(heading).lower().split())
        if isinstance(value, list):
            headings[key] = (ids(value, heading, "headings"), {})
        elif isinstance(value, dict) and set(value) <= {"default", "qualifiers"}:
            qualifiers = value.get("qualifiers") or {}
            if not isinstance(qualifiers, dict):
                raise InputError("must map qualifiers to finding ids", file=source, record=heading, field="qualifiers")
            headings[key] = (
                ids(value.get("default") or [], heading, "default"),
                {str(q).lower(): ids(v, heading, f"qualifiers.{q}") for q, v in qualifiers.items()},
            )
        else:
            raise InputError("must be a list of finding ids or {default, qualifiers}", file=source, record=heading)
    return MeshMapping(
        headings=headings,
        ignore=frozenset(" ".join(h.lower().split()) for h in data.get("ignore") or []),
        exclude=frozenset(" ".join(h.lower().split()) for h in data.get("exclude_reports") or []),
    )
