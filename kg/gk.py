"""General-knowledge (GK) graph of MOTOR: nodes from ``graphs/*.yaml``, edges from the paper's rules.

MOTOR (Lin et al.) builds a 28-node chest graph: one root, 7 organ/tissue nodes and 20 findings.
Edges (paper, Sec. "General knowledge"):

* the root connects to every node;
* organ nodes connect to each other;
* findings linked to the same organ connect to each other and to that organ.

Findings without an organ (``organ: null``: normal, other finding, foreign object) hang off the
root only. Self-loops are on, so every node attends to itself when the adjacency is used as the
transformer's visible mask (Eq. 2).

Node order — and so the row/column order of every tensor exported here — is: root, organs in file
order, findings in file order.

Typical use::

    from kg.gk import load_gk
    gk = load_gk()                      # graphs/chest_gk.yaml
    mask = gk.visible_mask()            # torch.bool (28, 28), symmetric, diagonal True
    types = gk.node_type_ids()          # torch.long (28,), 0 root / 1 organ / 2 finding
    data = gk.to_pyg()                  # torch_geometric.data.Data with the same edge set
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from graphs import DEFAULT_GK, graph_file
from kg.errors import InputError

if TYPE_CHECKING:  # heavy imports only for type checkers
    import networkx as nx
    import torch

ROOT, ORGAN, FINDING = 0, 1, 2
NODE_TYPE_NAMES = ("root", "organ", "finding")


class GKValidationError(InputError):
    """A GK definition file breaks the schema (counts, references, duplicates)."""


@dataclass(frozen=True)
class GKNode:
    """One node of the GK graph.

    Attributes:
        index: row/column of the node in every exported tensor.
        id: stable identifier (``"cardiomegaly"``).
        type: 0 root, 1 organ, 2 finding (the structure id of the embedding e_l, Eq. 1).
        organ: for findings, the id of the organ node they are linked to, else ``None``.
        words: display words, joined with spaces for the word embedding e_w.
        synonyms: other lower-case surface forms for text matching.
    """

    index: int
    id: str
    type: int
    organ: str | None
    words: tuple[str, ...]
    synonyms: tuple[str, ...]

    @property
    def text(self) -> str:
        """The node's display text (its words joined by spaces), e.g. ``"airspace disease"``."""
        return " ".join(self.words)

    @property
    def surface_forms(self) -> tuple[str, ...]:
        """Display text followed by the synonyms, lower case and without duplicates."""
        forms = [self.text.lower()] + [s.lower() for s in self.synonyms]
        return tuple(dict.fromkeys(forms))


class GeneralKnowledgeGraph:
    """The GK graph: nodes plus the edge rules of the paper. Build it with :func:`load_gk`."""

    def __init__(self, name: str, nodes: list[GKNode], source: Path | None = None) -> None:
        self.name = name
        self.nodes = list(nodes)
        self.source = source
        self._by_id = {node.id: node for node in self.nodes}

    # ------------------------------------------------------------------ nodes
    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return (
            f"GeneralKnowledgeGraph(name={self.name!r}, nodes={len(self)}, "
            f"organs={len(self.organs)}, findings={len(self.findings)}, edges={len(self.edges())})"
        )

    @property
    def root(self) -> GKNode:
        return self.nodes[0]

    @property
    def organs(self) -> list[GKNode]:
        return [n for n in self.nodes if n.type == ORGAN]

    @property
    def findings(self) -> list[GKNode]:
        return [n for n in self.nodes if n.type == FINDING]

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def node(self, node_id: str) -> GKNode:
        """The node with this id; ``KeyError`` naming the known ids otherwise."""
        try:
            return self._by_id[node_id]
        except KeyError:
            raise KeyError(f"unknown GK node {node_id!r}; known: {', '.join(self.node_ids)}") from None

    def index(self, node_id: str) -> int:
        """Row/column of ``node_id`` in the exported tensors."""
        return self.node(node_id).index

    def node_words(self) -> list[str]:
        """Display text of every node in node order (input of the word embedding e_w, Eq. 1)."""
        return [n.text for n in self.nodes]

    # ------------------------------------------------------------------ edges
    def edges(self) -> list[tuple[int, int]]:
        """Undirected edges ``(i, j)`` with ``i < j`` by the paper's rules, sorted; no self-loops."""
        pairs: set[tuple[int, int]] = set()

        def add(a: int, b: int) -> None:
            if a != b:
                pairs.add((min(a, b), max(a, b)))

        root = self.root.index
        for node in self.nodes:
            add(root, node.index)
        organs = self.organs
        for a in organs:
            for b in organs:
                add(a.index, b.index)
        by_organ: dict[str, list[GKNode]] = {}
        for f in self.findings:
            if f.organ is not None:
                by_organ.setdefault(f.organ, []).append(f)
        for organ_id, members in by_organ.items():
            organ_index = self.index(organ_id)
            for f in members:
                add(organ_index, f.index)
                for g in members:
                    add(f.index, g.index)
        return sorted(pairs)

    def visible_mask(self, self_loops: bool = True) -> "torch.Tensor":
        """Adjacency used as the GK encoder's visible mask (Eq. 2).

        Returns:
            ``torch.bool`` tensor of shape ``(N, N)``; ``mask[i, j]`` is True when node ``i`` may
            attend to node ``j``. Symmetric; the diagonal is True when ``self_loops``.
        """
        import torch

        n = len(self)
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i, j in self.edges():
            mask[i, j] = True
            mask[j, i] = True
        if self_loops:
            mask.fill_diagonal_(True)
        return mask

    def node_type_ids(self) -> "torch.Tensor":
        """Structure ids for the embedding e_l (Eq. 1): ``torch.long`` of shape ``(N,)``, 0/1/2."""
        import torch

        return torch.tensor([n.type for n in self.nodes], dtype=torch.long)

    def to_networkx(self) -> "nx.Graph":
        """Undirected networkx graph; node keys are ids, attributes: index, type, organ, words, synonyms."""
        import networkx as nx

        graph = nx.Graph(name=self.name)
        for n in self.nodes:
            graph.add_node(
                n.id,
                index=n.index,
                type=NODE_TYPE_NAMES[n.type],
                organ=n.organ or "",
                words=" ".join(n.words),
                synonyms="|".join(n.synonyms),
            )
        for i, j in self.edges():
            graph.add_edge(self.nodes[i].id, self.nodes[j].id)
        return graph

    def edge_index(self, self_loops: bool = True) -> "torch.Tensor":
        """COO edges in both directions (PyG convention): ``torch.long`` of shape ``(2, E)``.

        The edge set equals the True entries of :meth:`visible_mask` with the same ``self_loops``.
        """
        return self.visible_mask(self_loops=self_loops).nonzero().t().contiguous()

    def to_pyg(self, self_loops: bool = True) -> Any:
        """A ``torch_geometric.data.Data`` with ``edge_index``, ``node_type`` and ``x`` (= node_type).

        ``node_id`` and ``node_words`` carry the node ids and texts as Python lists.
        """
        from torch_geometric.data import Data

        node_type = self.node_type_ids()
        return Data(
            x=node_type.view(-1, 1).clone(),
            edge_index=self.edge_index(self_loops=self_loops),
            node_type=node_type,
            node_id=self.node_ids,
            node_words=self.node_words(),
            num_nodes=len(self),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: nodes (with type names) and the undirected edge list by id."""
        return {
            "name": self.name,
            "nodes": [
                {
                    "index": n.index,
                    "id": n.id,
                    "type": NODE_TYPE_NAMES[n.type],
                    "organ": n.organ,
                    "words": list(n.words),
                    "synonyms": list(n.synonyms),
                }
                for n in self.nodes
            ],
            "edges": [[self.nodes[i].id, self.nodes[j].id] for i, j in self.edges()],
        }

    def match_findings(self, text: str) -> list[str]:
        """Ids of finding nodes whose display text or a synonym occurs in ``text`` (whole words)."""
        import re

        lowered = " " + re.sub(r"[^a-z0-9]+", " ", text.lower()) + " "
        hits = []
        for f in self.findings:
            if any(f" {form} " in lowered for form in f.surface_forms):
                hits.append(f.id)
        return hits


# ---------------------------------------------------------------------- loading
def _str_list(value: Any, *, file: Path, record: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GKValidationError("must be a list of non-empty strings", file=file, record=record, field=field)
    return tuple(v.strip() for v in value)


def _node_spec(raw: Any, *, file: Path, record: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise GKValidationError("node must be a mapping with at least 'id' and 'words'", file=file, record=record)
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id.strip():
        raise GKValidationError("missing or empty node id", file=file, record=record, field="id")
    unknown = set(raw) - {"id", "words", "synonyms", "organ"}
    if unknown:
        raise GKValidationError(f"unknown keys {sorted(unknown)}", file=file, record=node_id)
    words = _str_list(raw.get("words"), file=file, record=node_id, field="words")
    if not words:
        raise GKValidationError("a node needs at least one display word", file=file, record=node_id, field="words")
    synonyms = _str_list(raw.get("synonyms"), file=file, record=node_id, field="synonyms")
    return {"id": node_id.strip(), "words": words, "synonyms": synonyms, "organ": raw.get("organ")}


def parse_gk(data: Any, source: Path, expected_counts: tuple[int, int, int] | None = None) -> GeneralKnowledgeGraph:
    """Validate a parsed GK definition and build the graph.

    Args:
        data: the YAML document (a mapping with ``root``, ``organs``, ``findings``).
        source: file it came from, for error messages.
        expected_counts: ``(organs, findings, total)`` to enforce, or ``None`` for any size.

    Raises:
        GKValidationError: naming the file, node and field at fault.
    """
    if not isinstance(data, dict):
        raise GKValidationError("top level must be a mapping with root, organs and findings", file=source)
    for key in ("root", "organs", "findings"):
        if key not in data:
            raise GKValidationError("missing section", file=source, field=key)
    if not isinstance(data["organs"], list) or not isinstance(data["findings"], list):
        raise GKValidationError("'organs' and 'findings' must be lists", file=source)

    nodes: list[GKNode] = []
    seen: dict[str, str] = {}

    def add(spec: dict[str, Any], node_type: int, organ: str | None, section: str) -> None:
        if spec["id"] in seen:
            raise GKValidationError(
                f"duplicate node id (already used in {seen[spec['id']]})", file=source, record=spec["id"], field="id"
            )
        seen[spec["id"]] = section
        nodes.append(GKNode(len(nodes), spec["id"], node_type, organ, spec["words"], spec["synonyms"]))

    root = _node_spec(data["root"], file=source, record="root")
    if root["organ"] is not None:
        raise GKValidationError("the root has no organ", file=source, record=root["id"], field="organ")
    add(root, ROOT, None, "root")
    for i, raw in enumerate(data["organs"]):
        spec = _node_spec(raw, file=source, record=f"organs[{i}]")
        if spec["organ"] is not None:
            raise GKValidationError("organ nodes take no 'organ' key", file=source, record=spec["id"], field="organ")
        add(spec, ORGAN, None, "organs")
    organ_ids = {n.id for n in nodes if n.type == ORGAN}
    for i, raw in enumerate(data["findings"]):
        spec = _node_spec(raw, file=source, record=f"findings[{i}]")
        organ = spec["organ"]
        if organ is not None and organ not in organ_ids:
            raise GKValidationError(
                f"unknown organ {organ!r}; organs are {sorted(organ_ids)}", file=source, record=spec["id"], field="organ"
            )
        add(spec, FINDING, organ, "findings")

    graph = GeneralKnowledgeGraph(str(data.get("name", source.stem)), nodes, source)
    if expected_counts is not None:
        n_organs, n_findings, n_total = expected_counts
        got = (len(graph.organs), len(graph.findings), len(graph))
        if got != (n_organs, n_findings, n_total):
            raise GKValidationError(
                f"expected {n_organs} organs, {n_findings} findings, {n_total} nodes; got {got[0]}, {got[1]}, {got[2]}",
                file=source,
            )
    return graph


#: (organs, findings, total nodes) of the paper's chest graph, enforced on the shipped file.
CHEST_GK_COUNTS = (7, 20, 28)


def load_gk(path: str | Path | None = None) -> GeneralKnowledgeGraph:
    """Load and validate a GK graph definition.

    Args:
        path: a YAML file of the ``graphs/chest_gk.yaml`` schema; ``None`` loads the shipped chest
            graph (and checks it has the paper's 1 + 7 + 20 nodes). User graphs may be any size.
    """
    if path is None:
        source = graph_file(DEFAULT_GK)
        counts: tuple[int, int, int] | None = CHEST_GK_COUNTS
    else:
        source = Path(path)
        counts = None
        if not source.is_file():
            raise GKValidationError("GK definition file not found", file=source)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise GKValidationError(f"not valid YAML: {err}", file=source) from err
    return parse_gk(data, source, counts)
