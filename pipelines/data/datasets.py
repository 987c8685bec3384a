"""PyTorch datasets over manifests: image-report pairs and VQA questions.

Image paths are resolved relative to the manifest's directory. Missing images are found when the
dataset is built, not mid-epoch: ``missing="error"`` raises an :class:`~kg.errors.InputError` naming
the manifest, the study and the path; ``missing="skip"`` drops those entries and counts them in
``dataset.skipped``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from kg.errors import InputError
from kg.label_schema import label_schema
from kg.manifest import SPLITS, ManifestRecord, VQARecord, read_manifest, read_vqa_manifest
from pipelines.data.transforms import AugmentConfig, build_transform

MISSING_POLICIES = ("error", "skip")


def label_tensor(values: list[int | None] | None, length: int) -> torch.Tensor:
    """``float32`` tensor ``(length,)`` of label values with ``nan`` for not mentioned (all ``nan`` for ``None``)."""
    if values is None:
        return torch.full((length,), math.nan)
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)


def _check_args(split: str | None, missing: str) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")


def load_image(path: Path, *, manifest: Path, record: str) -> Image.Image:
    """Open an image file; an unreadable file raises an InputError naming the manifest and record."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(f"cannot read image {path}: {err}", file=manifest, record=record, field="image") from err


class ImageReportDataset(Dataset):
    """Studies of a manifest as ``{"image", "report", "labels", "gk_labels", "index", "study_id"}``.

    Items:
        image: ``float32`` ``(in_chans, image_size, image_size)`` in [0, 1].
        report: the report text.
        labels: ``float32`` ``(14,)``, CheXpert classes; 1 / 0 / -1, ``nan`` when not mentioned.
        gk_labels: ``float32`` ``(20,)``, GK findings; all ``nan`` when the manifest has none.
        index: position of the item in this dataset.
        study_id: the study's id.

    Args:
        manifest_path: a study manifest (:mod:`kg.manifest`).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for every study.
        image_size: output size in pixels.
        in_chans: 1 (grayscale) or 3 (gray repeated).
        missing: ``"error"`` or ``"skip"`` for studies whose image file is absent.
        augment: training augmentation (:class:`~pipelines.data.transforms.AugmentConfig`), or ``None``.
        all_views: a study with several images yields one item per image (as R2Gen trains on
            MIMIC-CXR); by default only its first image is used.
        views_per_item: a study yields one item whose ``image`` is ``(views_per_item, in_chans,
            image_size, image_size)``: its first ``views_per_item`` images, the last one repeated
            when it has fewer (a model with ``views: all``, as the reference code reads IU-Xray's
            two views); ``None`` (default): one ``(in_chans, H, W)`` image.
    """

    def __init__(
        self,
        manifest_path: str | os.PathLike,
        split: str | None,
        image_size: int,
        in_chans: int = 1,
        missing: str = "error",
        augment: AugmentConfig | None = None,
        all_views: bool = False,
        views_per_item: int | None = None,
    ) -> None:
        _check_args(split, missing)
        if all_views and views_per_item is not None:
            raise ValueError("all_views (one item per image) and views_per_item (one item per study) "
                             "exclude each other")
        self.manifest_path = Path(manifest_path)
        root = self.manifest_path.resolve().parent
        schema = label_schema()
        self.num_labels, self.num_gk = len(schema.chexpert), len(schema.gk_findings)
        self.transform = build_transform(image_size, in_chans, augment)
        self.views_per_item = views_per_item
        self.items: list[tuple[ManifestRecord, Path | list[Path]]] = []
        self.skipped = 0
        for record in read_manifest(self.manifest_path):
            if split is not None and record.split != split:
                continue
            if views_per_item is not None:
                paths = [root / image for image in record.images[:views_per_item]]
                absent = [path for path in paths if not path.is_file()]
                if not absent:
                    self.items.append((record, paths + paths[-1:] * (views_per_item - len(paths))))
                elif missing == "skip":
                    self.skipped += 1
                else:
                    raise InputError(f"image not found: {absent[0]}", file=self.manifest_path,
                                     record=f"study {record.study_id}", field="image")
                continue
            images = record.images if all_views else record.images[:1]
            for image in images:
                path = root / image
                if path.is_file():
                    self.items.append((record, path))
                elif missing == "skip":
                    self.skipped += 1
                else:
                    raise InputError(f"image not found: {path}", file=self.manifest_path,
                                     record=f"study {record.study_id}", field="image")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, path = self.items[index]
        return {
            "image": self._image(path, f"study {record.study_id}"),
            "report": record.report,
            "labels": label_tensor(record.labels, self.num_labels),
            "gk_labels": label_tensor(record.gk_labels, self.num_gk),
            "index": index,
            "study_id": record.study_id,
        }


    def _image(self, path: Path | list[Path], record: str) -> torch.Tensor:
        if isinstance(path, list):  # several views: (V, C, H, W)
            return torch.stack([self.transform(load_image(p, manifest=self.manifest_path, record=record))
                                for p in path])
        return self.transform(load_image(path, manifest=self.manifest_path, record=record))


class VQADataset(Dataset):
    """Questions of a VQA manifest as ``{"image", "question", "answer", "answer_type", "index", "qid"}``.

    ``image`` is as in :class:`ImageReportDataset`; ``answer_type`` is ``"closed"`` or ``"open"``.
    Arguments are those of :class:`ImageReportDataset` (without ``all_views``); with
    ``views_per_item`` the question's one image is repeated as every view.
    """

    def __init__(
        self,
        vqa_manifest_path: str | os.PathLike,
        split: str | None,
        image_size: int,
        in_chans: int = 1,
        missing: str = "error",
        augment: AugmentConfig | None = None,
        views_per_item: int | None = None,
    ) -> None:
        _check_args(split, missing)
        self.views_per_item = views_per_item
        self.manifest_path = Path(vqa_manifest_path)
        root = self.manifest_path.resolve().parent
        self.transform = build_transform(image_size, in_chans, augment)
        self.items: list[tuple[VQARecord, Path]] = []
        self.skipped = 0
        for record in read_vqa_manifest(self.manifest_path):
            if split is not None and record.split != split:
                continue
            path = root / record.image
            if path.is_file():
                self.items.append((record, path))
            elif missing == "skip":
                self.skipped += 1
            else:
                raise InputError(f"image not found: {path}", file=self.manifest_path,
                                 record=f"question {record.qid}", field="image")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, path = self.items[index]
        image = self.transform(load_image(path, manifest=self.manifest_path, record=f"question {record.qid}"))
        if self.views_per_item is not None:
            image = image.unsqueeze(0).expand(self.views_per_item, *image.shape).contiguous()
        return {
            "image": image,
            "question": record.question,
            "answer": record.answer,
            "answer_type": record.answer_type,
            "index": index,
            "qid": record.qid,
        }
