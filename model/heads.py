"""Downstream task heads that reuse a pretrained MOTOR's encoders.

* Retrieval uses :class:`model.MotorModel` itself (``encode_image`` / ``encode_text`` for ITC
  scores, ``itm_scores`` for re-ranking, ``forward`` for finetuning with ITC + ITM + LM).
* Generation uses ``MotorModel.generate``.
* :class:`DiagnosisHead`: one linear head per label on E_v's [CLS] feature.
* :class:`VQAHead`: an answer classifier over E_{v→t} (the question attending to the image).
* :class:`QuestionTypeVQAHead`: the reference code's layout: a question-type (closed / open)
  classifier and one answer classifier per type.

A head registers only the modules it runs (shared with the MOTOR model it came from), so an
optimiser or DistributedDataParallel over the head sees no idle parameters. ``forward(batch)``
returns a :class:`model.motor.MotorOutput`, the shape the training loop reads.
"""
from __future__ import annotations

import torch
from torch import nn

from kg.errors import InputError
from model.losses import MultiLabelLoss
from model.motor import MotorModel, MotorOutput, enhanced_image_tokens, grounded_text_features

IGNORE_ANSWER = -100

#: Modules of the knowledge-enhanced image path (those a model has).
IMAGE_PATH_MODULES = ("image_encoder", "gk_encoder", "gk_image_encoder", "sk_encoder", "sk_image_encoder", "vision_proj")


class DiagnosisHead(nn.Module):
    """Multi-label diagnosis: ``n_labels`` linear heads on the image encoder's [CLS] feature.

    Args:
        motor: the pretrained model (its ``image_encoder`` is shared, not copied).
        num_labels: labels to predict (default: the model's label file, the 14 CheXpert classes).
        uncertain: treatment of uncertain (-1) labels in the loss (default: the model's setting).
        unmentioned: treatment of unmentioned (NaN) labels in the loss and in scoring
            (default: the model's setting, ``negative``).
    """

    def __init__(
        self, motor: MotorModel, num_labels: int | None = None, uncertain: str | None = None,
        unmentioned: str | None = None,
    ) -> None:
        super().__init__()
        from kg.label_schema import load_chexpert_classes

        self.image_encoder = motor.image_encoder
        self.num_labels = num_labels or len(load_chexpert_classes(motor.config.labels_file))
        # One row per label: the 14 linear heads as one matrix.
        self.classifier = nn.Linear(motor.config.vision_width, self.num_labels)
        self.loss_fn = MultiLabelLoss(uncertain or motor.config.uncertain, unmentioned or motor.config.unmentioned)

    @property
    def unmentioned(self) -> str:
        """The head's unmentioned-label policy (:data:`model.config.UNMENTIONED_POLICIES`), which
        scoring must follow too."""
        return self.loss_fn.unmentioned

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → (B, n_labels) logits (sigmoid gives probabilities)."""
        return self.classifier(self.image_encoder(images)[:, 0])

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Binary cross-entropy on ``batch["labels"]`` (B, n_labels) in {1, 0, -1, NaN}; key ``bce``."""
        loss = self.loss_fn(self.logits(batch["image"]), batch["labels"])
        return MotorOutput(loss=loss, losses={"bce": loss})


class VQAHead(nn.Module):
    """VQA as classification over an answer vocabulary, on E_{v→t}'s [ENC] feature.

    The question (``[CLS] question [SEP]`` ids, [CLS] swapped for [ENC]) attends to the
    knowledge-enhanced image tokens; an MLP maps the [ENC] feature to answer logits.

    Args:
        motor: the pretrained model (image path, report queue and text encoder are shared).
        num_answers: size of the answer vocabulary.
        hidden: MLP hidden width (default 2 × text_width).
    """

    def __init__(self, motor: MotorModel, num_answers: int, hidden: int | None = None) -> None:
        super().__init__()
        if num_answers < 2:
            raise InputError(f"needs at least 2 answers; got {num_answers}", field="num_answers")
        width = motor.config.text_width
        hidden = hidden or 2 * width
        self.towers = nn.ModuleDict({name: getattr(motor, name) for name in IMAGE_PATH_MODULES if hasattr(motor, name)})
        self.report_queue = getattr(motor, "report_queue", None)
        self.text_encoder = motor.text_encoder
        self.enc_token_id = motor.token_ids["enc"]
        self.top_k = motor.config.sk_top_k
        self.classifier = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, num_answers)
        )

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) and question ids/mask (B, L) → (B, num_answers) answer logits."""
        tokens = enhanced_image_tokens(self.towers, images, self.report_queue, self.top_k)
        return self.classifier(grounded_text_features(self.text_encoder, self.enc_token_id, input_ids, attention_mask, tokens))

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Cross-entropy against ``batch["answer"]`` (B,) answer indices (-100: skip); key ``ce``.

        ``batch`` holds ``image``, ``input_ids`` and ``attention_mask`` (the question).
        """
        logits = self.logits(batch["image"], batch["input_ids"], batch["attention_mask"])
        loss = nn.functional.cross_entropy(logits, batch["answer"], ignore_index=IGNORE_ANSWER)
        return MotorOutput(loss=loss, losses={"ce": loss})


#: ``answer_type`` codes of a VQA batch (the reference code's: 0 closed, 1 open).
CLOSED, OPEN = 0, 1


class QuestionTypeVQAHead(nn.Module):
    """VQA with a question-type classifier and separate closed and open answer classifiers.

    The reference code's layout (MEVF's, which MOTOR's VQA code follows): the question alone
    (E_t's [CLS] feature, no image) is classified as closed or open, and the question attending
    to the image (E_{v→t}'s [ENC] feature) is classified by the answer head of that type, over
    that type's answers only. Training uses each question's true type for its answer head;
    prediction routes every question by the predicted type.

    Answer indices follow one list, the ``num_closed`` closed answers then the ``num_open`` open
    ones (:class:`pipelines.tasks.vqa.AnswerVocabulary` with ``closed`` set). ``classifier`` is a
    ``ModuleDict`` (``question_type``, ``closed``, ``open``): what a task saves as the head.

    Args:
        motor: the pretrained model (image path, report queue and text encoder are shared).
        num_closed / num_open: answers of each type (each at least 1).
        hidden: answer-MLP hidden width (default 2 × text_width).
    """

    def __init__(self, motor: MotorModel, num_closed: int, num_open: int, hidden: int | None = None) -> None:
        super().__init__()
        if num_closed < 1 or num_open < 1:
            raise InputError(f"needs closed and open answers; got {num_closed} closed, {num_open} open",
                             field="num_answers")
        width = motor.config.text_width
        hidden = hidden or 2 * width
        self.num_closed, self.num_open = num_closed, num_open
        self.towers = nn.ModuleDict({name: getattr(motor, name) for name in IMAGE_PATH_MODULES if hasattr(motor, name)})
        self.report_queue = getattr(motor, "report_queue", None)
        self.text_encoder = motor.text_encoder
        self.enc_token_id = motor.token_ids["enc"]
        self.top_k = motor.config.sk_top_k

        def answers(n: int) -> nn.Module:
            return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, n))

        self.classifier = nn.ModuleDict({"question_type": nn.Linear(width, 2), "closed": answers(num_closed),
                                         "open": answers(num_open)})

    def parts(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(type (B, 2), closed (B, num_closed), open (B, num_open))`` logits."""
        question = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        tokens = enhanced_image_tokens(self.towers, images, self.report_queue, self.top_k)
        grounded = grounded_text_features(self.text_encoder, self.enc_token_id, input_ids, attention_mask, tokens)
        heads = self.classifier
        return heads["question_type"](question), heads["closed"](grounded), heads["open"](grounded)

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, num_closed + num_open) answer scores; the type not predicted is -inf, so the argmax
        is the predicted type's best answer."""
        kind, closed, opened = self.parts(images, input_ids, attention_mask)
        is_open = (kind.argmax(-1) == OPEN).unsqueeze(-1)
        hidden = torch.finfo(closed.dtype).min
        return torch.cat([closed.masked_fill(is_open, hidden), opened.masked_fill(~is_open, hidden)], dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """Question-type cross-entropy plus each type's answer cross-entropy on its questions.

        ``batch``: ``image``, ``input_ids`` / ``attention_mask`` (the question), ``answer_type``
        (B,) 0 closed / 1 open, ``answer`` (B,) indices into the joint list (-100: skip). Losses
        ``type``, ``closed`` and ``open`` (0 when the batch has no question of that type).
        """
        kind, closed, opened = self.parts(batch["image"], batch["input_ids"], batch["attention_mask"])
        answer, answer_type = batch["answer"], batch["answer_type"]
        losses = {"type": nn.functional.cross_entropy(kind, answer_type)}
        for name, logits, code, offset in (("closed", closed, CLOSED, 0), ("open", opened, OPEN, self.num_closed)):
            rows = (answer_type == code) & (answer != IGNORE_ANSWER)
            losses[name] = (nn.functional.cross_entropy(logits[rows], answer[rows] - offset) if rows.any()
                            else logits.new_zeros(()))
        return MotorOutput(loss=sum(losses.values()), losses=losses)
