"""Downstream pieces the finetuning loop needs beside ``model.heads``.

* :class:`ReportGenerator`: the generation objective — E_v's knowledge-enhanced image tokens and
  the report decoder, trained with the LM loss (Eq. 14) alone. Like the heads in ``model.heads``,
  it registers only the modules it runs (shared with the pretrained model), so the optimiser and
  DistributedDataParallel see no idle parameters of the report encoder.
* :class:`AnswerVocabulary` and :class:`VQACollator`: VQA as classification over the answers seen
  in the training split (the closed and open answers alike).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kg.errors import InputError
from model.heads import IGNORE_ANSWER, IMAGE_PATH_MODULES
from model.motor import MotorModel, MotorOutput, enhanced_image_tokens


class ReportGenerator(nn.Module):
    """Report generation objective: the decoder reads the knowledge-enhanced image tokens.

    Args:
        motor: the pretrained model; its image path, report queue, decoder and LM loss are shared.
    """

    def __init__(self, motor: MotorModel) -> None:
        super().__init__()
        self.towers = nn.ModuleDict({name: getattr(motor, name) for name in IMAGE_PATH_MODULES if hasattr(motor, name)})
        self.report_queue = getattr(motor, "report_queue", None)
        self.text_decoder = motor.text_decoder
        self.lm_loss = motor.lm_loss
        self.dec_token_id = motor.token_ids["dec"]
        self.top_k = motor.config.sk_top_k

    def forward(self, batch: dict[str, torch.Tensor]) -> MotorOutput:
        """LM loss of ``batch["input_ids"]`` (B, L) given ``batch["image"]`` (B, C, H, W); key ``lm``."""
        tokens = enhanced_image_tokens(self.towers, batch["image"], self.report_queue, self.top_k)
        ids = batch["input_ids"].clone()
        ids[:, 0] = self.dec_token_id  # the decoder starts from [DEC], as in pretraining
        logits = self.text_decoder(
            input_ids=ids, attention_mask=batch["attention_mask"], encoder_hidden_states=tokens
        ).logits
        loss = self.lm_loss(logits, ids, batch["attention_mask"])
        return MotorOutput(loss=loss, losses={"lm": loss})


def normalize(answer: str) -> str:
    """The answer as :func:`pipelines.metrics.vqa_accuracy` compares it."""
    from pipelines.metrics import normalize_answer

    return normalize_answer(answer)


@dataclass
class AnswerVocabulary:
    """The answers a VQA head can give, most frequent first (ties alphabetical).

    Attributes:
        answers: normalised answer strings; a head's logit ``i`` is ``answers[i]``.
    """

    answers: list[str]

    def __post_init__(self) -> None:
        self._positions = {answer: i for i, answer in enumerate(self.answers)}

    @classmethod
    def from_answers(cls, answers: Iterable[str]) -> AnswerVocabulary:
        """The vocabulary of ``answers`` (e.g. the training split's).

        Raises:
            InputError: fewer than two distinct answers.
        """
        counts = Counter(normalize(answer) for answer in answers)
        if len(counts) < 2:
            raise InputError(f"VQA needs at least 2 distinct training answers; got {len(counts)}", field="answer")
        return cls([answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))])

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int:
        """Class index of ``answer``; ``IGNORE_ANSWER`` (-100) when it is not in the vocabulary."""
        return self._positions.get(normalize(answer), IGNORE_ANSWER)

    def save(self, path: str | os.PathLike) -> None:
        """Write the answers as a JSON list (atomic)."""
        from pipelines.run_bundle import write_json

        write_json(path, self.answers)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AnswerVocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            InputError: not a JSON list of strings.
        """
        path = Path(path)
        try:
            answers = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read the answer vocabulary: {err}", file=path) from None
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise InputError("expected a JSON list of answer strings", file=path)
        return cls(answers)


class VQACollator:
    """Batches of VQA items for :class:`model.heads.VQAHead`.

    Items are ``{"image", "question", "answer", ...}`` (``pipelines.data.datasets.VQADataset``);
    the batch holds ``image`` (B, C, H, W) normalised, the question as ``input_ids`` /
    ``attention_mask`` (B, L) and ``answer`` (B,) long class indices (-100 for an answer outside
    the vocabulary, which the loss skips).

    Args:
        collator: the model's :class:`model.processing.MotorCollator` (normalisation and tokenizer).
        vocabulary: the answer classes.
    """

    def __init__(self, collator: Any, vocabulary: AnswerVocabulary) -> None:
        self.collator = collator
        self.vocabulary = vocabulary

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``items``; see the class docstring."""
        batch = self.collator([{"image": item["image"], "report": item["question"], "index": item["index"]} for item in items])
        batch["answer"] = torch.tensor([self.vocabulary.index(item["answer"]) for item in items], dtype=torch.long)
        return batch
