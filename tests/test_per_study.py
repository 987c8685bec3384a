"""Per-study outputs: evaluations return them, run bundles save them beside metrics.json."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from kg.errors import InputError
from pipelines.evaluate import retrieval_evaluation, vqa_evaluation
from pipelines.metrics.significance import bootstrap_ci, column_mean, recall_at
from pipelines.per_study import read_per_study, split_per_study, write_per_study
from pipelines.run_bundle import RunResult

REPORTS = ["effusion left", "normal", "normal", "cardiomegaly", "nodule right", "edema"]


class Studies(Dataset):
    """Stands in for ``MotorSamples``: study records (for ids and reports) and feature items."""

    def __init__(self, reports: list[str]) -> None:
        records = [SimpleNamespace(study_id=f"s{i}", report=r, qid=f"q{i}") for i, r in enumerate(reports)]
        self.studies = SimpleNamespace(items=[(record, None) for record in records])
        self.items = self.studies.items
        self._reports = reports

    def reports(self) -> list[str]:
        return list(self._reports)

    def __len__(self) -> int:
        return len(self._reports)

    def __getitem__(self, index: int) -> dict:
        return {"index": index}


def collate(items: list[dict]) -> dict:
    index = torch.tensor([item["index"] for item in items])
    return {"image": index, "input_ids": index, "attention_mask": torch.ones_like(index)}


class Embeddings:
    """``encode_image`` / ``encode_text`` from fixed random features (the same study's are close)."""

    def __init__(self, n: int, noise: float) -> None:
        generator = torch.Generator().manual_seed(0)
        base = torch.randn(n, 8, generator=generator)
        self.images = torch.nn.functional.normalize(base + noise * torch.randn(n, 8, generator=generator), dim=-1)
        self.texts = torch.nn.functional.normalize(base, dim=-1)

    def eval(self) -> None:
        pass

    def encode_image(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def encode_text(self, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.texts[index]


def test_retrieval_ranks_per_study_agree_with_the_recalls() -> None:
    result = retrieval_evaluation(Embeddings(len(REPORTS), noise=1.5), Studies(REPORTS), collate, batch_size=4,
                                  device=torch.device("cpu"))
    rows = result["per_study"]
    assert [row["study_id"] for row in rows] == [f"s{i}" for i in range(len(REPORTS))]
    for direction in ("i2t", "t2i"):
        ranks = np.array([row[f"itc_{direction}_rank"] for row in rows])
        for k in (1, 5, 10):
            assert np.mean(ranks <= k) == result["itc"][f"{direction}_R@{k}"]


def test_vqa_predictions_per_question_agree_with_the_accuracy() -> None:
    answers = ["yes", "no", "left lung", "yes"]
    kinds = ["closed", "closed", "open", "closed"]
    dataset = Studies(answers)
    for (record, _), answer, kind in zip(dataset.items, answers, kinds):
        record.answer, record.answer_type = answer, kind
    # Predicts "yes" for every question: right on questions 0 and 3.
    head = SimpleNamespace(eval=lambda: None, logits=lambda image, ids, mask: torch.tensor([[3.0, 1.0, 0.0]]).expand(len(image), 3))

    class Collate:
        """Stands in for ``VQACollator``: its vocabulary names the classes."""

        vocabulary = SimpleNamespace(answers=["yes", "no", "left lung"])

        def __call__(self, items: list[dict]) -> dict:
            return collate(items)

    result = vqa_evaluation(head, dataset, Collate(), batch_size=2, device=torch.device("cpu"))
    rows = result["per_study"]
    assert [row["prediction"] for row in rows] == ["yes"] * 4
    assert [row["correct"] for row in rows] == [1, 0, 0, 1]
    assert np.mean([row["correct"] for row in rows]) == result["model"]["overall"]


def test_run_bundle_moves_per_study_rows_out_of_metrics_json(tmp_path) -> None:
    rows = [{"study_id": f"s{i}", "itc_i2t_rank": i + 1, "itc_t2i_rank": 1} for i in range(12)]
    metrics = {"zero_shot_retrieval": {"itc": {"i2t_R@1": 1 / 12}, "n": 12, "per_study": rows},
               "test": {"model": {"overall": 0.5}, "per_study": [{"qid": "q1", "correct": 1}]}}
    RunResult(kind="pretrain", config={}, metrics=metrics).save_to_directory(tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == {"zero_shot_retrieval": {"itc": {"i2t_R@1": 1 / 12}, "n": 12}, "test": {"model": {"overall": 0.5}}}
    table = read_per_study(tmp_path / "per_study" / "zero_shot_retrieval.jsonl")
    assert table["study_id"].tolist() == [f"s{i}" for i in range(12)]
    assert recall_at(1, "itc_i2t_rank")(table) == pytest.approx(1 / 12)
    assert read_per_study(tmp_path / "per_study" / "test.jsonl")["correct"].tolist() == [1]
    # The saved table is what the significance statistics take.
    assert bootstrap_ci(table, column_mean("itc_t2i_rank"), n_resamples=20).value == 1.0


def test_split_leaves_the_metrics_untouched() -> None:
    metrics = {"a": {"per_study": [{"x": 1}], "b": 2}}
    kept, tables = split_per_study(metrics)
    assert kept == {"a": {"b": 2}} and tables == {"a": [{"x": 1}]}
    assert "per_study" in metrics["a"]


def test_list_columns_read_as_arrays_with_nan(tmp_path) -> None:
    write_per_study(tmp_path, {"test": [{"study_id": "a", "y_true": [1, None]}, {"study_id": "b", "y_true": [0, 1]}]})
    table = read_per_study(tmp_path / "per_study" / "test.jsonl")
    assert table["y_true"].shape == (2, 2) and np.isnan(table["y_true"][0, 1])


def test_malformed_per_study_files_are_named(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"study_id": "a", "rank": 1}\n{"study_id": "b"}\n')
    with pytest.raises(InputError, match="line 2"):
        read_per_study(path)
    with pytest.raises(InputError, match="not found"):
        read_per_study(tmp_path / "absent.jsonl")
