"""Report generation finetuning: E_v and the decoder with the LM loss; greedy and beam-search reports.

:class:`ReportGenerator` is the generation objective: E_v's knowledge-enhanced image tokens and the
report decoder, trained with the LM loss (Eq. 14) alone. Like the heads in ``model.heads``, it
registers only the modules it runs (shared with the pretrained model), so the optimiser and
DistributedDataParallel see no idle parameters of the report encoder.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from model.heads import IMAGE_PATH_MODULES
from model.motor import MotorModel, MotorOutput, enhanced_image_tokens
from pipelines.tasks.base import Task, metrics_table

CAPTION_COLUMNS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


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


class GenerationTask(Task):
    """LM finetuning of E_v and the decoder; greedy and beam-search reports."""

    name = "generation"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from pipelines.evaluate import most_frequent_report

        super().__init__(*args, **kwargs)
        if hasattr(self.motor, "report_generator"):
            # A method that generates with its own encoder (MedViLL: MLM under the S2S mask).
            self.decoder_attached = False
            self.module = self.motor.report_generator()
        else:
            # M3AE / ARL pretrain no decoder: one initialised from their text encoder is attached.
            self.decoder_attached = not hasattr(self.motor, "text_decoder") and self.motor.attach_report_decoder()
            self.module = ReportGenerator(self.motor)
        self.baseline_report = most_frequent_report(self.splits["train"].reports())

    def prepare_training(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Records in the run bundle when the report decoder was attached, not pretrained."""
        metrics = super().prepare_training(*args, **kwargs)
        if self.decoder_attached:
            metrics["report_decoder"] = {"pretrained": False, "initialised_from": "text_encoder",
                                         "note": f"{self.motor.config.method} pretrains no decoder; its cross-attention "
                                                 "to the image starts random"}
        return metrics

    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        from pipelines.evaluate import generation_evaluation

        return generation_evaluation(
            self.motor, dataset, self.collate, max_length=self.eval.max_length, num_beams=self.eval.num_beams,
            baseline_report=self.baseline_report, meteor=self.eval.meteor,
            radgraph_annotations=self.eval.radgraph_annotations, **self._kwargs(),
        )

    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        from pipelines.evaluate import generated_reports
        from pipelines.metrics import caption_metrics

        greedy = generated_reports(self.motor, dataset, self.collate, max_length=self.eval.max_length, **self._kwargs())
        cider = caption_metrics(greedy, dataset.reports(), meteor="off")["CIDEr"]
        return {"score": cider, "CIDEr": cider}

    def table(self, metrics: dict[str, Any]) -> str:
        test = metrics["test"]
        rows = {"greedy": test["greedy"]}
        if "beam" in test:
            rows[f"beam search ({test['num_beams']})"] = test["beam"]
        rows["most frequent report"] = test["most_frequent_report"]
        lines = [metrics_table(rows, CAPTION_COLUMNS), f"{test['n']} test studies.", ""]
        if all("clinical_efficacy" in row for row in rows.values()):
            from pipelines.metrics import POLICIES

            efficacy = {
                name: {f"{measure} (uncertain {policy.split('_')[1]})": row["clinical_efficacy"][policy][f"{measure}_micro"]
                       for policy in POLICIES for measure in ("precision", "recall", "f1")}
                for name, row in rows.items()
            }
            lines += [
                "Clinical efficacy: `kg label` on generated and reference reports, 14 CheXpert classes, "
                "micro averages; uncertain labels read as negative or as positive.", "",
                metrics_table(efficacy, list(next(iter(efficacy.values())))),
            ]
        lines += _f1_radgraph_section(rows)
        for example in test["examples"]:
            lines += [f"- reference: {example['reference']}", f"  - greedy: {example['greedy']}"]
            if "beam" in example:
                lines.append(f"  - beam: {example['beam']}")
        return "\n".join(lines) + "\n"


def _f1_radgraph_section(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The F1-RadGraph table of the generation rows that have it, headed by its annotator."""
    from pipelines.metrics.radgraph import f1_radgraph_table

    table = f1_radgraph_table({name: row.get("f1_radgraph") for name, row in rows.items()})
    return [table] if table else []
