"""Reading RadGraph-format files: layouts, labelers, validation and the bundled sample."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kg.errors import InputError
from kg.normalize import normalize_entity, relation_triplets, report_triplets, singularize
from kg.radgraph import BUNDLED_SAMPLE, detect_radgraph_format, parse_report
from kg.radgraph_reader import RadGraphReader
from kg.records import ENTITY_LABELS, RELATION_TYPES

REPORT = {
    "text": "Small left pleural effusion . No pneumothorax .",
    "entities": {
        "1": {"tokens": "Small", "label": "OBS-DP", "start_ix": 0, "end_ix": 0, "relations": [["modify", "4"]]},
        "2": {"tokens": "left", "label": "ANAT-DP", "start_ix": 1, "end_ix": 1, "relations": [["modify", "3"]]},
        "3": {"tokens": "pleural", "label": "ANAT-DP", "start_ix": 2, "end_ix": 2, "relations": []},
        "4": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3, "end_ix": 3, "relations": [["located_at", "3"]]},
        "5": {"tokens": "pneumothorax", "label": "OBS-DA", "start_ix": 6, "end_ix": 6, "relations": []},
    },
    "data_source": "synthetic",
    "data_split": "train",
}
LABELER_1 = {"1": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3, "end_ix": 3, "relations": []}}
LABELER_2 = {
    "1": {"tokens": "effusion", "label": "OBS-U", "start_ix": 3, "end_ix": 3, "relations": [["located_at", "2"]]},
    "2": {"tokens": "pleural", "label": "ANAT-DP", "start_ix": 2, "end_ix": 2, "relations": []},
}
TWO_ANNOTATORS = {"text": REPORT["text"], "labeler_1": {"entities": LABELER_1, "data_split": "test"}, "labeler_2": LABELER_2}


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def read_all(*paths: Path, **options: object) -> list:
    return list(RadGraphReader(paths, **options))


# ---------------------------------------------------------------------- bundled sample
def test_bundled_sample_is_valid_and_spans_match_tokens() -> None:
    for labeler in ("labeler_1", "labeler_2"):
        reader = RadGraphReader([BUNDLED_SAMPLE], labeler=labeler, skip_invalid=True)
        records = list(reader)
        assert reader.errors == [] and reader.formats == {BUNDLED_SAMPLE: "radgraph"}
        assert len(records) == 30
        for record in records:
            words = record.text.split()
            for entity in record.entities.values():
                assert " ".join(words[entity.start_ix: entity.end_ix + 1]) == entity.tokens, (record.report_id, entity)
    raw = json.loads(BUNDLED_SAMPLE.read_text(encoding="utf-8"))
    two_annotators = [report for report in raw.values() if "labeler_1" in report]
    assert len(two_annotators) >= 2
    assert any("entities" in report["labeler_1"] for report in two_annotators)  # {"entities": {...}} layout
    assert any("entities" not in report["labeler_1"] for report in two_annotators)  # bare entity mapping
    both = read_all(BUNDLED_SAMPLE, labeler="both")
    assert len(both) == 30 + len(two_annotators)
    labels = {e.label for r in both for e in r.entities.values()}
    relations = {rel for r in both for e in r.entities.values() for rel, _ in e.relations}
    assert labels == set(ENTITY_LABELS) and relations == set(RELATION_TYPES)


# ---------------------------------------------------------------------- layouts
def test_dataset_layout(tmp_path: Path) -> None:
    path = write_json(tmp_path / "train.json", {"p1/s1.txt": REPORT})
    [record] = read_all(path)
    assert (record.report_id, record.labeler, record.data_source, record.data_split) == (
        "p1/s1.txt", None, "synthetic", "train")
    assert record.text == REPORT["text"]
    effusion = record.entities["4"]
    assert (effusion.tokens, effusion.label, effusion.start_ix, effusion.end_ix) == ("effusion", "OBS-DP", 3, 3)
    assert effusion.relations == [("located_at", "3")]
    assert record.to_json() == REPORT


def test_labeler_option(tmp_path: Path) -> None:
    path = write_json(tmp_path / "test.json", {"t1": TWO_ANNOTATORS, "single": REPORT})
    first = read_all(path)
    assert [(r.report_id, r.labeler) for r in first] == [("t1", "labeler_1"), ("single", None)]
    assert first[0].entities["1"].label == "OBS-DP" and first[0].data_split == "test"
    [second, _] = read_all(path, labeler="labeler_2")
    assert second.labeler == "labeler_2" and second.entities["1"].relations == [("located_at", "2")]
    both = read_all(path, labeler="both")
    assert [(r.report_id, r.labeler, len(r.entities)) for r in both] == [
        ("t1", "labeler_1", 1), ("t1", "labeler_2", 2), ("single", None, 5)]
    with pytest.raises(InputError, match="unknown labeler 'labeler_3'"):
        RadGraphReader([path], labeler="labeler_3")


def test_radgraph_package_layouts(tmp_path: Path) -> None:
    package_report = copy.deepcopy(REPORT)
    package_report.update(data_source=None, data_split="inference")
    long_labels = {"OBS-DP": "Observation::definitely present", "ANAT-DP": "Anatomy::definitely present",
                   "OBS-DA": "Observation::definitely absent"}
    for entity in package_report["entities"].values():
        entity["label"] = long_labels[entity["label"]]
    mapping = write_json(tmp_path / "out.json", {"0": package_report})
    listing = write_json(tmp_path / "list.json", [package_report, {**package_report, "id": "named"}])
    assert detect_radgraph_format(mapping) == detect_radgraph_format(listing) == "radgraph-package"
    [record] = read_all(mapping)
    assert record.report_id == "0" and record.data_split == "inference" and record.data_source is None
    assert [e.label for e in record.entities.values()] == [e["label"] for e in REPORT["entities"].values()]
    assert [r.report_id for r in read_all(listing)] == ["0", "named"]
    with pytest.raises(InputError, match="top level must be a mapping of report id to report, got a JSON list"):
        read_all(listing, format="radgraph")


def test_jsonl_layout_streams(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "reports.jsonl", [
        {"id": "a", **REPORT}, "", {"report_id": 7, **REPORT}, "{broken",
    ])
    assert detect_radgraph_format(path) == "jsonl"
    records = iter(RadGraphReader([path]))
    assert next(records).report_id == "a"
    assert next(records).report_id == "7"  # read before the broken line further down is reached
    with pytest.raises(InputError, match="not valid JSON") as err:
        next(records)
    assert err.value.file == f"{path}:4"
    renamed = write_jsonl(tmp_path / "reports.json", [{"id": "a", **REPORT}, {"id": "b", **REPORT}])
    assert detect_radgraph_format(renamed) == "jsonl" and len(read_all(renamed)) == 2


def test_several_files_and_duplicate_ids(tmp_path: Path) -> None:
    first = write_json(tmp_path / "a.json", {"r1": REPORT})
    second = write_jsonl(tmp_path / "b.jsonl", [{"id": "r2", **REPORT}, {"id": "r1", **REPORT}])
    with pytest.raises(InputError, match="duplicate report id") as err:
        read_all(first, second)
    assert (err.value.file, err.value.record, err.value.field) == (f"{second}:2", "r1", "id")
    reader = RadGraphReader([first, second], skip_invalid=True)
    assert [r.report_id for r in reader] == ["r1", "r2"] and len(reader.errors) == 1


def test_integer_relation_targets_are_ids(tmp_path: Path) -> None:
    report = copy.deepcopy(REPORT)
    report["entities"]["4"]["relations"] = [["located_at", 3]]
    [record] = read_all(write_json(tmp_path / "int.json", {"r": report}))
    assert record.entities["4"].relations == [("located_at", "3")]


# ---------------------------------------------------------------------- validation
def _edit(path: str, value: object):
    """A function that sets (or, for value ``...``, deletes) the dotted key ``path`` of a report copy."""
    def apply(report: dict) -> dict:
        report = copy.deepcopy(report)
        *parents, last = path.split(".")
        target = report
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is ...:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return report
    return apply


MALFORMED = [
    ("no-entities", _edit("entities", ...), "entities", "missing"),
    ("no-text", _edit("text", ...), "text", "missing"),
    ("blank-text", _edit("text", "  \n"), "text", "empty report text"),
    ("text-number", _edit("text", 12), "text", "must be a string"),
    ("entities-list", _edit("entities", []), "entities", "must be a mapping of entity id to entity"),
    ("bad-label", _edit("entities.2.label", "ANAT-DA"), "entities.2.label", "unknown label 'ANAT-DA'"),
    ("bad-relation", _edit("entities.4.relations.0", ["part_of", "3"]), "entities.4.relations[0]",
     "unknown relation 'part_of'"),
    ("missing-target", _edit("entities.4.relations.0", ["located_at", "9"]), "entities.4.relations[0]",
     "points to entity '9'"),
    ("relation-shape", _edit("entities.4.relations.0", ["located_at"]), "entities.4.relations[0]",
     "[relation, target id] pair"),
    ("end-out-of-range", _edit("entities.5.end_ix", 8), "entities.5.end_ix", "not within the text's 8"),
    ("start-after-end", _edit("entities.5.start_ix", 6.5), "entities.5.start_ix", "must be an integer"),
    ("start-greater", _edit("entities.4.start_ix", 4), "entities.4.start_ix", "start <= end"),
    ("negative-start", _edit("entities.1.start_ix", -1), "entities.1.start_ix", "not within"),
    ("string-index", _edit("entities.3.end_ix", "2"), "entities.3.end_ix", "must be an integer, got '2'"),
    ("bool-index", _edit("entities.3.start_ix", True), "entities.3.start_ix", "must be an integer, got True"),
    ("no-tokens", _edit("entities.3.tokens", ...), "entities.3.tokens", "missing"),
    ("entity-not-object", _edit("entities.3", "pleural"), "entities.3", "must be a JSON object"),
    ("source-number", _edit("data_source", 3), "data_source", "must be a string or null"),
]


@pytest.mark.parametrize(("case", "edit", "field", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_malformed_report_names_file_record_and_field(tmp_path: Path, layout, case, edit, field, message) -> None:
    bad = edit(REPORT)
    if layout == "json":
        path = write_json(tmp_path / "bad.json", {"good": REPORT, case: bad})
        where = str(path)
    else:
        path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "good", **REPORT}, {"id": case, **bad}])
        where = f"{path}:2"
    with pytest.raises(InputError) as err:
        read_all(path)
    assert (err.value.file, err.value.record, err.value.field) == (where, case, field)
    assert message in err.value.message
    assert str(err.value).startswith(f"{where}: record {case}: field {field!r}: ")
    reader = RadGraphReader([path], skip_invalid=True)
    assert [r.report_id for r in reader] == ["good"]
    assert [(e.record, e.field) for e in reader.errors] == [(case, field)]
    # A store build reads through the column fast path: the same error, the same skip.
    with pytest.raises(InputError) as batch_err:
        list(RadGraphReader([path]).arrow_batches())
    assert str(batch_err.value) == str(err.value)
    reader = RadGraphReader([path], skip_invalid=True)
    [batch] = reader.arrow_batches()
    assert batch["reports"].column("report_id").to_pylist() == ["good"]
    assert [str(e) for e in reader.errors] == [str(err.value)]


def test_labeler_set_errors_name_the_labeler(tmp_path: Path) -> None:
    only_first = {"text": REPORT["text"], "labeler_1": LABELER_1}
    path = write_json(tmp_path / "test.json", {"t1": only_first})
    with pytest.raises(InputError, match="missing annotation set") as err:
        read_all(path, labeler="labeler_2")
    assert (err.value.record, err.value.field) == ("t1", "labeler_2")
    bad = copy.deepcopy(TWO_ANNOTATORS)
    bad["labeler_1"]["entities"]["1"]["end_ix"] = 99
    with pytest.raises(InputError, match="not within") as err:
        read_all(write_json(tmp_path / "bad.json", {"t2": bad}))
    assert (err.value.record, err.value.field) == ("t2", "labeler_1.entities.1.end_ix")
    bad_second = copy.deepcopy(TWO_ANNOTATORS)
    bad_second["labeler_2"]["2"]["label"] = "ORGAN"
    path = write_json(tmp_path / "bad2.json", {"t3": bad_second})
    assert len(read_all(path)) == 1  # labeler_1 is fine and is all that is read by default
    with pytest.raises(InputError) as err:
        read_all(path, labeler="both")
    assert err.value.field == "labeler_2.2.label"


def test_file_level_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"r1": {"text": "a",\n  "entities": }', encoding="utf-8")
    for skip in (False, True):
        with pytest.raises(InputError, match="not valid JSON: .* at line 2 column") as err:
            read_all(broken, skip_invalid=skip)
        assert err.value.file == str(broken)
    empty = tmp_path / "empty.json"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        read_all(empty)
    with pytest.raises(InputError, match="no such file") as err:
        read_all(tmp_path / "absent.json")
    assert err.value.file == str(tmp_path / "absent.json")
    with pytest.raises(InputError, match="unknown format 'xml'"):
        RadGraphReader([broken], format="xml")
    jsonl = write_jsonl(tmp_path / "lines.jsonl", [[1, 2], {"text": "no id"}])
    reader = RadGraphReader([jsonl], skip_invalid=True)
    assert list(reader) == []
    assert [(e.file, e.field, e.message) for e in reader.errors] == [
        (f"{jsonl}:1", None, "a report must be a JSON object"),
        (f"{jsonl}:2", "id", "missing report id ('id' or 'report_id')"),
    ]


def test_parse_report_directly() -> None:
    [record] = parse_report("x", REPORT, file="inline")
    assert record.report_id == "x" and len(record.entities) == 5
    with pytest.raises(InputError, match="a report must be a JSON object") as err:
        parse_report("x", ["text"], file="inline")
    assert (err.value.file, err.value.record) == ("inline", "x")


# ---------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(("word", "singular"), [
    ("opacities", "opacity"), ("effusions", "effusion"), ("lungs", "lung"), ("pleura", "pleura"),
    ("pleurae", "pleura"), ("masses", "mass"), ("ribs", "rib"), ("atelectasis", "atelectasis"),
    ("apices", "apex"), ("hila", "hilum"), ("vertebrae", "vertebra"), ("bases", "base"), ("osseous", "osseous"),
    ("branches", "branch"), ("kidneys", "kidney"), ("pneumothoraces", "pneumothorax"), ("has", "has"),
    ("pancreas", "pancreas"), ("metastases", "metastasis"), ("devices", "device"),
])
def test_singularize(word: str, singular: str) -> None:
    assert singularize(word) == singular


def test_normalize_entity() -> None:
    assert normalize_entity("Bilateral  Pleural-Effusions,") == "bilateral pleural effusion"
    assert normalize_entity("2.5 cm") == "2.5 cm"
    assert normalize_entity("R. lower lobe.") == "r lower lobe"
    assert normalize_entity("(Opacities)") == "opacity"
    assert normalize_entity("...") == ""


def test_report_triplets_absent_modes() -> None:
    report = copy.deepcopy(REPORT)
    report["entities"]["5"]["relations"] = [["located_at", "3"]]
    [record] = parse_report("r", report)
    present = [("small", "modify", "effusion", "OBS-DP", "OBS-DP"), ("left", "modify", "pleural", "ANAT-DP", "ANAT-DP"),
               ("effusion", "located_at", "pleural", "OBS-DP", "ANAT-DP")]
    assert relation_triplets(record, "drop") == present
    assert relation_triplets(record) == present + [("no pneumothorax", "located_at", "pleural", "OBS-DA", "ANAT-DP")]
    assert relation_triplets(record, "keep")[-1] == ("pneumothorax", "located_at", "pleural", "OBS-DA", "ANAT-DP")
    assert report_triplets(record) == relation_triplets(record)  # no repeats here: every one, in order
    report["entities"]["2"]["relations"].append(["modify", "3"])  # "left modify pleural" said twice
    [record] = parse_report("r", report)
    every = relation_triplets(record)
    assert every[1] == every[2] and report_triplets(record) == every[:2] + every[3:]
    with pytest.raises(ValueError, match="unknown absent mode 'ignore'"):
        relation_triplets(record, "ignore")
