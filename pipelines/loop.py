"""The training loop shared by pretraining and every finetuning task.

One loop, one copy of the optimiser, schedule, precision, accumulation, DDP, logging and checkpoint
set-up. A task supplies a module whose ``forward(batch, **kwargs)`` returns an object with ``loss``
(scalar tensor) and ``losses`` (name → scalar tensor), as :class:`model.MotorModel` does.

Data order: each epoch's order is a permutation drawn from ``seed + epoch`` (see
:class:`pipelines.sampler.ResumableSampler`). An epoch runs ``steps_per_epoch * grad_accum``
micro-batches of ``batch_size`` (incomplete batches and a trailing incomplete accumulation are left
out, so every optimizer step sees the same number of studies). A checkpoint records the epoch and
the micro-batches consumed in it, so a resumed run continues with exactly the next batch, and the
random-number generators of every process, so dropout and sampling inside the model continue
exactly too (with ``num_workers`` > 0, random data augmentation inside workers is the one thing a
mid-epoch resume does not reproduce; the pipelines use none for pretraining).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kg.errors import InputError, KGError
from pipelines.checkpoint import (
    CHECKPOINTS_DIR,
    TrainingProgress,
    capture_rng_state,
    checkpoint_name,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from pipelines.config import OptimConfig, TrainConfig
from pipelines.distributed import DistributedContext, all_gather_object, all_reduce_mean, barrier, broadcast_object
from pipelines.logging import MetricsLogger, progress_bar
from pipelines.precision import autocast, grad_scaler, resolve_precision
from pipelines.sampler import ResumableSampler

#: ``validate(model) -> {"score": float (higher is better), ...}``, called on rank 0 at checkpoints.
Validate = Callable[[nn.Module], dict[str, float]]
#: ``forward_kwargs(progress, steps_per_epoch) -> kwargs`` for the module's forward (e.g. MOTOR's alpha).
ForwardKwargs = Callable[[TrainingProgress, int], dict[str, Any]]


class TrainingDiverged(KGError):
    """The loss became NaN or infinite."""


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        progress: the final position (steps, epoch, samples).
        steps_per_epoch, total_steps: the budget in optimizer steps.
        final_checkpoint: the checkpoint written after the last step.
        chosen_checkpoint: the checkpoint with the best validation score (``None`` without validation).
        validation: one dict per validation, ``{"step": s, "score": ..., ...}``.
        precision: the precision the run used.
    """

    progress: TrainingProgress
    steps_per_epoch: int
    total_steps: int
    final_checkpoint: Path
    chosen_checkpoint: Path | None = None
    validation: list[dict[str, float]] = field(default_factory=list)
    precision: str = "fp32"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor moved to ``device`` (other values untouched)."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on matrices only (not biases or norms)."""
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every tensor at once instead of looping over them in Python: the
    # update of the tiny preset's ~300 tensors takes a third of the time on CPU (benchmarks/RESULTS.md).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay) or None
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused
    )


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``optim.warmup_steps``, then cosine decay to 0 at ``total_steps`` (or constant)."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if optim.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, optim.warmup_steps)
    return get_cosine_schedule_with_warmup(optimizer, optim.warmup_steps, total_steps)


def _loss_values(output: Any) -> dict[str, torch.Tensor]:
    values = {"loss": output.loss.detach().float()}
    values.update({name: value.detach().float() for name, value in output.losses.items()})
    return values


def fit(
    module: nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], dict[str, Any]],
    *,
    train: TrainConfig,
    optim: OptimConfig,
    ctx: DistributedContext,
    run_dir: str | Path,
    validate: Validate | None = None,
    forward_kwargs: ForwardKwargs | None = None,
    resume_from: str | Path | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
    tensorboard: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train ``module`` on ``dataset`` for the configured budget, checkpointing as configured.

    Args:
        module: the bare model (or task module); moved to ``ctx.device`` and, with several
            processes, wrapped in DistributedDataParallel for the forward/backward passes.
        dataset: training samples; ``collate_fn`` turns a list of them into a batch dict.
        train, optim: budget, batch, precision, checkpointing; optimiser and schedule.
        ctx: this process's rank, world size and device.
        run_dir: where ``checkpoints/`` and ``metrics.jsonl`` go (written by rank 0 only).
        validate: scores the bare module at each checkpoint; the best becomes the chosen one.
        forward_kwargs: extra keyword arguments of each forward call.
        resume_from: a checkpoint directory to continue from exactly.
        num_workers: DataLoader worker processes.
        show_progress: show a tqdm bar (only on a terminal, only on rank 0).
        tensorboard: mirror the metrics log to TensorBoard.

    Returns:
        A :class:`FitResult`; ``module`` holds the weights after the last step.

    Raises:
        InputError: the dataset is too small for one optimizer step per epoch.
        TrainingDiverged: the loss became non-finite.
    """
    run_dir = Path(run_dir)
    device = ctx.device
    module.to(device)
    sampler = ResumableSampler(dataset, rank=ctx.rank, world_size=ctx.world_size, seed=train.seed, shuffle=True)
    loader_generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=train.batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=True,
        generator=loader_generator,
        pin_memory=device.type == "cuda",
    )
    micro_batches = (sampler.num_samples // train.batch_size) // train.grad_accum * train.grad_accum
    steps_per_epoch = micro_batches // train.grad_accum
    if steps_per_epoch == 0:
        raise InputError(
            f"{len(dataset)} training samples over {ctx.world_size} process(es) are fewer than one optimizer step "
            f"needs (batch_size {train.batch_size} x grad_accum {train.grad_accum}); lower train.batch_size",
            field="train.batch_size",
        )
    total_steps = train.max_steps if train.max_steps is not None else train.epochs * steps_per_epoch

    optimizer = build_optimizer(module, optim)
    scheduler = build_scheduler(optimizer, optim, total_steps)
    precision = resolve_precision(train.precision, device)
    scaler = grad_scaler(precision, device)
    progress = TrainingProgress()
    if resume_from is not None:
        progress = load_checkpoint(
            resume_from, module, optimizer=optimizer, scheduler=scheduler, scaler=scaler, rank=ctx.rank
        )
    wrapped: nn.Module = module
    if ctx.is_distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=train.find_unused_parameters,
        )
    logger = MetricsLogger(
        run_dir, enabled=ctx.is_main, tensorboard=tensorboard, resume_step=progress.step if resume_from else None
    )
    checkpoints_dir = run_dir / CHECKPOINTS_DIR
    validation: list[dict[str, float]] = list(progress.extra.get("validation", []))
    last_saved: Path | None = None
    bar = progress_bar(total_steps, initial=progress.step, desc=desc, enabled=show_progress and ctx.is_main)
    window: dict[str, torch.Tensor] = {}
    window_steps, window_start = 0, time.perf_counter()
    try:
        while progress.step < total_steps:
            sampler.set_position(progress.epoch, progress.batches_in_epoch * train.batch_size)
            # Worker seeds depend on the epoch only, not on where a previous process stopped.
            loader_generator.manual_seed(train.seed + progress.epoch)
            batches = iter(loader)
            epoch = progress.epoch
            while progress.epoch == epoch and progress.step < total_steps:
                module.train()
                for micro in range(train.grad_accum):
                    batch = to_device(next(batches), device)
                    last = micro == train.grad_accum - 1
                    sync = contextlib.nullcontext() if last or not ctx.is_distributed else wrapped.no_sync()
                    with sync:
                        with autocast(precision, device):
                            output = wrapped(batch, **(forward_kwargs(progress, steps_per_epoch) if forward_kwargs else {}))
                        scaler.scale(output.loss / train.grad_accum).backward()
                    for name, value in _loss_values(output).items():
                        window[name] = window.get(name, 0.0) + value / train.grad_accum
                _optimizer_step(module, optimizer, scaler, optim.grad_clip)
                scheduler.step()
                progress.step += 1
                progress.batches_in_epoch += train.grad_accum
                progress.samples_seen += train.batch_size * train.grad_accum * ctx.world_size
                if progress.batches_in_epoch >= micro_batches:
                    progress.epoch += 1
                    progress.batches_in_epoch = 0
                window_steps += 1
                bar.update(1)
                final = progress.step == total_steps
                if progress.step % train.log_every == 0 or final:
                    values = _log_window(window, window_steps, window_start, optimizer, progress, train, ctx)
                    logger.log(progress.step, values)
                    bar.set_postfix(loss=f"{values['loss']:.3f}")
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if final or (train.checkpoint_every and progress.step % train.checkpoint_every == 0):
                    if validate is not None and train.validate:
                        validation.append(_validate(module, validate, progress, ctx))
                        progress.extra["validation"] = validation
                        if ctx.is_main:
                            logger.log(progress.step, {f"val/{k}": v for k, v in validation[-1].items() if k != "step"})
                    last_saved = _save(module, optimizer, scheduler, scaler, progress, checkpoints_dir, ctx, train)
    finally:
        bar.close()
        logger.close()
    if last_saved is None:
        # Resumed from the last checkpoint of a finished run: nothing left to train.
        last_saved = checkpoints_dir / checkpoint_name(progress.step)
    chosen = None
    if validation:
        best = max(validation, key=lambda v: v["score"])
        chosen = checkpoints_dir / checkpoint_name(int(best["step"]))
    return FitResult(
        progress=progress,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        final_checkpoint=last_saved,
        chosen_checkpoint=chosen,
        validation=validation,
        precision=precision,
    )


def _optimizer_step(
    module: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, grad_clip: float | None
) -> None:
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _log_window(
    window: dict[str, torch.Tensor],
    steps: int,
    start: float,
    optimizer: torch.optim.Optimizer,
    progress: TrainingProgress,
    train: TrainConfig,
    ctx: DistributedContext,
) -> dict[str, Any]:
    """Mean losses of the window (averaged over processes), learning rate and throughput."""
    values: dict[str, Any] = {"epoch": progress.epoch, "lr": optimizer.param_groups[0]["lr"]}
    for name, total in window.items():
        mean = float(all_reduce_mean(torch.as_tensor(total) / steps))
        if not math.isfinite(mean):
            raise TrainingDiverged(
                f"{name} became {mean} at step {progress.step}; lower optim.lr or set optim.grad_clip"
            )
        values[name] = mean
    elapsed = max(time.perf_counter() - start, 1e-9)
    values["samples_per_s"] = steps * train.batch_size * train.grad_accum * ctx.world_size / elapsed
    return values


def _validate(module: nn.Module, validate: Validate, progress: TrainingProgress, ctx: DistributedContext) -> dict[str, float]:
    """Score the module on rank 0 without disturbing the training RNG streams."""
    result: dict[str, float] = {}
    if ctx.is_main:
        rng = capture_rng_state()
        was_training = module.training
        module.eval()
        with torch.no_grad():
            result = {"step": progress.step, **validate(module)}
        module.train(was_training)
        restore_rng_state(rng)
    return broadcast_object(result)


def _save(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    progress: TrainingProgress,
    checkpoints_dir: Path,
    ctx: DistributedContext,
    train: TrainConfig,
) -> Path:
    """Save on rank 0 with every rank's RNG state; keep the newest and the best-validated checkpoints."""
    rng_states = all_gather_object(capture_rng_state())
    path = checkpoints_dir / checkpoint_name(progress.step)
    if ctx.is_main:
        save_checkpoint(
            checkpoints_dir, module, progress, optimizer=optimizer, scheduler=scheduler, scaler=scaler, rng_states=rng_states
        )
        protect = {path.name}
        validation = progress.extra.get("validation")
        if validation:
            protect.add(checkpoint_name(int(max(validation, key=lambda v: v["score"])["step"])))
        prune_checkpoints(checkpoints_dir, keep=train.keep_checkpoints, protect=protect)
    barrier()
    return path
