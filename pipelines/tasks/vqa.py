"""VQA finetuning: answer classification over E_{v→t}; open, closed and overall accuracy.

:class:`AnswerVocabulary` and :class:`VQACollator` make VQA a classification over the answers seen
in the training split (the closed and open answers alike); :class:`VQATask` trains
``model.heads.VQAHead`` on them.
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
from torch.utils.data import Dataset

from kg.errors import InputError
from model.heads import CLOSED, IGNORE_ANSWER, OPEN
from pipelines.config import EvalConfig
from pipelines.prepare import VQA_MANIFEST_NAME, companion_file
from pipelines.run_bundle import describe_file
from pipelines.tasks.base import HEAD_FILE, Task, load_head_weights, metrics_table, save_head_weights

ANSWERS_FILE = "answers.json"


def normalize(answer: str) -> str:
    """The answer as :func:`pipelines.metrics.vqa_accuracy` compares it."""
    from pipelines.metrics import normalize_answer

    return normalize_answer(answer)


@dataclass
class AnswerVocabulary:
    """The answers a VQA head can give, most frequent first (ties alphabetical).

    Attributes:
        answers: normalised answer strings; a head's logit ``i`` is ``answers[i]``.
        closed: for a question-type head (``vqa_head: question_type``), the number of leading
            closed answers: ``answers`` is then the closed answers, then the open ones (an answer
            may be in both parts); ``None`` for one shared list.
    """

    answers: list[str]
    closed: int | None = None

    def __post_init__(self) -> None:
        if self.closed is None:
            self._positions = {answer: i for i, answer in enumerate(self.answers)}
            return
        self._typed = {
            "closed": {answer: i for i, answer in enumerate(self.answers[: self.closed])},
            "open": {answer: self.closed + i for i, answer in enumerate(self.answers[self.closed:])},
        }

    @classmethod
    def from_typed_answers(cls, answers: Iterable[str], kinds: Iterable[str]) -> AnswerVocabulary:
        """Closed and open answers kept apart (``kinds``: each answer's ``closed`` / ``open``).

        Raises:
            InputError: no closed or no open training answer.
        """
        by_kind: dict[str, Counter] = {"closed": Counter(), "open": Counter()}
        for answer, kind in zip(answers, kinds):
            by_kind[kind][normalize(answer)] += 1
        if not by_kind["closed"] or not by_kind["open"]:
            raise InputError("vqa_head question_type needs closed and open training questions; got "
                             f"{sum(by_kind['closed'].values())} closed, {sum(by_kind['open'].values())} open",
                             field="answer_type")
        ordered = {kind: [a for a, _ in sorted(c.items(), key=lambda item: (-item[1], item[0]))]
                   for kind, c in by_kind.items()}
        return cls(ordered["closed"] + ordered["open"], closed=len(ordered["closed"]))

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

    def index(self, answer: str, kind: str | None = None) -> int:
        """Class index of ``answer`` (of type ``kind`` in a typed vocabulary); ``IGNORE_ANSWER``
        (-100) when it is not in the vocabulary."""
        if self.closed is None:
            return self._positions.get(normalize(answer), IGNORE_ANSWER)
        return self._typed.get(kind or "", {}).get(normalize(answer), IGNORE_ANSWER)

    def save(self, path: str | os.PathLike) -> None:
        """Write the answers as a JSON list, or ``{"closed": [...], "open": [...]}`` when typed (atomic)."""
        from pipelines.run_bundle import write_json

        if self.closed is None:
            write_json(path, self.answers)
        else:
            write_json(path, {"closed": self.answers[: self.closed], "open": self.answers[self.closed:]})

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
        if isinstance(answers, dict) and set(answers) == {"closed", "open"} and all(
                isinstance(part, list) and all(isinstance(a, str) for a in part) for part in answers.values()):
            return cls(answers["closed"] + answers["open"], closed=len(answers["closed"]))
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise InputError('expected a JSON list of answer strings, or {"closed": [...], "open": [...]}', file=path)
        return cls(answers)


class VQACollator:
    """Batches of VQA items for :class:`model.heads.VQAHead`.

    Items are ``{"image", "question", "answer", ...}`` (``pipelines.data.datasets.VQADataset``);
    the batch holds ``image`` (B, C, H, W) normalised, the question as ``input_ids`` /
    ``attention_mask`` (B, L), ``answer`` (B,) long class indices (-100 for an answer outside
    the vocabulary, which the loss skips) and ``answer_type`` (B,) long, 0 closed / 1 open.

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
        batch["answer"] = torch.tensor([self.vocabulary.index(item["answer"], item.get("answer_type"))
                                        for item in items], dtype=torch.long)
        batch["answer_type"] = torch.tensor([OPEN if item.get("answer_type") == "open" else CLOSED for item in items],
                                            dtype=torch.long)
        return batch


#: The VQA heads (``vqa_head``): one classifier over every answer, or the reference code's
#: question-type classifier with a closed and an open answer classifier.
VQA_HEADS = ("single", "question_type")


class VQATask(Task):
    """Answer classification over E_{v→t}; open, closed and overall accuracy.

    ``vqa_head``: ``single`` (one classifier over every training answer, the default) or
    ``question_type`` (:class:`model.heads.QuestionTypeVQAHead`, the reference code's layout).
    """

    name = "vqa"

    def __init__(self, motor: Any, manifest: Path, eval_config: EvalConfig, device: torch.device, *,
                 missing: str = "error", vqa_manifest: Path | None = None, vqa_head: str = "single") -> None:
        from pipelines.evaluate import majority_answers, vqa_records

        if vqa_head not in VQA_HEADS:
            raise InputError(f"must be one of {', '.join(VQA_HEADS)}; got {vqa_head!r}", field="vqa_head")

        self.vqa_manifest = vqa_manifest or companion_file(manifest, VQA_MANIFEST_NAME)
        if self.vqa_manifest is None:
            raise InputError(f"no VQA manifest: pass data.vqa_manifest or place {VQA_MANIFEST_NAME} beside the "
                             "manifest", file=manifest, field="data.vqa_manifest")
        super().__init__(motor, manifest, eval_config, device, missing=missing)
        answers, kinds = vqa_records(self.splits["train"])
        self.vocabulary = (AnswerVocabulary.from_answers(answers) if vqa_head == "single"
                           else AnswerVocabulary.from_typed_answers(answers, kinds))
        self.majority = majority_answers(answers, kinds)
        self.collate = VQACollator(self.collate, self.vocabulary)
        self.module = make_vqa_head(self.motor, self.vocabulary).to(self.device)

    @property
    def image_manifest(self) -> Path:
        return self.vqa_manifest

    def data_files(self) -> dict[str, Any]:
        return {"vqa_manifest": describe_file(self.vqa_manifest)}

    def dataset(self, split: str) -> Dataset:
        from pipelines.data.datasets import VQADataset

        cfg = self.motor.config
        return VQADataset(self.vqa_manifest, split, image_size=cfg.image_size, in_chans=cfg.in_chans,
                          missing=self.missing, views_per_item=getattr(cfg, "views_per_study", None))

    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        from pipelines.evaluate import vqa_evaluation

        return vqa_evaluation(self.module, dataset, self.collate, majority=self.majority, **self._kwargs())

    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        from pipelines.evaluate import vqa_evaluation

        overall = vqa_evaluation(self.module, dataset, self.collate, **self._kwargs())["model"]["overall"]
        return {"score": overall, "overall": overall}

    def table(self, metrics: dict[str, Any]) -> str:
        test = metrics["test"]
        rows = {"MOTOR": test["model"], "majority answer": test["majority_answer"]}
        columns = {"open": "Open", "closed": "Closed", "overall": "Overall"}
        head = ("one classifier" if self.vocabulary.closed is None else
                f"question-type classifier + {self.vocabulary.closed} closed / "
                f"{len(self.vocabulary) - self.vocabulary.closed} open answers")
        counts = f"\n{test['model']['n_open']} open and {test['model']['n_closed']} closed test questions; " \
                 f"{len(self.vocabulary)} answer classes ({head}).\n"
        return metrics_table(rows, columns) + counts

    def save_head(self, run_dir: Path) -> None:
        save_head_weights(self.module.classifier, run_dir / HEAD_FILE)
        self.vocabulary.save(run_dir / ANSWERS_FILE)

    def load_head(self, run_dir: Path) -> None:
        self.vocabulary = AnswerVocabulary.load(run_dir / ANSWERS_FILE)
        self.collate = VQACollator(self.collate.collator, self.vocabulary)
        self.module = make_vqa_head(self.motor, self.vocabulary).to(self.device)
        load_head_weights(self.module.classifier, run_dir / HEAD_FILE, self.device)


def make_vqa_head(motor: Any, vocabulary: AnswerVocabulary) -> torch.nn.Module:
    """The head a vocabulary calls for: :class:`model.heads.VQAHead` for one shared list,
    :class:`model.heads.QuestionTypeVQAHead` for closed and open answers kept apart."""
    from model.heads import QuestionTypeVQAHead, VQAHead

    # A method with its own head (M3AE, ARL: the fused pooled output of image and question;
    # MedViLL: the joint [CLS]) builds it; else E_{v→t}'s.
    build = getattr(motor, "vqa_head", None)
    if vocabulary.closed is None:
        return build(len(vocabulary)) if build else VQAHead(motor, len(vocabulary))
    if build is not None:
        raise InputError("the question-type head reads MOTOR's E_{v→t}; this method has its own "
                         "single answer classifier: use vqa_head: single", field="vqa_head")
    return QuestionTypeVQAHead(motor, vocabulary.closed, len(vocabulary) - vocabulary.closed)
