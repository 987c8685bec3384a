"""Data files of motor-kg: the general-knowledge graph and the label sets.

The YAML files beside this module are the single source of node lists, label names and
synonyms; code reads them through :func:`graph_file` and never repeats the lists.
"""
from __future__ import annotations

from pathlib import Path

GRAPHS_DIR = Path(__file__).resolve().parent
DEFAULT_GK = "chest_gk.yaml"
LABELS = "labels.yaml"


def graph_file(name: str = DEFAULT_GK) -> Path:
    """Path of a data file shipped in ``graphs/`` (e.g. ``"chest_gk.yaml"``, ``"labels.yaml"``)."""
    path = GRAPHS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no graph data file {name!r} in {GRAPHS_DIR}")
    return path
