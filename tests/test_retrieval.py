"""Specific-knowledge retrieval: exact k-NN, FAISS report indexes, text embedding, KnowledgeBase."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kg.errors import InputError
from kg.index import (
    IDS_FILE,
    META_FILE,
    IndexConfig,
    ReportIndex,
    atomic_directory,
    default_nlist,
)
from kg.normalize import Triplet
from kg.retrieval import (
    KnowledgeBase,
    build_index,
    compose_sk_sentence,
    default_index_path,
    knn,
)
from kg.text_embedding import TextEmbedding


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, seed: int, noise: float = 0.6) -> np.ndarray:
    """Normalised Gaussian-mixture vectors: real embeddings cluster, uniform noise does not."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return unit_rows(centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim)))


def brute_force_top_k(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ keys.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# --- knn -------------------------------------------------------------------------------------


def test_knn_numpy_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    queries, keys = unit_rows(rng.normal(size=(7, 16))), unit_rows(rng.normal(size=(300, 16)))
    scores, indices = knn(queries, keys, 5)
    want_scores, want_indices = brute_force_top_k(queries, keys, 5)
    assert isinstance(scores, np.ndarray) and indices.dtype == np.int64 and scores.shape == (7, 5)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_knn_tensor_matches_torch_topk_and_keeps_type() -> None:
    generator = torch.Generator().manual_seed(2)
    queries = torch.randn(4, 32, generator=generator)
    keys = torch.randn(64, 32, generator=generator, requires_grad=True)
    scores, indices = knn(queries, keys, 3)
    want_scores, want_indices = torch.topk(queries @ keys.detach().T, 3, dim=1)
    assert isinstance(indices, torch.Tensor) and indices.dtype == torch.int64
    assert scores.device == keys.device and not scores.requires_grad
    torch.testing.assert_close(indices, want_indices)
    torch.testing.assert_close(scores, want_scores, atol=1e-4, rtol=1e-5)


def test_knn_k_equal_to_keys_returns_every_key() -> None:
    keys = unit_rows(np.random.default_rng(3).normal(size=(4, 8)))
    _, indices = knn(keys[:1], keys, 4)
    assert sorted(indices[0]) == [0, 1, 2, 3] and indices[0, 0] == 0


@pytest.mark.parametrize(
    ("queries", "keys", "k", "message"),
    [
        (np.ones((2, 8), np.float32), np.ones((0, 8), np.float32), 1, "empty"),
        (np.ones((2, 8), np.float32), np.ones((5, 6), np.float32), 1, "dimension 8 does not match key dimension 6"),
        (np.ones((2, 8), np.float32), np.ones((5, 8), np.float32), 6, "between 1 and the number of keys (5)"),
        (np.ones((2, 8), np.float32), np.ones((5, 8), np.float32), 0, "between 1"),
        (np.ones(8, np.float32), np.ones((5, 8), np.float32), 1, "2-D"),
        (torch.ones(2, 8), np.ones((5, 8), np.float32), 1, "both be NumPy arrays or both be torch tensors"),
    ],
)
def test_knn_rejects_bad_input(queries, keys, k, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        knn(queries, keys, k)


# --- ReportIndex ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, list[str], np.ndarray]:
    """5,000 indexed vectors and 200 queries from the same mixture that are not indexed."""
    points = clustered(5200, 64, clusters=64, seed=4)
    vectors, queries = points[:5000], points[5000:]
    return vectors, [f"r{i:05d}" for i in range(len(vectors))], queries


def test_flat_index_equals_brute_force(corpus) -> None:
    vectors, ids, queries = corpus
    index = ReportIndex.build(vectors, ids, IndexConfig("flat"), embedding="test")
    scores, rows = index.search(queries, 3)
    want_scores, want_rows = brute_force_top_k(queries, vectors, 3)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert index.meta["recall_at_3_estimate"] == 1.0


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_index_recall_at_3(corpus, index_type: str) -> None:
    vectors, ids, queries = corpus
    index = ReportIndex.build(vectors, ids, IndexConfig(index_type), embedding="test")
    _, rows = index.search(queries, 3)
    _, exact = brute_force_top_k(queries, vectors, 3)
    assert recall_at(rows, exact) >= 0.95
    assert index.meta["recall_at_3_estimate"] >= 0.95


def test_ivf_default_nlist(corpus) -> None:
    vectors, ids, _ = corpus
    index = ReportIndex.build(vectors, ids, IndexConfig("ivf"), embedding="test")
    assert index.meta["params"]["nlist"] == 5000 // 39  # 4*sqrt(5000) = 283 lists: < 39 points each


@pytest.mark.parametrize(("index_type", "name", "noise"), [("ivf", "nprobe", 0.6), ("hnsw", "ef_search", 2.0)])
def test_calibration_picks_smallest_power_of_two(index_type: str, name: str, noise: float) -> None:
    # The HNSW case needs noisier data: on well-separated clusters the smallest efSearch suffices.
    vectors = clustered(5000, 64, clusters=64, seed=4, noise=noise)
    ids = [str(i) for i in range(len(vectors))]
    index = ReportIndex.build(vectors, ids, IndexConfig(index_type, target_recall=0.99), embedding="test")
    value = index.meta["params"][name]
    assert value > {"nprobe": 1, "ef_search": 16}[name] and value & (value - 1) == 0
    assert index.meta["recall_at_3_estimate"] >= 0.99
    config = IndexConfig(index_type, target_recall=0.99, **{name: value // 2})
    assert ReportIndex.build(vectors, ids, config, embedding="test").meta["recall_at_3_estimate"] < 0.99


def test_default_nlist_hand_checked() -> None:
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(65_536) == 1024
    assert default_nlist(5000) == 128
    assert default_nlist(10) == 1


def test_ivf_fills_k_when_probed_lists_are_short() -> None:
    vectors = clustered(400, 16, clusters=4, seed=6)
    ids = [str(i) for i in range(400)]
    index = ReportIndex.build(vectors, ids, IndexConfig("ivf", nlist=10, nprobe=1), embedding="t")
    _, rows = index.search(vectors[:5], 200)
    assert (rows >= 0).all()
    _, exact = brute_force_top_k(vectors[:5], vectors, 200)
    assert recall_at(rows, exact) == 1.0


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path: Path, corpus, index_type: str) -> None:
    vectors, ids, queries = corpus
    vectors, ids = vectors[:1500], ids[:1500]
    index = ReportIndex.build(vectors, ids, IndexConfig(index_type), embedding="test")
    with atomic_directory(tmp_path / "ix") as tmp:
        index.save(tmp)
    loaded = ReportIndex.load(tmp_path / "ix")
    assert loaded.ids == ids and loaded.meta == json.loads(json.dumps(index.meta))
    for got, want in zip(loaded.search(queries, 3), index.search(queries, 3)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("index_type", ["flat", "ivf"])
def test_rebuild_is_byte_identical(tmp_path: Path, corpus, index_type: str) -> None:
    vectors, ids, _ = corpus
    for name in ("a", "b"):
        with atomic_directory(tmp_path / name) as tmp:
            ReportIndex.build(vectors[:2000], ids[:2000], IndexConfig(index_type), embedding="t").save(tmp)
    for file in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file


def test_search_errors(corpus) -> None:
    vectors, ids, queries = corpus
    index = ReportIndex.build(vectors[:10], ids[:10], embedding="test")
    with pytest.raises(InputError, match="between 1 and the index size \\(10\\); got 11"):
        index.search(queries, 11)
    with pytest.raises(InputError, match="dimension 32 but the index holds 64-dimensional 'test'"):
        index.search(queries[:, :32], 3)
    with pytest.raises(InputError, match="2-D"):
        index.search(queries[0], 3)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full((1, 64), np.nan, np.float32), 3)


def test_search_accepts_tensors_and_normalises_queries(corpus) -> None:
    vectors, ids, queries = corpus
    index = ReportIndex.build(vectors[:500], ids[:500], embedding="test")
    scaled = torch.from_numpy(queries[:4] * 7.0).requires_grad_()
    for got, want in zip(index.search(scaled, 3), index.search(queries[:4], 3)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    ("vectors", "ids", "message"),
    [
        (np.zeros((0, 4), np.float32), [], "nothing to index"),
        (np.ones((2, 4), np.float32), ["a"], "2 embedding rows but 1 report ids"),
        (np.ones((2, 4), np.int64), ["a", "b"], "floating point"),
        (np.array([[1, 0], [np.inf, 0]], np.float32), ["a", "b"], "emb.npy: record 1 \\(b\\): embedding contains NaN"),
        (np.ones((2, 4), np.float32), ["a", "a"], "emb.npy: record 1: report id 'a' appears twice"),
        (np.ones((2, 4), np.float32), ["a", "b\nc"], "line break"),
    ],
)
def test_build_rejects_bad_vectors(vectors, ids, message) -> None:
    with pytest.raises(InputError, match=message):
        ReportIndex.build(vectors, ids, embedding="test", source="emb.npy")


def test_index_config_validation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown index type 'lsh'"):
        IndexConfig("lsh")
    with pytest.raises(InputError, match="field 'nprobe': nprobe must be a positive integer"):
        IndexConfig("ivf", nprobe=0)
    config_file = tmp_path / "index.yaml"
    config_file.write_text("index_type: hnsw\nef_search: 32\n")
    assert IndexConfig.from_yaml(config_file) == IndexConfig("hnsw", ef_search=32)
    config_file.write_text("index_type: hnsw\nefsearch: 32\n")
    with pytest.raises(InputError, match="index.yaml: field 'efsearch': unknown option"):
        IndexConfig.from_yaml(config_file)


def test_atomic_directory_keeps_old_index_on_failure(tmp_path: Path, corpus) -> None:
    vectors, ids, queries = corpus
    target = tmp_path / "ix"
    with atomic_directory(target) as tmp:
        ReportIndex.build(vectors[:50], ids[:50], embedding="old").save(tmp)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            ReportIndex.build(vectors[:60], ids[:60], embedding="new").save(tmp)
            raise RuntimeError("interrupted")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_atomic_directory_refuses_to_replace_unrelated_directory(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a motor-kg index directory"):
        with atomic_directory(tmp_path / "notes"):
            pass
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_load_reports_malformed_directory(tmp_path: Path, corpus) -> None:
    vectors, ids, _ = corpus
    with pytest.raises(InputError, match="meta.json: index metadata is missing"):
        ReportIndex.load(tmp_path)
    with atomic_directory(tmp_path / "ix") as tmp:
        ReportIndex.build(vectors[:20], ids[:20], embedding="t").save(tmp)
    (tmp_path / "ix" / IDS_FILE).write_text("only-one\n")
    with pytest.raises(InputError, match="ids.txt: 1 ids but meta.json records 20 vectors"):
        ReportIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / META_FILE).write_text("{not json")
    with pytest.raises(InputError, match="meta.json: not valid JSON"):
        ReportIndex.load(tmp_path / "ix")


# --- text embedding --------------------------------------------------------------------------

TOY_REPORTS = {
    "r1": "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
    "r2": "Small left pleural effusion with adjacent atelectasis at the left base.",
    "r3": "Moderate cardiomegaly. Pulmonary vascular congestion without frank edema.",
    "r4": "Right upper lobe consolidation concerning for pneumonia.",
    "r5": "Displaced fracture of the right seventh rib. No pneumothorax.",
    "r6": "Endotracheal tube terminates 4 cm above the carina. Lungs are clear.",
}


def test_text_embedding_save_load_without_pickle(tmp_path: Path) -> None:
    embedding = TextEmbedding.fit(list(TOY_REPORTS.values()))
    embedding.save(tmp_path)
    loaded = TextEmbedding.load(tmp_path)
    texts = ["pleural effusion", "rib fracture seen", "unrelated words zzz"]
    np.testing.assert_array_equal(loaded.encode(texts), embedding.encode(texts))
    vectors = embedding.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, embedding.dim) == (3, 5)
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-6)
    assert not embedding.encode(["qwerty asdfgh"]).any()
    for name in ("text_embedding_idf.npy", "text_embedding_components.npy"):
        np.load(tmp_path / name, allow_pickle=False)


def test_text_embedding_load_refuses_pickles_and_other_versions(tmp_path: Path) -> None:
    TextEmbedding.fit(list(TOY_REPORTS.values())).save(tmp_path)
    np.save(tmp_path / "text_embedding_idf.npy", np.array([{"code": "runs on load"}], dtype=object))
    with pytest.raises(InputError, match="text_embedding_idf.npy: cannot read array"):
        TextEmbedding.load(tmp_path)
    header = json.loads((tmp_path / "text_embedding.json").read_text())
    (tmp_path / "text_embedding.json").write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(InputError, match="text_embedding.json: not a motor-kg text embedding of format version 1"):
        TextEmbedding.load(tmp_path)


def test_text_embedding_fit_errors() -> None:
    with pytest.raises(InputError, match="at least 2 reports"):
        TextEmbedding.fit(["one report"])
    with pytest.raises(InputError, match="cannot fit"):
        TextEmbedding.fit(["123", "456"])


# --- SK sentence -----------------------------------------------------------------------------


@pytest.mark.parametrize(("order", "expected"), [
    ("report", "b c d; a b c; x y z; p q r"),  # the mapping's (the report's) order
    ("frequent_first", "x y z; b c d; a b c; p q r"),  # ties keep the report's order
    ("specific_first", "p q r; b c d; a b c; x y z"),
])
def test_compose_sk_sentence_orders_by_the_sk_order_policy(order: str, expected: str) -> None:
    counts = {"b c d": 5, "a b c": 5, "x y z": 9, "p q r": 1}
    assert compose_sk_sentence(counts, max_tokens=90, order=order) == expected


def test_compose_sk_sentence_truncates_whole_phrases_in_report_order_by_default() -> None:
    counts = {"b c d": 5, "a b c": 5, "x y z": 9, "p q r": 1}
    assert compose_sk_sentence(counts, max_tokens=90) == "b c d; a b c; x y z; p q r"
    # "b c d; a b c" is 6 whitespace tokens; adding "x y z" would make 9.
    assert compose_sk_sentence(counts, max_tokens=8) == "b c d; a b c"
    assert compose_sk_sentence(counts, max_tokens=2) == ""
    assert compose_sk_sentence(counts, max_tokens=10, tokenizer=len) == "b c d"
    with pytest.raises(InputError, match="max_tokens must be positive"):
        compose_sk_sentence(counts, max_tokens=0)
    with pytest.raises(InputError, match="sk_order"):
        compose_sk_sentence(counts, order="alphabetical")


def test_compose_sk_sentence_counts_with_a_tokenizer() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()  # splits "z;" into "z" and ";": one token more than str.split
    counts = {"x y z": 2, "a b c": 1}
    assert compose_sk_sentence(counts, max_tokens=6) == "x y z; a b c"
    assert compose_sk_sentence(counts, max_tokens=6, tokenizer=tokenizer) == "x y z"
    assert compose_sk_sentence(counts, max_tokens=7, tokenizer=tokenizer) == "x y z; a b c"


def test_triplet_phrase_reads_relation_as_words() -> None:
    triplet = Triplet("opacity", "suggestive_of", "pneumonia", "OBS-DP", "OBS-U")
    assert triplet.phrase() == "opacity suggestive of pneumonia"


# --- KnowledgeBase over a store -------------------------------------------------------------

CLEAR_LUNGS = ("lungs", "modify", "clear", "ANAT-DP", "OBS-DP")
TOY_TRIPLETS = {
    "r1": [("no effusion", "located_at", "pleural", "OBS-DA", "ANAT-DP"), CLEAR_LUNGS],
    "r2": [
        ("effusion", "located_at", "pleural", "OBS-DP", "ANAT-DP"),
        ("atelectasis", "located_at", "base", "OBS-DP", "ANAT-DP"),
    ],
    "r3": [("cardiomegaly", "suggestive_of", "congestion", "OBS-DP", "OBS-DP")],
    "r4": [
        ("consolidation", "suggestive_of", "pneumonia", "OBS-DP", "OBS-U"),
        ("consolidation", "located_at", "lobe", "OBS-DP", "ANAT-DP"),
        ("effusion", "located_at", "pleural", "OBS-U", "ANAT-DP"),
    ],
    "r5": [("fracture", "located_at", "rib", "OBS-DP", "ANAT-DP"), CLEAR_LUNGS],
    "r6": [CLEAR_LUNGS],
}


def write_store(path: Path, reports: dict[str, str], report_triplets: dict[str, list[tuple]]) -> Path:
    """A store with the reports and report_triplets given and the corpus triplets table derived."""
    from kg.store import atomic_build

    with atomic_build(path) as con:
        con.executemany(
            "INSERT INTO reports VALUES (?, ?, 'test', 'train')", list(reports.items())
        )
        rows = [(rid, *t) for rid, triplets in report_triplets.items() for t in triplets]
        if rows:
            con.executemany("INSERT INTO report_triplets VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute(
            """
            INSERT INTO triplets
            SELECT head, relation, tail, head_label, tail_label, count(*), count(DISTINCT report_id)
            FROM report_triplets GROUP BY ALL
            """
        )
    return path


@pytest.fixture()
def toy_store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "toy.duckdb", TOY_REPORTS, TOY_TRIPLETS)


def test_knowledge_base_text_lookup(toy_store: Path) -> None:
    out = build_index(toy_store)
    assert out == default_index_path(toy_store) == toy_store.with_name("toy.duckdb.index")
    with KnowledgeBase.open(toy_store) as kb:
        [result] = kb.lookup_text("displaced rib fracture", k=2)
        assert result.report_ids[0] == "r5" and result.texts[0] == TOY_REPORTS["r5"]
        assert result.scores[0] > result.scores[1]
        [a, b] = kb.lookup_text(["cardiomegaly with vascular congestion", "endotracheal tube above carina"], k=1)
        assert (a.report_ids, b.report_ids) == (["r3"], ["r6"])
        assert a.sk_sentence == "cardiomegaly suggestive of congestion"


def test_knowledge_base_triplets_and_sk_sentence(toy_store: Path) -> None:
    with KnowledgeBase.open(toy_store) as kb:
        assert kb.reports(["r3", "r1"]) == [TOY_REPORTS["r3"], TOY_REPORTS["r1"]]
        # "lungs modify clear" occurs in 3 reports, so it leads r1's list.
        assert kb.triplets(["r1"]) == [[Triplet("lungs", "modify", "clear", "ANAT-DP", "OBS-DP"),
                                        Triplet("no effusion", "located_at", "pleural", "OBS-DA", "ANAT-DP")]]
        # A shared triplet appears once. By default each report's triplets come as it states them,
        # the reports in the order given; the absent and the present effusion read differently.
        assert kb.sk_sentence(["r1", "r5", "r2"]) == (
            "no effusion located at pleural; lungs modify clear; fracture located at rib; "
            "effusion located at pleural; atelectasis located at base"
        )
        assert kb.sk_sentence(["r1", "r5", "r2"], max_tokens=8) == "no effusion located at pleural; lungs modify clear"
        # "lungs modify clear" is in 3 store reports, every other triplet in 1.
        assert kb.sk_sentence(["r1", "r5", "r2"], order="frequent_first") == (
            "lungs modify clear; no effusion located at pleural; fracture located at rib; "
            "effusion located at pleural; atelectasis located at base"
        )
        # Present findings first, the rarest first among them, the negated one last.
        assert kb.sk_sentence(["r1", "r5", "r2"], order="specific_first") == (
            "fracture located at rib; effusion located at pleural; atelectasis located at base; "
            "lungs modify clear; no effusion located at pleural"
        )
        # Label variants that read the same add up: the uncertain (r4) and present (r2) effusion.
        assert kb.sk_sentence(["r4", "r2"], order="frequent_first").startswith(
            "effusion located at pleural; consolidation suggestive of pneumonia")
        with pytest.raises(InputError, match="report 'nope' is not in the store"):
            kb.triplets(["r1", "nope"])
        with pytest.raises(InputError, match="report 'nope' is not in the store"):
            kb.reports(["nope"])


def test_knowledge_base_without_index(toy_store: Path) -> None:
    with KnowledgeBase.open(toy_store) as kb:
        with pytest.raises(InputError, match="no index at .*toy.duckdb.index; build one with `kg index"):
            kb.search(np.ones((1, 4), np.float32), 1)
    with pytest.raises(InputError, match="meta.json: index metadata is missing"):
        KnowledgeBase.open(toy_store, toy_store.parent / "elsewhere")


def test_knowledge_base_search_errors(toy_store: Path) -> None:
    build_index(toy_store)
    with KnowledgeBase.open(toy_store) as kb:
        dim = kb.index.dim
        with pytest.raises(InputError, match="between 1 and the index size \\(6\\); got 7"):
            kb.search(np.ones((1, dim), np.float32), 7)
        with pytest.raises(InputError, match=f"dimension {dim + 1} but the index holds {dim}-dimensional 'tfidf-svd'"):
            kb.search(np.ones((1, dim + 1), np.float32), 1)
        with pytest.raises(InputError, match="shares no word"):
            kb.lookup_text("zzzz qqqq")


def test_user_embeddings_index(toy_store: Path, tmp_path: Path) -> None:
    ids = list(TOY_REPORTS)
    vectors = np.eye(len(ids), 8, dtype=np.float32) + 0.01
    np.save(tmp_path / "img.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    out = build_index(toy_store, embeddings=tmp_path / "img.npy", ids=tmp_path / "ids.txt", out=tmp_path / "img_index")
    with KnowledgeBase.open(toy_store, out) as kb:
        ranked, scores = kb.search(vectors[[3]], 2)
        assert ranked[0][0] == "r4" and scores.shape == (1, 2)
        [result] = kb.lookup_vectors(torch.from_numpy(vectors[[4]]), k=1)
        assert result.report_ids == ["r5"] and result.sk_sentence == "fracture located at rib; lungs modify clear"
        with pytest.raises(InputError, match="holds 'img' vectors, not the built-in text embedding"):
            kb.lookup_text("rib fracture")


def test_user_embeddings_errors(toy_store: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.ones((3, 4), np.float32))
    (tmp_path / "ids.txt").write_text("r1\nr9\nr2\n")
    with pytest.raises(InputError, match="ids.txt: record line 2: report id 'r9' is not in the store"):
        build_index(toy_store, embeddings=tmp_path / "img.npy", ids=tmp_path / "ids.txt")
    (tmp_path / "ids.txt").write_text("r1\nr2\n")
    with pytest.raises(InputError, match="img.npy: 3 embedding rows but 2 report ids"):
        build_index(toy_store, embeddings=tmp_path / "img.npy", ids=tmp_path / "ids.txt")
    with pytest.raises(InputError, match="missing.npy: embeddings file not found"):
        build_index(toy_store, embeddings=tmp_path / "missing.npy", ids=tmp_path / "ids.txt")
    with pytest.raises(InputError, match="embeddings need their report ids"):
        build_index(toy_store, embeddings=tmp_path / "img.npy")
    with pytest.raises(InputError, match="unknown option"):
        build_index(toy_store, nprobes=3)
    assert not default_index_path(toy_store).exists()


def test_rebuilt_text_index_is_identical(toy_store: Path, tmp_path: Path) -> None:
    first = build_index(toy_store, out=tmp_path / "a")
    second = build_index(toy_store, out=tmp_path / "b")
    for file in sorted(p.name for p in first.iterdir()):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file


@pytest.mark.needs_shared
def test_lookup_text_on_iu_xray_finds_the_report_quoted(tmp_path: Path, iu_xray_reports: Path) -> None:
    with iu_xray_reports.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if (r["findings"] or "").strip()]
    reports = {f"iu{r['uid']}": f"{r['findings']} {r['impression']}".strip() for r in rows[:600]}
    store = write_store(tmp_path / "iu.duckdb", reports, {})
    build_index(store)
    rng = np.random.default_rng(7)
    picks = [list(reports)[i] for i in rng.choice(len(reports), 20, replace=False)]
    with KnowledgeBase.open(store) as kb:
        results = kb.lookup_text([reports[p] for p in picks], k=3)
    # A report's own text has cosine 1 with it, so it ranks first unless templated reports embed
    # identically (the stop words and digits they differ in are not terms); then all ties score 1.
    for pick, result in zip(picks, results):
        assert result.scores[0] == pytest.approx(1.0, abs=1e-4)
        if pick not in result.report_ids:
            assert result.scores == pytest.approx([1.0] * 3, abs=1e-4)
