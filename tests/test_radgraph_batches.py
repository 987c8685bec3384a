"""RadGraph files into store batches: the column fast path, chunking and worker processes.

A store must not depend on how its input was read: record by record, in chunks in this process,
or in chunks spread over worker processes. The errors a user sees must not either.
"""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import duckdb
import pytest

import kg.radgraph_batches as radgraph_batches
from kg.build import build_store
from kg.errors import InputError
from kg.normalize import report_triplets
from kg.radgraph import BUNDLED_SAMPLE, add_raw_report, parse_report
from kg.radgraph_reader import RadGraphReader
from kg.report_batch import ReportBatch
from kg.store import CORE_TABLES

SAMPLE = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))


def sample_corpus(copies: int) -> dict[str, dict]:
    """The bundled sample ``copies`` times over, ids made unique (two-annotator reports included)."""
    return {f"{report_id}#{k}": report for k in range(copies) for report_id, report in SAMPLE.items()}


def write(path: Path, reports: dict[str, dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": rid, **report}) + "\n" for rid, report in reports.items()),
                        encoding="utf-8")
    else:
        path.write_text(json.dumps(reports), encoding="utf-8")
    return path


def stored_rows(path: Path) -> dict[str, list[tuple]]:
    """Every core table's rows in stored order (DuckDB keeps insertion order)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {table: con.execute(f"SELECT * FROM {table}").fetchall() for table in CORE_TABLES}
    finally:
        con.close()


def build(source, path: Path, inputs: list[Path], absent: str = "negate") -> Path:
    build_store(source, path, source="radgraph", inputs=inputs, options={}, progress=False, absent=absent)
    return path


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few reports, so a small corpus spans many of them (chunks are cut in this process)."""
    monkeypatch.setattr(radgraph_batches, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(radgraph_batches, "CHUNK_REPORTS", 7)


# ---------------------------------------------------------------------- same store, any reading
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_store_is_the_same_read_by_records_by_chunks_or_by_workers(tmp_path: Path, small_chunks, suffix) -> None:
    corpus = write(tmp_path / f"corpus{suffix}", sample_corpus(8))
    options = {"labeler": "both"}
    by_records = build(iter(list(RadGraphReader([corpus], **options))), tmp_path / "records.duckdb", [corpus])
    in_process = build(RadGraphReader([corpus], **options), tmp_path / "chunks.duckdb", [corpus])
    in_workers = build(RadGraphReader([corpus], workers=2, **options), tmp_path / "workers.duckdb", [corpus])
    expected = stored_rows(by_records)
    assert len(expected["reports"]) == 240 and len(expected["report_triplets"]) > 1000
    assert stored_rows(in_process) == expected
    assert stored_rows(in_workers) == expected
    # report_triplets: reports in input order, each report's distinct triplets in order of first mention
    records = list(RadGraphReader([corpus], **options))
    reference = list(dict.fromkeys((r.report_id, *triplet) for r in records for triplet in report_triplets(r)))
    assert expected["report_triplets"] == reference


def test_absent_modes_agree_across_readings(tmp_path: Path, small_chunks) -> None:
    corpus = write(tmp_path / "corpus.jsonl", sample_corpus(3))
    for absent in ("keep", "drop"):
        by_records = build(iter(list(RadGraphReader([corpus]))), tmp_path / f"r-{absent}.duckdb", [corpus], absent)
        by_chunks = build(RadGraphReader([corpus]), tmp_path / f"c-{absent}.duckdb", [corpus], absent)
        assert stored_rows(by_chunks) == stored_rows(by_records)


def test_report_triplets_keep_the_order_of_first_mention() -> None:
    raw = {
        "text": "Left effusion . No pneumothorax . Small effusions , left .",
        "entities": {
            "1": {"tokens": "Left", "label": "ANAT-DP", "start_ix": 0, "end_ix": 0, "relations": []},
            "2": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 1, "end_ix": 1,
                  "relations": [["located_at", "1"]]},
            "3": {"tokens": "pneumothorax", "label": "OBS-DA", "start_ix": 4, "end_ix": 4, "relations": []},
            "4": {"tokens": "Small", "label": "OBS-DP", "start_ix": 6, "end_ix": 6, "relations": [["modify", "5"]]},
            "5": {"tokens": "effusions", "label": "OBS-DP", "start_ix": 7, "end_ix": 7,
                  "relations": [["located_at", "6"], ["suggestive_of", "3"]]},
            "6": {"tokens": "left", "label": "ANAT-DP", "start_ix": 9, "end_ix": 9, "relations": []},
        },
    }
    batch = ReportBatch()
    add_raw_report(batch, "r", raw)
    rows = batch.to_arrow("negate")["report_triplets"].to_pylist()
    assert [(row["head"], row["relation"], row["tail"]) for row in rows] == [
        ("effusion", "located_at", "left"),  # mentioned twice ("effusions , left"), stored once, first
        ("small", "modify", "effusion"),
        ("effusion", "suggestive_of", "no pneumothorax"),
    ]
    counts = batch.to_arrow("negate")["triplet_counts"].to_pylist()
    assert {(c["head"], c["tail"]): (c["count"], c["n_reports"]) for c in counts}[("effusion", "left")] == (2, 1)


# ---------------------------------------------------------------------- errors across chunks
def _error_key(err: InputError) -> tuple:
    return err.file, err.record, err.field, err.message


def _corpus_with_problems(tmp_path: Path) -> Path:
    """JSONL whose later chunks repeat ids of earlier ones, around invalid reports."""
    reports = sample_corpus(4)
    ids = list(reports)
    bad = copy.deepcopy(reports[ids[1]])
    bad["entities"] = []
    lines = [{"id": rid, **report} for rid, report in reports.items()]
    lines.insert(60, {"id": ids[3], **reports[ids[3]]})  # repeats an id of the first chunk
    lines.insert(61, {"id": "broken", **bad})  # and is followed by an invalid report
    lines.insert(90, {"id": ids[10], **bad})  # invalid *and* a repeated id
    path = tmp_path / "problems.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines)
    path.write_text(text.replace(json.dumps(lines[100]), "{not json", 1), encoding="utf-8")
    return path


def test_skipped_reports_and_store_match_a_single_process_read(tmp_path: Path, small_chunks) -> None:
    path = _corpus_with_problems(tmp_path)
    serial = RadGraphReader([path], skip_invalid=True)
    records = list(serial)
    expected_errors = [_error_key(err) for err in serial.errors]
    assert [key[3].split(" (")[0] for key in expected_errors[:2]] == ["duplicate report id",
                                                                      "must be a mapping of entity id to entity"]
    assert any(key[3].startswith("not valid JSON") for key in expected_errors)
    by_records = build(iter(records), tmp_path / "records.duckdb", [path])
    for workers in (0, 2):
        reader = RadGraphReader([path], skip_invalid=True, workers=workers)
        store = build(reader, tmp_path / f"w{workers}.duckdb", [path])
        assert [_error_key(err) for err in reader.errors] == expected_errors
        assert stored_rows(store) == stored_rows(by_records)


def test_the_first_error_is_the_one_a_single_process_read_raises(tmp_path: Path, small_chunks) -> None:
    path = _corpus_with_problems(tmp_path)
    with pytest.raises(InputError) as expected:
        list(RadGraphReader([path]))
    assert expected.value.message.startswith("duplicate report id (first read from")
    for workers in (0, 2):
        target = tmp_path / f"w{workers}.duckdb"
        with pytest.raises(InputError) as err:
            build(RadGraphReader([path], workers=workers), target, [path])
        assert _error_key(err.value) == _error_key(expected.value)
        assert not target.exists()


def test_an_invalid_report_with_a_repeated_id_is_reported_as_a_repeat(tmp_path: Path, small_chunks) -> None:
    reports = sample_corpus(3)
    first_id = next(iter(reports))
    lines = [{"id": rid, **report} for rid, report in reports.items()]
    lines.insert(70, {"id": first_id, "text": "No entities here ."})  # invalid, and its id was read before
    path = tmp_path / "repeat.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(InputError) as expected:
        list(RadGraphReader([path]))
    assert (expected.value.file, expected.value.field) == (f"{path}:71", "id")
    with pytest.raises(InputError) as err:
        list(RadGraphReader([path], workers=2).arrow_batches())
    assert _error_key(err.value) == _error_key(expected.value)


# ---------------------------------------------------------------------- the column fast path
ENTITY = {"tokens": "effusion", "label": "OBS-DP", "start_ix": 1, "end_ix": 1}
ANATOMY = {"tokens": "left", "label": "ANAT-DP", "start_ix": 0, "end_ix": 0, "relations": []}
FAST_PATH_CASES = {
    "well-formed": {"relations": [["located_at", "2"]]},
    "no relations key": {},
    "null relations": {"relations": None},
    "integer target": {"relations": [["located_at", 2]]},
    "missing target": {"relations": [["located_at", "9"]]},
    "string relations": {"relations": ""},
    "object pair": {"relations": [{"located_at": 1, "2": 2}]},
    "long pair": {"relations": [["located_at", "2", "x"]]},
    "unknown relation": {"relations": [["part_of", "2"]]},
    "unknown label": {"label": "OBS"},
    "list label": {"label": ["OBS-DP"]},
    "float start": {"start_ix": 1.0},
    "span past the text": {"end_ix": 3},
}


@pytest.mark.parametrize("case", list(FAST_PATH_CASES))
def test_fast_path_accepts_and_rejects_exactly_what_parse_report_does(case: str) -> None:
    raw = {"text": "left effusion .", "entities": {"1": {**ENTITY, **FAST_PATH_CASES[case]}, "2": ANATOMY}}
    fast, checked = ReportBatch(), ReportBatch()
    try:
        [record] = parse_report("r", raw, file="f")
    except InputError as expected:
        with pytest.raises(InputError) as err:
            add_raw_report(fast, "r", raw, file="f")
        assert _error_key(err.value) == _error_key(expected)
        assert fast.n_reports == 0  # nothing half-added
        return
    checked.add_record(record)
    add_raw_report(fast, "r", raw, file="f")
    assert {k: t.to_pylist() for k, t in fast.to_arrow("negate").items()} == {
        k: t.to_pylist() for k, t in checked.to_arrow("negate").items()}


def test_a_relation_to_an_entity_the_record_lacks_is_stored_without_a_triplet(tmp_path: Path) -> None:
    # Records from other sources than the RadGraph reader (which rejects such relations) may have them.
    entities = {"1": {**ENTITY, "relations": [["located_at", "2"]]}, "2": ANATOMY}
    [record] = parse_report("r", {"text": "left effusion .", "entities": entities})
    record.entities["1"].relations.insert(0, ("suggestive_of", "7"))
    record.entities["2"].relations.append(("modify", "9"))
    rows = stored_rows(build([record], tmp_path / "kg.duckdb", []))
    assert rows["relations"] == [("r", "", "1", "suggestive_of", "7"), ("r", "", "1", "located_at", "2"),
                                 ("r", "", "2", "modify", "9")]
    assert rows["report_triplets"] == [("r", "effusion", "located_at", "left", "OBS-DP", "ANAT-DP")]


def test_empty_entity_set_is_a_report_without_triplets() -> None:
    batch = ReportBatch()
    add_raw_report(batch, "r", {"text": "Normal chest .", "entities": {}})
    tables = batch.to_arrow("negate")
    assert tables["reports"].num_rows == 1
    assert tables["entities"].num_rows == tables["report_triplets"].num_rows == 0


# ---------------------------------------------------------------------- plumbing
def test_input_errors_keep_their_location_across_processes() -> None:
    err = InputError("unknown label 'X'", file="a.jsonl:3", record="r7", field="entities.2.label")
    copy_ = pickle.loads(pickle.dumps(err))
    assert type(copy_) is InputError and _error_key(copy_) == _error_key(err) and str(copy_) == str(err)


def test_jsonl_chunks_cover_every_line_once(tmp_path: Path, small_chunks) -> None:
    path = write(tmp_path / "c.jsonl", sample_corpus(2))
    chunks = list(radgraph_batches.jsonl_chunks(path))
    assert len(chunks) > 5
    data = path.read_bytes()
    assert b"".join(chunk.lines for chunk in chunks) == data
    for chunk in chunks:
        assert data[chunk.offset:chunk.offset + chunk.length] == chunk.lines and chunk.lines.endswith(b"\n")
        assert chunk.first_line == data[:chunk.offset].count(b"\n") + 1


def test_a_one_line_document_is_told_from_jsonl_without_parsing_it(tmp_path: Path, monkeypatch) -> None:
    import kg.radgraph

    document = write(tmp_path / "one.json", sample_corpus(1))  # json.dumps: the whole document on one line
    single = tmp_path / "single.txt"
    single.write_text(json.dumps({"id": "r", **SAMPLE[next(iter(SAMPLE))]}), encoding="utf-8")
    assert kg.radgraph.is_jsonl(single) and not kg.radgraph.is_jsonl(document)
    monkeypatch.setattr(kg.radgraph, "SNIFF_BYTES", 64)
    monkeypatch.setattr(kg.radgraph.orjson, "loads", None)  # a parse attempt would fail loudly
    assert not kg.radgraph.is_jsonl(document)


def test_auto_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jsonl = write(tmp_path / "c.jsonl", sample_corpus(1))
    document = write(tmp_path / "c.json", sample_corpus(1))
    assert radgraph_batches.auto_workers(RadGraphReader([jsonl])) == 0  # small input: one process
    monkeypatch.setattr(radgraph_batches, "AUTO_MIN_BYTES", 1)
    monkeypatch.setattr(radgraph_batches.os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert radgraph_batches.auto_workers(RadGraphReader([jsonl])) == radgraph_batches.AUTO_MAX_WORKERS
    assert radgraph_batches.auto_workers(RadGraphReader([document])) == 0  # documents are parsed here anyway
    with pytest.raises(InputError, match="workers must be a whole number"):
        RadGraphReader([jsonl], workers=-1)
