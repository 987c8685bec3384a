"""The run skeleton shared by pretraining and finetuning.

A run (``pipelines.pretrain.pretrain``, ``pipelines.finetune.finetune``) goes through the same
steps, each one function here:

1. :func:`start_run`: distributed set-up, the run directory (a fresh run drops the checkpoints of
   an earlier run in the same place), deterministic kernels and the seed; :func:`load_split` and
   :func:`make_collator` give the model's studies and batches;
2. :func:`training_sk_sentences`: for a model with an SK path, the ``kg`` store of the training
   reports (built once, from the training split only) and each training study's SK sentence;
3. :func:`pipelines.loop.fit`, then :func:`load_chosen_weights`: the weights chosen on validation
   back into the module;
4. :func:`training_summary` and :func:`checkpoint_summary`: what the run bundle records of it.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kg.sk_order import DEFAULT_SK_ORDER
from pipelines.checkpoint import CHECKPOINTS_DIR, MODEL_FILE
from pipelines.distributed import DistributedContext, barrier, init_distributed
from pipelines.prepare import RADGRAPH_NAME, companion_file, make_deterministic, seed_everything
from pipelines.sk_store import STORE_NAME, build_training_store, sk_sentences

#: Where a run exports its model (``save_pretrained``), relative to the run directory.
MODEL_DIR = "model"

Echo = Callable[[str], None]


@dataclass
class RunContext:
    """A started run.

    Attributes:
        run_dir: the run directory (exists on rank 0).
        ctx: this process's rank, world size and device.
        say: prints stage messages on rank 0 (silent elsewhere, or when the caller passed no echo).
    """

    run_dir: Path
    ctx: DistributedContext
    say: Echo


def start_run(
    run_dir: str | Path,
    device: str,
    *,
    seed: int,
    deterministic: bool,
    fresh: bool = True,
    echo: Echo | None = print,
    on_main: Callable[[Path], None] | None = None,
) -> RunContext:
    """Set up the processes and the run directory, then seed.

    Args:
        run_dir: the run directory (created on rank 0).
        device: ``train.device`` (``auto``, ``cpu``, ``cuda``).
        seed, deterministic: ``train.seed`` and ``train.deterministic``.
        fresh: a new run (not a resume): checkpoints of an earlier run in ``run_dir`` are removed,
            so the two never mix.
        echo: where stage messages go (rank 0 only); ``None`` is silent.
        on_main: called with ``run_dir`` on rank 0 before the other processes continue (e.g. to
            write ``config.yaml``).
    """
    run_dir = Path(run_dir)
    ctx = init_distributed(device)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if fresh and (run_dir / CHECKPOINTS_DIR).exists():
            shutil.rmtree(run_dir / CHECKPOINTS_DIR)
        if on_main is not None:
            on_main(run_dir)
    barrier()
    make_deterministic(deterministic, ctx.device)
    seed_everything(seed)
    say = echo if echo is not None and ctx.is_main else (lambda message: None)
    return RunContext(run_dir=run_dir, ctx=ctx, say=say)


def training_sk_sentences(
    studies: Sequence[tuple[str, str]],
    manifest: Path,
    run: RunContext,
    *,
    max_tokens: int,
    tokenizer: Any,
    store: Path | None = None,
    say: Echo | None = None,
    order: str = DEFAULT_SK_ORDER,
) -> tuple[dict[str, str], Path]:
    """The SK sentence of every training study, and the store they come from.

    Args:
        studies: ``(study_id, report)`` of the training split.
        manifest: the study manifest (its ``radgraph.json`` companion, if any, gives gold triplets).
        run: the started run.
        max_tokens: the SK budget in tokens, ``[CLS]`` and ``[SEP]`` included.
        tokenizer: the report tokenizer that measures the budget.
        store: an existing store to read; ``None`` builds ``RUN/knowledge/sk.duckdb`` from
            ``studies`` (on rank 0; validation and test reports never enter it).
        say: prints the new store's statistics.
        order: the sentences' triplet order (the model's ``sk_order``, :mod:`kg.sk_order`).

    Returns:
        ``({study_id: sentence}, store path)``.
    """
    if store is None:
        store = run.run_dir / "knowledge" / STORE_NAME
        if run.ctx.is_main:
            stats = build_training_store(studies, store, radgraph_path=companion_file(manifest, RADGRAPH_NAME))
            if say is not None:
                say(str(stats))
    barrier()
    # The collator adds [CLS] and [SEP]: leave room for them in the SK budget.
    sentences = sk_sentences(store, [sid for sid, _ in studies], max_tokens=max_tokens - 2, tokenizer=tokenizer,
                             order=order)
    return sentences, store


def load_split(manifest: Path, split: str, model_config: Any, missing: str = "error") -> Any:
    """The ``split`` studies of a manifest as an ``ImageReportDataset`` at the model's image size
    (one item per study; with ``views: all`` each item holds the study's ``num_views`` views)."""
    from pipelines.data.datasets import ImageReportDataset

    return ImageReportDataset(
        manifest, split, image_size=model_config.image_size, in_chans=model_config.in_chans, missing=missing,
        views_per_item=getattr(model_config, "views_per_study", None),
    )


def make_collator(tokenizer: Any, model_config: Any) -> Any:
    """The batch collator for ``model_config``'s text lengths."""
    from model.processing import MotorCollator

    return MotorCollator.from_config(tokenizer, model_config)


def chosen_checkpoint(fitted: Any) -> Path:
    """The checkpoint a fitted run keeps: the best on validation, else the final one."""
    return fitted.chosen_checkpoint or fitted.final_checkpoint


def load_chosen_weights(module: Any, fitted: Any, device: Any) -> Path:
    """Load the chosen checkpoint's weights into ``module`` (nothing to do when it is the final one).

    Returns:
        The chosen checkpoint directory.
    """
    chosen = chosen_checkpoint(fitted)
    if chosen != fitted.final_checkpoint:
        from safetensors.torch import load_model

        load_model(module, str(chosen / MODEL_FILE), strict=True, device=str(device))
    return chosen


def training_summary(fitted: Any, seconds: float, ctx: DistributedContext) -> dict[str, Any]:
    """``metrics["training"]`` of the run bundle: steps, samples, wall time in seconds, precision."""
    return {
        "steps": fitted.progress.step,
        "steps_per_epoch": fitted.steps_per_epoch,
        "samples_seen": fitted.progress.samples_seen,
        "seconds": seconds,
        "precision": fitted.precision,
        "world_size": ctx.world_size,
    }


def checkpoint_summary(fitted: Any, run_dir: Path, chosen_by: str) -> dict[str, str]:
    """``checkpoints`` of the run bundle: final and chosen checkpoint, why, and the exported model.

    Args:
        chosen_by: what validation chose by (``"final step"`` is recorded without validation).
    """
    return {
        "final": str(fitted.final_checkpoint.relative_to(run_dir)),
        "chosen": str(chosen_checkpoint(fitted).relative_to(run_dir)),
        "chosen_by": chosen_by if fitted.chosen_checkpoint else "final step",
        "model": MODEL_DIR,
    }
