"""Objectives as small modules: MOTOR's ITC (Eq. 10–11), ITM (Eq. 12–13), LM (Eq. 14), MLC (Eq. 9); MLM and
MIM (M3AE); knowledge alignment (ARL's AK, Eq. 10–14 of the ARL paper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import UNCERTAIN_POLICIES, UNMENTIONED_POLICIES

IGNORE_INDEX = -100


class ContrastiveLoss(nn.Module):
    """Image-text contrastive loss with a feature queue and momentum distillation (BLIP's ITA).

    Candidates for each image are the batch's momentum text features followed by the text queue
    (and likewise for texts). Targets mix the momentum model's softmax with the ground truth:
    ``alpha · softmax(s_m / τ) + (1 - alpha) · y``, where y spreads its mass over every candidate
    with the same dataset ``index`` (the same study seen again from the queue is a positive, not a
    negative, as BLIP does for retrieval).
    """

    def forward(
        self,
        image_feats: torch.Tensor,
        text_feats: torch.Tensor,
        image_feats_m: torch.Tensor,
        text_feats_m: torch.Tensor,
        image_queue: torch.Tensor,
        text_queue: torch.Tensor,
        index: torch.Tensor,
        index_queue: torch.Tensor,
        temperature: torch.Tensor,
        alpha: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss and the batch similarity matrices.

        Args:
            image_feats / text_feats: (B, D) L2-normalised online features.
            image_feats_m / text_feats_m: (B, D) L2-normalised momentum features.
            image_queue / text_queue: (Q, D) queued momentum features (Q may be 0).
            index: (B,) dataset indices; index_queue: (Q,) indices of the queued entries.
            temperature: scalar τ. alpha: distillation weight in [0, 1].

        Returns:
            ``(loss, sim_i2t (B, B + Q), sim_t2i (B, B + Q))``; the similarities (scaled by 1/τ,
            with gradient) feed ITM's hard-negative sampling.
        """
        text_all = torch.cat([text_feats_m, text_queue.to(text_feats_m.dtype)])
        image_all = torch.cat([image_feats_m, image_queue.to(image_feats_m.dtype)])
        index_all = torch.cat([index, index_queue])
        with torch.no_grad():
            positives = (index.unsqueeze(1) == index_all.unsqueeze(0)).float()
            targets = positives / positives.sum(1, keepdim=True)
            i2t_targets = alpha * F.softmax(image_feats_m @ text_all.T / temperature, dim=1) + (1 - alpha) * targets
            t2i_targets = alpha * F.softmax(text_feats_m @ image_all.T / temperature, dim=1) + (1 - alpha) * targets
        sim_i2t = image_feats @ text_all.T / temperature  # Eq. 10
        sim_t2i = text_feats @ image_all.T / temperature
        loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * i2t_targets).sum(1).mean()  # Eq. 11
        loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * t2i_targets).sum(1).mean()
        return (loss_i2t + loss_t2i) / 2, sim_i2t, sim_t2i


@torch.no_grad()
def sample_hard_negatives(
    sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one in-batch hard negative per image and per text, proportional to softmax similarity.

    Args:
        sim_i2t / sim_t2i: (B, ≥B) similarities whose first B columns are the batch.
        index: (B,) dataset indices; samples of the same study are never negatives of each other.

    Returns:
        ``(negative_text_for_image (B,), negative_image_for_text (B,))`` batch positions. A sample
        whose batch holds only itself (or copies of its study) falls back to any other position.
    """
    batch = index.shape[0]
    same = index.unsqueeze(1) == index.unsqueeze(0)
    others = ~torch.eye(batch, dtype=torch.bool, device=index.device)

    def draw(sim: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(sim[:, :batch].float(), dim=1).masked_fill(same, 0.0)
        empty = weights.sum(1) == 0
        weights[empty] = others[empty].float()
        return torch.multinomial(weights, 1).squeeze(1)

    return draw(sim_i2t), draw(sim_t2i)


class MatchingLoss(nn.Module):
    """ITM (Eq. 12–13): binary cross-entropy over matched / unmatched pairs.

    ``forward(logits (B_pos + B_neg, 2), positives: int) -> loss``; the first ``positives`` rows
    are matched pairs (class 1), the rest unmatched (class 0).
    """

    def forward(self, logits: torch.Tensor, positives: int) -> torch.Tensor:
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        targets[:positives] = 1
        return F.cross_entropy(logits, targets)


class LanguageModelingLoss(nn.Module):
    """LM (Eq. 14): next-token cross-entropy of the report decoder, label-smoothed.

    ``forward(logits (B, L, V), input_ids (B, L), attention_mask (B, L)) -> loss``: position t
    predicts token t + 1; padding is ignored; mean over predicted tokens.
    """

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
            ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing,
        )


class MultiLabelLoss(nn.Module):
    """MLC (Eq. 9): binary cross-entropy over the labels that are known.

    Labels are 1 (present), 0 (absent), -1 (uncertain) or NaN (not mentioned). Uncertain labels
    are dropped (``uncertain="ignore"``), or read as 1 (``positive``) or 0 (``negative``).
    Unmentioned labels are read as 0 (``unmentioned="negative"``, as the reference MOTOR code's
    ``label_index`` and most CheXpert-label papers do: a report that does not name a finding is
    taken as its absence) or dropped (``ignore``). ``forward(logits (B, C), labels (B, C)) ->
    loss``, the mean over counted entries (0 with a gradient path when none counts).
    """

    def __init__(self, uncertain: str = "ignore", unmentioned: str = "negative") -> None:
        super().__init__()
        if uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}; got {uncertain!r}")
        if unmentioned not in UNMENTIONED_POLICIES:
            raise ValueError(f"unmentioned must be one of {', '.join(UNMENTIONED_POLICIES)}; got {unmentioned!r}")
        self.uncertain = uncertain
        self.unmentioned = unmentioned

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.dtype)
        uncertain = labels == -1
        counted = torch.ones_like(labels, dtype=torch.bool) if self.unmentioned == "negative" else ~labels.isnan()
        if self.uncertain == "ignore":
            counted &= ~uncertain
        targets = torch.where(uncertain, 1.0 if self.uncertain == "positive" else 0.0, labels)
        targets = torch.nan_to_num(targets, nan=0.0)
        losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
        return (losses * counted).sum() / counted.sum().clamp(min=1)


class MaskedLanguageModelingLoss(nn.Module):
    """MLM (BERT; M3AE, ARL): cross-entropy of the chosen tokens' original ids.

    ``forward(logits (..., V), labels (...)) -> loss``: labels are ``-100`` where nothing is
    predicted (:attr:`model.masking.MaskedTokens.labels`); mean over the predicted tokens. Logits
    may cover every position (B, L, V) or only the chosen ones (M, V) with labels (M,).
    """

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.reshape(-1)
        if not bool((labels != IGNORE_INDEX).any()):
            # No chosen token (every report empty): a zero that keeps the graph, not cross-entropy's NaN.
            return logits.sum() * 0.0
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=IGNORE_INDEX)


class MaskedImageModelingLoss(nn.Module):
    """MIM (MAE; M3AE): mean squared error of the predicted pixels on the masked patches only.

    With ``normalise_pixels`` each target patch is standardised by its own mean and variance first
    (MAE's ``norm_pix_loss``, which M3AE uses). ``forward(prediction (B, N, P), target (B, N, P)
    pixels from :func:`model.masking.patchify`, mask (B, N) bool True = masked) -> loss``: the
    squared error is averaged over a patch's pixels, then over the masked patches.
    """

    def __init__(self, normalise_pixels: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.normalise_pixels = normalise_pixels
        self.eps = eps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = target.float()
        if self.normalise_pixels:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True, unbiased=True)
            target = (target - mean) / (var + self.eps).sqrt()
        per_patch = ((prediction.float() - target) ** 2).mean(dim=-1)
        weights = mask.to(per_patch.dtype)
        return (per_patch * weights).sum() / weights.sum().clamp(min=1)


class KnowledgeAlignmentLoss(nn.Module):
    """ARL's AK (Eq. 10–14): binary cross-entropy of ``p_i = σ(e_iᵀ W h)`` against the report's entities.

    ``forward(image_logits (B, N), text_logits (B, N), targets (B, N)) -> loss``, with targets 1
    for the entities of the report (:func:`model.arl_knowledge.entity_targets`) and 0 for every
    other entity of the vocabulary; the image term and the text term, each a mean over (B, N),
    are summed (as the reference ARL code does).
    """

    def forward(self, image_logits: torch.Tensor, text_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.float()
        image = F.binary_cross_entropy_with_logits(image_logits.float(), targets)
        text = F.binary_cross_entropy_with_logits(text_logits.float(), targets)
        return image + text
