"""Evaluation of MOTOR models: image-report retrieval (zero-shot or finetuned).

Retrieval ranks by the cosine similarity of the L2-normalised image and report features (ITC
space, ``encode_image`` / ``encode_text``); optionally the top ``itm_k`` candidates of every query
are re-ranked by the ITM head's match probability, as BLIP evaluates retrieval.

The other tasks' evaluations live beside their finetuning in :mod:`pipelines.finetune`; this module
also holds :func:`evaluate_model`, the ``motor evaluate`` entry point.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.loop import to_device


def _loader(dataset: Dataset, collate_fn: Callable, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)


@torch.no_grad()
def retrieval_features(
    model: Any, dataset: Dataset, collate_fn: Callable, *, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and report features of every study, in dataset order.

    Returns:
        ``(image_feats, text_feats)``, float32 ``(N, D)`` each, L2-normalised, on the CPU.
    """
    model.eval()
    images, texts = [], []
    for batch in _loader(dataset, collate_fn, batch_size):
        batch = to_device(batch, device)
        images.append(model.encode_image(batch["image"]).float().cpu())
        texts.append(model.encode_text(batch["input_ids"], batch["attention_mask"]).float().cpu())
    return torch.cat(images), torch.cat(texts)


@torch.no_grad()
def itm_rerank(
    model: Any, dataset: Dataset, collate_fn: Callable, similarity: torch.Tensor, *, k: int, batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Scores where the ITC top-``k`` candidates of every image and of every report get ITM scores.

    Args:
        similarity: ``(N, N)`` ITC similarity, images × reports.
        k: candidates per query; the union of each image's top-``k`` reports and each report's
            top-``k`` images is scored by ITM, once per pair.

    Returns:
        ``(N, N)`` float array; candidate pairs score ``1 + p_match`` (in ``[1, 2]``), the others keep
        their ITC similarity (in ``[-1, 1]``), so every query ranks its candidates first, by ITM.
    """
    model.eval()
    batches = list(_loader(dataset, collate_fn, batch_size))
    images = torch.cat([b["image"] for b in batches])
    ids = torch.cat([b["input_ids"] for b in batches])
    masks = torch.cat([b["attention_mask"] for b in batches])
    k = min(k, similarity.shape[1])
    rows_top = similarity.topk(k, dim=1).indices
    cols_top = similarity.topk(k, dim=0).indices
    pairs = sorted(
        {(i, int(j)) for i in range(len(rows_top)) for j in rows_top[i]}
        | {(int(i), j) for j in range(cols_top.shape[1]) for i in cols_top[:, j]}
    )
    scores = similarity.double().numpy().copy()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = torch.tensor([i for i, _ in chunk])
        cols = torch.tensor([j for _, j in chunk])
        probs = model.itm_scores(images[rows].to(device), ids[cols].to(device), masks[cols].to(device)).float().cpu()
        for (i, j), p in zip(chunk, probs.tolist()):
            scores[i, j] = 1.0 + p
    return scores


def same_report_mask(reports: list[str]) -> np.ndarray:
    """``(N, N)`` boolean matrix: study ``j``'s report is a positive for image ``i`` when the texts are equal.

    Normal studies often share a report word for word; ranking an identical report first is a
    correct retrieval, so every identical copy counts as a positive.
    """
    keys = [" ".join(report.lower().split()) for report in reports]
    codes = {key: code for code, key in enumerate(dict.fromkeys(keys))}
    ids = np.array([codes[key] for key in keys])
    return ids[:, None] == ids[None, :]


def retrieval_evaluation(
    model: Any,
    dataset: Dataset,
    collate_fn: Callable,
    *,
    batch_size: int,
    device: torch.device,
    itm_k: int = 0,
) -> dict[str, Any]:
    """Report retrieval (image→text) and image retrieval (text→image) on ``dataset``.

    Args:
        dataset: :class:`pipelines.samples.MotorSamples`; study ``i``'s image and report are each
            other's positive, as are identical reports (:func:`same_report_mask`).
        itm_k: also score with ITM re-ranking of the top ``itm_k`` candidates (0: ITC only).

    Returns:
        ``{"itc": metrics, "itm": metrics (when itm_k), "n": N, "distinct_reports": int}`` with
        ``metrics`` as :func:`pipelines.metrics.retrieval_metrics` returns them (recalls, median
        ranks, ``mean_R`` and their ``chance`` levels).
    """
    from pipelines.metrics import retrieval_metrics

    image_feats, text_feats = retrieval_features(model, dataset, collate_fn, batch_size=batch_size, device=device)
    similarity = image_feats @ text_feats.T
    positives = same_report_mask(dataset.reports())
    result: dict[str, Any] = {
        "n": len(dataset),
        "distinct_reports": int(len(np.unique(positives, axis=0))),
        "itc": retrieval_metrics(similarity.numpy(), positives),
    }
    if itm_k:
        scores = itm_rerank(model, dataset, collate_fn, similarity, k=itm_k, batch_size=batch_size, device=device)
        result["itm"] = retrieval_metrics(scores, positives)
    return result
