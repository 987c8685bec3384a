"""TransE + GAT entity embeddings: learning, evaluation, determinism, save/load and ``kg embed``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kg.cli import main as kg_main
from kg.embeddings import EmbedConfig, load, read_triples, train_embeddings
from kg.errors import InputError
from kg.store import atomic_build

CLUSTERS = 8
CLUSTER_SIZE = 8
SMALL = EmbedConfig(dim=8, epochs=3, gat_epochs=3, batch_size=64)


def clustered_triples(clusters: int = CLUSTERS, size: int = CLUSTER_SIZE) -> list[tuple[str, str, str]]:
    """A learnable toy KG: each organ has ``size`` findings located at it, chained by co-occurrence."""
    triples = []
    for c in range(clusters):
        for j in range(size):
            finding = f"finding{c}_{j}"
            triples.append((finding, "located_at", f"organ{c}"))
            triples.append((f"organ{c}", "location_of", finding))
            triples.append((finding, "co_occurs", f"finding{c}_{(j + 1) % size}"))
    return triples


def cluster_of(label: str) -> str:
    return label.removeprefix("finding").removeprefix("organ").split("_")[0]


# Graphs this small train fastest on one thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    config = EmbedConfig(dim=32, epochs=100, gat_epochs=100, batch_size=128, seed=0)
    return train_embeddings(clustered_triples(), config, progress=False)


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory) -> Path:
    return trained.save_to_directory(tmp_path_factory.mktemp("embeddings") / "out")


def brute_force_filtered_mrr(triples, entities, relations, transe, relation_transe, seed) -> float:
    """PyKEEN's realistic filtered MRR of the test split, recomputed from the saved vectors.

    TransE scores ``-||h + r - t||_1``; each test triplet is ranked once for its head and once for
    its tail among all entities, other known triplets removed, ties counted half.
    """
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory.from_labeled_triples(np.array(triples, dtype=str))
    _, _, testing = factory.split([0.8, 0.1, 0.1], random_state=seed)
    assert [label for label, _ in sorted(factory.entity_to_id.items(), key=lambda kv: kv[1])] == entities
    assert [label for label, _ in sorted(factory.relation_to_id.items(), key=lambda kv: kv[1])] == relations
    known = {tuple(row) for row in factory.mapped_triples.tolist()}
    e = transe.astype(np.float64)
    r = relation_transe.astype(np.float64)
    reciprocal = []
    for h, rel, t in testing.mapped_triples.tolist():
        tail_scores = -np.abs(e[h] + r[rel] - e).sum(axis=1)
        head_scores = -np.abs(e + r[rel] - e[t]).sum(axis=1)
        for scores, true, is_known in (
            (tail_scores, t, lambda x: (h, rel, x) in known),
            (head_scores, h, lambda x: (x, rel, t) in known),
        ):
            candidates = [x for x in range(len(entities)) if x == true or not is_known(x)]
            better = sum(scores[x] > scores[true] for x in candidates)
            ties = sum(scores[x] == scores[true] for x in candidates)
            reciprocal.append(1.0 / (better + (ties + 1) / 2))
    return float(np.mean(reciprocal))


def test_transe_ranks_held_out_triplets_far_above_random(trained):
    test = trained.metrics["transe"]["test"]
    random = trained.metrics["random_baseline"]["test"]
    assert test["mean_reciprocal_rank"] > 0.35
    assert test["mean_reciprocal_rank"] > 4 * random["mean_reciprocal_rank"]
    assert test["hits_at_10"] > random["hits_at_10"] + 0.4
    assert 0 <= test["hits_at_1"] <= test["hits_at_3"] <= test["hits_at_10"] <= 1


def test_reported_mrr_matches_brute_force_ranking_of_saved_vectors(trained):
    expected = brute_force_filtered_mrr(clustered_triples(), trained.entities, trained.relations,
                                        trained.transe, trained.relation_transe, seed=0)
    assert trained.metrics["transe"]["test"]["mean_reciprocal_rank"] == pytest.approx(expected, abs=1e-4)


def test_split_sizes_cover_every_distinct_triplet(trained):
    split = trained.metrics["split"]
    assert split["training"] + split["validation"] + split["testing"] == len(set(clustered_triples()))
    assert trained.metrics["entities"] == CLUSTERS * (CLUSTER_SIZE + 1)
    assert trained.relations == ["co_occurs", "located_at", "location_of"]


def test_gat_loss_falls_and_vectors_stay_near_transe(trained):
    gat = trained.metrics["gat"]
    assert gat["loss_last"] < 0.9 * gat["loss_first"]
    assert trained.gat.shape == trained.transe.shape
    assert not np.array_equal(trained.gat, trained.transe)
    drift = np.linalg.norm(trained.gat - trained.transe, axis=1).mean()
    assert drift < np.linalg.norm(trained.transe, axis=1).mean()
    assert 0.5 < gat["heldout_auc_gat"] <= 1.0


def test_nearest_neighbours_are_members_of_the_same_cluster(saved):
    embeddings = load(saved)
    for c in range(CLUSTERS):
        for name in (f"organ{c}", f"finding{c}_0", f"finding{c}_5"):
            neighbours = embeddings.nearest(name, k=3)
            assert [cluster_of(label) for label, _ in neighbours] == [str(c)] * 3, (name, neighbours)


def test_nearest_reports_cosine_similarity_in_descending_order(saved):
    embeddings = load(saved)
    matrix = embeddings.matrix("transe").astype(np.float64)
    row = embeddings.index("organ2")
    cosine = matrix @ matrix[row] / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(matrix[row]))
    cosine[row] = -np.inf
    order = np.argsort(-cosine)[:5]
    result = embeddings.nearest("organ2", k=5, kind="transe")
    assert [label for label, _ in result] == [embeddings.entities[i] for i in order]
    assert [score for _, score in result] == pytest.approx(cosine[order].tolist())


def test_save_load_round_trip_is_exact(trained, saved):
    embeddings = load(saved)
    assert np.array_equal(embeddings.matrix("transe"), trained.transe)
    assert np.array_equal(embeddings.matrix("gat"), trained.gat)
    assert np.array_equal(embeddings.tensors["relation_transe"], trained.relation_transe)
    assert embeddings.entities == trained.entities
    assert embeddings.relations == trained.relations
    assert np.array_equal(embeddings.vector("finding3_1"), trained.gat[trained.entities.index("finding3_1")])
    assert np.array_equal(embeddings.vector("FINDING3_1", kind="transe"),
                          trained.transe[trained.entities.index("finding3_1")])
    metrics = json.loads((saved / "metrics.json").read_text())
    assert metrics["config"]["dim"] == 32
    assert metrics["transe"] == trained.metrics["transe"]


def test_unknown_entity_names_the_closest_labels(saved):
    with pytest.raises(InputError, match="finding3_1"):
        load(saved).vector("finding3_1x")


def test_load_names_the_missing_tensor_file(tmp_path):
    with pytest.raises(InputError, match="missing entity_embeddings.safetensors"):
        load(tmp_path)


def test_load_rejects_incomplete_or_corrupt_directories(saved, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    (copy / "relations.json").unlink()
    with pytest.raises(InputError, match="missing relations.json"):
        load(copy)
    shutil.copy(saved / "relations.json", copy / "relations.json")
    (copy / "entity_embeddings.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InputError, match="unreadable entity embeddings"):
        load(copy)
    shutil.copy(saved / "entity_embeddings.safetensors", copy / "entity_embeddings.safetensors")
    (copy / "entities.json").write_text(json.dumps(["only-one"]))
    with pytest.raises(InputError, match="field 'transe'"):
        load(copy)


def test_export_npy_writes_arrays_numpy_loads_without_pickle(saved, tmp_path):
    embeddings = load(saved)
    written = embeddings.export_npy(tmp_path / "npy")
    assert sorted(p.name for p in written) == sorted(
        ["gat.npy", "transe.npy", "relation_transe.npy", "entities.json", "relations.json"])
    assert np.array_equal(np.load(tmp_path / "npy" / "gat.npy", allow_pickle=False), embeddings.matrix("gat"))
    assert json.loads((tmp_path / "npy" / "entities.json").read_text()) == embeddings.entities


def test_training_is_deterministic_for_a_seed():
    first = train_embeddings(clustered_triples(4, 4), SMALL, progress=False)
    second = train_embeddings(clustered_triples(4, 4), SMALL, progress=False)
    for name in ("transe", "gat", "relation_transe"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert first.metrics == second.metrics


def test_saving_never_replaces_a_directory_it_did_not_write(trained, tmp_path):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="refusing to replace"):
        trained.save_to_directory(target)
    assert (target / "keep.txt").read_text() == "mine"


def test_too_few_triplets_is_an_input_error():
    with pytest.raises(InputError, match="at least 10"):
        train_embeddings(clustered_triples(1, 2), SMALL, progress=False)


def test_config_yaml_rejects_unknown_options(tmp_path):
    path = tmp_path / "embed.yaml"
    path.write_text("dim: 16\nepoch: 3\n")
    with pytest.raises(InputError, match=r"embed.yaml.*field 'epoch'"):
        EmbedConfig.from_yaml(path)
    path.write_text("dim: 16\nepochs: 3\n")
    assert EmbedConfig.from_yaml(path) == EmbedConfig(dim=16, epochs=3)


def _store_with_triplets(path: Path, radgraph, umls=None) -> Path:
    with atomic_build(path) as con:
        con.executemany("INSERT INTO triplets VALUES (?, ?, ?, 'OBS-DP', 'ANAT-DP', 1, 1)", [list(t) for t in radgraph])
        if umls is not None:
            con.execute("CREATE TABLE umls_triplets(head_cui VARCHAR, relation VARCHAR, tail_cui VARCHAR, "
                        "head VARCHAR, tail VARCHAR, count BIGINT)")
            con.executemany("INSERT INTO umls_triplets VALUES (?, ?, ?, ?, ?, 0)", [list(t) for t in umls])
    return path


def test_umls_triplets_are_labelled_by_name_with_cui_only_on_clashes(tmp_path):
    store = _store_with_triplets(tmp_path / "kg.duckdb", clustered_triples(2, 2), umls=[
        ("C9000002", "location_of", "C9000001", "Pleura", "Pleural effusion"),
        ("C9000004", "finding_site_of", "C9000003", "Lung", "Collapse"),
        ("C9000004", "finding_site_of", "C9000007", "Lung", "Collapse"),
    ])
    assert read_triples(store, "umls").tolist() == [
        ["Pleura", "location_of", "Pleural effusion"],
        ["Lung", "finding_site_of", "Collapse [C9000003]"],
        ["Lung", "finding_site_of", "Collapse [C9000007]"],
    ]
    assert len(read_triples(store, "radgraph")) == len(set(clustered_triples(2, 2)))


def test_kg_embed_trains_saves_and_prints_the_evaluation(tmp_path, capsys):
    store = _store_with_triplets(tmp_path / "kg.duckdb", clustered_triples(4, 4))
    out = tmp_path / "emb"
    code = kg_main(["embed", str(store), "--out", str(out), "--dim", "8", "--epochs", "2",
                    "--gat-epochs", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| TransE |" in printed and "| random |" in printed
    embeddings = load(out)
    assert embeddings.dim == 8
    assert len(embeddings.entities) == 4 * 5
    assert embeddings.metrics["store"] == str(store)


def test_kg_embed_umls_without_umls_tables_fails_clearly(tmp_path, capsys):
    store = _store_with_triplets(tmp_path / "kg.duckdb", clustered_triples(4, 4))
    code = kg_main(["embed", str(store), "--out", str(tmp_path / "emb"), "--source", "umls", "--quiet"])
    assert code == 1
    assert "umls_triplets" in capsys.readouterr().err
    assert not (tmp_path / "emb").exists()
