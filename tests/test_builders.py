"""Dataset builders on invented fixture trees (tests/fixtures/mimic_cxr, tests/fixtures/iu_xray).

The MIMIC-CXR fixture has six report files and gzip CSVs, built so each filter removes exactly one
study: 50000004 is lateral-only, 50000005 has only an indication, 50000006 is not in the split CSV,
50000007 has no report file. Kept: 50000001 (train, PA + AP + lateral), 50000002 (validate, two
APs, impression only), 50000003 (test, no findings/impression header). The IU-Xray fixture has six
studies: uid 5 has no text, uid 6's image is missing, uid 3 lists its lateral view first.
"""
from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

from kg.errors import InputError
from pipelines.builders import (
    R2GenEntry,
    build_iu_xray,
    build_mimic_cxr,
    read_r2gen_annotation,
    write_dataset,
    write_r2gen_annotation,
)
from kg.label_schema import label_schema
from kg.manifest import read_manifest
from pipelines.builders.mimic_cxr import section_report
from pipelines.cli import main
from pipelines.data.adapters import from_r2gen_annotation

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIMIC = FIXTURES / "mimic_cxr"
IU = FIXTURES / "iu_xray"


def labels_by_name(values: list) -> dict:
    return {name: v for name, v in zip(label_schema().chexpert, values) if v is not None}


# ----------------------------------------------------------------------------- sectioning
@pytest.mark.parametrize("text, expected", [
    ("FINAL REPORT\n FINDINGS: Heart normal.\n Lungs clear.\n \n IMPRESSION: No acute process.\n",
     ("Heart normal. Lungs clear.", "Heart normal. Lungs clear.", "No acute process.")),
    ("FINAL REPORT\n INDICATION: Cough.\n \n IMPRESSION: Small effusion.\n",
     ("Small effusion.", "", "Small effusion.")),
    ("FINAL REPORT\n COMPARISON: None.\n \n Lungs are clear.\n", ("Lungs are clear.", "", "")),
    ("FINAL REPORT\n EXAMINATION: CHEST.\n \n INDICATION: Fever.\n", ("", "", "")),
])
def test_sectioning_takes_findings_then_impression_then_last_paragraph(text: str, expected: tuple) -> None:
    assert section_report(text) == expected


# ----------------------------------------------------------------------------- MIMIC-CXR
def test_mimic_filters_each_remove_the_planted_study() -> None:
    build = build_mimic_cxr(MIMIC)
    assert dict(build.filters) == {"no_split": 1, "no_report_file": 1, "empty_report": 1, "no_frontal_image": 1,
                                   "image_missing": 0}
    assert build.examples == {"no_split": ["50000006"], "no_report_file": ["50000007"],
                              "empty_report": ["50000005"], "no_frontal_image": ["50000004"]}
    assert build.kept == {"train": 1, "val": 1, "test": 1}


def test_mimic_entries_choose_frontal_views_and_r2gen_reports() -> None:
    entries = {e.study_id: e for e in build_mimic_cxr(MIMIC).entries}
    assert entries["50000001"].to_json() == {
        "id": "d1-pa", "study_id": 50000001, "subject_id": 10000001,
        "report": "The heart size is normal. There is a small left pleural effusion. No pneumothorax.",
        "image_path": ["files/p10/p10000001/s50000001/d1-pa.jpg"], "split": "train",
    }
    assert entries["50000002"].id == "d2-ap-a"  # two APs: the smaller dicom_id
    assert entries["50000002"].split == "val"  # "validate" in the split CSV
    assert entries["50000002"].report == "Mild cardiomegaly without edema."  # impression, findings empty
    assert entries["50000003"].report == "Lungs are clear. No focal consolidation."  # last paragraph


def test_mimic_labels_follow_label_order_not_csv_column_order() -> None:
    records = {r.study_id: r for r in build_mimic_cxr(MIMIC).records}
    assert labels_by_name(records["50000001"].labels) == {"Cardiomegaly": 0, "Pleural Effusion": 1, "Pneumothorax": 0}
    assert labels_by_name(records["50000002"].labels) == {"Cardiomegaly": 1, "Edema": 0}
    assert records["50000001"].findings.startswith("The heart size")
    assert records["50000001"].impression == "Small left pleural effusion."


def test_mimic_outputs_round_trip_and_are_deterministic(tmp_path: Path) -> None:
    first = write_dataset(build_mimic_cxr(MIMIC, images_root=tmp_path / "jpg"), tmp_path / "a")
    second = write_dataset(build_mimic_cxr(MIMIC, images_root=tmp_path / "jpg"), tmp_path / "a2")
    for name in ("annotation", "manifest", "build_log"):
        assert first[name].read_bytes() == second[name].read_bytes()
    entries = read_r2gen_annotation(first["annotation"])
    assert [(e.study_id, e.split) for e in entries] == [("50000001", "train"), ("50000002", "val"),
                                                        ("50000003", "test")]
    manifest = read_manifest(first["manifest"])
    assert [r.study_id for r in manifest] == ["50000001", "50000002", "50000003"]
    assert manifest[0].image == "../jpg/files/p10/p10000001/s50000001/d1-pa.jpg"
    log = json.loads(first["build_log"].read_text())
    assert log["filters"]["no_split"] == 1 and log["kept_by_split"] == {"train": 1, "val": 1, "test": 1}
    # The annotation is the layout the R2Gen adapter (and R2Gen-based code) reads.
    for entry in entries:
        image = tmp_path / "jpg" / entry.image_path[0]
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"")
    adapted = from_r2gen_annotation(first["annotation"], tmp_path / "jpg")
    assert [(r.study_id, r.report) for r in adapted.records] == [(r.study_id, r.report) for r in manifest]


def test_mimic_check_images_drops_missing_jpgs(tmp_path: Path) -> None:
    jpg = tmp_path / "jpg"
    for relative in ("files/p10/p10000001/s50000001/d1-pa.jpg", "files/p10/p10000002/s50000003/d3-pa.jpg"):
        (jpg / relative).parent.mkdir(parents=True, exist_ok=True)
        (jpg / relative).write_bytes(b"")
    build = build_mimic_cxr(MIMIC, images_root=jpg, check_images=True)
    assert build.filters["image_missing"] == 1 and build.examples["image_missing"] == ["50000002"]
    assert [e.study_id for e in build.entries] == ["50000001", "50000003"]


def _rewrite_gz_csv(path: Path, drop_column: str | None = None, edit: tuple[int, str, str] | None = None) -> None:
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c != drop_column]
    if edit is not None:
        index, column, value = edit
        rows[index][column] = value
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def mimic_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MIMIC, tmp_path / "mimic"))


def test_mimic_missing_column_names_file_and_column(mimic_copy: Path) -> None:
    _rewrite_gz_csv(mimic_copy / "mimic-cxr-2.0.0-metadata.csv.gz", drop_column="ViewPosition")
    with pytest.raises(InputError, match=r"mimic-cxr-2.0.0-metadata.csv.gz: field 'ViewPosition': missing column"):
        build_mimic_cxr(mimic_copy)


def test_mimic_bad_cells_name_the_row_and_column(mimic_copy: Path) -> None:
    _rewrite_gz_csv(mimic_copy / "mimic-cxr-2.0.0-chexpert.csv.gz", edit=(1, "Edema", "maybe"))
    with pytest.raises(InputError, match=r"chexpert.csv.gz: record line 3 \(study 50000002\): field 'Edema'"):
        build_mimic_cxr(mimic_copy)
    _rewrite_gz_csv(mimic_copy / "mimic-cxr-2.0.0-split.csv.gz", edit=(0, "split", "holdout"))
    with pytest.raises(InputError, match=r"split.csv.gz: record line 2: field 'split': unknown split 'holdout'"):
        build_mimic_cxr(mimic_copy)


def test_mimic_unreadable_report_names_the_file(mimic_copy: Path) -> None:
    bad = mimic_copy / "files/p10/p10000001/s50000002.txt"
    bad.write_bytes(b"FINDINGS: \xff\xfe broken")
    with pytest.raises(InputError, match=r"s50000002.txt: report is not UTF-8"):
        build_mimic_cxr(mimic_copy)


def test_mimic_missing_split_csv_says_where_it_looked(mimic_copy: Path) -> None:
    (mimic_copy / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(InputError, match="mimic-cxr-2.0.0-split.csv.*not found.*--split-csv"):
        build_mimic_cxr(mimic_copy)


def test_mimic_without_chexpert_csv_leaves_labels_unknown(mimic_copy: Path) -> None:
    (mimic_copy / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    build = build_mimic_cxr(mimic_copy)
    assert all(v is None for r in build.records for v in r.labels)
    assert build.notes["kept_without_chexpert_labels"] == 3


def test_mimic_cli_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["build-dataset", "mimic-cxr", "--root", str(MIMIC), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["annotation.json", "build_log.json", "manifest.jsonl"]
    assert "removed       1  no_frontal_image" in capsys.readouterr().out
    assert main(["build-dataset", "mimic-cxr", "--root", str(tmp_path / "absent"), "--out", str(out)]) == 1


# ----------------------------------------------------------------------------- IU-Xray
def iu_csv_build(seed: int = 0):
    return build_iu_xray(IU / "images", reports_csv=IU / "indiana_reports.csv",
                         projections_csv=IU / "indiana_projections.csv", seed=seed)


def test_iu_csv_filters_and_entries() -> None:
    build = iu_csv_build()
    assert dict(build.filters) == {"invalid_or_empty_report": 1, "image_missing": 1}
    entries = {e.id: e for e in build.entries}
    assert sorted(entries) == ["1", "2", "3", "4"]
    assert entries["3"].image_path == ["3_IM-1003-1001.dcm.png", "3_IM-1003-2001.dcm.png"]  # frontal first
    assert entries["3"].report == "Small left pleural effusion."  # impression: the findings are empty
    assert entries["1"].report == "The heart is normal in size. The lungs are clear."
    assert [e.split for e in build.entries] == [r.split for r in build.records]


def test_iu_split_depends_only_on_the_seed(tmp_path: Path) -> None:
    a = write_dataset(iu_csv_build(seed=3), tmp_path / "a")
    b = write_dataset(iu_csv_build(seed=3), tmp_path / "b")
    assert a["annotation"].read_bytes() == b["annotation"].read_bytes()
    assert json.loads(a["build_log"].read_text())["options"] == {"seed": 3, "split_fractions": [0.7, 0.1, 0.2]}


def test_iu_rebuild_from_annotation_round_trips(tmp_path: Path) -> None:
    first = write_dataset(iu_csv_build(), tmp_path / "csv")
    again = write_dataset(build_iu_xray(IU / "images", annotation=first["annotation"]), tmp_path / "ann")
    assert again["annotation"].read_bytes() == first["annotation"].read_bytes()
    assert sorted((r.study_id, r.split) for r in read_manifest(again["manifest"])) == sorted(
        (r.study_id, r.split) for r in read_manifest(first["manifest"]))


def test_iu_needs_exactly_one_source() -> None:
    with pytest.raises(InputError, match="either --reports and --projections, or --annotation"):
        build_iu_xray(IU / "images")
    with pytest.raises(InputError, match="either"):
        build_iu_xray(IU / "images", reports_csv=IU / "indiana_reports.csv")


def test_iu_cli_from_annotation(tmp_path: Path) -> None:
    annotation = write_r2gen_annotation(
        [R2GenEntry("1", "Clear lungs.", ["1_IM-1001-1001.dcm.png"], "test"),
         R2GenEntry("9", "Gone.", ["9_missing.png"], "train")], tmp_path / "annotation.json")
    out = tmp_path / "out"
    assert main(["build-dataset", "iu-xray", "--annotation", str(annotation), "--images-root", str(IU / "images"),
                 "--out", str(out)]) == 0
    log = json.loads((out / "build_log.json").read_text())
    assert log["filters"] == {"invalid_or_empty_report": 0, "image_missing": 1}
    assert [r.study_id for r in read_manifest(out / "manifest.jsonl")] == ["1"]


# ----------------------------------------------------------------------------- R2Gen file
def test_r2gen_round_trip_keeps_ids_and_splits(tmp_path: Path) -> None:
    entries = [R2GenEntry("d1", "a.", ["x.jpg"], "train", study_id="5", subject_id="1"),
               R2GenEntry("CXR9", "b.", ["y.png", "z.png"], "test")]
    path = write_r2gen_annotation(entries, tmp_path / "annotation.json")
    raw = json.loads(path.read_text())
    assert raw["train"][0]["study_id"] == 5 and raw["val"] == []
    assert read_r2gen_annotation(path) == entries


@pytest.mark.parametrize("data, message", [
    ({"train": [{"id": "a", "image_path": ["x.png"]}]}, r"record train\[0\] \(id a\): field 'report'"),
    ({"train": [{"id": "a", "report": "r", "image_path": []}]}, r"field 'image_path'"),
    ({"holdout": []}, r"field 'holdout': unknown split key"),
    ({"train": [{"report": "r", "image_path": ["x"]}]}, r"record train\[0\]: field 'id'"),
])
def test_r2gen_malformed_entries_are_located(tmp_path: Path, data: dict, message: str) -> None:
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        read_r2gen_annotation(path)
