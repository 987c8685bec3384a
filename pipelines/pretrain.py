"""MOTOR pretraining: data, knowledge, tokenizer, model, the shared loop, and the run bundle.

Stages, in order (rank 0 writes, every process trains):

1. the manifest (``data.manifest``, or the synthetic set generated into ``RUN/data``), every
   image of whose splits must decode (:func:`pipelines.prepare.check_images`) before anything trains;
2. the report tokenizer (``RUN/tokenizer``), trained on the training split's reports;
3. for knowledge switches with an SK path, the ``kg`` store of the training reports
   (``RUN/knowledge/sk.duckdb``) and each training study's SK sentence, computed once; for ARL,
   each study's entity sequence and the training vocabulary (:mod:`pipelines.arl_entities`);
4. the model (``model.build_model``) and :func:`pipelines.loop.fit`, with BLIP's warm-up of the
   distillation weight: ``alpha`` rises linearly from 0 to ``config.alpha`` over the first epoch;
5. the weights chosen on validation (zero-shot retrieval mean recall; the final ones without a
   validation split) are exported to ``RUN/model`` (``save_pretrained``), zero-shot retrieval on the
   test split is written to ``metrics.json`` next to chance level, and the bundle is saved.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kg.atomic import write_text_atomic
from kg.sk_order import DEFAULT_SK_ORDER
from pipelines.checkpoint import TrainingProgress
from pipelines.config import PretrainConfig, dump_config, resolve_model_config, to_dict
from pipelines.distributed import barrier
from pipelines.loop import fit
from pipelines.arl_entities import EntityData, needs_entities
from pipelines.prepare import (
    RADGRAPH_NAME,
    check_images,
    companion_file,
    keeps_thread_count,
    prepare_data,
    prepare_tokenizer,
    seed_everything,
)
from pipelines.sk_store import uses_sk
from pipelines.run import (
    MODEL_DIR,
    checkpoint_summary,
    load_chosen_weights,
    load_split,
    make_collator,
    start_run,
    training_sk_sentences,
    training_summary,
)
from pipelines.data.motor_samples import MotorSamples, study_texts
from pipelines.run_bundle import RunResult, describe_file


def retrieval_validator(dataset: MotorSamples, collate_fn: Any, batch_size: int, device: Any) -> Callable[[Any], dict]:
    """``validate(model) -> {"score": mean recall, ...}`` on ``dataset`` (zero-shot retrieval: ITC, or
    ITM for a method without ITC)."""
    from pipelines.evaluate import ranked_by, retrieval_evaluation

    def validate(model: Any) -> dict[str, float]:
        metrics = ranked_by(retrieval_evaluation(model, dataset, collate_fn, batch_size=batch_size, device=device))
        return {"score": metrics["mean_R"], **{k: v for k, v in metrics.items() if isinstance(v, float)}}

    return validate


@keeps_thread_count
def pretrain(
    config: PretrainConfig,
    run_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    show_progress: bool = True,
    tensorboard: bool = False,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Pretrain MOTOR as configured and write the run bundle into ``run_dir``.

    Args:
        config: the resolved configuration.
        run_dir: the run directory (created; a fresh run replaces its old checkpoints).
        resume_from: a checkpoint directory of this run to continue from exactly.
        show_progress: tqdm progress bar (on a terminal, rank 0).
        tensorboard: mirror ``metrics.jsonl`` to TensorBoard.
        echo: where stage messages go (rank 0 only); ``None`` is silent.

    Returns:
        The :class:`RunResult` (also saved in ``run_dir``); ``result.run_dir / "model"`` is the
        pretrained model for ``motor finetune --from``.
    """
    run = start_run(
        run_dir, config.train.device, seed=config.train.seed, deterministic=config.train.deterministic,
        fresh=resume_from is None, echo=echo,
        # Written now, not only with the bundle at the end: `--resume` of a killed run reads it.
        on_main=lambda directory: write_text_atomic(directory / "config.yaml", dump_config(config)),
    )
    run_dir, ctx, say = run.run_dir, run.ctx, run.say
    model_config = resolve_model_config(config.model)

    manifest = prepare_data(config.data, run_dir, model_config.image_size, ctx)
    check_images(manifest, ctx, missing=config.data.missing, echo=say)
    train_studies = load_split(manifest, "train", model_config, config.data.missing)
    studies = study_texts(train_studies)
    say(f"data: {manifest} ({len(train_studies)} training studies)")
    tokenizer = prepare_tokenizer(config.tokenizer, [report for _, report in studies], run_dir, ctx,
                                  text_model_dir=getattr(model_config, "text_model_dir", None))

    sentences: dict[str, str] = {}
    store_path: Path | None = None
    if uses_sk(model_config.knowledge):
        sentences, store_path = training_sk_sentences(
            studies, manifest, run, max_tokens=config.knowledge.sk_max_tokens, tokenizer=tokenizer,
            store=Path(config.knowledge.store) if config.knowledge.store else None, say=say,
            order=getattr(model_config, "sk_order", DEFAULT_SK_ORDER),
        )

    from model.pretrained import saved_method_name
    from model.registry import get_method

    method = saved_method_name(model_config)
    val_studies = load_split(manifest, "val", model_config, config.data.missing)
    test_studies = load_split(manifest, "test", model_config, config.data.missing)
    collate = make_collator(tokenizer, model_config)
    samples, build_inputs = MotorSamples, {}
    if needs_entities(model_config):
        entities = EntityData.prepare(
            {"train": studies, "val": study_texts(val_studies), "test": study_texts(test_studies)},
            companion_file(manifest, RADGRAPH_NAME),
        )
        say(f"entities: {len(entities.names)} in the training reports' vocabulary")
        build_inputs["entity_names"] = entities.names
        collate = entities.collator(collate)

        def samples(studies: Any, sk: Any = None) -> Any:
            return entities.samples(MotorSamples(studies, sk))

    seed_everything(config.train.seed)
    model = get_method(method).build(model_config, tokenizer, **build_inputs)
    validate = None
    if config.train.validate and len(val_studies) > 1:
        validate = retrieval_validator(samples(val_studies), collate, config.eval.batch_size, ctx.device)
    # Each process draws its own dropout masks and negatives; initial weights came from the shared seed.
    seed_everything(config.train.seed + ctx.rank)

    def forward_kwargs(progress: TrainingProgress, steps_per_epoch: int) -> dict[str, float]:
        return {"alpha": model_config.alpha * min(1.0, progress.step / steps_per_epoch)}

    variant = _parts_summary(model_config) if hasattr(model_config, "parts") else getattr(
        model_config, "attention_mask", model_config.knowledge)  # MedViLL: its mask scheme
    say(f"pretraining {method} ({variant}) on {ctx.device} x {ctx.world_size}")
    started = time.perf_counter()
    fitted = fit(
        model,
        samples(train_studies, sentences),
        collate,
        train=config.train,
        optim=config.optim,
        ctx=ctx,
        run_dir=run_dir,
        validate=validate,
        forward_kwargs=forward_kwargs,
        resume_from=resume_from,
        num_workers=config.data.num_workers,
        show_progress=show_progress,
        tensorboard=tensorboard,
        desc=f"pretrain {method} {variant}",
    )
    elapsed = time.perf_counter() - started
    load_chosen_weights(model, fitted, ctx.device)

    result = RunResult(
        kind="pretrain",
        config=to_dict(config),
        seeds={"train": config.train.seed, "synthetic_data": config.data.synthetic_seed},
        device=str(ctx.device),
        run_dir=run_dir,
    )
    if ctx.is_main:
        model.save_pretrained(run_dir / MODEL_DIR)
        from pipelines.evaluate import ranked_by, retrieval_evaluation
        from pipelines.metrics import metrics_table

        retrieval = retrieval_evaluation(
            model, samples(test_studies), collate, batch_size=config.eval.batch_size, device=ctx.device
        )
        result.metrics = {
            "zero_shot_retrieval": retrieval,
            "training": training_summary(fitted, elapsed, ctx),
            "validation": fitted.validation,
        }
        result.metrics_markdown = metrics_table(
            {f"zero-shot (test, {retrieval['ranked_by']})": ranked_by(retrieval), "chance": _chance_row(retrieval)}
        )
        result.data = {"manifest": describe_file(manifest)}
        result.checkpoints = checkpoint_summary(fitted, run_dir, "validation zero-shot retrieval mean recall")
        if store_path is not None:
            result.data["knowledge_store"] = str(store_path)
        result.save_to_directory(run_dir)
        say(f"zero-shot retrieval on {retrieval['n']} test studies: " + _summary(retrieval))
    barrier()
    return result


def _parts_summary(model_config: Any) -> str:
    """The objectives and knowledge parts of a co-attention method beside ITM, e.g. ``mlm+mim+ak+rk+lk``."""
    parts = model_config.parts
    on = [name for name in model_config.active_objectives if name != "itm"]
    on += [name for name, enabled in (("rk", parts.knowledge.rk), ("lk", parts.knowledge.lk)) if enabled]
    return "+".join(on) or "itm"


def _chance_row(retrieval: dict[str, Any]) -> dict[str, float]:
    from pipelines.evaluate import ranked_by

    chance = ranked_by(retrieval)["chance"]
    recalls = [value for key, value in chance.items() if "_R@" in key]
    return {**chance, "mean_R": sum(recalls) / len(recalls)}


def _summary(retrieval: dict[str, Any]) -> str:
    from pipelines.evaluate import ranked_by

    itc = ranked_by(retrieval)
    return f"({retrieval['ranked_by']}) " + ", ".join(
        f"{direction} R@{k} {itc[f'{direction}_R@{k}']:.3f} (chance {itc['chance'][f'{direction}_R@{k}']:.3f})"
        for direction in ("i2t", "t2i")
        for k in (1, 5, 10)
    )
