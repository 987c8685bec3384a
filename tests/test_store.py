"""The DuckDB knowledge store: schema, atomic writes, triplet counts and deterministic builds."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest

import kg.build
from kg.build import build_store, describe_input
from kg.errors import InputError
from kg.normalize import relation_triplets
from kg.radgraph import BUNDLED_SAMPLE
from kg.radgraph_reader import RadGraphReader
from kg.records import Entity, ReportRecord
from kg.store import (
    CORE_TABLES,
    SCHEMA_VERSION,
    atomic_build,
    atomic_update,
    open_store,
    read_metadata,
    store_stats,
    write_metadata,
)


def entity(entity_id: str, tokens: str, label: str, ix: int, *relations: tuple[str, str]) -> Entity:
    return Entity(entity_id, tokens, label, ix, ix + len(tokens.split()) - 1, list(relations))


def fixture_reports() -> list[ReportRecord]:
    """Three hand-written reports; their triplets are counted by hand in the tests below."""
    r1 = ReportRecord("r1", "Small left effusions . No pneumothorax in lungs .", {
        "1": entity("1", "Small", "OBS-DP", 0, ("modify", "3")),
        "2": entity("2", "left", "ANAT-DP", 1),
        "3": entity("3", "effusions", "OBS-DP", 2, ("located_at", "2")),
        "4": entity("4", "pneumothorax", "OBS-DA", 5, ("located_at", "6")),
        "6": entity("6", "lungs", "ANAT-DP", 7),
    }, "handwritten", "train", None)
    # "Effusion" and "effusions" normalise to one node; the located_at pair appears twice in r2.
    r2 = ReportRecord("r2", "Effusion , left . Small effusion left .", {
        "1": entity("1", "Effusion", "OBS-DP", 0, ("located_at", "2")),
        "2": entity("2", "left", "ANAT-DP", 2),
        "3": entity("3", "Small", "OBS-DP", 4, ("modify", "4")),
        "4": entity("4", "effusion", "OBS-DP", 5, ("located_at", "5")),
        "5": entity("5", "left", "ANAT-DP", 6),
    }, "handwritten", "train", None)
    r3 = ReportRecord("r3", "No pneumothorax in lung .", {
        "1": entity("1", "pneumothorax", "OBS-DA", 1, ("located_at", "2")),
        "2": entity("2", "lung", "ANAT-DP", 3),
    }, "handwritten", "test", None)
    return [r1, r2, r3]


def build(records, path: Path, **options) -> kg.build.BuildSummary:
    return build_store(records, path, source="radgraph", inputs=[], options={}, progress=False, **options)


def table_rows(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows in a canonical order, and the metadata."""
    con = open_store(path)
    try:
        rows = {}
        for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall():
            rows[name] = con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
        return rows
    finally:
        con.close()


def triplet_counts(path: Path) -> dict[tuple[str, str, str], tuple[int, int]]:
    con = open_store(path)
    try:
        return {(h, r, t): (c, n) for h, r, t, c, n in con.execute(
            "SELECT head, relation, tail, count, n_reports FROM triplets").fetchall()}
    finally:
        con.close()


# ---------------------------------------------------------------------- triplet counts
def test_triplet_counts_match_hand_computed_values(tmp_path: Path) -> None:
    summary = build(fixture_reports(), tmp_path / "kg.duckdb")
    assert triplet_counts(tmp_path / "kg.duckdb") == {
        ("small", "modify", "effusion"): (2, 2),
        ("effusion", "located_at", "left"): (3, 2),
        ("no pneumothorax", "located_at", "lung"): (2, 2),
    }
    assert (summary.reports, summary.entities, summary.relations) == (3, 12, 7)
    assert (summary.report_triplets, summary.triplets) == (6, 3)
    con = open_store(tmp_path / "kg.duckdb")
    assert con.execute("SELECT report_id, head, tail FROM report_triplets ORDER BY ALL").fetchall() == [
        ("r1", "effusion", "left"), ("r1", "no pneumothorax", "lung"), ("r1", "small", "effusion"),
        ("r2", "effusion", "left"), ("r2", "small", "effusion"), ("r3", "no pneumothorax", "lung"),
    ]
    assert con.execute("SELECT norm FROM entities WHERE report_id = 'r1' ORDER BY start_ix").fetchall() == [
        ("small",), ("left",), ("effusion",), ("pneumothorax",), ("lung",)]
    con.close()


def test_absent_modes(tmp_path: Path) -> None:
    build(fixture_reports(), tmp_path / "keep.duckdb", absent="keep")
    assert triplet_counts(tmp_path / "keep.duckdb")[("pneumothorax", "located_at", "lung")] == (2, 2)
    build(fixture_reports(), tmp_path / "drop.duckdb", absent="drop")
    assert set(triplet_counts(tmp_path / "drop.duckdb")) == {
        ("small", "modify", "effusion"), ("effusion", "located_at", "left")}
    with pytest.raises(ValueError, match="unknown absent mode"):
        build(fixture_reports(), tmp_path / "bad.duckdb", absent="ignore")
    assert not (tmp_path / "bad.duckdb").exists()


@pytest.mark.parametrize("absent", ["negate", "keep", "drop"])
def test_batched_sql_counts_equal_python_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, absent) -> None:
    records = list(RadGraphReader([BUNDLED_SAMPLE], labeler="both"))
    occurrences = Counter(t for r in records for t in relation_triplets(r, absent))
    reports = Counter(t for _, t in {(r.report_id, t) for r in records for t in relation_triplets(r, absent)})
    monkeypatch.setattr(kg.build, "BATCH_REPORTS", 4)  # many batches, so partial counts are summed
    build(records, tmp_path / "kg.duckdb", absent=absent)
    con = open_store(tmp_path / "kg.duckdb")
    rows = con.execute("SELECT head, relation, tail, head_label, tail_label, count, n_reports FROM triplets").fetchall()
    con.close()
    assert {tuple(row[:5]): (row[5], row[6]) for row in rows} == {
        t: (occurrences[t], reports[t]) for t in occurrences}
    counts = [(-row[5], -row[6], *row[:5]) for row in rows]
    assert counts == sorted(counts)  # stored most frequent first


def test_both_labelers_share_one_report_row(tmp_path: Path) -> None:
    records = list(RadGraphReader([BUNDLED_SAMPLE], labeler="both"))
    two = {r.report_id for r in records if r.labeler}
    build(records, tmp_path / "kg.duckdb")
    con = open_store(tmp_path / "kg.duckdb")
    assert con.execute("SELECT count(*) FROM reports").fetchone()[0] == 30
    labelers = con.execute("SELECT DISTINCT report_id, labeler FROM entities WHERE labeler <> '' ORDER BY ALL")
    assert labelers.fetchall() == sorted((r, f"labeler_{k}") for r in two for k in (1, 2))
    con.close()


def test_repeated_report_ids_are_rejected(tmp_path: Path) -> None:
    [r1, r2, _] = fixture_reports()
    with pytest.raises(InputError, match="duplicate report id") as err:
        build([r1, r2, r1], tmp_path / "kg.duckdb")
    assert (err.value.record, err.value.field) == ("r1", "report_id")
    first = ReportRecord("t", r1.text, r1.entities, None, "test", "labeler_1")
    second = ReportRecord("t", r1.text, r1.entities, None, "test", "labeler_2")
    with pytest.raises(InputError, match="must follow each other"):
        build([first, r2, second], tmp_path / "kg.duckdb")
    assert not (tmp_path / "kg.duckdb").exists()


# ---------------------------------------------------------------------- determinism and atomicity
def test_rebuild_gives_identical_tables_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "kg.duckdb"
    inputs = [BUNDLED_SAMPLE]
    build_store(RadGraphReader(inputs), path, source="radgraph", inputs=inputs, options={"x": 1}, progress=False)
    first = table_rows(path)
    build_store(RadGraphReader(inputs), path, source="radgraph", inputs=inputs, options={"x": 1}, progress=False)
    assert table_rows(path) == first
    assert set(first) == set(CORE_TABLES)
    con = open_store(path)
    metadata = read_metadata(con)
    con.close()
    assert metadata["schema_version"] == SCHEMA_VERSION and metadata["sources"] == ["radgraph"]
    assert metadata["options"] == {"x": 1, "absent": "negate"}
    assert metadata["created_by"].startswith("motor-kg ")
    assert metadata["inputs"] == [describe_input(BUNDLED_SAMPLE, "radgraph")]
    assert metadata["inputs"][0]["sha256"] == hashlib.sha256(BUNDLED_SAMPLE.read_bytes()).hexdigest()
    assert metadata["inputs"][0]["bytes"] == BUNDLED_SAMPLE.stat().st_size


def test_failed_build_leaves_the_existing_store_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "kg.duckdb"
    build(fixture_reports(), path)
    before = path.read_bytes()
    document = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))
    keys = list(document)
    document[keys[20]]["text"] = ""  # malformed record in the middle of the file
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(InputError, match="empty report text") as err:
        build(RadGraphReader([bad]), path)
    assert (err.value.file, err.value.record, err.value.field) == (str(bad), keys[20], "text")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "kg.duckdb"]  # no temp files left


def test_skip_invalid_builds_the_valid_reports(tmp_path: Path) -> None:
    document = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))
    keys = list(document)
    del document[keys[3]]["text"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document), encoding="utf-8")
    reader = RadGraphReader([bad], skip_invalid=True)
    summary = build(reader, tmp_path / "kg.duckdb")
    assert summary.reports == 29 and [e.record for e in reader.errors] == [keys[3]]


def test_atomic_build_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "kg.duckdb"
    with atomic_build(path) as con:
        write_metadata(con, "sources", ["radgraph"])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_build(path) as con:
            con.execute("INSERT INTO reports VALUES ('r', 't', NULL, NULL)")
            raise RuntimeError("boom")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["kg.duckdb"]


def test_atomic_update_adds_tables_or_leaves_the_store(tmp_path: Path) -> None:
    path = tmp_path / "kg.duckdb"
    build(fixture_reports(), path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_update(path) as con:
            con.execute("CREATE TABLE umls_concepts (cui VARCHAR, name VARCHAR, semantic_types VARCHAR)")
            raise RuntimeError("linker failed")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["kg.duckdb"]
    with atomic_update(path) as con:
        con.execute("CREATE TABLE umls_concepts (cui VARCHAR, name VARCHAR, semantic_types VARCHAR)")
        con.execute("INSERT INTO umls_concepts VALUES ('C0032227', 'Pleural effusion', '[\"T047\"]')")
        write_metadata(con, "sources", ["radgraph", "umls"])
    con = open_store(path)
    stats = store_stats(con, top=2)
    con.close()
    assert stats["tables"]["umls_concepts"] == 1 and list(stats["tables"])[:6] == list(CORE_TABLES)
    assert stats["metadata"]["sources"] == ["radgraph", "umls"]
    assert stats["labels"] == {"ANAT-DP": 5, "OBS-DA": 2, "OBS-DP": 5}
    assert [(t["head"], t["count"]) for t in stats["top_triplets"]] == [("effusion", 3), ("no pneumothorax", 2)]
    with pytest.raises(InputError, match="no such store"):
        with atomic_update(tmp_path / "absent.duckdb"):
            pass


def test_open_store_rejects_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such store") as err:
        open_store(tmp_path / "absent.duckdb")
    assert err.value.file == str(tmp_path / "absent.duckdb")
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n" * 100, encoding="utf-8")
    with pytest.raises(InputError, match="not a DuckDB database"):
        open_store(text)
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(InputError, match="not a motor-kg store") as err:
        open_store(other)
    assert err.value.field == "metadata"
    newer = tmp_path / "newer.duckdb"
    with atomic_build(newer) as con:
        write_metadata(con, "schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(InputError, match="newer than this motor-kg reads") as err:
        open_store(newer)
    assert err.value.field == "schema_version"
    with pytest.raises(InputError, match="no such store"):
        with atomic_update(other.with_name("missing.duckdb")):
            pass
    with pytest.raises(InputError, match="not a motor-kg store"):
        with atomic_update(other):
            pass
