"""MOTOR knowledge annotation export: layout, triplet order, label policy, round trip, errors, CLI.

The store is written by hand (kg.store.atomic_build) so every triplet's corpus count, and so the
expected order, is chosen here rather than computed by the code under test.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kg.cli import main as kg_main
from kg.errors import InputError
from kg.label_schema import chexpert_names
from kg.motor_json import (
    MotorEntry,
    MotorStudy,
    export_motor_annotation,
    label_index,
    meta_path,
    read_motor_annotation,
    study_triplets,
)
from kg.manifest import ManifestRecord, write_manifest
from kg.r2gen import R2GenEntry, write_r2gen_annotation
from kg.store import atomic_build, open_store

# (report_id, head, relation, tail, head_label, tail_label, n_reports in the corpus)
TRIPLETS = [
    ("s100", "no pneumothorax", "located_at", "lung", "OBS-DA", "ANAT-DP", 9),
    ("s100", "opacity", "located_at", "lung", "OBS-DP", "ANAT-DP", 5),
    ("s100", "effusion", "located_at", "pleural", "OBS-U", "ANAT-DP", 2),
    ("s100", "atelectasis", "located_at", "base", "OBS-U", "ANAT-DP", 1),
    ("s100", "small", "modify", "effusion", "OBS-DP", "OBS-DP", 1),
    ("s100", "effusion", "located_at", "pleural", "OBS-DP", "ANAT-DP", 1),
    ("200", "cardiomegaly", "suggestive_of", "failure", "OBS-DP", "OBS-U", 3),
]
# sk_order "report" (the default): as the report states them; the second "effusion located at
# pleural" (another label variant) reads the same and is dropped.
EXPECTED_100 = ["no pneumothorax located at lung", "opacity located at lung", "effusion located at pleural",
                "atelectasis located at base", "small modify effusion"]
# "specific_first": present before hedged before negated, then fewer store reports (the two
# effusion variants add up to 3), then report order.
SPECIFIC_100 = ["small modify effusion", "effusion located at pleural", "opacity located at lung",
                "atelectasis located at base", "no pneumothorax located at lung"]
N_LABELS = len(chexpert_names())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "k.duckdb"
    with atomic_build(path) as con:
        for report_id in ("s100", "200", "s400"):
            con.execute("INSERT INTO reports VALUES (?, ?, 'test', 'train')", [report_id, "text"])
        for report_id, head, rel, tail, hl, tl, n in TRIPLETS:
            con.execute("INSERT INTO report_triplets VALUES (?, ?, ?, ?, ?, ?)", [report_id, head, rel, tail, hl, tl])
            con.execute("INSERT INTO triplets VALUES (?, ?, ?, ?, ?, ?, ?)", [head, rel, tail, hl, tl, n, n])
    return path


def labels(**values: int | None) -> list[int | None]:
    return [values.get(name.replace(" ", "_")) for name in chexpert_names()]


def studies() -> list[MotorStudy]:
    return [
        MotorStudy("100", ["a/1.png", "a/2.png"], "Small effusion.", "train", labels(Pleural_Effusion=1, Edema=-1)),
        MotorStudy("200", ["b/1.png"], "Cardiomegaly.", "test", labels(Cardiomegaly=1, Pneumothorax=0)),
        MotorStudy("300", ["c/1.png"], "Nothing known.", "val", labels(No_Finding=1)),
    ]


def test_triplets_are_ordered_deduplicated_and_capped(store: Path) -> None:
    con = open_store(store)
    try:
        assert study_triplets(con, ["s100", "200", "missing"], 20) == {
            "s100": EXPECTED_100, "200": ["cardiomegaly suggestive of failure"]}
        assert study_triplets(con, ["s100"], 2) == {"s100": EXPECTED_100[:2]}
        assert study_triplets(con, ["s400"], 5) == {"s400": []}
        assert study_triplets(con, ["s100"], 20, "specific_first") == {"s100": SPECIFIC_100}
        assert study_triplets(con, ["s100"], 2, "specific_first") == {"s100": SPECIFIC_100[:2]}
    finally:
        con.close()


def test_export_and_sk_sentences_share_one_triplet_order(store: Path, tmp_path: Path) -> None:
    from kg.retrieval import KnowledgeBase

    for order in ("report", "specific_first", "frequent_first"):
        out = tmp_path / f"{order}.json"
        export_motor_annotation(store, studies(), out, sk_order=order)
        exported = read_motor_annotation(out)["train"][0].triplet
        with KnowledgeBase.open(store) as kb:
            assert kb.sk_sentence(["s100"], order=order) == "; ".join(exported)
        assert json.loads(meta_path(out).read_text())["triplet_order"]["sk_order"] == order


@pytest.mark.parametrize("policy, uncertain", [("negative", 0), ("positive", 1), ("ignore", -1)])
def test_label_index_policies(policy: str, uncertain: int) -> None:
    assert label_index([1, 0, -1, None, math.nan, 1.0, -1.0], policy) == [1, 0, uncertain, 0, 0, 1, uncertain]


def test_label_index_rejects_unknown_values_and_policies() -> None:
    with pytest.raises(InputError, match="label value 2"):
        label_index([2])
    with pytest.raises(InputError, match="uncertain policy"):
        label_index([1], "drop")


def test_export_layout_is_the_reference_layout(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "motor_knowledge.json"
    summary = export_motor_annotation(store, studies(), out, uncertain="positive")
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == 1 and list(data[0]) == ["train", "val", "test"]
    entry = data[0]["train"][0]
    assert list(entry) == ["id", "image_path", "report", "triplet", "label_index"]
    assert entry["id"] == "100" and entry["image_path"] == ["a/1.png", "a/2.png"]
    assert entry["triplet"] == EXPECTED_100  # found through the "s<id>" store name
    expected = [0] * N_LABELS
    expected[chexpert_names().index("Pleural Effusion")] = 1
    expected[chexpert_names().index("Edema")] = 1  # uncertain, policy positive
    assert entry["label_index"] == expected
    assert data[0]["val"][0]["triplet"] == []
    assert summary.without_knowledge == 1 and summary.studies == {"train": 1, "val": 1, "test": 1}
    meta = json.loads(meta_path(out).read_text())
    assert meta_path(out).name == "motor_knowledge.meta.json"
    assert meta["options"] == {"max_triplets": 20, "uncertain": "positive", "label_backend": "rules"}
    assert meta["label_order"] == list(chexpert_names())
    assert meta["counts"]["without_knowledge"] == 1 and meta["counts"]["labels_from_input"] == 3


def test_round_trip_and_determinism(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "k.json"
    export_motor_annotation(store, studies(), out, max_triplets=3, uncertain="ignore")
    first = out.read_bytes()
    export_motor_annotation(store, studies(), out, max_triplets=3, uncertain="ignore")
    assert out.read_bytes() == first
    read = read_motor_annotation(out)
    edema = chexpert_names().index("Edema")
    assert read["train"] == [MotorEntry("100", ["a/1.png", "a/2.png"], "Small effusion.", EXPECTED_100[:3],
                                        [-1 if i == edema else 1 if name == "Pleural Effusion" else 0
                                         for i, name in enumerate(chexpert_names())])]
    assert [e.id for e in read["test"]] == ["200"] and [e.id for e in read["val"]] == ["300"]


def test_studies_without_labels_are_labelled_from_their_report(store: Path, tmp_path: Path) -> None:
    unlabelled = [MotorStudy("200", ["b.png"], "Moderate cardiomegaly. No pleural effusion.", "train", None),
                  MotorStudy("201", ["c.png"], "No pneumothorax.", "train", [None] * N_LABELS)]
    summary = export_motor_annotation(store, unlabelled, tmp_path / "k.json")
    assert summary.labels_from_text == 2
    first, second = read_motor_annotation(tmp_path / "k.json")["train"]
    assert first.label_index[chexpert_names().index("Cardiomegaly")] == 1
    assert first.label_index[chexpert_names().index("Pleural Effusion")] == 0
    assert sum(first.label_index) == 1
    # Only a negated finding: CheXpert's rule makes it "No Finding".
    assert second.label_index == [int(name == "No Finding") for name in chexpert_names()]


def test_failed_export_leaves_the_old_file(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "k.json"
    out.write_text("previous")
    with pytest.raises(InputError, match="no such store"):
        export_motor_annotation(tmp_path / "absent.duckdb", studies(), out)
    with pytest.raises(InputError, match="duplicate study id"):
        export_motor_annotation(store, studies() + studies()[:1], out)
    with pytest.raises(InputError, match="split must be one of"):
        export_motor_annotation(store, [MotorStudy("1", ["x"], "r", "validation", None)], out)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.duckdb", "k.json"]


@pytest.mark.parametrize("data, message", [
    ({"train": []}, "expected a list"),
    ([{"holdout": []}], "unknown split keys"),
    ([{"train": [{"id": "1", "image_path": [], "report": "", "triplet": [], "label_index": [0]}]}],
     r"record train\[0\] \(id 1\): field 'label_index'"),
    ([{"test": [{"id": "1", "image_path": "x.png", "report": "", "triplet": [], "label_index": [0] * 14}]}],
     r"record test\[0\] \(id 1\): field 'image_path'"),
])
def test_reader_locates_malformed_entries(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        read_motor_annotation(path)


def test_cli_from_manifest_and_from_annotation(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = tmp_path / "manifest.jsonl"
    write_manifest([ManifestRecord("100", ["img/1.png", "img/2.png"], "Small effusion.",
                                   labels(Pleural_Effusion=1), "train")], manifest)
    out = tmp_path / "from_manifest.json"
    assert kg_main(["export-motor", str(store), "--manifest", str(manifest), "--out", str(out),
                    "--max-triplets", "1"]) == 0
    assert read_motor_annotation(out)["train"][0].triplet == EXPECTED_100[:1]
    annotation = write_r2gen_annotation(
        [R2GenEntry("dicom-1", "Small effusion.", ["files/p1/p1/s100/dicom-1.jpg"], "test", study_id="100",
                    subject_id="1")], tmp_path / "annotation.json")
    out = tmp_path / "from_annotation.json"
    assert kg_main(["export-motor", str(store), "--annotation", str(annotation), "--out", str(out)]) == 0
    entry = read_motor_annotation(out)["test"][0]
    assert entry.id == "dicom-1" and entry.triplet == EXPECTED_100
    assert json.loads(meta_path(out).read_text())["input"] == {"kind": "r2gen-annotation", "path": str(annotation)}
    assert "studies without knowledge in the store: 0" in capsys.readouterr().out
    assert kg_main(["export-motor", str(tmp_path / "none.duckdb"), "--annotation", str(annotation),
                    "--out", str(out)]) == 1
