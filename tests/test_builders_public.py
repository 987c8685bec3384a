"""ChestX-ray14, VQA-RAD and SLAKE builders on tiny release trees written by the tests."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from kg.errors import InputError
from pipelines.builders.chestxray14 import build_chestxray14, read_label_set, write_chestxray14
from pipelines.builders.slake import build_slake
from pipelines.builders.vqa_common import write_vqa_dataset
from pipelines.builders.vqa_rad import build_vqa_rad
from pipelines.cli import main
from pipelines.data.datasets import ImageReportDataset, VQADataset
from kg.manifest import read_manifest, read_vqa_manifest


def png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


# ----------------------------------------------------------------------------- ChestX-ray14
CXR_ROWS = [  # image, labels, patient
    ("00000001_000.png", "Cardiomegaly|Effusion", "1"),
    ("00000001_001.png", "No Finding", "1"),
    ("00000002_000.png", "Pleural_Thickening", "2"),
    ("00000003_000.png", "Hernia|Mass|Nodule", "3"),
    ("00000004_000.png", "No Finding", "4"),
    ("00000005_000.png", "Infiltration", "5"),  # listed, PNG absent
    ("00000006_000.png", "Edema", "6"),  # in neither list
]


def chestxray14_tree(root: Path, rows: list[tuple[str, str, str]] = CXR_ROWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "Data_Entry_2017.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        # The release's header, including the comma inside the last column names.
        writer.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                         "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                         "OriginalImagePixelSpacing[x", "y]", ""])
        for i, (name, labels, patient) in enumerate(rows):
            writer.writerow([name, labels, i, patient, 50, "M", "PA", 2500, 2048, 0.143, 0.143])
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n"
                                             "00000004_000.png\n00000005_000.png\n")
    (root / "test_list.txt").write_text("00000003_000.png\n")
    for name, *_ in rows[:4]:
        png(root / "images_001" / "images" / name)
    png(root / "images_002" / "images" / rows[4][0])
    png(root / "images_002" / "images" / rows[6][0])
    return root


def test_chestxray14_label_set_is_data_with_known_gk_nodes() -> None:
    label_set = read_label_set()
    assert label_set.name == "chestxray14" and len(label_set.classes) == 15
    assert label_set.names[-1] == "No Finding"
    assert {c.source for c in label_set.classes} >= {"Pleural_Thickening", "Infiltration", "Hernia"}


def test_chestxray14_build_splits_labels_and_filters(tmp_path: Path) -> None:
    build = build_chestxray14(chestxray14_tree(tmp_path / "cxr"), val_fraction=0.25)
    assert dict(build.filters) == {"not_in_split_lists": 1, "image_missing": 1}
    assert build.examples == {"not_in_split_lists": ["00000006_000"], "image_missing": ["00000005_000"]}
    records = {r.study_id: r for r in build.records}
    assert set(records) == {"00000001_000", "00000001_001", "00000002_000", "00000003_000", "00000004_000"}
    assert records["00000003_000"].split == "test"
    # One patient of the four train/val patients goes to val, with all of its images.
    assert records["00000001_000"].split == records["00000001_001"].split
    assert sum(r.split == "val" for r in records.values() if r.study_id != "00000001_001") == 1
    names = build.label_set.names
    on = {study: {names[i] for i, v in enumerate(values) if v} for study, values in build.labels.items()}
    assert on["00000001_000"] == {"Cardiomegaly", "Effusion"}
    assert on["00000001_001"] == {"No Finding"}
    assert on["00000002_000"] == {"Pleural Thickening"}
    assert on["00000003_000"] == {"Hernia", "Mass", "Nodule"}
    assert all(r.report == "" and r.labels == [None] * 14 for r in records.values())


def test_chestxray14_outputs_are_readable_and_deterministic(tmp_path: Path) -> None:
    root = chestxray14_tree(tmp_path / "cxr")
    first = write_chestxray14(build_chestxray14(root), tmp_path / "a")
    again = write_chestxray14(build_chestxray14(root), tmp_path / "a")
    assert first == again
    for key in first:
        assert first[key].read_bytes() == again[key].read_bytes()
    manifest = read_manifest(first["manifest"])
    assert manifest[0].image == "../cxr/images_001/images/00000001_000.png"
    dataset = ImageReportDataset(first["manifest"], "test", image_size=16)
    assert len(dataset) == 1 and dataset[0]["image"].shape == (1, 16, 16)
    with first["labels"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["study_id", *read_label_set().names]
    assert [row["study_id"] for row in rows] == [r.study_id for r in manifest]
    log = json.loads(first["build_log"].read_text())
    assert log["label_set"]["positives"]["No Finding"] == 2 and log["kept_by_split"]["test"] == 1


def test_chestxray14_seed_changes_only_the_train_val_cut(tmp_path: Path) -> None:
    root = chestxray14_tree(tmp_path / "cxr")
    splits = [{r.study_id: r.split for r in build_chestxray14(root, val_fraction=0.5, seed=s).records}
              for s in range(6)]
    assert all(s["00000003_000"] == "test" for s in splits)
    assert len({tuple(sorted(s.items())) for s in splits}) > 1


@pytest.mark.parametrize("edit, message", [
    (("00000002_000.png", "Pleural Thickening", "2"), "unknown classes"),
    (("00000002_000.png", "No Finding|Edema", "2"), "No Finding together"),
    (("00000001_000.png", "Edema", "1"), "repeated"),
])
def test_chestxray14_bad_rows_are_named(tmp_path: Path, edit: tuple, message: str) -> None:
    rows = [row for row in CXR_ROWS if row[0] != edit[0] or message == "repeated"] + [edit]
    root = chestxray14_tree(tmp_path / "cxr", rows)
    with pytest.raises(InputError, match=message) as caught:
        build_chestxray14(root)
    assert "Data_Entry_2017.csv" in str(caught.value) and "line" in str(caught.value)


def test_chestxray14_cli_writes_the_files(tmp_path: Path, capsys) -> None:
    root = chestxray14_tree(tmp_path / "cxr")
    assert main(["build-dataset", "chestxray14", "--root", str(root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "chestxray14: kept 5 images" in out and "image_missing" in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"manifest.jsonl", "labels_chestxray14.csv",
                                                               "build_log.json"}
    (root / "test_list.txt").unlink()
    assert main(["build-dataset", "chestxray14", "--root", str(root), "--out", str(tmp_path / "o2")]) == 1
    assert "test_list.txt" in capsys.readouterr().err


# ----------------------------------------------------------------------------- VQA-RAD
def rad_question(qid: int, image: str, answer: object, kind: str = "CLOSED", phrase: str = "freeform") -> dict:
    return {"qid": qid, "image_name": image, "image_organ": "CHEST", "answer": answer, "answer_type": kind,
            "question_type": "PRES", "question": f"Question {qid}?", "phrase_type": phrase}


def test_vqa_rad_public_release_splits_by_phrase_type(tmp_path: Path) -> None:
    root = tmp_path / "VQA_RAD"
    png(root / "VQA_RAD Image Folder" / "synpic1.jpg")
    png(root / "VQA_RAD Image Folder" / "synpic2.jpg")
    questions = [rad_question(1, "synpic1.jpg", "Yes"), rad_question(2, "synpic1.jpg", "Left Lung", "OPEN", "para"),
                 rad_question(3, "synpic2.jpg", 2, "OPEN", "test_freeform"), rad_question(4, "synpic9.jpg", "no"),
                 {"qid": 5, "image_name": "synpic1.jpg", "question": "No answer?", "answer_type": "OPEN"}]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(questions))
    build = build_vqa_rad(root)
    assert build.options == {"layout": "public"}
    assert [(r.qid, r.split, r.answer, r.answer_type, r.study_id) for r in build.records] == [
        ("1", "train", "yes", "closed", "synpic1"), ("2", "train", "left lung", "open", "synpic1"),
        ("3", "test", "2", "open", "synpic2")]
    assert dict(build.filters) == {"invalid_record": 1, "image_missing": 1}
    paths = write_vqa_dataset(build, tmp_path / "out")
    manifest = read_vqa_manifest(paths["vqa_manifest"])
    assert manifest[0].image == "../VQA_RAD/VQA_RAD Image Folder/synpic1.jpg"
    assert len(VQADataset(paths["vqa_manifest"], "test", image_size=16)) == 1
    log = json.loads(paths["build_log"].read_text())
    assert log["questions_kept"] == 3 and log["kept_by_answer_type"]["train"] == {"closed": 1, "open": 1}


def test_vqa_rad_split_files_take_the_files_split(tmp_path: Path) -> None:
    root = tmp_path / "data_RAD"
    png(root / "images" / "synpic1.jpg")
    (root / "trainset.json").write_text(json.dumps([rad_question(1, "synpic1.jpg", "yes", phrase="test_para")]))
    (root / "testset.json").write_text(json.dumps([rad_question(2, "synpic1.jpg", "no")]))
    build = build_vqa_rad(root)
    assert build.options == {"layout": "split"}
    assert [(r.qid, r.split) for r in build.records] == [("1", "train"), ("2", "test")]
    (root / "valset.json").write_text(json.dumps([rad_question(1, "synpic1.jpg", "yes")]))
    with pytest.raises(InputError, match="question id repeated") as caught:
        build_vqa_rad(root)
    assert "valset.json" in str(caught.value) and "trainset.json" in str(caught.value)
    (root / "testset.json").unlink()
    with pytest.raises(InputError, match="testset.json"):
        build_vqa_rad(root, layout="split")


# ----------------------------------------------------------------------------- SLAKE
def slake_question(qid: int, image_id: int, lang: str = "en", answer: str = "Yes") -> dict:
    return {"img_id": image_id, "img_name": f"xmlab{image_id}/source.jpg", "question": f"Question {qid}?",
            "answer": answer, "q_lang": lang, "location": "Lung", "modality": "X-Ray", "answer_type": "CLOSED",
            "base_type": "vqa", "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": qid}


def test_slake_official_splits_english_only(tmp_path: Path, capsys) -> None:
    root = tmp_path / "Slake1.0"
    for image_id in (1, 2, 3):
        png(root / "imgs" / f"xmlab{image_id}" / "source.jpg")
    (root / "train.json").write_text(json.dumps([slake_question(10, 1), slake_question(11, 1, lang="zh", answer="是")]))
    (root / "validate.json").write_text(json.dumps([slake_question(20, 2)]))
    (root / "test.json").write_text(json.dumps([slake_question(30, 3, answer="Left Lung"), slake_question(31, 4)]))
    build = build_slake(root)
    assert [(r.qid, r.split, r.study_id, r.answer) for r in build.records] == [
        ("10", "train", "slake1", "yes"), ("20", "val", "slake2", "yes"), ("30", "test", "slake3", "left lung")]
    assert build.notes == {"other_language": 1} and build.filters["image_missing"] == 1
    assert [r.qid for r in build_slake(root, language="zh").records] == ["11"]

    assert main(["build-dataset", "slake", "--root", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "slake: kept 3 questions (train 1, val 1, test 1)" in capsys.readouterr().out
    assert [r.qid for r in read_vqa_manifest(tmp_path / "out" / "vqa.jsonl")] == ["10", "20", "30"]


def test_slake_requires_train_and_test(tmp_path: Path) -> None:
    (tmp_path / "Slake1.0" / "imgs").mkdir(parents=True)
    (tmp_path / "Slake1.0" / "train.json").write_text("[]")
    with pytest.raises(InputError, match="file not found") as caught:
        build_slake(tmp_path / "Slake1.0")
    assert "test.json" in str(caught.value)
