"""Diagnosis classification metrics: per-class AUROC and F1 with scikit-learn.

Missing labels (NaN in ``y_true``) are left out class by class, so a dataset that does not annotate
every class for every image is scored on what it does annotate.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kg.errors import InputError
from pipelines.metrics._arrays import as_float_array


def check_label_values(labels: np.ndarray, *, field: str, allowed: Sequence[float] = (0.0, 1.0)) -> None:
    """Raise :class:`InputError` naming the first row holding a value outside ``allowed`` or NaN."""
    bad = ~(np.isin(labels, allowed) | np.isnan(labels))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"column {col} holds {labels[row, col]!r}; allowed values are "
                         f"{', '.join(str(v) for v in allowed)} or NaN", record=row, field=field)


def classification_metrics(
    y_true: Any, y_score: Any, names: Sequence[str], threshold: float = 0.5,
) -> dict[str, Any]:
    """AUROC per class and its mean, macro and micro F1 of a multi-label classifier.

    Args:
        y_true: ``(n, C)`` labels in {0, 1}, NaN where a label is unknown (left out).
        y_score: ``(n, C)`` predicted probabilities (or any scores for AUROC; F1 thresholds them).
        names: the C class names, in column order.
        threshold: a score ``>= threshold`` predicts the class.

    Returns:
        ``auroc`` (per class, ``None`` where undefined), ``mean_auroc`` (over classes where both
        labels occur), ``auroc_excluded`` (classes with a single label value, left out of the mean),
        ``f1`` (per class), ``macro_f1`` (mean of per-class F1 over classes with any known label;
        a class never positive and never predicted scores 0, scikit-learn's ``zero_division=0``),
        ``micro_f1`` (from true/false positives pooled over all known entries), ``threshold``, ``n``.

    Raises:
        InputError: shapes disagree, labels outside {0, 1, NaN}, or non-finite scores.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    truth = as_float_array(y_true, field="y_true", ndim=2)
    scores = as_float_array(y_score, field="y_score", ndim=2)
    if scores.shape != truth.shape:
        raise InputError(f"y_score has shape {scores.shape}, y_true {truth.shape}", field="y_score")
    if len(names) != truth.shape[1]:
        raise InputError(f"{len(names)} names for {truth.shape[1]} columns", field="names")
    check_label_values(truth, field="y_true")
    if not np.isfinite(scores).all():
        raise InputError("scores must be finite", record=int(np.argwhere(~np.isfinite(scores))[0, 0]), field="y_score")

    known = ~np.isnan(truth)
    predicted = scores >= threshold
    auroc: dict[str, float | None] = {}
    f1: dict[str, float | None] = {}
    excluded: list[str] = []
    for col, name in enumerate(names):
        rows = known[:, col]
        labels = truth[rows, col].astype(int)
        f1[name] = float(f1_score(labels, predicted[rows, col], zero_division=0)) if rows.any() else None
        if np.unique(labels).size < 2:
            auroc[name] = None
            excluded.append(name)
        else:
            auroc[name] = float(roc_auc_score(labels, scores[rows, col]))
    defined_auroc = [v for v in auroc.values() if v is not None]
    defined_f1 = [v for v in f1.values() if v is not None]
    micro = f1_score(truth[known].astype(int), predicted[known], zero_division=0) if known.any() else float("nan")
    return {
        "auroc": auroc,
        "mean_auroc": float(np.mean(defined_auroc)) if defined_auroc else float("nan"),
        "auroc_excluded": excluded,
        "f1": f1,
        "macro_f1": float(np.mean(defined_f1)) if defined_f1 else float("nan"),
        "micro_f1": float(micro),
        "threshold": float(threshold),
        "n": int(truth.shape[0]),
    }
