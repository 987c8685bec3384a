"""The GK graph against the paper's edge rules, recomputed here from the YAML alone."""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
import torch
import yaml

from graphs import graph_file
from kg.gk import CHEST_GK_COUNTS, GKValidationError, load_gk, parse_gk

SHIPPED = graph_file("chest_gk.yaml")


def rule_mask(document: dict) -> tuple[list[str], list[list[bool]]]:
    """Node ids and the visible mask by MOTOR's rules, from a GK YAML document.

    Rules: root <-> every node; organ <-> organ; finding <-> its organ; finding <-> finding of the
    same organ; organ-less findings hang off the root only; self-loops on.
    """
    root = document["root"]["id"]
    organs = [o["id"] for o in document["organs"]]
    finding_organ = {f["id"]: f.get("organ") for f in document["findings"]}
    ids = [root, *organs, *finding_organ]

    def visible(a: str, b: str) -> bool:
        if a == b or root in (a, b):
            return True
        if a in organs and b in organs:
            return True
        if a in finding_organ and b in organs:
            return finding_organ[a] == b
        if b in finding_organ and a in organs:
            return finding_organ[b] == a
        return finding_organ[a] is not None and finding_organ[a] == finding_organ[b]

    return ids, [[visible(a, b) for b in ids] for a in ids]


def shipped_document() -> dict:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_shipped_graph_matches_the_paper_rules_entry_by_entry() -> None:
    gk = load_gk()
    ids, expected = rule_mask(shipped_document())
    assert gk.node_ids == ids
    assert (len(gk.organs), len(gk.findings), len(gk)) == CHEST_GK_COUNTS == (7, 20, 28)
    mask = gk.visible_mask()
    assert mask.dtype == torch.bool and mask.shape == (28, 28)
    assert mask.tolist() == expected
    assert torch.equal(mask, mask.T)
    assert bool(mask.diagonal().all())
    without_loops = gk.visible_mask(self_loops=False)
    assert not bool(without_loops.diagonal().any())
    assert torch.equal(without_loops | torch.eye(28, dtype=torch.bool), mask)


def test_hand_checked_entries() -> None:
    gk = load_gk()
    mask = gk.visible_mask()

    def sees(a: str, b: str) -> bool:
        return bool(mask[gk.index(a), gk.index(b)])

    assert sees("chest", "foreign_object") and sees("cardiomegaly", "chest")
    assert sees("heart", "lung")
    assert sees("effusion", "pleural") and sees("effusion", "pneumothorax")
    assert not sees("effusion", "lung")
    assert not sees("cardiomegaly", "pneumonia")
    assert not sees("normal", "heart") and not sees("normal", "other_finding")
    assert sees("normal", "normal")


def test_node_types() -> None:
    gk = load_gk()
    document = shipped_document()
    expected = [0] + [1] * len(document["organs"]) + [2] * len(document["findings"])
    types = gk.node_type_ids()
    assert types.dtype == torch.long and types.tolist() == expected


def test_edge_index_and_pyg_equal_the_mask_edges() -> None:
    gk = load_gk()
    mask = gk.visible_mask()
    mask_edges = {(i, j) for i in range(28) for j in range(28) if mask[i, j]}
    edge_index = gk.edge_index()
    assert edge_index.dtype == torch.long and edge_index.shape == (2, len(mask_edges))
    assert set(map(tuple, edge_index.t().tolist())) == mask_edges
    data = gk.to_pyg()
    assert data.num_nodes == 28
    assert set(map(tuple, data.edge_index.t().tolist())) == mask_edges
    assert data.node_type.tolist() == gk.node_type_ids().tolist()
    no_loops = gk.to_pyg(self_loops=False)
    assert set(map(tuple, no_loops.edge_index.t().tolist())) == {(i, j) for i, j in mask_edges if i != j}


def test_networkx_and_dict_edges() -> None:
    gk = load_gk()
    ids, expected = rule_mask(shipped_document())
    undirected = {frozenset((ids[i], ids[j])) for i in range(28) for j in range(i + 1, 28) if expected[i][j]}
    graph = gk.to_networkx()
    assert isinstance(graph, nx.Graph) and graph.number_of_nodes() == 28
    assert {frozenset(e) for e in graph.edges()} == undirected
    assert graph.nodes["effusion"]["organ"] == "pleural" and graph.nodes["chest"]["type"] == "root"
    assert {frozenset(e) for e in gk.to_dict()["edges"]} == undirected
    assert len(gk.edges()) == len(undirected)


def test_user_graph_of_another_size_loads(tmp_path: Path) -> None:
    document = {
        "name": "knee",
        "root": {"id": "knee", "words": ["knee"]},
        "organs": [{"id": "bone", "words": ["bone"]}, {"id": "cartilage", "words": ["cartilage"]}],
        "findings": [
            {"id": "fracture", "organ": "bone", "words": ["fracture"]},
            {"id": "erosion", "organ": "bone", "words": ["erosion"]},
            {"id": "tear", "organ": "cartilage", "words": ["tear"], "synonyms": ["torn"]},
            {"id": "normal", "organ": None, "words": ["normal"]},
        ],
    }
    gk = load_gk(write_yaml(tmp_path / "knee.yaml", document))
    ids, expected = rule_mask(document)
    assert gk.name == "knee" and gk.node_ids == ids and len(gk) == 7
    assert gk.visible_mask().tolist() == expected
    assert gk.node_type_ids().tolist() == [0, 1, 1, 2, 2, 2, 2]


def test_shipped_counts_are_enforced(tmp_path: Path) -> None:
    document = shipped_document()
    document["findings"].pop()
    path = write_yaml(tmp_path / "short.yaml", document)
    with pytest.raises(GKValidationError, match="expected 7 organs, 20 findings, 28 nodes; got 7, 19, 27") as err:
        parse_gk(document, path, CHEST_GK_COUNTS)
    assert err.value.file == str(path)
    assert len(load_gk(path)) == 27  # a user file may have any size


@pytest.mark.parametrize(
    ("edit", "record", "field", "message"),
    [
        (lambda d: d["findings"].append({"id": "edema", "organ": "lung", "words": ["edema"]}),
         "edema", "id", "duplicate node id"),
        (lambda d: d["findings"][0].update(organ="liver"), "cardiomegaly", "organ", "unknown organ 'liver'"),
        (lambda d: d.pop("organs"), None, "organs", "missing section"),
        (lambda d: d["organs"][1].update(words=[]), "spine", "words", "at least one display word"),
        (lambda d: d["organs"][0].update(organ="lung"), "heart", "organ", "organ nodes take no 'organ' key"),
        (lambda d: d["findings"][2].pop("id"), "findings[2]", "id", "missing or empty node id"),
    ],
)
def test_validation_errors_name_file_record_and_field(tmp_path: Path, edit, record, field, message) -> None:
    document = shipped_document()
    edit(document)
    path = write_yaml(tmp_path / "bad.yaml", document)
    with pytest.raises(GKValidationError) as err:
        load_gk(path)
    assert (err.value.file, err.value.record, err.value.field) == (str(path), record, field)
    assert message in str(err.value) and str(err.value).startswith(str(path))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("root: {id: chest\norgans: [", encoding="utf-8")
    with pytest.raises(GKValidationError, match="not valid YAML") as err:
        load_gk(path)
    assert err.value.file == str(path)
    with pytest.raises(GKValidationError, match="GK definition file not found"):
        load_gk(tmp_path / "absent.yaml")
