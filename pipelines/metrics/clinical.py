"""Clinical efficacy (CE) of generated reports: CheXpert labels of prediction vs. reference.

Each report is labelled for the 14 CheXpert observations (1 positive, 0 negative, -1 uncertain,
NaN not mentioned). A label counts as present or absent according to a policy for uncertain
mentions, and precision / recall / F1 compare the predicted reports' labels with the references'.

Policies (named in every result, because papers differ and the numbers are not comparable):

* ``uncertain_negative``: only 1 is present; -1, 0 and NaN are absent. This is what R2Gen's and
  R2GenCMN's CE script does (``fillna(0)``, ``-1 → 0``) and what the CheXbert-based CE code of
  later report-generation work (e.g. PromptMRG) does (only "positive" counts).
* ``uncertain_positive``: 1 and -1 are present. This is the ``f1chexbert`` package's report
  generation mode (used by ViLMedic and the RadGraph / F1-CheXbert evaluations), which maps
  CheXbert's "uncertain" to 1; CheXpert calls this mapping "U-Ones".

NaN (not mentioned) is absent under both policies. Three averages are given: ``micro`` (true and
false positives pooled over all reports and classes; what most papers report), ``macro`` (mean over
the 14 classes) and ``example`` (mean over reports, as PromptMRG-style code reports). An undefined
ratio (nothing predicted, nothing to find) counts as 0, scikit-learn's ``zero_division=0``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kg.errors import InputError
from kg.label_schema import chexpert_names
from pipelines.metrics._arrays import as_float_array
from pipelines.metrics.classification import check_label_values

POLICIES = ("uncertain_negative", "uncertain_positive")
_AVERAGES = {"micro": "micro", "macro": "macro", "example": "samples"}


def binarize_labels(labels: np.ndarray, policy: str) -> np.ndarray:
    """``(n, C)`` labels in {1, 0, -1, NaN} → present/absent booleans under ``policy``."""
    if policy == "uncertain_negative":
        return labels == 1
    if policy == "uncertain_positive":
        return (labels == 1) | (labels == -1)
    raise InputError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}", field="policy")


def clinical_efficacy(
    pred_labels: Any, ref_labels: Any, policy: str = "uncertain_negative", names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Precision, recall and F1 of the predicted reports' labels against the references' labels.

    Args:
        pred_labels: ``(n, C)`` labels of the generated reports in {1, 0, -1, NaN}.
        ref_labels: ``(n, C)`` labels of the reference reports, same coding.
        policy: ``"uncertain_negative"`` or ``"uncertain_positive"`` (see the module docstring).
        names: the C class names; the 14 CheXpert names of ``graphs/labels.yaml`` by default.

    Returns:
        ``policy``, ``precision_micro``, ``recall_micro``, ``f1_micro``, the same with ``_macro``
        and ``_example``, ``per_class`` (``{name: {"precision", "recall", "f1", "support"}}``,
        support = reference reports where the class is present) and ``n``.

    Raises:
        InputError: shapes disagree, values outside {1, 0, -1, NaN}, or an unknown policy.
    """
    from sklearn.metrics import precision_recall_fscore_support

    pred = as_float_array(pred_labels, field="pred_labels", ndim=2)
    ref = as_float_array(ref_labels, field="ref_labels", ndim=2)
    names = tuple(names) if names is not None else chexpert_names()
    for array, field in ((pred, "pred_labels"), (ref, "ref_labels")):
        if array.shape[1] != len(names):
            raise InputError(f"{array.shape[1]} columns for {len(names)} classes", field=field)
        check_label_values(array, field=field, allowed=(1.0, 0.0, -1.0))
    if pred.shape != ref.shape:
        raise InputError(f"pred_labels has shape {pred.shape}, ref_labels {ref.shape}", field="pred_labels")
    y_pred, y_true = binarize_labels(pred, policy), binarize_labels(ref, policy)

    result: dict[str, Any] = {"policy": policy}
    for suffix, average in _AVERAGES.items():
        precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        result[f"precision_{suffix}"] = float(precision)
        result[f"recall_{suffix}"] = float(recall)
        result[f"f1_{suffix}"] = float(f1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    result["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    }
    result["n"] = int(pred.shape[0])
    return result


def clinical_efficacy_both(
    pred_labels: Any, ref_labels: Any, names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`clinical_efficacy` under both policies: ``{"uncertain_negative": {...}, "uncertain_positive": {...}}``."""
    return {policy: clinical_efficacy(pred_labels, ref_labels, policy, names) for policy in POLICIES}


def clinical_efficacy_from_texts(
    predictions: Sequence[str], references: Sequence[str], policy: str = "uncertain_negative",
) -> dict[str, Any]:
    """Label generated and reference reports with ``kg.label.label_texts``, then score them.

    Args:
        predictions: generated reports.
        references: reference reports, aligned with ``predictions``.
        policy: one of :data:`POLICIES`, or ``"both"`` for :func:`clinical_efficacy_both`.

    Returns:
        The :func:`clinical_efficacy` result (or both policies' results), plus ``labeler``:
        the module that produced the labels.
    """
    from kg.label import label_texts

    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references", field="predictions")
    pred, ref = label_texts(list(predictions)), label_texts(list(references))
    result = clinical_efficacy_both(pred, ref) if policy == "both" else clinical_efficacy(pred, ref, policy)
    result["labeler"] = f"{label_texts.__module__}.{label_texts.__qualname__}"
    return result
