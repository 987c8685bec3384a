"""Write the general-knowledge (GK) graph to files other tools read.

Formats (:data:`EXPORT_FORMATS`):

``pt``
    ``torch.save`` of a dict of tensors — ``visible_mask`` (bool ``(N, N)``), ``node_type_ids``
    (long ``(N,)``), ``edge_index`` (long ``(2, E)``, both directions and self-loops, the True
    entries of the mask) — plus a JSON side-car ``<stem>.nodes.json`` with ``name``,
    ``node_ids``, ``node_words`` and ``node_types`` in tensor row order. Only tensors are saved,
    so :func:`load_gk_tensors` reads it with ``torch.load(weights_only=True)`` (nothing is
    unpickled).
``graphml``
    ``networkx.write_graphml`` of :meth:`kg.gk.GeneralKnowledgeGraph.to_networkx`.
``json``
    :meth:`kg.gk.GeneralKnowledgeGraph.to_dict` (nodes and the undirected edge list by id).

Every file is written to a temporary name beside its target and moved into place, so an export
that fails leaves earlier files intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kg.atomic import write_atomic, write_json_atomic
from kg.gk import NODE_TYPE_NAMES, GeneralKnowledgeGraph

if TYPE_CHECKING:
    import torch

EXPORT_FORMATS = ("pt", "graphml", "json")
SIDECAR_SUFFIX = ".nodes.json"


def sidecar_path(pt_path: str | os.PathLike) -> Path:
    """The JSON side-car of a ``.pt`` export: ``gk.pt`` → ``gk.nodes.json``."""
    pt_path = Path(pt_path)
    return pt_path.with_name(pt_path.stem + SIDECAR_SUFFIX)


def export_gk(gk: GeneralKnowledgeGraph, fmt: str, out: str | os.PathLike) -> list[Path]:
    """Write ``gk`` in format ``fmt`` to ``out``; returns the files written (two for ``pt``).

    Raises:
        ValueError: ``fmt`` is not one of :data:`EXPORT_FORMATS`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pt":
        import torch

        tensors = {
            "visible_mask": gk.visible_mask(),
            "node_type_ids": gk.node_type_ids(),
            "edge_index": gk.edge_index(),
        }
        nodes = {
            "name": gk.name,
            "node_ids": gk.node_ids,
            "node_words": gk.node_words(),
            "node_types": [NODE_TYPE_NAMES[n.type] for n in gk.nodes],
        }
        write_atomic(out, lambda temp: torch.save(tensors, temp))
        sidecar = sidecar_path(out)
        write_json_atomic(sidecar, nodes, indent=2)
        return [out, sidecar]
    if fmt == "graphml":
        import networkx as nx

        graph = gk.to_networkx()
        write_atomic(out, lambda temp: nx.write_graphml(graph, temp))
        return [out]
    if fmt == "json":
        write_json_atomic(out, gk.to_dict(), indent=2, ensure_ascii=False)
        return [out]
    raise ValueError(f"unknown GK export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def export_gk_all(gk: GeneralKnowledgeGraph, out_dir: str | os.PathLike) -> list[Path]:
    """Every format into ``out_dir``: ``<name>.pt`` (+ ``<name>.nodes.json``), ``<name>.graphml``,
    ``<name>.json``, where ``<name>`` is the graph's name. Returns the files written."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for fmt in EXPORT_FORMATS:
        written += export_gk(gk, fmt, out_dir / f"{gk.name}.{fmt}")
    return written


def load_gk_tensors(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Read a ``pt`` export: ``{"visible_mask", "node_type_ids", "edge_index"}`` (shapes above).

    Uses ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
    """
    import torch

    return torch.load(Path(path), map_location="cpu", weights_only=True)

