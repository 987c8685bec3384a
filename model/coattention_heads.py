"""Downstream heads of the co-attention methods (M3AE, ARL): classify from the fusion's pooled output.

M3AE and ARL finetune classification and VQA as METER / ViLT do: image and text go through the
encoders and the co-attention fusion, the two pooled ``[CLS]`` outputs are concatenated and an MLP
(``Linear(2D, 2D) → LayerNorm → GELU → Linear(2D, n)``, METER's ``vqa_classifier``) gives the
logits.

* :class:`FusedDiagnosisHead`: multi-label diagnosis from the **image alone**: the text stream is
  the empty report ``[CLS] [SEP]``. The papers' image-text classification (MELINDA) reads a
  caption too; chest X-ray labels are derived from the report itself, so feeding it would hand
  the answer to the classifier.
* :class:`FusedVQAHead`: answer classification with the question as the text stream.

With ARL's knowledge reasoning (RK) on, the fusion's entity stream is empty here (one padded
slot): a question or the empty report names no entity of the report vocabulary.

Each head registers only the modules it runs (shared, not copied, with the pretrained model) and
has the interface of :mod:`model.heads`: ``logits(...)`` and ``forward(batch) -> MotorOutput``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kg.errors import InputError
from model.arl_knowledge import PADDING_ENTITY
from model.heads import IGNORE_ANSWER
from model.losses import MultiLabelLoss
from model.motor import MotorOutput


class FusedClassifier(nn.Module):
    """METER's classifier on the concatenated pooled outputs.

    ``forward(text_pooled (B, D), image_pooled (B, D)) -> (B, n_classes)``.
    """

    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(), nn.Linear(2 * width, n_classes)
        )

    def forward(self, text_pooled: torch.Tensor, image_pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([text_pooled, image_pooled], dim=-1))


class _FusedHead(nn.Module):
    """Encoders, fusion (and entity table with RK) of a co-attention model, and a classifier."""

    def __init__(self, model: Any, n_classes: int) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.text_encoder = model.text_encoder
        self.fusion = model.parts.fusion
        if self.fusion.uses_knowledge:
            self.entity_table = model.parts.entity_table
        self.token_ids = dict(model.token_ids)
        self.classifier = FusedClassifier(model.config.parts.fusion.width, n_classes)

    def fused_logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) and text ids / mask (B, L) → (B, n_classes)."""
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        entities = None
        if self.fusion.uses_knowledge:
            batch = input_ids.shape[0]
            empty = torch.full((batch, 1), PADDING_ENTITY, dtype=torch.long, device=input_ids.device)
            position_map = torch.zeros(batch, 1, input_ids.shape[1], device=input_ids.device)
            entities = self.entity_table.inputs(empty, position_map)
        fused = self.fusion(text, attention_mask, self.image_encoder(images), None, entities)
        return self.classifier(fused.text_pooled, fused.image_pooled)


class FusedDiagnosisHead(_FusedHead):
    """Multi-label diagnosis from the fused pooled output of the image and the empty report.

    Args:
        model: a pretrained :class:`model.m3ae.M3AEModel` / ``ARLModel`` (modules shared).
        num_labels: labels to predict (default: the model's label file, the 14 CheXpert classes).
        uncertain / unmentioned: label policies of the loss (default: the model config's).
    """

    def __init__(self, model: Any, num_labels: int | None = None, uncertain: str | None = None,
                 unmentioned: str | None = None) -> None:
        from kg.label_schema import load_chexpert_classes

        num_labels = num_labels or len(load_chexpert_classes(model.config.labels_file))
        super().__init__(model, num_labels)
        self.num_labels = num_labels
        self.loss_fn = MultiLabelLoss(uncertain or model.config.uncertain, unmentioned or model.config.unmentioned)

    @property
    def unmentioned(self) -> str:
        """The unmentioned-label policy, which scoring follows too."""
        return self.loss_fn.unmentioned

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → (B, n_labels) logits."""
        batch = images.shape[0]
        ids = torch.tensor([[self.token_ids["cls"], self.token_ids["sep"]]], device=images.device).expand(batch, -1)
        return self.fused_logits(images, ids, torch.ones_like(ids))

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Binary cross-entropy on ``batch["labels"]`` (B, n_labels) in {1, 0, -1, NaN}; key ``bce``."""
        loss = self.loss_fn(self.logits(batch["image"]), batch["labels"])
        return MotorOutput(loss=loss, losses={"bce": loss})


class FusedVQAHead(_FusedHead):
    """VQA as answer classification from the fused pooled output of the image and the question.

    Args:
        model: a pretrained :class:`model.m3ae.M3AEModel` / ``ARLModel`` (modules shared).
        num_answers: size of the answer vocabulary.
    """

    def __init__(self, model: Any, num_answers: int) -> None:
        if num_answers < 2:
            raise InputError(f"needs at least 2 answers; got {num_answers}", field="num_answers")
        super().__init__(model, num_answers)

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) and question ids / mask (B, L) → (B, num_answers)."""
        return self.fused_logits(images, input_ids, attention_mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Cross-entropy against ``batch["answer"]`` (B,) answer indices (-100: skip); key ``ce``."""
        logits = self.logits(batch["image"], batch["input_ids"], batch["attention_mask"])
        loss = nn.functional.cross_entropy(logits, batch["answer"], ignore_index=IGNORE_ANSWER)
        return MotorOutput(loss=loss, losses={"ce": loss})
