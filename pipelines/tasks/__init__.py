"""Downstream tasks, one module each, by name.

==========  =====================================================  ==============================
task        trains                                                 reports (test split)
==========  =====================================================  ==============================
retrieval   E_v, E_t with ITC + ITM (``lm_weight``/``mlc_weight``  R@1/5/10 both directions,
            0 in ``finetune_retrieval.yaml``)                      zero-shot and finetuned
generation  E_v + decoder with LM (``ReportGenerator``)            BLEU-1..4, METEOR, ROUGE-L,
                                                                   CIDEr; most-frequent report
diagnosis   a linear head per class of the dataset's label set     AUROC per class and mean, F1
            (CheXpert 14, or ``labels_<set>.csv``) on E_v's [CLS]
vqa         answer classifier over E_{v→t} (``VQAHead``)           open/closed/overall accuracy;
                                                                   majority answer
==========  =====================================================  ==============================

A task is a :class:`pipelines.tasks.base.Task` subclass in its own module; a new task is one
module plus one line in :data:`TASK_CLASSES`. Classes are named as ``"module:Class"`` so that the
command line can list the tasks without importing torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from pipelines.config import EvalConfig
    from pipelines.tasks.base import Task

#: Task name → its class, in the order the documentation and the demo list them.
TASK_CLASSES = {
    "retrieval": "pipelines.tasks.retrieval:RetrievalTask",
    "generation": "pipelines.tasks.generation:GenerationTask",
    "diagnosis": "pipelines.tasks.diagnosis:DiagnosisTask",
    "vqa": "pipelines.tasks.vqa:VQATask",
}
#: The downstream task names.
TASKS = tuple(TASK_CLASSES)


def task_class(name: str) -> type[Task]:
    """The :class:`~pipelines.tasks.base.Task` subclass called ``name``."""
    module, _, attribute = TASK_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def make_task(name: str, motor: Any, manifest: Path, eval_config: EvalConfig, device: torch.device, *,
              missing: str = "error", vqa_manifest: Path | None = None, vqa_head: str = "single") -> Task:
    """The task called ``name`` over ``motor`` and the manifest's splits (``vqa_head``: VQA only)."""
    extra = {"vqa_head": vqa_head} if name == "vqa" else {}
    return task_class(name)(motor, manifest, eval_config, device, missing=missing, vqa_manifest=vqa_manifest, **extra)
