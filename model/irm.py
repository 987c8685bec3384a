"""Image-report matching (IRM): which pairs to show, the matching head on [CLS] and its loss.

A pretraining pair keeps its own report with probability 0.5 (matching : non-matching = 1 : 1,
:func:`draw_matched`); otherwise its report is replaced by one drawn by
:func:`sample_irm_negatives`, which avoids reports with the same findings: MedViLL samples the
"non-matching" report among reports whose CheXpert labels differ from the image's own report, so
that a negative is not a different wording of the same findings.

Labels are vectors over the label set with 1 (present), 0 (absent), -1 (uncertain) and NaN
(not mentioned). Two studies "share a label vector" when every entry is equal, NaN equal to NaN
(the reference code compares the label strings exactly). A study whose labels are missing
(``labels=None``, or a row that is NaN everywhere, which is how the data pipeline marks a study
without labels) has no known findings:

* the image of a study with missing labels gets a report drawn uniformly from the other studies;
* a report with missing labels is never taken as label-distinct, so it is drawn only when no
  study with known, different labels is available;
* when no candidate has a different label vector (e.g. every study in the pool is normal), the
  negative is drawn uniformly from the other studies.

Another sample of the same study (equal dataset ``index``) is never a negative.
:func:`sample_irm_negatives` reports, per sample, whether its negative is known to differ in
labels, so a caller can count how often the fallback was taken.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kg.errors import InputError
from model.batch_standardiser import BatchStandardiser


def draw_matched(batch: int, probability: float = 0.5, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(B,) bool: which pairs keep their own report (each with ``probability``)."""
    draw = torch.rand(batch, generator=generator, device=generator.device if generator else device)
    return (draw < probability).to(device)


def label_vectors_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether label vectors agree entry by entry, NaN equal to NaN.

    ``a`` (B, C) and ``b`` (M, C) → (B, M) bool.
    """
    same = (a.unsqueeze(1) == b.unsqueeze(0)) | (a.isnan().unsqueeze(1) & b.isnan().unsqueeze(0))
    return same.all(dim=-1)


@torch.no_grad()
def sample_irm_negatives(
    query_index: torch.Tensor,
    pool_index: torch.Tensor,
    query_labels: torch.Tensor | None = None,
    pool_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one non-matching report per image from a pool of reports (module docstring for the rules).

    Args:
        query_index: (B,) dataset indices of the images' own studies.
        pool_index: (M,) dataset indices of the candidate reports (the batch itself for in-batch
            negatives, or a larger pool).
        query_labels / pool_labels: (B, C) / (M, C) label vectors, or ``None`` when unknown.
        generator: source of the draws (``None``: torch's global generator).

    Returns:
        ``(negatives (B,), label_distinct (B,))``: positions in the pool, and whether each drawn
        report's labels are known to differ from the image's own.

    Raises:
        InputError: an image has no candidate from another study.
    """
    other_study = query_index.unsqueeze(1) != pool_index.unsqueeze(0)  # (B, M)
    if not bool(other_study.any(dim=1).all()):
        raise InputError("every candidate report belongs to the image's own study; IRM needs reports of at "
                         "least two studies", field="index")
    if query_labels is not None and pool_labels is not None:
        if query_labels.shape[-1] != pool_labels.shape[-1]:
            raise InputError(f"label vectors of {query_labels.shape[-1]} and {pool_labels.shape[-1]} entries",
                             field="labels")
        query_known = ~query_labels.isnan().all(dim=1)
        pool_known = ~pool_labels.isnan().all(dim=1)
        differs = ~label_vectors_equal(query_labels.float(), pool_labels.float().to(query_labels.device))
        distinct = other_study & differs & query_known.unsqueeze(1) & pool_known.unsqueeze(0)
    else:
        distinct = torch.zeros_like(other_study)
    has_distinct = distinct.any(dim=1)
    allowed = torch.where(has_distinct.unsqueeze(1), distinct, other_study)
    weights = allowed.float()
    if generator is not None and generator.device != weights.device:
        negatives = torch.multinomial(weights.to(generator.device), 1, generator=generator).squeeze(1).to(weights.device)
    else:
        negatives = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return negatives, has_distinct


class ImageReportMatchingHead(nn.Module):
    """IRM head: BERT's pooler (dense + tanh) on [CLS], then a 2-way classifier (0: no match, 1: match).

    ``forward(joint_cls (B, width), text_cls=None) -> logits (B, 2)``. Under ``non_crossing``
    neither [CLS] has seen the other modality, so both feed the head through their elementwise
    product, as MedViLL's reference code combines them.

    Departure from the paper: the [CLS] feature is standardised over the batch before the pooler
    (:class:`model.batch_standardiser.BatchStandardiser`, whose docstring says why; running
    statistics at evaluation). From random initialisation the joint [CLS] of different pairs has
    cosine 0.99995 at the tiny test size, and without it IRM stays at log 2.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = BatchStandardiser(width)
        self.pooler = nn.Linear(width, width)
        self.classifier = nn.Linear(width, 2)

    def forward(self, joint_cls: torch.Tensor, text_cls: torch.Tensor | None = None) -> torch.Tensor:
        feature = joint_cls if text_cls is None else joint_cls * text_cls
        return self.classifier(torch.tanh(self.pooler(self.norm(feature))))


class ImageReportMatchingLoss(nn.Module):
    """IRM: cross-entropy of the matching logits. ``forward(logits (B, 2), matched (B,) bool) -> loss``."""

    def forward(self, logits: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), matched.long())
