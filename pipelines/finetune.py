"""Downstream finetuning of a pretrained MOTOR (:func:`finetune`) and evaluation of a finetuned one
(:func:`evaluate_run`), for any task of :mod:`pipelines.tasks`.

``--from`` names a pretraining (or finetuning) run directory — its ``model/`` is loaded and the
manifest it trained on is the default data — or a saved model directory (``save_pretrained``)
(:mod:`pipelines.tasks.sources`).

The run directory holds the run bundle, ``model/`` (the finetuned MOTOR weights) and, for the
heads, ``head.safetensors`` plus ``answers.json`` (VQA); ``motor evaluate`` reads them back.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from kg.errors import InputError
from pipelines.config import EvalConfig, FinetuneConfig, to_dict
from pipelines.distributed import DistributedContext, barrier
from pipelines.loop import fit
from pipelines.prepare import check_images, keeps_thread_count, seed_everything
from pipelines.run import MODEL_DIR, checkpoint_summary, load_chosen_weights, start_run, training_summary
from pipelines.run_bundle import RunResult, describe_file
from pipelines.tasks import make_task
from pipelines.tasks.sources import load_motor, resolve_source, task_manifest, vqa_manifest_path


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
    source = resolve_source(config.init_from)
    run = start_run(run_dir, config.train.device, seed=config.train.seed, deterministic=config.train.deterministic,
                    echo=echo)
    run_dir, ctx, say = run.run_dir, run.ctx, run.say
    motor = load_motor(source, config.model, ctx.device)
    pretrained_knowledge = getattr(motor.config, "knowledge", None)
    if not config.knowledge_at_finetune:
        motor = drop_knowledge(motor)
    manifest = task_manifest(source, config.data.manifest, run_dir, config.data, motor.config.image_size, ctx)
    task = make_task(config.task, motor, manifest, config.eval, ctx.device, missing=config.data.missing,
                     vqa_manifest=vqa_manifest_path(config.data.vqa_manifest), vqa_head=config.vqa_head)
    check_images(task.image_manifest, ctx, missing=config.data.missing, echo=say)
    say(f"{config.task}: {source.model_dir} on {manifest} "
        f"({len(task.splits['train'])} train / {len(task.splits['val'])} val / {len(task.splits['test'])} test)")

    metrics: dict[str, Any] = task.prepare_training(
        source, run, reuse_store=config.data.manifest is None, zero_shot=config.eval.zero_shot
    )

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
    load_chosen_weights(task.module, fitted, ctx.device)

    result = RunResult(kind="finetune", config=to_dict(config), seeds={"train": config.train.seed},
                       device=str(ctx.device), run_dir=run_dir)
    if ctx.is_main:
        motor.save_pretrained(run_dir / MODEL_DIR)
        task.save_head(run_dir)
        metrics["test"] = task.evaluate(task.splits["test"])
        metrics["training"] = training_summary(fitted, elapsed, ctx)
        metrics["validation"] = fitted.validation
        metrics["knowledge"] = knowledge_record(pretrained_knowledge, motor, config.knowledge_at_finetune)
        result.metrics = metrics
        result.metrics_markdown = (f"# {config.task}\n\n" + task.table(metrics)
                                   + knowledge_note(metrics["knowledge"]))
        result.data = {"manifest": describe_file(manifest), "pretrained": str(source.model_dir), **task.data_files()}
        result.checkpoints = checkpoint_summary(fitted, run_dir, f"validation {config.task} score")
        result.save_to_directory(run_dir)
        say(result.metrics_markdown)
    barrier()
    return result


def drop_knowledge(motor: Any) -> Any:
    """``knowledge_at_finetune: false``: the MOTOR model without its GK / SK paths (plain BLIP).

    Raises:
        InputError: the model is not a MOTOR model (other methods have no such switch).
    """
    from model.motor import MotorModel, without_knowledge

    if not isinstance(motor, MotorModel):
        raise InputError(f"applies to MOTOR models; this is a {type(motor).__name__}", field="knowledge_at_finetune")
    return without_knowledge(motor)


def knowledge_record(pretrained: str | None, motor: Any, at_finetune: bool) -> dict[str, Any]:
    """``metrics["knowledge"]`` of a finetuning bundle: the pretrained switch and the one finetuned."""
    return {"pretrained": pretrained, "finetuned": getattr(motor.config, "knowledge", None),
            "knowledge_at_finetune": at_finetune}


def knowledge_note(record: dict[str, Any]) -> str:
    """A line for ``metrics.md`` saying whether the knowledge paths were used at finetuning."""
    if record["pretrained"] is None:
        return ""
    used = "kept" if record["knowledge_at_finetune"] else "dropped (plain BLIP, as the reference code)"
    return (f"\nKnowledge paths at finetuning: {used}; pretrained with knowledge `{record['pretrained']}`, "
            f"finetuned and evaluated with `{record['finetuned']}`.\n")


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
