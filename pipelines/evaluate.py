"""Evaluation of MOTOR models on the four downstream tasks, with their reference baselines.

* Retrieval ranks by the cosine similarity of the L2-normalised image and report features (ITC
  space, ``encode_image`` / ``encode_text``); optionally the top ``itm_k`` candidates of every query
  are re-ranked by the ITM head's match probability, as BLIP evaluates retrieval. A method without
  ITC (M3AE, ARL) ranks every pair by its ITM match probability (``match_matrix``).
* Generation writes reports greedily and with beam search and scores them with BLEU-1..4, METEOR,
  ROUGE-L, CIDEr, clinical efficacy (CheXpert-label P/R/F1 of ``kg label``, both uncertain-label
  policies) and F1-RadGraph (RG_E, RG_ER, RG_ER-bar; :mod:`pipelines.metrics.radgraph`), next to
  the "most frequent training report" baseline.
* Diagnosis scores the 14 CheXpert classes (AUROC per class and mean, macro/micro F1); uncertain
  labels (-1) are left out of the scoring; unmentioned ones count as negative, or are left out
  too, as the head's ``unmentioned`` policy says (the one it was trained with).
* VQA reports open, closed and overall accuracy next to the majority-answer baseline.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
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
        dataset: :class:`pipelines.data.motor_samples.MotorSamples`; study ``i``'s image and report are each
            other's positive, as are identical reports (:func:`same_report_mask`).
        itm_k: also score with ITM re-ranking of the top ``itm_k`` candidates (0: ITC only).

    Returns:
        ``{"itc": metrics, "itm": metrics (when itm_k), "n": N, "distinct_reports": int, "ranked_by":
        "itc", "per_study": rows}``; for a model without ITC ``{"itm": metrics, ..., "ranked_by":
        "itm", "per_study": rows}`` (every pair scored by ITM; :func:`ranked_by` picks the primary
        metrics either way), with ``metrics`` as :func:`pipelines.metrics.retrieval_metrics`
        returns them (recalls, median ranks, ``mean_R`` and their ``chance`` levels) and ``rows``
        each study's ranks (:mod:`pipelines.per_study`).
    """
    from pipelines.metrics import retrieval_metrics
    from pipelines.metrics.retrieval import ranks_of_positives
    from pipelines.per_study import retrieval_rows, study_ids

    positives = same_report_mask(dataset.reports())
    if not hasattr(model, "encode_image"):
        scores = itm_score_matrix(model, dataset, collate_fn, batch_size=batch_size, device=device)
        return {
            "n": len(dataset),
            "distinct_reports": int(len(np.unique(positives, axis=0))),
            "ranked_by": "itm",
            "itm": retrieval_metrics(scores, positives),
            "per_study": retrieval_rows(study_ids(dataset), {
                "itm_i2t_rank": ranks_of_positives(scores, positives),
                "itm_t2i_rank": ranks_of_positives(scores.T, positives.T)}),
        }
    image_feats, text_feats = retrieval_features(model, dataset, collate_fn, batch_size=batch_size, device=device)
    similarity = image_feats @ text_feats.T
    result: dict[str, Any] = {
        "n": len(dataset),
        "distinct_reports": int(len(np.unique(positives, axis=0))),
        "ranked_by": "itc",
        "itc": retrieval_metrics(similarity.numpy(), positives),
    }
    ranks = {"itc_i2t_rank": ranks_of_positives(similarity.numpy(), positives),
             "itc_t2i_rank": ranks_of_positives(similarity.numpy().T, positives.T)}
    if itm_k:
        scores = itm_rerank(model, dataset, collate_fn, similarity, k=itm_k, batch_size=batch_size, device=device)
        result["itm"] = retrieval_metrics(scores, positives)
        ranks.update(itm_i2t_rank=ranks_of_positives(scores, positives), itm_t2i_rank=ranks_of_positives(scores.T, positives.T))
    result["per_study"] = retrieval_rows(study_ids(dataset), ranks)
    return result


def ranked_by(retrieval: dict[str, Any]) -> dict[str, Any]:
    """The primary metrics of a :func:`retrieval_evaluation` result (ITC, or ITM for M3AE / ARL)."""
    return retrieval[retrieval.get("ranked_by", "itc")]


@torch.no_grad()
def itm_score_matrix(
    model: Any, dataset: Dataset, collate_fn: Callable, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """``(N, N)`` ITM match probability of every image (rows) with every report (columns).

    Each image and each report is encoded once; only the fusion runs per pair
    (``model.image_tokens`` / ``text_side`` / ``match_matrix``).
    """
    model.eval()
    batches = [to_device(batch, device) for batch in _loader(dataset, collate_fn, batch_size)]
    image_tokens = torch.cat([model.image_tokens(batch["image"]) for batch in batches])
    columns = [model.match_matrix(image_tokens, model.text_side(batch)).float().cpu() for batch in batches]
    return torch.cat(columns, dim=1).double().numpy()


@torch.no_grad()
def generated_reports(
    model: Any, dataset: Dataset, collate_fn: Callable, *, batch_size: int, device: torch.device,
    max_length: int, num_beams: int = 1,
) -> list[str]:
    """One generated report per study of ``dataset``, in order (greedy when ``num_beams`` is 1)."""
    model.eval()
    reports: list[str] = []
    for batch in _loader(dataset, collate_fn, batch_size):
        reports.extend(model.generate(batch["image"].to(device), max_length=max_length, num_beams=num_beams))
    return reports


def most_frequent_report(reports: Sequence[str]) -> str:
    """The report written most often (ties: the first seen), compared after lower-casing and
    collapsing white space."""
    keys = [" ".join(report.lower().split()) for report in reports]
    winner, _ = Counter(keys).most_common(1)[0]
    return reports[keys.index(winner)]


def generation_evaluation(
    model: Any, dataset: Dataset, collate_fn: Callable, *, batch_size: int, device: torch.device,
    max_length: int, num_beams: int, baseline_report: str | None = None, examples: int = 3, meteor: str = "java",
    radgraph_annotations: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Caption metrics of greedy and beam-search reports against the studies' own reports.

    Args:
        dataset: :class:`pipelines.data.motor_samples.MotorSamples` (its reports are the references).
        num_beams: beam width; 1 reports greedy decoding only.
        baseline_report: also score this one report predicted for every study (the most frequent
            training report), under ``"most_frequent_report"``.
        examples: how many (reference, generated) pairs to keep for reading.
        meteor: ``java``, ``nltk`` or ``off`` (see :func:`pipelines.metrics.caption_metrics`).
        radgraph_annotations: ``(HYPS.json, REFS.json)``, the ``radgraph`` package's annotations
            of the greedy and the reference reports, for F1-RadGraph; ``None``: motor-kg's rules
            annotator annotates every report.

    Returns:
        ``{"greedy": metrics, "beam": metrics (num_beams > 1), "most_frequent_report": metrics,
        "num_beams", "n", "examples", "per_study"}`` with ``metrics`` as
        :func:`pipelines.metrics.caption_metrics` returns them, plus ``clinical_efficacy``: the
        CheXpert-label precision / recall / F1 of ``kg label`` on the generated against the
        reference reports under both uncertain-label policies
        (:func:`pipelines.metrics.clinical_efficacy_both`), and ``f1_radgraph``
        (:class:`pipelines.metrics.radgraph.GenerationF1RadGraph`; ``None`` for the beam and
        baseline reports when the package's annotations cover only the greedy ones).
        ``per_study`` lists every study's ``study_id``, ``reference``, ``greedy`` (and ``beam``)
        report (:mod:`pipelines.per_study`): what the package annotates.
    """
    from kg.label import label_texts
    from pipelines.data.motor_samples import study_texts
    from pipelines.metrics import caption_metrics, clinical_efficacy_both
    from pipelines.metrics.radgraph import GenerationF1RadGraph

    references = dataset.reports()
    study_ids = [study_id for study_id, _ in study_texts(dataset.studies)]
    reference_labels = label_texts(references)
    f1_radgraph = GenerationF1RadGraph(references, study_ids, radgraph_annotations)  # references annotated once

    def scores(predictions: list[str], annotated: bool = False) -> dict[str, Any]:
        # ``annotated``: the reports the package's annotations (when given) must cover.
        metrics = caption_metrics(predictions, references, meteor=meteor)
        metrics["clinical_efficacy"] = clinical_efficacy_both(label_texts(predictions), reference_labels)
        metrics["f1_radgraph"] = f1_radgraph.score(predictions, required=annotated)
        return metrics

    kwargs = {"batch_size": batch_size, "device": device, "max_length": max_length}
    greedy = generated_reports(model, dataset, collate_fn, num_beams=1, **kwargs)
    result: dict[str, Any] = {"n": len(references), "num_beams": num_beams, "greedy": scores(greedy, annotated=True)}
    beam = None
    if num_beams > 1:
        beam = generated_reports(model, dataset, collate_fn, num_beams=num_beams, **kwargs)
        result["beam"] = scores(beam)
    if baseline_report is not None:
        result["most_frequent_report"] = scores([baseline_report] * len(references))
        result["baseline_report"] = baseline_report
    result["examples"] = [
        {"reference": references[i], "greedy": greedy[i], **({"beam": beam[i]} if beam else {})}
        for i in range(min(examples, len(references)))
    ]
    result["per_study"] = [
        {"study_id": study_ids[i], "reference": references[i], "greedy": greedy[i],
         **({"beam": beam[i]} if beam else {})}
        for i in range(len(references))
    ]
    return result


@torch.no_grad()
def diagnosis_scores(
    head: Any, dataset: Dataset, collate_fn: Callable, *, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities of every study.

    Returns:
        ``(y_true, y_prob)``, ``(N, n_labels)`` float arrays; ``y_true`` is 1 / 0 and NaN where a
        label is uncertain (-1), or unmentioned under the head's ``unmentioned="ignore"`` (under
        ``negative``, the default, an unmentioned label is 0).
    """
    head.eval()
    unmentioned_negative = head.unmentioned == "negative"
    truths, probs = [], []
    for batch in _loader(dataset, collate_fn, batch_size):
        probs.append(head.logits(batch["image"].to(device)).float().sigmoid().cpu())
        labels = batch["labels"].clone()
        if unmentioned_negative:
            labels = torch.nan_to_num(labels, nan=0.0)
        labels[labels == -1] = float("nan")
        truths.append(labels)
    return torch.cat(truths).numpy(), torch.cat(probs).numpy()


def diagnosis_evaluation(
    head: Any, dataset: Dataset, collate_fn: Callable, *, batch_size: int, device: torch.device,
    names: Sequence[str],
) -> dict[str, Any]:
    """AUROC per class and mean, macro and micro F1 (threshold 0.5), as
    :func:`pipelines.metrics.classification_metrics` returns them, and ``per_study``: every study's
    labels and probabilities (:mod:`pipelines.per_study`)."""
    from pipelines.metrics import classification_metrics
    from pipelines.per_study import study_ids

    y_true, y_prob = diagnosis_scores(head, dataset, collate_fn, batch_size=batch_size, device=device)
    result = classification_metrics(y_true, y_prob, list(names))
    result["per_study"] = [{"study_id": study, "y_true": y_true[i].tolist(), "y_prob": y_prob[i].tolist()}
                           for i, study in enumerate(study_ids(dataset))]
    return result


@torch.no_grad()
def vqa_predictions(
    head: Any, dataset: Dataset, collate_fn: Any, *, batch_size: int, device: torch.device
) -> list[str]:
    """The predicted answer string of every question of ``dataset``.

    Args:
        collate_fn: :class:`pipelines.tasks.vqa.VQACollator` (its vocabulary names the classes).
    """
    head.eval()
    answers = collate_fn.vocabulary.answers
    predictions: list[str] = []
    for batch in _loader(dataset, collate_fn, batch_size):
        batch = to_device(batch, device)
        logits = head.logits(batch["image"], batch["input_ids"], batch["attention_mask"])
        predictions.extend(answers[i] for i in logits.argmax(dim=-1).tolist())
    return predictions


def vqa_records(dataset: Dataset) -> tuple[list[str], list[str]]:
    """``(answers, answer_types)`` of a ``VQADataset``, read without loading images."""
    records = [record for record, _ in dataset.items]
    return [r.answer for r in records], [r.answer_type for r in records]


def majority_answers(answers: Sequence[str], answer_types: Sequence[str]) -> dict[str, str]:
    """The most frequent (normalised) answer of each answer type, e.g. from the training split."""
    from pipelines.metrics import normalize_answer

    counts: dict[str, Counter] = {}
    for answer, kind in zip(answers, answer_types):
        counts.setdefault(kind, Counter())[normalize_answer(answer)] += 1
    return {kind: max(sorted(counter), key=counter.__getitem__) for kind, counter in counts.items()}


def vqa_evaluation(
    head: Any, dataset: Dataset, collate_fn: Any, *, batch_size: int, device: torch.device,
    majority: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Open, closed and overall accuracy of the head and, with ``majority``, of the baseline that
    answers every question with its type's most frequent training answer.

    Returns:
        ``{"model": accuracies, "majority_answer": accuracies, "n", "per_study"}`` with accuracies
        as :func:`pipelines.metrics.vqa_accuracy` returns them and ``per_study`` every question's
        prediction (:mod:`pipelines.per_study`).
    """
    from pipelines.metrics import normalize_answer, vqa_accuracy

    answers, kinds = vqa_records(dataset)
    predictions = vqa_predictions(head, dataset, collate_fn, batch_size=batch_size, device=device)
    result: dict[str, Any] = {"n": len(answers), "model": vqa_accuracy(predictions, answers, kinds)}
    result["per_study"] = [
        {"qid": record.qid, "answer_type": kind, "answer": answer, "prediction": prediction,
         "correct": int(normalize_answer(prediction) == normalize_answer(answer))}
        for (record, _), kind, answer, prediction in zip(dataset.items, kinds, answers, predictions)
    ]
    if majority is not None:
        baseline = [majority.get(kind, "") for kind in kinds]
        result["majority_answer"] = vqa_accuracy(baseline, answers, kinds)
    return result
