"""Batching: images normalised, reports and SK sentences tokenised, labels stacked."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from kg.errors import InputError


class MotorCollator:
    """Collate samples into the batch :class:`model.MotorModel` reads.

    A sample is ``{"image": (C, H, W) float in [0, 1], "report": str, "sk_sentence": str,
    "labels": (n_labels,) float in {1, 0, -1, nan}, "index": int}`` (``labels`` may be absent:
    all NaN). The batch holds

    * ``image`` (B, C, H, W): ``(pixel - mean) / std``;
    * ``input_ids``, ``attention_mask`` (B, L): ``[CLS] report [SEP]``, padded to the longest, at
      most ``max_len`` tokens;
    * ``sk_input_ids``, ``sk_attention_mask`` (B, L_sk): the sample's own SK sentence (an empty one
      gives ``[CLS] [SEP]``), at most ``sk_max_len`` tokens;
    * ``labels`` (B, n_labels) float; ``index`` (B,) long.

    Args:
        tokenizer: the model's tokenizer (:func:`model.tokenizer.load_tokenizer`).
        max_len: report token budget. sk_max_len: SK sentence token budget.
        mean / std: one value for every channel, or one per channel.
        labels_file: label set YAML (``None``: the 14 CheXpert classes of ``graphs/labels.yaml``),
            which fixes n_labels.
        num_labels: n_labels of another label set (e.g. ChestX-ray14's 15 diagnosis classes);
            overrides ``labels_file``.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_len: int = 128,
        sk_max_len: int = 90,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        labels_file: str | None = None,
        num_labels: int | None = None,
    ) -> None:
        from kg.label_schema import load_chexpert_classes

        self.tokenizer = tokenizer
        self.max_len = max_len
        self.sk_max_len = sk_max_len
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        self.num_labels = num_labels or len(load_chexpert_classes(labels_file))

    @classmethod
    def from_config(cls, tokenizer: Any, config: Any, num_labels: int | None = None) -> MotorCollator:
        """The collator matching a :class:`model.config.MotorConfig` (lengths and normalisation);
        ``num_labels`` for a label set other than the config's."""
        return cls(
            tokenizer, config.max_text_len, config.sk_max_len, config.image_mean, config.image_std, config.labels_file,
            num_labels,
        )

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``samples`` (see the class docstring); raises InputError naming a bad sample's field."""
        if not samples:
            raise InputError("cannot collate an empty list of samples")
        for position, sample in enumerate(samples):
            _check_sample(sample, position)
        images = torch.stack([s["image"].float() for s in samples])
        channels = images.shape[-3]  # (B, C, H, W), or (B, V, C, H, W) with several views per study
        if self.mean.shape[0] not in (1, channels):
            raise InputError(f"{self.mean.shape[0]} normalisation values for {channels} channels", field="image")
        report = self.tokenizer(
            [s["report"] for s in samples], padding="longest", truncation=True, max_length=self.max_len,
            return_tensors="pt",
        )
        sk = self.tokenizer(
            [s.get("sk_sentence") or "" for s in samples], padding="longest", truncation=True,
            max_length=self.sk_max_len, return_tensors="pt",
        )
        return {
            "image": (images - self.mean) / self.std,
            "input_ids": report["input_ids"],
            "attention_mask": report["attention_mask"],
            "sk_input_ids": sk["input_ids"],
            "sk_attention_mask": sk["attention_mask"],
            "labels": torch.stack([_labels(s, self.num_labels) for s in samples]),
            "index": torch.tensor([int(s["index"]) for s in samples], dtype=torch.long),
        }


def _check_sample(sample: dict[str, Any], position: int) -> None:
    record = sample.get("index", position) if isinstance(sample, dict) else position
    if not isinstance(sample, dict):
        raise InputError("a sample must be a dict", record=record)
    for key in ("image", "report", "index"):
        if key not in sample:
            raise InputError("missing", record=record, field=key)
    image = sample["image"]
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
        raise InputError("expected a (C, H, W) tensor, or (V, C, H, W) for several views", record=record, field="image")
    if not isinstance(sample["report"], str):
        raise InputError(f"expected text, got {type(sample['report']).__name__}", record=record, field="report")
    if not isinstance(sample.get("sk_sentence") or "", str):
        raise InputError("expected text", record=record, field="sk_sentence")


def _labels(sample: dict[str, Any], num_labels: int) -> torch.Tensor:
    labels = sample.get("labels")
    if labels is None:
        return torch.full((num_labels,), math.nan)
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if labels.shape != (num_labels,):
        raise InputError(f"expected shape ({num_labels},), got {tuple(labels.shape)}", record=sample["index"], field="labels")
    known = labels[~labels.isnan()]
    if not bool(((known == 1) | (known == 0) | (known == -1)).all()):
        raise InputError("values must be 1, 0, -1 or NaN", record=sample["index"], field="labels")
    return labels
