"""Study items in the shape ``model.processing.MotorCollator`` reads, with each study's SK sentence."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset


def study_texts(studies: Dataset) -> list[tuple[str, str]]:
    """``(study_id, report)`` of every item, read from the manifest records without loading images
    when the dataset keeps them (``ImageReportDataset.items``)."""
    items = getattr(studies, "items", None)
    if items is not None:
        return [(record.study_id, record.report) for record, _ in items]
    return [(studies[i]["study_id"], studies[i]["report"]) for i in range(len(studies))]


class MotorSamples(Dataset):
    """Wraps an ``ImageReportDataset``; item ``i`` is ``{"image", "report", "sk_sentence", "labels", "index"}``.

    Args:
        studies: items ``{"image": (C, H, W) in [0, 1], "report", "labels": (14,), "study_id", ...}``.
        sk_sentences: study id → SK sentence; studies without one (e.g. test studies, whose reports
            are not in the training knowledge) get an empty sentence.
    """

    def __init__(self, studies: Dataset, sk_sentences: Mapping[str, str] | None = None) -> None:
        self.studies = studies
        self.sk_sentences = dict(sk_sentences or {})

    def __len__(self) -> int:
        return len(self.studies)

    def reports(self) -> list[str]:
        """Every study's report, in order."""
        return [report for _, report in study_texts(self.studies)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.studies[index]
        return {
            "image": item["image"],
            "report": item["report"],
            "sk_sentence": self.sk_sentences.get(item["study_id"], ""),
            "labels": item["labels"],
            "index": index,
        }
