"""``kg build``, ``kg stats`` and ``kg export-gk`` as a user runs them."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
import torch

from kg.cli import main
from kg.gk import load_gk
from kg.gk_export import load_gk_tensors
from kg.radgraph import BUNDLED_SAMPLE
from kg.store import open_store

UMLS_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "umls"


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def bad_sample(tmp_path: Path) -> tuple[Path, str]:
    """The bundled sample with one relation pointing at a missing entity; returns the file and report id."""
    document = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))
    report_id = list(document)[5]
    entities = document[report_id]["entities"]
    first = next(iter(entities))
    entities[first]["relations"] = [["modify", "999"]]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path, report_id


def test_build_bundled_sample_then_stats(tmp_path: Path, capsys) -> None:
    store = tmp_path / "sample.duckdb"
    code, out, _ = run(capsys, "build", "--source", "radgraph", "--out", str(store), "--no-progress")
    assert code == 0
    assert "reports" in out and " 30\n" in out and "skipped reports" in out
    code, out, _ = run(capsys, "stats", str(store), "--json", "--top", "3")
    assert code == 0
    stats = json.loads(out)
    assert stats["tables"]["reports"] == 30 and len(stats["top_triplets"]) == 3
    assert stats["metadata"]["inputs"][0]["path"] == str(BUNDLED_SAMPLE)
    assert stats["metadata"]["options"]["labeler"] == "labeler_1"
    code, out, _ = run(capsys, "stats", str(store))
    assert code == 0 and "top 10 triplets" in out and "entity labels:" in out


def test_build_errors_exit_1_and_keep_the_store(tmp_path: Path, capsys) -> None:
    store = tmp_path / "kg.duckdb"
    assert run(capsys, "build", "--source", "radgraph", "--out", str(store), "--no-progress")[0] == 0
    before = store.read_bytes()
    bad, report_id = bad_sample(tmp_path)
    code, out, err = run(capsys, "build", "--source", "radgraph", "--input", str(bad), "--out", str(store),
                         "--no-progress")
    assert code == 1 and out == ""
    assert err.startswith(f"kg build: error: {bad}: record {report_id}: field 'entities.")
    assert "points to entity '999'" in err
    assert store.read_bytes() == before

    code, out, _ = run(capsys, "build", "--source", "radgraph", "--input", str(bad), "--out", str(store),
                       "--skip-invalid", "--absent", "drop", "--no-progress")
    assert code == 0 and "skipped reports               1" in out and f"record {report_id}" in out
    con = open_store(store)
    assert con.execute("SELECT count(*) FROM reports").fetchone()[0] == 29
    con.close()


def test_skip_invalid_lists_the_first_errors_and_counts_the_rest(tmp_path: Path, capsys) -> None:
    good = {"id": "good", "text": "No effusion .", "entities": {
        "1": {"tokens": "effusion", "label": "OBS-DA", "start_ix": 1, "end_ix": 1, "relations": []}}}
    lines = [json.dumps(good)] + [json.dumps({"id": f"bad{k}", "text": "x"}) for k in range(25)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "build", "--source", "radgraph", "--input", str(corpus), "--skip-invalid",
                       "--out", str(tmp_path / "kg.duckdb"), "--no-progress")
    assert code == 0 and "skipped reports              25" in out
    assert out.count("  skipped: ") == 20 and "... and 5 more skipped reports" in out
    assert f"skipped: {corpus}:2: record bad0: field 'entities': missing" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--source", "radgraph"], "--source radgraph needs --out"),
    (["--source", "gk", "--out", "x", "--labeler", "both"], "--labeler does not apply to --source gk"),
    (["--source", "reports", "--out", "x.duckdb"], "--source reports needs --input"),
    (["--source", "radgraph", "--input", "absent.json", "--out", "x.duckdb"], "absent.json: no such file"),
    (["--source", "gk", "--out", "x", "--workers", "2"], "--workers does not apply to --source gk"),
])
def test_build_option_errors(tmp_path: Path, capsys, monkeypatch, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "build", *argv)
    assert code == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_workers_option(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "sample.jsonl"
    document = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))
    corpus.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in document.items()), encoding="utf-8")
    digests = []
    for workers in ("0", "2", "auto"):
        store = tmp_path / f"w{workers}.duckdb"
        code, out, _ = run(capsys, "build", "--source", "radgraph", "--input", str(corpus), "--workers", workers,
                           "--out", str(store), "--no-progress")
        assert code == 0 and "reports                      30" in out
        con = open_store(store)
        digests.append([con.execute(f"SELECT * FROM {t}").fetchall() for t in ("entities", "report_triplets", "triplets")])
        con.close()
    assert digests[0] == digests[1] == digests[2]
    with pytest.raises(SystemExit) as exit_:
        main(["build", "--source", "radgraph", "--out", str(tmp_path / "x.duckdb"), "--workers", "many"])
    assert exit_.value.code == 2 and "expected a whole number >= 0 or 'auto', got 'many'" in capsys.readouterr().err


def test_labeler_option_reaches_the_store(tmp_path: Path, capsys) -> None:
    store = tmp_path / "both.duckdb"
    assert run(capsys, "build", "--source", "radgraph", "--labeler", "both", "--out", str(store),
               "--no-progress")[0] == 0
    con = open_store(store)
    labelers = [row[0] for row in con.execute("SELECT DISTINCT labeler FROM entities ORDER BY 1").fetchall()]
    con.close()
    assert labelers == ["", "labeler_1", "labeler_2"]


def test_build_reports_from_free_text(tmp_path: Path, capsys) -> None:
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        json.dumps({"id": "a", "text": "Small left pleural effusion. No pneumothorax."}) + "\n"
        + json.dumps({"id": "b", "text": ""}) + "\n",
        encoding="utf-8",
    )
    store = tmp_path / "reports.duckdb"
    code, out, _ = run(capsys, "build", "--source", "reports", "--input", str(reports), "--input-format", "jsonl",
                       "--out", str(store), "--no-progress")
    assert code == 0 and "skipped reports               1" in out
    con = open_store(store)
    assert con.execute("SELECT report_id FROM reports").fetchall() == [("a",)]
    assert con.execute("SELECT count(*) FROM entities WHERE label = 'OBS-DA'").fetchone()[0] >= 1
    con.close()


def test_build_reports_from_a_report_tree_is_repeatable(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "files" / "p10" / "p10000001"
    tree.mkdir(parents=True)
    (tree / "s50000001.txt").write_text("FINDINGS: Small left pleural effusion.\nIMPRESSION: Effusion.\n")
    (tree / "s50000002.txt").write_text("FINDINGS: No pneumothorax.\n")
    stores = []
    for name in ("a.duckdb", "b.duckdb"):
        store = tmp_path / name
        code, _, err = run(capsys, "build", "--source", "reports", "--input", str(tmp_path / "files"),
                           "--input-format", "mimic-txt", "--out", str(store), "--no-progress")
        assert code == 0, err
        stores.append(store)
    tables = []
    for store in stores:
        con = open_store(store)
        tables.append((con.execute("SELECT report_id FROM reports ORDER BY 1").fetchall(),
                       con.execute("SELECT * FROM triplets ORDER BY ALL").fetchall(),
                       con.execute("SELECT value FROM metadata WHERE key = 'inputs'").fetchall()))
        con.close()
    assert tables[0] == tables[1]
    assert tables[0][0] == [("s50000001",), ("s50000002",)]
    (tree / "s50000002.txt").write_text("FINDINGS: Large right pneumothorax.\n")
    run(capsys, "build", "--source", "reports", "--input", str(tmp_path / "files"), "--input-format", "mimic-txt",
        "--out", str(stores[1]), "--no-progress")
    con = open_store(stores[1])
    changed = con.execute("SELECT value FROM metadata WHERE key = 'inputs'").fetchall()
    con.close()
    assert changed != tables[0][2], "a changed tree must change the recorded input hash"


def test_build_umls_adds_tables(tmp_path: Path, capsys) -> None:
    store = tmp_path / "kg.duckdb"
    assert run(capsys, "build", "--source", "radgraph", "--out", str(store), "--no-progress")[0] == 0
    code, _, _ = run(capsys, "build", "--source", "umls", "--umls-dir", str(UMLS_FIXTURE), "--store", str(store),
                     "--linker", "exact", "--no-progress")
    assert code == 0
    code, out, _ = run(capsys, "stats", str(store), "--json")
    assert code == 0 and json.loads(out)["tables"]["umls_concepts"] > 0
    code, _, err = run(capsys, "build", "--source", "umls", "--umls-dir", str(UMLS_FIXTURE),
                       "--store", str(tmp_path / "absent.duckdb"), "--linker", "exact", "--no-progress")
    assert code == 1 and "no such store" in err


def test_stats_of_a_missing_or_foreign_file(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "stats", str(tmp_path / "absent.duckdb"))
    assert code == 1 and "no such store" in err
    other = tmp_path / "notes.txt"
    other.write_text("hello\n", encoding="utf-8")
    code, _, err = run(capsys, "stats", str(other))
    assert code == 1 and "not a DuckDB database" in err


def test_export_gk_formats(tmp_path: Path, capsys) -> None:
    gk = load_gk()
    assert run(capsys, "export-gk", "--format", "pt", "--out", str(tmp_path / "gk.pt"))[0] == 0
    tensors = load_gk_tensors(tmp_path / "gk.pt")
    assert torch.equal(tensors["visible_mask"], gk.visible_mask())
    assert torch.equal(tensors["node_type_ids"], gk.node_type_ids())
    assert torch.equal(tensors["edge_index"], gk.edge_index())
    assert torch.load(tmp_path / "gk.pt", weights_only=True).keys() == tensors.keys()
    nodes = json.loads((tmp_path / "gk.nodes.json").read_text(encoding="utf-8"))
    assert nodes["node_ids"] == gk.node_ids and nodes["node_words"] == gk.node_words()

    assert run(capsys, "export-gk", "--format", "graphml", "--out", str(tmp_path / "gk.graphml"))[0] == 0
    graph = nx.read_graphml(tmp_path / "gk.graphml")
    assert {frozenset(e) for e in graph.edges()} == {frozenset(e) for e in gk.to_networkx().edges()}

    assert run(capsys, "export-gk", "--format", "json", "--out", str(tmp_path / "gk.json"))[0] == 0
    assert json.loads((tmp_path / "gk.json").read_text(encoding="utf-8")) == json.loads(json.dumps(gk.to_dict()))

    bad = tmp_path / "bad.yaml"
    bad.write_text("root: [", encoding="utf-8")
    code, _, err = run(capsys, "export-gk", "--format", "json", "--graph", str(bad), "--out", str(tmp_path / "x.json"))
    assert code == 1 and str(bad) in err and not (tmp_path / "x.json").exists()


def test_build_gk_writes_every_export(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "build", "--source", "gk", "--out", str(tmp_path / "gk"))
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "gk").iterdir()) == [
        "chest_gk.graphml", "chest_gk.json", "chest_gk.nodes.json", "chest_gk.pt"]
    assert out.count("wrote ") == 4


@pytest.mark.parametrize("command", [["build"], ["stats"], ["export-gk"]])
def test_help(capsys, command) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: kg" in capsys.readouterr().out
