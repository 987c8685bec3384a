"""Evaluation metrics of the four downstream tasks and their tables.

* retrieval (image → report, report → image): :func:`recall_at_k`, :func:`retrieval_metrics`,
  :func:`chance_recall`, :func:`chance_mrr`;
* report generation: :func:`caption_metrics` (BLEU, METEOR, ROUGE-L, CIDEr), clinical efficacy
  :func:`clinical_efficacy`, :func:`clinical_efficacy_both`, :func:`clinical_efficacy_from_texts`,
  and F1-RadGraph :func:`f1_radgraph`, :func:`f1_radgraph_from_texts` (RG_E, RG_ER, RG_ER-bar);
* diagnosis classification: :func:`classification_metrics` (AUROC, F1);
* medical VQA: :func:`vqa_accuracy`, :func:`normalize_answer`;
* results: :func:`metrics_table` (Markdown), :func:`write_metrics` (JSON, NaN → null).

Every function takes plain lists, NumPy arrays or torch tensors and returns plain Python numbers,
ready for JSON. Rates are fractions in [0, 1], not percentages.
"""
from pipelines.metrics.captioning import caption_metrics
from pipelines.metrics.classification import classification_metrics
from pipelines.metrics.clinical import (
    POLICIES,
    clinical_efficacy,
    clinical_efficacy_both,
    clinical_efficacy_from_texts,
)
from pipelines.metrics.ptb import ptb_tokenize
from pipelines.metrics.radgraph import f1_radgraph, f1_radgraph_from_texts
from pipelines.metrics.retrieval import chance_mrr, chance_recall, recall_at_k, retrieval_metrics
from pipelines.metrics.tables import metrics_table, write_metrics
from pipelines.metrics.vqa import normalize_answer, vqa_accuracy

__all__ = [
    "POLICIES",
    "caption_metrics",
    "chance_mrr",
    "chance_recall",
    "classification_metrics",
    "clinical_efficacy",
    "clinical_efficacy_both",
    "clinical_efficacy_from_texts",
    "f1_radgraph",
    "f1_radgraph_from_texts",
    "metrics_table",
    "normalize_answer",
    "ptb_tokenize",
    "recall_at_k",
    "retrieval_metrics",
    "vqa_accuracy",
    "write_metrics",
]
