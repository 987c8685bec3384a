"""Diagnosis finetuning: linear heads on E_v's [CLS] (M3AE / ARL: a classifier on the fused pooled output)
with BCE; AUROC per class and mean, F1."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from pipelines.tasks.base import HEAD_FILE, Task, load_head_weights, metrics_table, save_head_weights


class DiagnosisTask(Task):
    """Linear heads on E_v's [CLS] with BCE; AUROC per class and mean, macro/micro F1.

    The classes are the dataset's label set (:mod:`pipelines.tasks.label_sets`: a
    ``labels_<name>.csv`` beside the manifest, e.g. ChestX-ray14's 15), else the 14 CheXpert
    classes of the manifest records.
    """

    name = "diagnosis"

    def __init__(self, motor: Any, manifest: Path, *args: Any, **kwargs: Any) -> None:
        from kg.label_schema import load_chexpert_classes
        from model.heads import DiagnosisHead
        from pipelines.tasks.label_sets import dataset_label_set

        # Read before the splits are built: they carry the label set's vectors.
        self.study_labels = dataset_label_set(manifest)
        super().__init__(motor, manifest, *args, **kwargs)
        if self.study_labels is None:
            self.names = [c.name for c in load_chexpert_classes(self.motor.config.labels_file)]
        else:
            from model.processing import MotorCollator

            self.names = list(self.study_labels.names)
            self.collate = MotorCollator.from_config(self.motor.tokenizer, self.motor.config, len(self.names))
            if self.entities is not None:
                self.collate = self.entities.collator(self.collate)
        # A method with its own head (M3AE, ARL: the fused pooled output; MedViLL: the joint [CLS])
        # builds it; else E_v's [CLS].
        build = getattr(self.motor, "diagnosis_head", None)
        head = build(len(self.names)) if build else DiagnosisHead(self.motor, num_labels=len(self.names))
        self.module = head.to(self.device)

    def dataset(self, split: str) -> Dataset:
        samples = super().dataset(split)
        if self.study_labels is None:
            return samples
        from pipelines.tasks.label_sets import LabelSetSamples

        return LabelSetSamples(samples, self.study_labels)

    def data_files(self) -> dict[str, Any]:
        if self.study_labels is None:
            return {}
        from pipelines.run_bundle import describe_file

        return {"label_set": {"name": self.study_labels.name, "classes": self.names,
                              "definition": self.study_labels.definition, **describe_file(self.study_labels.path)}}

    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        from pipelines.evaluate import diagnosis_evaluation

        return diagnosis_evaluation(self.module, dataset, self.collate, names=self.names, **self._kwargs())

    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        mean = self.evaluate(dataset)["mean_auroc"]
        # A validation split too small for any class to have both labels has no AUROC.
        return {"score": mean if mean is not None else 0.0, "mean_auroc": mean}

    def table(self, metrics: dict[str, Any]) -> str:
        test = metrics["test"]
        rows = {name: {"AUROC": test["auroc"][name], "F1": test["f1"][name]} for name in self.names}
        rows["mean"] = {"AUROC": test["mean_auroc"], "F1": test["macro_f1"]}
        note = (f"\n{test['n']} test studies; F1 at threshold {test['threshold']}; mean F1 = macro F1; "
                f"micro F1 {test['micro_f1']:.3f}. Classes with a single label value have no AUROC.\n")
        return metrics_table(rows, ("AUROC", "F1")) + note

    def save_head(self, run_dir: Path) -> None:
        save_head_weights(self.module.classifier, run_dir / HEAD_FILE)

    def load_head(self, run_dir: Path) -> None:
        load_head_weights(self.module.classifier, run_dir / HEAD_FILE, self.device)
