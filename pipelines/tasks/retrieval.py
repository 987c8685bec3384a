"""Retrieval finetuning: ITC + ITM of E_v and E_t; R@1/5/10 of report and image retrieval."""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from pipelines.data.motor_samples import MotorSamples, study_texts
from pipelines.run import RunContext, training_sk_sentences
from pipelines.tasks.base import Task, metrics_table
from pipelines.tasks.sources import Source

RECALL_COLUMNS = {f"{d}_R@{k}": f"{name} R@{k}" for d, name in (("i2t", "Report"), ("t2i", "Image")) for k in (1, 5, 10)}
RECALL_COLUMNS.update({f"{d}_MRR": f"{name} MRR" for d, name in (("i2t", "Report"), ("t2i", "Image"))})


class RetrievalTask(Task):
    """ITC + ITM finetuning of E_v and E_t; R@1/5/10 of report and image retrieval."""

    name = "retrieval"

    def forward_kwargs(self) -> dict[str, Any]:
        return {"alpha": self.motor.config.alpha}

    def prepare_training(self, source: Source, run: RunContext, *, reuse_store: bool, zero_shot: bool) -> dict[str, Any]:
        """SK sentences for the training split (an SK model), then zero-shot test metrics if asked."""
        metrics: dict[str, Any] = {}
        if self.motor.config.uses_sk:
            self.splits["train"] = MotorSamples(
                self.splits["train"].studies, _sk_sentences(self, source, run, reuse_store=reuse_store)
            )
        if zero_shot and run.ctx.is_main:
            metrics["zero_shot"] = self.evaluate(self.splits["test"])
        return metrics

    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        from pipelines.evaluate import retrieval_evaluation

        return retrieval_evaluation(self.motor, dataset, self.collate, itm_k=self.eval.itm_k, **self._kwargs())

    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        from pipelines.evaluate import ranked_by, retrieval_evaluation

        primary = ranked_by(retrieval_evaluation(self.motor, dataset, self.collate, **self._kwargs()))
        return {"score": primary["mean_R"]}

    def table(self, metrics: dict[str, Any]) -> str:
        rows: dict[str, dict[str, Any]] = {}
        for stage, label in (("zero_shot", "zero-shot"), ("test", "finetuned")):
            for scorer in ("itc", "itm"):
                if stage in metrics and scorer in metrics[stage]:
                    rows[f"{label} ({scorer.upper()})"] = metrics[stage][scorer]
        from pipelines.evaluate import ranked_by

        rows["chance"] = ranked_by(metrics["test"])["chance"]
        return metrics_table(rows, RECALL_COLUMNS) + f"\n{metrics['test']['n']} test studies; recall as a fraction.\n"


def _sk_sentences(task: Task, source: Source, run: RunContext, *, reuse_store: bool) -> dict[str, str]:
    """SK sentences of the training studies, from the source run's store (``reuse_store``: the
    data is the data it was built from) or a new one built from this training split."""
    store = source.recorded("knowledge_store") if reuse_store else None
    sentences, _ = training_sk_sentences(
        study_texts(task.splits["train"].studies), task.manifest, run,
        max_tokens=task.motor.config.sk_max_len, tokenizer=task.motor.tokenizer, store=store,
        order=task.motor.config.sk_order,
    )
    return sentences
