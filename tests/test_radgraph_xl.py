"""RadGraph-XL output (the ``radgraph`` package's default models): labels, layouts and store rows."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from kg.build import build_store
from kg.errors import InputError
from kg.radgraph import _parse_entities_checked, entity_columns, parse_report
from kg.radgraph_reader import RadGraphReader
from kg.radgraph_labels import COARSE_LABELS
from kg.store import open_store, store_stats, write_metadata

FIXTURES = Path(__file__).parent / "fixtures" / "radgraph_xl"
#: The package's batch output (``{"0": report, "1": ...}``) and a list of per-report outputs.
BATCH = FIXTURES / "batch.json"
PER_REPORT = FIXTURES / "per_report.json"
SHARED_DIR = Path(os.environ.get("MOTOR_KG_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
XL_DEV = SHARED_DIR / "data" / "radgraph_xl" / "dev.json"

#: The README's table, written out by hand.
EXPECTED_COARSE = {
    "Anatomy::definitely present": "ANAT-DP",
    "Anatomy::definitely absent": "ANAT-DP",
    "Anatomy::uncertain": "ANAT-DP",
    "Anatomy::measurement::definitely present": "ANAT-DP",
    "Anatomy::measurement::definitely absent": "ANAT-DP",
    "Anatomy::measurement::uncertain": "ANAT-DP",
    "Observation::definitely present": "OBS-DP",
    "Observation::definitely absent": "OBS-DA",
    "Observation::uncertain": "OBS-U",
    "Observation::measurement::definitely present": "OBS-DP",
    "Observation::measurement::definitely absent": "OBS-DA",
    "Observation::measurement::uncertain": "OBS-U",
    "ANAT-DP": "ANAT-DP", "OBS-DP": "OBS-DP", "OBS-DA": "OBS-DA", "OBS-U": "OBS-U",
}


def written_labels(path: Path) -> list[tuple[str, str, str]]:
    """``(report position, entity id, label)`` straight from a fixture file, in file order."""
    document = json.loads(path.read_text(encoding="utf-8"))
    reports = document.values() if isinstance(document, dict) else [item["0"] for item in document]
    return [(str(k), entity_id, entity["label"])
            for k, report in enumerate(reports) for entity_id, entity in report["entities"].items()]


def test_every_xl_label_maps_to_the_documented_coarse_label() -> None:
    assert COARSE_LABELS == EXPECTED_COARSE


@pytest.mark.parametrize("path", [BATCH, PER_REPORT], ids=["batch", "per-report"])
def test_both_package_layouts_read_every_label_as_written(path: Path) -> None:
    records = list(RadGraphReader([path]))
    assert [r.report_id for r in records] == ["0", "1", "2"]
    assert [r.data_split for r in records] == ["inference"] * 3
    read = [(r.report_id, entity_id, e.written_label) for r in records for entity_id, e in r.entities.items()]
    assert read == written_labels(path)
    for record in records:
        for entity in record.entities.values():
            assert entity.label == EXPECTED_COARSE[entity.written_label]
    hilum = records[0].entities["6"]
    assert (hilum.tokens, hilum.label, hilum.source_label) == ("left hilum", "ANAT-DP", "Anatomy::uncertain")


def test_the_two_layouts_and_records_give_the_same_store(tmp_path: Path) -> None:
    sources = {"batch": RadGraphReader([BATCH]), "per_report": RadGraphReader([PER_REPORT]),
               "records": list(RadGraphReader([BATCH]))}  # ReportRecord objects: the build's other input
    tables = {}
    for name, source in sources.items():
        store = tmp_path / f"{name}.duckdb"
        build_store(source, store, source="radgraph", inputs=[], options={}, progress=False)
        con = duckdb.connect(str(store), read_only=True)
        tables[name] = {table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
                        for table in ("reports", "entities", "relations", "report_triplets", "triplets")}
        con.close()
    assert tables["batch"] == tables["per_report"] == tables["records"]
    assert {row[6] for row in tables["records"]["entities"]} >= {"Anatomy::uncertain", "Anatomy::definitely absent"}


def test_store_keeps_the_written_label_and_triplets_follow_the_coarse_one(tmp_path: Path) -> None:
    store = tmp_path / "xl.duckdb"
    reader = RadGraphReader([BATCH])
    build_store(reader, store, source="radgraph", inputs=[], options={}, progress=False)
    con = open_store(store)
    rows = con.execute("SELECT report_id, entity_id, label, source_label FROM entities").fetchall()
    assert [(r, e, s) for r, e, _, s in rows] == written_labels(BATCH)
    assert all(label == EXPECTED_COARSE[source] for _, _, label, source in rows)
    triplets = set(con.execute("SELECT head, relation, tail, head_label, tail_label FROM report_triplets").fetchall())
    stats = store_stats(con)
    con.close()
    assert ("nodule", "located_at", "left hilum", "OBS-DP", "ANAT-DP") in triplets       # Anatomy::uncertain
    assert ("2.5 cm", "modify", "nodule", "OBS-DP", "OBS-DP") in triplets                # Observation::measurement
    assert ("4 cm", "modify", "carina", "ANAT-DP", "ANAT-DP") in triplets                 # Anatomy::measurement
    assert ("pneumonectomy", "located_at", "left lung", "OBS-DP", "ANAT-DP") in triplets  # Anatomy::definitely absent
    assert ("no process", "located_at", "cardiopulmonary", "OBS-DA", "ANAT-DP") in triplets
    assert stats["source_labels"] == dict(sorted(Counter(label for *_, label in written_labels(BATCH)).items()))

    dropped = tmp_path / "drop.duckdb"
    build_store(RadGraphReader([BATCH]), dropped, source="radgraph", inputs=[], options={}, progress=False,
                absent="drop")
    con = open_store(dropped)
    kept = set(con.execute("SELECT head, tail FROM report_triplets").fetchall())
    con.close()
    assert ("pneumonectomy", "left lung") in kept and ("nodule", "left hilum") in kept
    assert not any("process" in pair for pair in kept)


def test_fast_and_checked_parsers_agree_on_xl_labels() -> None:
    document = json.loads(BATCH.read_text(encoding="utf-8"))
    for report_id, report in document.items():
        n_words = len(report["text"].split())
        columns = entity_columns(report["entities"], n_words)
        assert columns is not None
        checked = _parse_entities_checked(report["entities"], n_words, file=None, record=report_id, field="entities")
        assert columns.labels == [e.label for e in checked.values()]
        assert columns.source_labels == [e.written_label for e in checked.values()]
        [record] = parse_report(report_id, report)
        assert [(e.label, e.source_label) for e in record.entities.values()] == \
            [(e.label, e.source_label) for e in checked.values()]


@pytest.mark.parametrize("label", ["Anatomy::probably present", "Observation::measurement", "Device::definitely present",
                                   "observation::definitely present", ["OBS-DP"]])
def test_labels_outside_both_schemas_are_named_in_the_error(tmp_path: Path, label: object) -> None:
    document = json.loads(BATCH.read_text(encoding="utf-8"))
    document["1"]["entities"]["6"]["label"] = label
    assert entity_columns(document["1"]["entities"], 23) is None
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(InputError) as err:
        list(RadGraphReader([path]))
    assert (err.value.file, err.value.record, err.value.field) == (str(path), "1", "entities.6.label")
    assert f"unknown label {label!r}" in err.value.message and "RadGraph-XL" in err.value.message
    with pytest.raises(InputError) as batch_err:
        list(RadGraphReader([path]).arrow_batches())
    assert str(batch_err.value) == str(err.value)


def test_list_items_holding_several_reports_get_distinct_ids(tmp_path: Path) -> None:
    batch = json.loads(BATCH.read_text(encoding="utf-8"))
    path = tmp_path / "calls.json"
    path.write_text(json.dumps([{"0": batch["2"]}, {"0": batch["0"], "1": batch["1"]}]), encoding="utf-8")
    assert [r.report_id for r in RadGraphReader([path])] == ["0", "1/0", "1/1"]
    [arrow] = RadGraphReader([path]).arrow_batches()
    assert arrow["reports"].column("report_id").to_pylist() == ["0", "1/0", "1/1"]


def test_a_schema_1_store_still_opens(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    build_store(RadGraphReader([BATCH]), store, source="radgraph", inputs=[], options={}, progress=False)
    con = duckdb.connect(str(store))
    con.execute("ALTER TABLE entities DROP COLUMN source_label")
    write_metadata(con, "schema_version", 1)
    con.close()
    con = open_store(store)
    stats = store_stats(con)
    con.close()
    assert stats["source_labels"] == {} and sum(stats["labels"].values()) == len(written_labels(BATCH))


@pytest.mark.needs_shared
def test_radgraph_xl_dev_file_ingests_whole_in_both_layouts(tmp_path: Path) -> None:
    if not XL_DEV.is_file():
        pytest.skip(f"RadGraph-XL development file not found at {XL_DEV} (set MOTOR_KG_SHARED)")
    document = json.loads(XL_DEV.read_text(encoding="utf-8"))
    expected = Counter(e["label"] for report in document.values() for e in report["entities"].values())
    per_report = tmp_path / "per_report.json"
    per_report.write_text(json.dumps([{"0": report} for report in document.values()]), encoding="utf-8")
    for path in (XL_DEV, per_report):
        store = tmp_path / f"{path.stem}.duckdb"
        reader = RadGraphReader([path])  # no skip_invalid: one rejected report fails the build
        summary = build_store(reader, store, source="radgraph", inputs=[], options={}, progress=False)
        con = open_store(store)
        stats = store_stats(con)
        con.close()
        assert summary.reports == len(document) and reader.errors == []
        assert stats["source_labels"] == dict(sorted(expected.items()))
        assert sum(stats["labels"].values()) == sum(expected.values())
