"""Downstream finetuning of a pretrained MOTOR: retrieval, generation, diagnosis and VQA.

``--from`` names a pretraining (or finetuning) run directory — its ``model/`` is loaded and the
manifest it trained on is the default data — or a saved model directory (``save_pretrained``).
Each task is a :class:`Task`: the module the shared loop trains (:func:`pipelines.loop.fit`), its
datasets and batches, its evaluation and the score that picks the checkpoint on validation.

==========  =====================================================  ==============================
task        trains                                                 reports (test split)
==========  =====================================================  ==============================
retrieval   E_v, E_t with ITC + ITM (``lm_weight``/``mlc_weight``  R@1/5/10 both directions,
            0 in ``finetune_retrieval.yaml``)                      zero-shot and finetuned
generation  E_v + decoder with LM (:class:`ReportGenerator`)       BLEU-1..4, METEOR, ROUGE-L,
                                                                   CIDEr; most-frequent report
diagnosis   14 linear heads on E_v's [CLS] (``DiagnosisHead``)     AUROC per class and mean, F1
vqa         answer classifier over E_{v→t} (``VQAHead``)           open/closed/overall accuracy;
                                                                   majority answer
==========  =====================================================  ==============================

The run directory holds the run bundle, ``model/`` (the finetuned MOTOR weights) and, for the
heads, ``head.safetensors`` plus ``answers.json`` (VQA); ``motor evaluate`` reads them back.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kg.atomic import write_atomic
from kg.errors import InputError
from pipelines.checkpoint import CHECKPOINTS_DIR
from pipelines.config import EvalConfig, FinetuneConfig, resolve_model_config, to_dict
from pipelines.distributed import DistributedContext, barrier, init_distributed
from pipelines.knowledge import STORE_NAME, build_training_store, sk_sentences
from pipelines.loop import fit
from pipelines.prepare import (
    RADGRAPH_NAME,
    VQA_MANIFEST_NAME,
    companion_file,
    find_manifest,
    keeps_thread_count,
    make_deterministic,
    prepare_data,
    seed_everything,
)
from pipelines.run_bundle import RunResult, describe_file
from pipelines.samples import MotorSamples, study_texts

MODEL_DIR = "model"
HEAD_FILE = "head.safetensors"
ANSWERS_FILE = "answers.json"
RECALL_COLUMNS = {f"{d}_R@{k}": f"{name} R@{k}" for d, name in (("i2t", "Report"), ("t2i", "Image")) for k in (1, 5, 10)}
CAPTION_COLUMNS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


@dataclass
class Source:
    """Where a pretrained model comes from.

    Attributes:
        model_dir: the saved model directory (``config.json``, ``model.safetensors``, tokenizer).
        run_dir: the run directory that wrote it, when there is one.
        run_info: that run's ``run.json`` (empty without one).
    """

    model_dir: Path
    run_dir: Path | None = None
    run_info: dict[str, Any] = field(default_factory=dict)

    def recorded(self, key: str) -> Path | None:
        """A file the source run recorded under ``run.json``'s ``data`` (e.g. ``"manifest"``), if it
        still exists."""
        entry = self.run_info.get("data", {}).get(key)
        path = entry.get("path") if isinstance(entry, dict) else entry
        return Path(path) if path and Path(path).exists() else None


def resolve_source(path: str | Path) -> Source:
    """The model behind ``--from``: a run directory holding ``model/``, or a model directory.

    Raises:
        InputError: neither is found at ``path``.
    """
    path = Path(path)
    if (path / "config.json").is_file():
        run_dir = path.parent if (path.parent / "run.json").is_file() else None
        model_dir = path
    elif (path / MODEL_DIR / "config.json").is_file():
        run_dir, model_dir = path, path / MODEL_DIR
    else:
        raise InputError(
            "no MOTOR model here: expected a run directory holding model/ or a directory written by save_pretrained",
            file=path,
        )
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if run_dir else {}
    return Source(model_dir=model_dir, run_dir=run_dir, run_info=info)


def load_motor(source: Source, overrides: dict[str, Any] | None = None, device: torch.device | str = "cpu") -> Any:
    """The pretrained :class:`model.MotorModel`, with ``overrides`` of its config (e.g. dropout or
    loss weights) applied by rebuilding it and loading the same weights.

    Raises:
        InputError: an override changes the architecture, so the weights no longer fit.
    """
    from model.motor import MotorModel

    motor = MotorModel.from_pretrained(source.model_dir)
    if overrides:
        config = resolve_model_config(overrides, base=motor.config)
        rebuilt = MotorModel(config, motor.tokenizer)
        try:
            rebuilt.load_state_dict(motor.state_dict(), strict=True)
        except RuntimeError as err:
            raise InputError(f"the model overrides change its architecture: {err}", field="model") from None
        motor = rebuilt
    return motor.to(device)


def _split(manifest: Path, split: str, model_config: Any, missing: str) -> Any:
    from pipelines.pretrain import load_split

    return load_split(manifest, split, model_config, missing)


def _metrics_table(rows: dict[str, dict[str, Any]], columns: Any) -> str:
    from pipelines.metrics import metrics_table

    return metrics_table(rows, columns)


class Task(abc.ABC):
    """One downstream task: what is trained, on which batches, and how it is scored.

    Args:
        motor: the pretrained model (already on ``device``).
        manifest: the study manifest; ``vqa_manifest`` the VQA manifest (VQA only).
        eval_config: evaluation batch size and generation settings.
        missing: what a missing image does (``"error"`` or ``"skip"``).
    """

    name = ""

    def __init__(self, motor: Any, manifest: Path, eval_config: EvalConfig, device: torch.device, *,
                 missing: str = "error", vqa_manifest: Path | None = None) -> None:
        from pipelines.pretrain import make_collator

        self.motor = motor
        self.manifest = manifest
        self.eval = eval_config
        self.device = device
        self.missing = missing
        self.collate: Callable = make_collator(motor.tokenizer, motor.config)
        self.splits = {split: self.dataset(split) for split in ("train", "val", "test")}
        self.module: nn.Module = motor

    def dataset(self, split: str) -> Dataset:
        """The ``split`` samples as this task's collator reads them."""
        return MotorSamples(_split(self.manifest, split, self.motor.config, self.missing))

    def forward_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of every training forward call."""
        return {}

    @abc.abstractmethod
    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        """Full metrics of the trained model on ``dataset`` (with baselines)."""

    @abc.abstractmethod
    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        """``{"score": higher is better, ...}`` on the validation split."""

    @abc.abstractmethod
    def table(self, metrics: dict[str, Any]) -> str:
        """``metrics.md``: the task's metrics as a markdown table."""

    def save_head(self, run_dir: Path) -> None:
        """Write what the task adds to the MOTOR weights (nothing for retrieval and generation)."""

    def load_head(self, run_dir: Path) -> None:
        """Read what :meth:`save_head` wrote."""

    def _kwargs(self) -> dict[str, Any]:
        return {"batch_size": self.eval.batch_size, "device": self.device}


class RetrievalTask(Task):
    """ITC + ITM finetuning of E_v and E_t; R@1/5/10 of report and image retrieval."""

    name = "retrieval"

    def forward_kwargs(self) -> dict[str, Any]:
        return {"alpha": self.motor.config.alpha}

    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        from pipelines.evaluate import retrieval_evaluation

        return retrieval_evaluation(self.motor, dataset, self.collate, itm_k=self.eval.itm_k, **self._kwargs())

    def validation_score(self, dataset: Dataset) -> dict[str, float]:
        from pipelines.evaluate import retrieval_evaluation

        itc = retrieval_evaluation(self.motor, dataset, self.collate, **self._kwargs())["itc"]
        return {"score": itc["mean_R"]}

    def table(self, metrics: dict[str, Any]) -> str:
        rows: dict[str, dict[str, Any]] = {}
        for stage, label in (("zero_shot", "zero-shot"), ("test", "finetuned")):
            for scorer in ("itc", "itm"):
                if stage in metrics and scorer in metrics[stage]:
                    rows[f"{label} ({scorer.upper()})"] = metrics[stage][scorer]
        rows["chance"] = metrics["test"]["itc"]["chance"]
        return _metrics_table(rows, RECALL_COLUMNS) + f"\n{metrics['test']['n']} test studies; recall as a fraction.\n"


class GenerationTask(Task):
    """LM finetuning of E_v and the decoder; greedy and beam-search reports."""

    name = "generation"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from pipelines.evaluate import most_frequent_report
        from pipelines.tasks import ReportGenerator

        super().__init__(*args, **kwargs)
        self.module = ReportGenerator(self.motor)
        self.baseline_report = most_frequent_report(self.splits["train"].reports())

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
        lines = [_metrics_table(rows, CAPTION_COLUMNS), f"{test['n']} test studies.", ""]
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
                _metrics_table(efficacy, list(next(iter(efficacy.values())))),
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


class DiagnosisTask(Task):
    """Linear heads on E_v's [CLS] with BCE; AUROC per class and mean, macro/micro F1."""

    name = "diagnosis"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from kg.lexicon import load_chexpert_classes
        from model.heads import DiagnosisHead

        super().__init__(*args, **kwargs)
        self.names = [c.name for c in load_chexpert_classes(self.motor.config.labels_file)]
        self.module = DiagnosisHead(self.motor, num_labels=len(self.names)).to(self.device)

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
        return _metrics_table(rows, ("AUROC", "F1")) + note

    def save_head(self, run_dir: Path) -> None:
        from safetensors.torch import save_file

        _save_tensors(save_file, self.module.classifier.state_dict(), run_dir / HEAD_FILE)

    def load_head(self, run_dir: Path) -> None:
        _load_head(self.module.classifier, run_dir / HEAD_FILE, self.device)


class VQATask(Task):
    """Answer classification over E_{v→t}; open, closed and overall accuracy."""

    name = "vqa"

    def __init__(self, motor: Any, manifest: Path, eval_config: EvalConfig, device: torch.device, *,
                 missing: str = "error", vqa_manifest: Path | None = None) -> None:
        from model.heads import VQAHead
        from pipelines.evaluate import majority_answers, vqa_records
        from pipelines.tasks import AnswerVocabulary, VQACollator

        self.vqa_manifest = vqa_manifest or companion_file(manifest, VQA_MANIFEST_NAME)
        if self.vqa_manifest is None:
            raise InputError(f"no VQA manifest: pass data.vqa_manifest or place {VQA_MANIFEST_NAME} beside the "
                             "manifest", file=manifest, field="data.vqa_manifest")
        super().__init__(motor, manifest, eval_config, device, missing=missing)
        answers, kinds = vqa_records(self.splits["train"])
        self.vocabulary = AnswerVocabulary.from_answers(answers)
        self.majority = majority_answers(answers, kinds)
        self.collate = VQACollator(self.collate, self.vocabulary)
        self.module = VQAHead(self.motor, len(self.vocabulary)).to(self.device)

    def dataset(self, split: str) -> Dataset:
        from pipelines.data.datasets import VQADataset

        cfg = self.motor.config
        return VQADataset(self.vqa_manifest, split, image_size=cfg.image_size, in_chans=cfg.in_chans, missing=self.missing)

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
        counts = f"\n{test['model']['n_open']} open and {test['model']['n_closed']} closed test questions; " \
                 f"{len(self.vocabulary)} answer classes.\n"
        return _metrics_table(rows, columns) + counts

    def save_head(self, run_dir: Path) -> None:
        from safetensors.torch import save_file

        _save_tensors(save_file, self.module.classifier.state_dict(), run_dir / HEAD_FILE)
        self.vocabulary.save(run_dir / ANSWERS_FILE)

    def load_head(self, run_dir: Path) -> None:
        from model.heads import VQAHead
        from pipelines.tasks import AnswerVocabulary, VQACollator

        self.vocabulary = AnswerVocabulary.load(run_dir / ANSWERS_FILE)
        self.collate = VQACollator(self.collate.collator, self.vocabulary)
        self.module = VQAHead(self.motor, len(self.vocabulary)).to(self.device)
        _load_head(self.module.classifier, run_dir / HEAD_FILE, self.device)


TASK_CLASSES: dict[str, type[Task]] = {
    task.name: task for task in (RetrievalTask, GenerationTask, DiagnosisTask, VQATask)
}


def _save_tensors(save_file: Callable, state: dict[str, torch.Tensor], path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)))


def _load_head(module: nn.Module, path: Path, device: torch.device) -> None:
    from safetensors.torch import load_model

    if not path.is_file():
        raise InputError(f"no {path.name}: this directory was not written by `motor finetune` for this task",
                         file=path.parent)
    try:
        load_model(module, str(path), strict=True, device=str(device))
    except RuntimeError as err:
        raise InputError(f"head weights do not fit: {err}", file=path) from None


def make_task(name: str, motor: Any, manifest: Path, eval_config: EvalConfig, device: torch.device, *,
              missing: str = "error", vqa_manifest: Path | None = None) -> Task:
    """The :class:`Task` called ``name`` over ``motor`` and the manifest's splits."""
    return TASK_CLASSES[name](motor, manifest, eval_config, device, missing=missing, vqa_manifest=vqa_manifest)


def vqa_manifest_path(path: str | None) -> Path | None:
    """The VQA manifest file named by ``data.vqa_manifest`` / ``--vqa-data`` (``None`` stays ``None``).

    Raises:
        InputError: the file does not exist.
    """
    if path is None:
        return None
    if not Path(path).is_file():
        raise InputError("VQA manifest not found", file=path, field="data.vqa_manifest")
    return Path(path)


def task_manifest(source: Source, config_manifest: str | None, run_dir: Path, data: Any, image_size: int,
                  ctx: DistributedContext) -> Path:
    """The study manifest: ``--data``, else the one the source run trained on, else the synthetic set."""
    if config_manifest is not None:
        return find_manifest(config_manifest)
    recorded = source.recorded("manifest")
    if recorded is not None:
        return recorded
    return prepare_data(dataclasses.replace(data, manifest=None), run_dir, image_size, ctx)


def _retrieval_sk_sentences(
    task: Task, source: Source, run_dir: Path, ctx: DistributedContext, *, reuse_store: bool
) -> dict[str, str]:
    """SK sentences of the training studies, from the source run's store (``reuse_store``: the
    data is the data it was built from) or a new one built from this training split."""
    studies = study_texts(task.splits["train"].studies)
    store = source.recorded("knowledge_store") if reuse_store else None
    if store is None:
        store = run_dir / "knowledge" / STORE_NAME
        if ctx.is_main:
            build_training_store(studies, store, radgraph_path=companion_file(task.manifest, RADGRAPH_NAME))
        barrier()
    # The collator adds [CLS] and [SEP]: leave room for them in the SK budget.
    budget = task.motor.config.sk_max_len - 2
    return sk_sentences(store, [sid for sid, _ in studies], max_tokens=budget, tokenizer=task.motor.tokenizer)


@keeps_thread_count
def finetune(
    config: FinetuneConfig,
    run_dir: str | Path,
    *,
    show_progress: bool = True,
    tensorboard: bool = False,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Finetune a pretrained MOTOR on ``config.task`` and write the run bundle into ``run_dir``.

    Returns:
        The :class:`RunResult`; ``metrics["test"]`` holds the task's test metrics (and, for
        retrieval with ``eval.zero_shot``, ``metrics["zero_shot"]`` those before finetuning).

    Raises:
        InputError: no ``init_from``, a model or data path that does not exist, a dataset too small
            for one optimizer step.
    """
    if config.init_from is None:
        raise InputError("no pretrained model: pass --from RUN_DIR or a saved model directory", field="init_from")
    run_dir = Path(run_dir)
    ctx = init_distributed(config.train.device)
    say = echo if echo is not None and ctx.is_main else (lambda message: None)
    source = resolve_source(config.init_from)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / CHECKPOINTS_DIR).exists():
            shutil.rmtree(run_dir / CHECKPOINTS_DIR)
    barrier()
    make_deterministic(config.train.deterministic, ctx.device)
    seed_everything(config.train.seed)
    motor = load_motor(source, config.model, ctx.device)
    manifest = task_manifest(source, config.data.manifest, run_dir, config.data, motor.config.image_size, ctx)
    task = make_task(config.task, motor, manifest, config.eval, ctx.device, missing=config.data.missing,
                     vqa_manifest=vqa_manifest_path(config.data.vqa_manifest))
    say(f"{config.task}: {source.model_dir} on {manifest} "
        f"({len(task.splits['train'])} train / {len(task.splits['val'])} val / {len(task.splits['test'])} test)")

    metrics: dict[str, Any] = {}
    if isinstance(task, RetrievalTask):
        if motor.config.uses_sk:
            task.splits["train"] = MotorSamples(
                task.splits["train"].studies,
                _retrieval_sk_sentences(task, source, run_dir, ctx, reuse_store=config.data.manifest is None),
            )
        if config.eval.zero_shot and ctx.is_main:
            metrics["zero_shot"] = task.evaluate(task.splits["test"])

    def validate(module: nn.Module) -> dict[str, float]:
        return task.validation_score(task.splits["val"])

    seed_everything(config.train.seed + ctx.rank)
    started = time.perf_counter()
    fitted = fit(
        task.module, task.splits["train"], task.collate, train=config.train, optim=config.optim, ctx=ctx,
        run_dir=run_dir, validate=validate if config.train.validate and len(task.splits["val"]) > 1 else None,
        forward_kwargs=lambda progress, steps: task.forward_kwargs(),
        num_workers=config.data.num_workers, show_progress=show_progress, tensorboard=tensorboard,
        desc=f"finetune {config.task}",
    )
    elapsed = time.perf_counter() - started
    chosen = fitted.chosen_checkpoint or fitted.final_checkpoint
    if chosen != fitted.final_checkpoint:
        from safetensors.torch import load_model

        load_model(task.module, str(chosen / "model.safetensors"), strict=True, device=str(ctx.device))

    result = RunResult(kind="finetune", config=to_dict(config), seeds={"train": config.train.seed},
                       device=str(ctx.device), run_dir=run_dir)
    if ctx.is_main:
        motor.save_pretrained(run_dir / MODEL_DIR)
        task.save_head(run_dir)
        metrics["test"] = task.evaluate(task.splits["test"])
        metrics["training"] = {"steps": fitted.progress.step, "steps_per_epoch": fitted.steps_per_epoch,
                               "samples_seen": fitted.progress.samples_seen, "seconds": elapsed,
                               "precision": fitted.precision, "world_size": ctx.world_size}
        metrics["validation"] = fitted.validation
        result.metrics = metrics
        result.metrics_markdown = f"# {config.task}\n\n" + task.table(metrics)
        result.data = {"manifest": describe_file(manifest), "pretrained": str(source.model_dir)}
        if isinstance(task, VQATask):
            result.data["vqa_manifest"] = describe_file(task.vqa_manifest)
        result.checkpoints = {
            "final": str(fitted.final_checkpoint.relative_to(run_dir)),
            "chosen": str(chosen.relative_to(run_dir)),
            "chosen_by": f"validation {config.task} score" if fitted.chosen_checkpoint else "final step",
            "model": MODEL_DIR,
        }
        result.save_to_directory(run_dir)
        say(result.metrics_markdown)
    barrier()
    return result


def evaluate_run(
    task_name: str,
    model_path: str | Path,
    out_dir: str | Path,
    *,
    manifest: str | None = None,
    vqa_manifest: str | None = None,
    eval_config: EvalConfig | None = None,
    device: str = "auto",
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Evaluate a model on ``task_name``'s test split and write ``metrics.json`` / ``metrics.md``.

    Args:
        model_path: a ``motor finetune`` run directory (diagnosis and VQA need its head), or any
            pretraining run or saved model directory (retrieval and generation, zero-shot).
        out_dir: where the evaluation bundle goes.
        manifest: the study manifest (default: the one the model's run trained on).
        vqa_manifest: the VQA manifest (default: ``vqa.jsonl`` beside the manifest).

    Raises:
        InputError: no model, no data, or no head for a head task.
    """
    from pipelines.config import DataConfig
    from pipelines.distributed import resolve_device

    eval_config = eval_config or EvalConfig()
    ctx = DistributedContext(device=resolve_device(device))
    out_dir = Path(out_dir)
    source = resolve_source(model_path)
    motor = load_motor(source, device=ctx.device)
    if manifest is None and source.recorded("manifest") is None:
        raise InputError("no data: pass --data (the model's run records no manifest that still exists)",
                         file=model_path)
    study_manifest = task_manifest(source, manifest, out_dir, DataConfig(), motor.config.image_size, ctx)
    task = make_task(task_name, motor, study_manifest, eval_config, ctx.device,
                     vqa_manifest=vqa_manifest_path(vqa_manifest))
    task.load_head(source.run_dir or source.model_dir)
    metrics = {"test": task.evaluate(task.splits["test"])}
    result = RunResult(
        kind="evaluate",
        config={"task": task_name, "model": str(source.model_dir), "eval": to_dict(eval_config)},
        metrics=metrics,
        data={"manifest": describe_file(study_manifest)},
        device=str(ctx.device),
        metrics_markdown=f"# {task_name}\n\n" + task.table(metrics),
        run_dir=out_dir,
    )
    result.save_to_directory(out_dir)
    if echo is not None:
        echo(result.metrics_markdown)
    return result
