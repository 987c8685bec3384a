"""MedViLL's downstream heads: diagnosis and VQA on the joint [CLS], report generation as MLM under S2S.

Each head registers only the modules it runs, shared with the pretrained
:class:`model.medvill.MedVillModel` (so an optimiser or DistributedDataParallel over it sees no idle
parameter), and ``forward(batch)`` returns a :class:`model.motor.MotorOutput`, the shape the
training loop reads. Understanding heads encode under the model's
:attr:`~model.medvill.MedVillModel.understanding_scheme`.

* :class:`MedVillDiagnosisHead`: the image with an empty report (the text segment is just
  [SEP_L]; [CLS_T] [SEP_L] under ``non_crossing``) through the joint encoder, one linear head per
  label on the joint [CLS]. MedViLL's own diagnosis classification reads the report too; the
  report's words are where the CheXpert labels come from, so the framework's diagnosis task,
  like MOTOR's, M3AE's and ARL's, predicts from the image alone.
* :class:`MedVillVQAHead`: the question as the text segment, an MLP answer classifier on the
  joint [CLS] (under ``non_crossing`` on the product of both [CLS], as IRM reads them).
* :class:`MedVillReportGenerator`: MLM on the matched image-report pairs with the mask fixed to
  S2S, [SEP_L] among the words that may be masked; decoding is :meth:`MedVillModel.generate`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kg.errors import InputError
from model.heads import IGNORE_ANSWER
from model.losses import MultiLabelLoss
from model.motor import MotorOutput
from model.single_stream import SingleStreamOutput, text_segment


def _pooled(output: SingleStreamOutput) -> torch.Tensor:
    """(B, width): the joint [CLS], times [CLS_T] under ``non_crossing`` (where neither saw the other modality)."""
    return output.joint_cls if output.text_cls is None else output.joint_cls * output.text_cls


class MedVillDiagnosisHead(nn.Module):
    """Multi-label diagnosis: ``n_labels`` linear heads on the joint [CLS] of the image with an empty report.

    Args:
        medvill: the pretrained model (its encoder is shared, not copied).
        num_labels: labels to predict (default: the model's label file, the 14 CheXpert classes).
    """

    def __init__(self, medvill: Any, num_labels: int | None = None) -> None:
        super().__init__()
        from kg.label_schema import load_chexpert_classes

        cfg = medvill.config
        self.encoder = medvill.encoder
        self.scheme = medvill.understanding_scheme
        self.cls_id, self.sep_id = medvill.token_ids["cls"], medvill.token_ids["sep"]
        self.num_labels = num_labels or len(load_chexpert_classes(cfg.labels_file))
        self.classifier = nn.Linear(cfg.text_width, self.num_labels)
        self.loss_fn = MultiLabelLoss(cfg.uncertain, cfg.unmentioned)

    @property
    def unmentioned(self) -> str:
        """The head's unmentioned-label policy, which scoring must follow too."""
        return self.loss_fn.unmentioned

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → (B, n_labels) logits (sigmoid gives probabilities)."""
        batch = images.shape[0]
        # An empty report, ``[CLS] [SEP]``, cut into the scheme's text segment.
        ids = torch.tensor([[self.cls_id, self.sep_id]], device=images.device).expand(batch, -1)
        text_ids, text_mask = text_segment(ids, torch.ones_like(ids), self.scheme)
        return self.classifier(self.encoder(images, text_ids, text_mask, self.scheme).joint_cls)

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Binary cross-entropy on ``batch["labels"]`` (B, n_labels) in {1, 0, -1, NaN}; key ``bce``."""
        loss = self.loss_fn(self.logits(batch["image"]), batch["labels"])
        return MotorOutput(loss=loss, losses={"bce": loss})


class MedVillVQAHead(nn.Module):
    """VQA as classification over an answer vocabulary, on the joint [CLS] of (image, question).

    Args:
        medvill: the pretrained model (its encoder is shared).
        num_answers: size of the answer vocabulary.
        hidden: MLP hidden width (default 2 × text_width).
    """

    def __init__(self, medvill: Any, num_answers: int, hidden: int | None = None) -> None:
        super().__init__()
        if num_answers < 2:
            raise InputError(f"needs at least 2 answers; got {num_answers}", field="num_answers")
        width = medvill.config.text_width
        hidden = hidden or 2 * width
        self.encoder = medvill.encoder
        self.scheme = medvill.understanding_scheme
        self.classifier = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, num_answers)
        )

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) and question ids/mask (B, L) (``[CLS] question [SEP]``) → (B, num_answers)."""
        text_ids, text_mask = text_segment(input_ids, attention_mask, self.scheme)
        return self.classifier(_pooled(self.encoder(images, text_ids, text_mask, self.scheme)))

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Cross-entropy against ``batch["answer"]`` (B,) answer indices (-100: skip); key ``ce``."""
        logits = self.logits(batch["image"], batch["input_ids"], batch["attention_mask"])
        loss = nn.functional.cross_entropy(logits, batch["answer"], ignore_index=IGNORE_ANSWER)
        return MotorOutput(loss=loss, losses={"ce": loss})


class MedVillReportGenerator(nn.Module):
    """Report-generation finetuning: MLM of each image's own report under the S2S mask.

    Under S2S a masked word sees the image and the words before it only, which is what decoding
    left to right needs; the closing [SEP_L] may be masked too, so the model learns where to stop.

    Args:
        medvill: the pretrained model (encoder, MLM head, masker and loss are shared).
    """

    def __init__(self, medvill: Any) -> None:
        super().__init__()
        # Only the modules this objective runs: IRM's head stays out of the optimiser.
        self.encoder = medvill.encoder
        self.mlm_head = medvill.mlm_head
        self.mlm_loss = medvill.mlm_loss
        self.token_masker = medvill.token_masker
        self.sep_id = medvill.token_ids["sep"]

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """L_mlm under S2S of ``batch["input_ids"]`` (B, L) given ``batch["image"]``; key ``mlm``."""
        from model.losses import IGNORE_INDEX

        text_ids, text_mask = text_segment(batch["input_ids"], batch["attention_mask"], "s2s")
        masked = self.token_masker.random(text_ids, text_mask, None, also_maskable=text_ids == self.sep_id)
        hidden = self.encoder(batch["image"], masked.input_ids, text_mask, "s2s").text_hidden
        chosen = masked.labels != IGNORE_INDEX
        loss = self.mlm_loss(self.mlm_head(hidden[chosen]), masked.labels[chosen])
        return MotorOutput(loss=loss, losses={"mlm": loss})
