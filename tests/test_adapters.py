"""Dataset adapters on tiny hand-written fixtures (tests/fixtures/adapters/, no real data).

Every adapter runs through the same base checks (:class:`AdapterCase`): expected rows, a manifest
round trip that a dataset can load, determinism, and the malformed-record / missing-image policies.
Each subclass says how to break its source and checks its format's own details.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from kg.errors import InputError
from pipelines.data.adapters import (
    AdapterResult,
    convert,
    from_iu_xray_csv,
    from_r2gen_annotation,
    from_slake,
    from_vqa_rad,
    read_chexpert_labels,
    seeded_splits,
)
from kg.label_schema import label_schema
from kg.manifest import read_manifest, read_vqa_manifest
from pipelines.data.datasets import ImageReportDataset, VQADataset

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adapters"


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A writable copy of one fixture directory (images included)."""
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def labels_by_name(values: list[Any]) -> dict[str, Any]:
    return dict(zip(label_schema().chexpert, values))


class AdapterCase:
    """Base checks every adapter must pass. Subclasses set the class attributes and hooks."""

    kind: str
    fixture: str
    vqa: bool = False
    expected_ids: list[str]
    #: field the malformed record is reported on
    malformed_field: str

    def run(self, root: Path, **options: Any) -> AdapterResult:
        raise NotImplementedError

    def break_record(self, root: Path) -> None:
        """Make one record of the source malformed (in the copy under ``root``)."""
        raise NotImplementedError

    def remove_image(self, root: Path) -> None:
        """Delete the image file of one record (in the copy under ``root``)."""
        raise NotImplementedError

    def row_ids(self, result: AdapterResult) -> list[str]:
        return [r.qid if self.vqa else r.study_id for r in result.records]

    # -------------------------------------------------------------- shared checks
    def test_converts_every_record(self, tmp_path: Path) -> None:
        result = self.run(copy_fixture(self.fixture, tmp_path))
        assert self.row_ids(result) == self.expected_ids
        assert result.skipped == 0 and result.messages == []
        for record in result.records:
            for image in [record.image] if self.vqa else record.images:
                assert Path(image).is_absolute() and Path(image).is_file()

    def test_manifest_round_trip_loads_in_a_dataset(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        out = tmp_path / "out" / "manifest.jsonl"
        result = self.run(root)
        convert(self.kind, *self.args(root), out=out, **self.options(root))
        if self.vqa:
            back = read_vqa_manifest(out)
            assert [r.to_json() | {"image": ""} for r in back] == [r.to_json() | {"image": ""} for r in result.records]
            dataset = VQADataset(out, None, image_size=16)
        else:
            back = read_manifest(out)
            assert [r.study_id for r in back] == [r.study_id for r in result.records]
            assert [r.labels for r in back] == [r.labels for r in result.records]
            dataset = ImageReportDataset(out, None, image_size=16)
        assert all(not Path(r.image if self.vqa else r.images[0]).is_absolute() for r in back)
        assert len(dataset) == len(result.records)
        assert dataset[0]["image"].shape == (1, 16, 16)

    def test_deterministic(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        first, second = self.run(root), self.run(root)
        assert [r.to_json() for r in first.records] == [r.to_json() for r in second.records]

    def test_malformed_record_raises_naming_file_record_and_field(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        self.break_record(root)
        with pytest.raises(InputError) as caught:
            self.run(root)
        assert caught.value.field == self.malformed_field
        assert caught.value.file is not None and caught.value.record is not None

    def test_malformed_record_skipped_and_counted(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        self.break_record(root)
        result = self.run(root, skip_invalid=True)
        assert result.counts["skipped_invalid"] == 1 and len(result.messages) == 1
        assert len(result.records) == len(self.expected_ids) - self.rows_per_broken_record

    def test_missing_image_raises(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        self.remove_image(root)
        with pytest.raises(InputError, match="image not found|no image listed") as caught:
            self.run(root)
        assert caught.value.file is not None and caught.value.record is not None

    def test_missing_image_skipped_and_counted(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        self.remove_image(root)
        result = self.run(root, missing="skip")
        assert result.counts["skipped_missing_image"] == 1
        assert len(result.records) == len(self.expected_ids) - self.rows_per_broken_record

    rows_per_broken_record = 1

    # hooks used by convert()
    def args(self, root: Path) -> tuple:
        raise NotImplementedError

    def options(self, root: Path) -> dict[str, Any]:
        return {}


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


class TestR2GenIUXray(AdapterCase):
    kind = "r2gen"
    fixture = "iu_r2gen"
    expected_ids = ["CXR1_1_IM-0001", "CXR2_1_IM-0002", "CXR3_1_IM-0003", "CXR4_1_IM-0004"]
    malformed_field = "image_path"

    def args(self, root: Path) -> tuple:
        return (root / "annotation.json", root / "images")

    def run(self, root: Path, **options: Any) -> AdapterResult:
        return from_r2gen_annotation(*self.args(root), **options)

    def break_record(self, root: Path) -> None:
        edit_json(root / "annotation.json", lambda d: d["train"][1].update(image_path=[]))

    def remove_image(self, root: Path) -> None:
        (root / "images" / "CXR4_1_IM-0004" / "1.png").unlink()

    def test_splits_views_and_unknown_labels(self, tmp_path: Path) -> None:
        records = self.run(copy_fixture(self.fixture, tmp_path)).records
        assert [r.split for r in records] == ["train", "train", "val", "test"]
        assert [len(r.images) for r in records] == [2, 2, 1, 2]
        assert records[1].report == "Mild cardiomegaly. Small left pleural effusion."
        assert all(r.labels == [None] * 14 and r.gk_labels is None for r in records)

    def test_unknown_split_key_is_an_error(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        edit_json(root / "annotation.json", lambda d: d.update(holdout=d.pop("test")))
        with pytest.raises(InputError, match="unknown split 'holdout'"):
            self.run(root)


class TestR2GenMimic(AdapterCase):
    kind = "r2gen"
    fixture = "mimic_r2gen"
    expected_ids = ["50000001", "50000002", "50000003", "50000004"]
    malformed_field = "report"

    def args(self, root: Path) -> tuple:
        return (root / "annotation.json", root / "images")

    def options(self, root: Path) -> dict[str, Any]:
        return {"chexpert_csv": root / "chexpert.csv"}

    def run(self, root: Path, **options: Any) -> AdapterResult:
        return from_r2gen_annotation(*self.args(root), **self.options(root), **options)

    def break_record(self, root: Path) -> None:
        edit_json(root / "annotation.json", lambda d: d["val"][0].update(report=7))

    def remove_image(self, root: Path) -> None:
        (root / "images" / "p10" / "p10000004" / "s50000004" / "0d4f.jpg").unlink()

    def test_images_of_a_study_are_grouped(self, tmp_path: Path) -> None:
        first = self.run(copy_fixture(self.fixture, tmp_path)).records[0]
        assert [Path(p).name for p in first.images] == ["0a1b.jpg", "0a1c.jpg"]

    def test_chexpert_labels_attached_by_study(self, tmp_path: Path) -> None:
        result = self.run(copy_fixture(self.fixture, tmp_path))
        by_id = {r.study_id: labels_by_name(r.labels) for r in result.records}
        assert by_id["50000001"]["Pleural Effusion"] == 1 and by_id["50000001"]["Cardiomegaly"] == 0
        assert by_id["50000001"]["Edema"] is None
        assert by_id["50000002"]["Support Devices"] == 1 and by_id["50000002"]["Pneumothorax"] == 0
        assert by_id["50000003"]["No Finding"] == 1
        # study 50000004 has no row in the CSV; the CSV's 50000099 has no study
        assert all(v is None for v in by_id["50000004"].values())
        assert result.counts["unlabelled"] == 1

    def test_bad_label_cell_names_row_and_column(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        text = (root / "chexpert.csv").read_text().replace("10000003,50000003,,,,,,,,,1.0", "10000003,50000003,,,,,,,,,yes")
        (root / "chexpert.csv").write_text(text)
        with pytest.raises(InputError) as caught:
            read_chexpert_labels(root / "chexpert.csv")
        assert caught.value.field == "No Finding" and "row 4" in str(caught.value.record)

    def test_missing_label_column_is_an_error(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        text = (root / "chexpert.csv").read_text().replace("Lung Lesion", "Lesion")
        (root / "chexpert.csv").write_text(text)
        with pytest.raises(InputError, match="missing columns \\['Lung Lesion'\\]"):
            read_chexpert_labels(root / "chexpert.csv")


class TestIUXrayCSV(AdapterCase):
    kind = "iu_xray_csv"
    fixture = "iu_csv"
    expected_ids = ["1", "2", "3", "4"]
    malformed_field = "findings"

    def args(self, root: Path) -> tuple:
        return (root / "indiana_reports.csv", root / "indiana_projections.csv", root / "images")

    def run(self, root: Path, **options: Any) -> AdapterResult:
        return from_iu_xray_csv(*self.args(root), **options)

    def break_record(self, root: Path) -> None:
        path = root / "indiana_reports.csv"
        rows = list(csv.DictReader(path.open(newline="")))
        rows[2]["findings"] = rows[2]["impression"] = ""
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def remove_image(self, root: Path) -> None:
        (root / "images" / "2_IM-0002-2001.dcm.png").unlink()

    def test_frontal_first_and_report_sections(self, tmp_path: Path) -> None:
        records = {r.study_id: r for r in self.run(copy_fixture(self.fixture, tmp_path)).records}
        assert [Path(p).name for p in records["1"].images] == ["1_IM-0001-4001.dcm.png", "1_IM-0001-3001.dcm.png"]
        assert records["1"].report == "FINDINGS: The heart and lungs are within normal limits. IMPRESSION: No acute disease."
        assert records["3"].report == "IMPRESSION: Prominent interstitial markings." and records["3"].findings is None
        assert records["4"].report == "FINDINGS: Stable appearance of the chest." and records["4"].impression is None

    def test_gk_labels_from_mesh(self, tmp_path: Path) -> None:
        records = {r.study_id: r for r in self.run(copy_fixture(self.fixture, tmp_path)).records}
        findings = label_schema().gk_findings

        def positives(study: str) -> set[str]:
            return {f for f, v in zip(findings, records[study].gk_labels) if v == 1}

        assert positives("1") == {"normal"}
        assert positives("2") == {"cardiomegaly", "effusion"}
        assert positives("3") == {"other_finding"}
        assert records["4"].gk_labels is None  # "No Indexing"
        assert set(records["2"].gk_labels) == {0, 1}

    def test_split_is_seeded_and_covers_every_study(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        splits = [r.split for r in self.run(root, split_seed=3).records]
        assert splits == [r.split for r in self.run(root, split_seed=3).records]
        many = seeded_splits([str(i) for i in range(100)], 0, (0.7, 0.1, 0.2))
        assert sorted(many.values()).count("train") == 70 and list(many.values()).count("test") == 20


class TestVQARad(AdapterCase):
    kind = "vqa_rad"
    fixture = "vqa_rad"
    vqa = True
    expected_ids = ["1", "2", "3", "4"]
    malformed_field = "answer_type"

    def args(self, root: Path) -> tuple:
        return (root / "vqa_rad.json", root / "images")

    def run(self, root: Path, **options: Any) -> AdapterResult:
        return from_vqa_rad(*self.args(root), **options)

    def break_record(self, root: Path) -> None:
        edit_json(root / "vqa_rad.json", lambda d: d[1].update(answer_type="MAYBE"))

    def remove_image(self, root: Path) -> None:
        edit_json(root / "vqa_rad.json", lambda d: d[0].update(image_name="synpic999.jpg"))

    def test_fields_normalised_and_split_from_phrase_type(self, tmp_path: Path) -> None:
        records = self.run(copy_fixture(self.fixture, tmp_path)).records
        assert [r.split for r in records] == ["train", "train", "test", "test"]
        assert [r.answer for r in records] == ["yes", "right", "2", "no"]
        assert [r.answer_type for r in records] == ["closed", "open", "open", "closed"]
        assert records[0].study_id == "synpic100"


class TestSlake(AdapterCase):
    kind = "slake"
    fixture = "slake"
    vqa = True
    expected_ids = ["11", "13", "14"]
    malformed_field = "question"

    def args(self, root: Path) -> tuple:
        return (root / "train.json", root / "imgs")

    def run(self, root: Path, **options: Any) -> AdapterResult:
        return from_slake(*self.args(root), **options)

    def break_record(self, root: Path) -> None:
        edit_json(root / "train.json", lambda d: d[2].update(question="  "))

    def remove_image(self, root: Path) -> None:
        edit_json(root / "train.json", lambda d: d[3].update(img_name="xmlab3/source.jpg"))

    def test_english_only_and_split_from_file_name(self, tmp_path: Path) -> None:
        result = self.run(copy_fixture(self.fixture, tmp_path))
        assert result.counts["skipped_language"] == 1
        assert {r.split for r in result.records} == {"train"}
        assert [r.answer for r in result.records] == ["yes", "left lung", "x-ray"]
        assert result.records[1].study_id == "slake2"

    def test_split_cannot_be_guessed(self, tmp_path: Path) -> None:
        root = copy_fixture(self.fixture, tmp_path)
        (root / "train.json").rename(root / "questions.json")
        with pytest.raises(InputError, match="unknown split 'questions'"):
            from_slake(root / "questions.json", root / "imgs")
        assert len(from_slake(root / "questions.json", root / "imgs", split="test").records) == 3


def test_convert_rejects_unknown_kind() -> None:
    with pytest.raises(InputError, match="unknown dataset kind 'padchest'"):
        convert("padchest")


def test_label_tensors_keep_unknown_as_nan(tmp_path: Path) -> None:
    root = copy_fixture("mimic_r2gen", tmp_path)
    out = tmp_path / "m.jsonl"
    convert("r2gen", root / "annotation.json", root / "images", chexpert_csv=root / "chexpert.csv", out=out)
    item = ImageReportDataset(out, "train", image_size=8)[0]
    labels = labels_by_name(item["labels"].tolist())
    assert labels["Pleural Effusion"] == 1.0 and labels["Cardiomegaly"] == 0.0 and math.isnan(labels["Edema"])
