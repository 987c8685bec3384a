"""Manifest format (read / validate / write) and the datasets and transforms built on it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kg.errors import InputError
from pipelines.data.datasets import ImageReportDataset, VQADataset
from kg.manifest import (
    ManifestRecord,
    VQARecord,
    read_manifest,
    read_vqa_manifest,
    write_manifest,
    write_vqa_manifest,
)
from pipelines.data.transforms import AugmentConfig, build_transform

LABELS = [1, 0, -1, None, None, None, None, None, None, None, None, None, None, 0]
GK = [0] * 19 + [1]


def study(study_id: str = "s1", **changes) -> dict:
    row = {"study_id": study_id, "image": f"img/{study_id}.png", "report": "FINDINGS: Clear lungs.",
           "labels": list(LABELS), "gk_labels": list(GK), "split": "train"}
    row.update(changes)
    return row


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def make_images(root: Path, names: list[str], size: int = 20) -> None:
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # A horizontal gradient with a distinct offset per image, to check pixel values come through.
        pixels = (np.tile(np.linspace(0, 200, size), (size, 1)) + 5 * i).astype(np.uint8)
        Image.fromarray(pixels).save(path)


# ---------------------------------------------------------------------- reading and validation
def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    records = [
        ManifestRecord("a", "img/a.png", "FINDINGS: x. IMPRESSION: y.", list(LABELS), "train", list(GK), "x.", "y."),
        ManifestRecord("b", ["img/b0.png", "img/b1.png"], "", [None] * 14, "test"),
    ]
    path = tmp_path / "m.jsonl"
    write_manifest(records, path)
    assert read_manifest(path) == records
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["study_id", "image", "report", "findings", "impression", "labels", "gk_labels", "split"]
    assert "gk_labels" not in json.loads(path.read_text().splitlines()[1])


def test_float_labels_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.jsonl", [study(labels=[1.0, 0.0, -1.0] + [None] * 11), ""])
    (record,) = read_manifest(path)
    assert record.labels[:3] == [1, 0, -1] and all(isinstance(v, int) for v in record.labels[:3])


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        (study(labels=LABELS[:13]), "labels", "list of 14 values, got 13"),
        (study(labels=[2] + LABELS[1:]), "labels", "value 0 is 2"),
        (study(labels=[True] + LABELS[1:]), "labels", "value 0 is True"),
        (study(gk_labels=[0] * 14), "gk_labels", "list of 20 values"),
        (study(split="validation"), "split", "must be one of train, val, test"),
        (study(image=[]), "image", "non-empty list"),
        (study(report=None), "report", "missing"),
        ({k: v for k, v in study().items() if k != "study_id"}, "study_id", "missing"),
    ],
)
def test_invalid_field_names_file_line_and_field(tmp_path: Path, row: dict, field: str, message: str) -> None:
    path = write_lines(tmp_path / "m.jsonl", [study("ok"), row])
    with pytest.raises(InputError, match=message) as caught:
        read_manifest(path)
    assert caught.value.field == field
    assert caught.value.file == str(path)
    assert str(caught.value.record).startswith("line 2")


def test_unknown_field_is_reported(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.jsonl", [study(lables=[])])
    with pytest.raises(InputError, match=r"unknown fields \['lables'\]"):
        read_manifest(path)


def test_bad_json_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid JSON") as caught:
        read_manifest(write_lines(tmp_path / "a.jsonl", [study(), "{broken"]))
    assert caught.value.record == "line 2"
    with pytest.raises(InputError, match="duplicate study id \\(first on line 1\\)") as caught:
        read_manifest(write_lines(tmp_path / "b.jsonl", [study("x"), study("y"), study("x")]))
    assert caught.value.record == "line 3 (study x)"
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "absent.jsonl")


def test_vqa_manifest_round_trip_and_validation(tmp_path: Path) -> None:
    records = [VQARecord("q1", "s1", "img/s1.png", "Is there a pneumothorax?", "no", "closed", "val")]
    path = tmp_path / "vqa.jsonl"
    write_vqa_manifest(records, path)
    assert read_vqa_manifest(path) == records
    bad = dict(records[0].to_json(), answer_type="yes/no")
    with pytest.raises(InputError) as caught:
        read_vqa_manifest(write_lines(tmp_path / "bad.jsonl", [bad]))
    assert caught.value.field == "answer_type" and caught.value.record == "line 1 (question q1)"


def test_write_makes_absolute_image_paths_relative(tmp_path: Path) -> None:
    image = tmp_path / "data" / "x.png"
    path = tmp_path / "manifests" / "m.jsonl"
    write_manifest([ManifestRecord("x", str(image), "r", [None] * 14, "val")], path)
    assert json.loads(path.read_text())["image"] == "../data/x.png"


def test_invalid_record_does_not_touch_existing_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_manifest([ManifestRecord("a", "a.png", "r", [None] * 14, "train")], path)
    before = path.read_bytes()
    with pytest.raises(InputError):
        write_manifest([ManifestRecord("b", "b.png", "r", [None] * 3, "train")], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


# ---------------------------------------------------------------------- transforms
def test_transform_resizes_to_unit_range_and_repeats_channels() -> None:
    image = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).resize((40, 30))
    gray = build_transform(16)(image)
    rgb = build_transform(16, in_chans=3)(image)
    assert gray.shape == (1, 16, 16) and gray.dtype == torch.float32
    assert float(gray.min()) >= 0.0 and float(gray.max()) <= 1.0 and float(gray.max()) > 0.9
    assert rgb.shape == (3, 16, 16)
    torch.testing.assert_close(rgb[0], rgb[1])
    torch.testing.assert_close(rgb[0], gray[0])


def test_augmentation_stays_in_range_and_never_mirrors() -> None:
    # Left half dark, right half bright: a mirror would swap the halves' means.
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[:, 32:] = 220
    transform = build_transform(64, augment=AugmentConfig())
    torch.manual_seed(0)
    for _ in range(20):
        out = transform(Image.fromarray(pixels))
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert float(out[0, :, 40:].mean()) > float(out[0, :, :24].mean())


# ---------------------------------------------------------------------- datasets
def test_image_report_dataset_items(tmp_path: Path) -> None:
    make_images(tmp_path, ["img/a.png", "img/b0.png", "img/b1.png", "img/c.png"])
    rows = [study("a"), study("b", image=["img/b0.png", "img/b1.png"], gk_labels=None), study("c", split="test")]
    path = write_lines(tmp_path / "m.jsonl", rows)
    dataset = ImageReportDataset(path, "train", image_size=8)
    assert len(dataset) == 2
    item = dataset[0]
    assert item["image"].shape == (1, 8, 8) and item["study_id"] == "a" and item["index"] == 0
    assert item["labels"][:3].tolist() == [1.0, 0.0, -1.0] and math.isnan(float(item["labels"][3]))
    assert item["gk_labels"].tolist() == [float(v) for v in GK]
    assert torch.isnan(dataset[1]["gk_labels"]).all()
    # The image comes through: left-to-right gradient.
    assert float(item["image"][0, :, -1].mean()) > float(item["image"][0, :, 0].mean())
    views = ImageReportDataset(path, "train", image_size=8, all_views=True)
    assert [views[i]["study_id"] for i in range(len(views))] == ["a", "b", "b"]
    assert not torch.equal(views[1]["image"], views[2]["image"])
    assert len(ImageReportDataset(path, None, image_size=8)) == 3


def test_missing_image_error_or_skip(tmp_path: Path) -> None:
    make_images(tmp_path, ["img/a.png"])
    path = write_lines(tmp_path / "m.jsonl", [study("a"), study("gone")])
    with pytest.raises(InputError, match="image not found") as caught:
        ImageReportDataset(path, "train", image_size=8)
    assert caught.value.record == "study gone" and caught.value.field == "image"
    dataset = ImageReportDataset(path, "train", image_size=8, missing="skip")
    assert len(dataset) == 1 and dataset.skipped == 1


def test_unreadable_image_names_the_study(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_text("not an image")
    dataset = ImageReportDataset(write_lines(tmp_path / "m.jsonl", [study("a")]), None, image_size=8)
    with pytest.raises(InputError, match="cannot read image") as caught:
        dataset[0]
    assert caught.value.record == "study a"


def test_vqa_dataset_items(tmp_path: Path) -> None:
    make_images(tmp_path, ["img/a.png"])
    records = [VQARecord("q1", "a", "img/a.png", "Is there an effusion?", "yes", "closed", "train"),
               VQARecord("q2", "a", "img/missing.png", "Where?", "left", "open", "train")]
    path = tmp_path / "vqa.jsonl"
    write_vqa_manifest(records, path)
    with pytest.raises(InputError, match="image not found"):
        VQADataset(path, "train", image_size=8)
    dataset = VQADataset(path, "train", image_size=8, in_chans=3, missing="skip")
    item = dataset[0]
    assert dataset.skipped == 1 and item["image"].shape == (3, 8, 8)
    assert (item["question"], item["answer"], item["answer_type"], item["qid"]) == ("Is there an effusion?", "yes", "closed", "q1")


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.jsonl", [study()])
    with pytest.raises(ValueError, match="split must be one of"):
        ImageReportDataset(path, "validation", image_size=8)
    with pytest.raises(ValueError, match="missing must be one of"):
        ImageReportDataset(path, "train", image_size=8, missing="ignore")
