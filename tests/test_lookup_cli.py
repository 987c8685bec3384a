"""``kg index`` and ``kg lookup`` as a user runs them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kg.cli import main
from test_retrieval import TOY_REPORTS, TOY_TRIPLETS, write_store


@pytest.fixture()
def toy_store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "toy.duckdb", TOY_REPORTS, TOY_TRIPLETS)


@pytest.mark.parametrize(("command", "option"), [("index", "--embeddings"), ("lookup", "--text")])
def test_help(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert option in capsys.readouterr().out


def test_index_then_lookup(toy_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(toy_store)]) == 0
    summary = capsys.readouterr().out
    assert "indexed 6 reports (tfidf-svd, dim 5) as flat" in summary
    assert str(toy_store) + ".index" in summary

    assert main(["lookup", str(toy_store), "--text", "displaced rib fracture", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query: displaced rib fracture"
    assert lines[1].startswith("1. r5  score ")
    assert lines[2] == f"   text: {TOY_REPORTS['r5']}"
    assert lines[3] == "   triplets: lungs modify clear; fracture located at rib"
    assert lines[4].startswith("2. ")
    assert lines[-1].startswith("SK: ") and "fracture located at rib" in lines[-1]


def test_lookup_json(toy_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["index", str(toy_store), "--type", "hnsw"])
    capsys.readouterr()
    argv = ["lookup", str(toy_store), "--text", "cardiomegaly", "--text", "endotracheal tube", "-k", "1", "--json"]
    assert main(argv) == 0
    documents = json.loads(capsys.readouterr().out)
    assert [d["query"] for d in documents] == ["cardiomegaly", "endotracheal tube"]
    [hit] = documents[0]["hits"]
    assert (hit["rank"], hit["report_id"], hit["text"]) == (1, "r3", TOY_REPORTS["r3"])
    assert hit["triplets"][0]["head"] == "cardiomegaly" and hit["triplets"][0]["relation"] == "suggestive_of"
    assert documents[0]["sk_sentence"] == "cardiomegaly suggestive of congestion"


def test_index_user_embeddings_to_out_dir(toy_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(TOY_REPORTS) + "\n")
    argv = ["index", str(toy_store), "--embeddings", str(tmp_path / "emb.npy"), "--ids", str(tmp_path / "ids.txt"),
            "--type", "ivf", "--nlist", "2", "--nprobe", "2", "--out", str(tmp_path / "emb_index")]
    assert main(argv) == 0
    assert "indexed 6 reports (emb, dim 12) as ivf (nlist=2, nprobe=2)" in capsys.readouterr().out
    assert main(["lookup", str(toy_store), "--index", str(tmp_path / "emb_index"), "--text", "rib"]) == 1
    assert "holds 'emb' vectors, not the built-in text embedding" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lookup", "{store}", "--text", "rib fracture"], "no index at"),
        (["index", "{store}", "--embeddings", "{tmp}/emb.npy"], "embeddings need their report ids"),
        (["index", "{tmp}/absent.duckdb"], "absent.duckdb"),
        (["index", "{store}", "--nprobe", "0"], "nprobe must be a positive integer"),
    ],
)
def test_errors_exit_1_with_message(
    toy_store: Path, tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "emb.npy", np.ones((6, 4), np.float32))
    argv = [a.format(store=toy_store, tmp=tmp_path) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kg {argv[0]}: error: ") and message in err


def test_lookup_k_larger_than_index(toy_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["index", str(toy_store)])
    assert main(["lookup", str(toy_store), "--text", "rib fracture", "-k", "7"]) == 1
    assert "k must be between 1 and the index size (6); got 7" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("kg.commands.build") is None, reason="`kg build` is not available yet")
def test_bundled_sample_store_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "sample.duckdb"
    assert main(["build", "--source", "radgraph", "--out", str(store)]) == 0
    assert main(["index", str(store)]) == 0
    capsys.readouterr()
    assert main(["lookup", str(store), "--text", "pleural effusion", "--json"]) == 0
    [document] = json.loads(capsys.readouterr().out)
    assert len(document["hits"]) == 3


def test_lookup_sk_order(toy_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["index", str(toy_store)])
    capsys.readouterr()
    argv = ["lookup", str(toy_store), "--text", "displaced rib fracture", "-k", "1", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["sk_sentence"] == "fracture located at rib; lungs modify clear"
    assert main([*argv, "--sk-order", "frequent_first"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["sk_sentence"] == "lungs modify clear; fracture located at rib"
