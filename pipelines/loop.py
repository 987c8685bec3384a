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
from collections.abc import Callable, Iterator
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
from pipelines.metrics_log import MetricsLogger, progress_bar
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
    module.to(ctx.device)
    data = _training_data(dataset, collate_fn, train, ctx, num_workers)
    total_steps = train.max_steps if train.max_steps is not None else train.epochs * data.steps_per_epoch
    opt = _optimisation(module, optim, train.precision, ctx.device, total_steps)
    progress = TrainingProgress()
    if resume_from is not None:
        progress = load_checkpoint(
            resume_from, module, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler, rank=ctx.rank
        )
    wrapped = _distributed(module, ctx, train)
    logger = MetricsLogger(
        run_dir, enabled=ctx.is_main, tensorboard=tensorboard, resume_step=progress.step if resume_from else None
    )
    checkpoints_dir = run_dir / CHECKPOINTS_DIR
    validation: list[dict[str, float]] = list(progress.extra.get("validation", []))
    last_saved: Path | None = None
    bar = progress_bar(total_steps, initial=progress.step, desc=desc, enabled=show_progress and ctx.is_main)
    window = _LossWindow()

    def step_kwargs() -> dict[str, Any]:
        return forward_kwargs(progress, data.steps_per_epoch) if forward_kwargs else {}

    try:
        for batches in _optimizer_steps(data, progress, train, total_steps):
            window.add(_train_step(module, wrapped, batches, step_kwargs, opt, train, ctx))
            _advance(progress, train, ctx, data.micro_batches)
            bar.update(1)
            final = progress.step == total_steps
            if progress.step % train.log_every == 0 or final:
                values = window.flush(opt.optimizer, progress, train, ctx)
                logger.log(progress.step, values)
                bar.set_postfix(loss=f"{values['loss']:.3f}")
            if final or (train.checkpoint_every and progress.step % train.checkpoint_every == 0):
                if validate is not None and train.validate:
                    _record_validation(module, validate, progress, validation, logger, ctx)
                last_saved = _save(module, opt, progress, checkpoints_dir, ctx, train)
    finally:
        bar.close()
        logger.close()
    if last_saved is None:
        # Resumed from the last checkpoint of a finished run: nothing left to train.
        last_saved = checkpoints_dir / checkpoint_name(progress.step)
    return FitResult(
        progress=progress,
        steps_per_epoch=data.steps_per_epoch,
        total_steps=total_steps,
        final_checkpoint=last_saved,
        chosen_checkpoint=_best_checkpoint(validation, checkpoints_dir),
        validation=validation,
        precision=opt.precision,
    )


@dataclass
class _TrainingData:
    """The training batches of this process and the epoch they make up."""

    loader: DataLoader
    sampler: ResumableSampler
    generator: torch.Generator
    micro_batches: int  # per epoch, a whole number of accumulations
    steps_per_epoch: int


def _training_data(
    dataset: Dataset, collate_fn: Callable, train: TrainConfig, ctx: DistributedContext, num_workers: int
) -> _TrainingData:
    """The resumable loader; raises :class:`InputError` when an epoch holds no optimizer step."""
    sampler = ResumableSampler(dataset, rank=ctx.rank, world_size=ctx.world_size, seed=train.seed, shuffle=True)
    generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=train.batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=True,
        generator=generator,
        pin_memory=ctx.device.type == "cuda",
    )
    micro_batches = (sampler.num_samples // train.batch_size) // train.grad_accum * train.grad_accum
    steps_per_epoch = micro_batches // train.grad_accum
    if steps_per_epoch == 0:
        raise InputError(
            f"{len(dataset)} training samples over {ctx.world_size} process(es) are fewer than one optimizer step "
            f"needs (batch_size {train.batch_size} x grad_accum {train.grad_accum}); lower train.batch_size",
            field="train.batch_size",
        )
    return _TrainingData(loader, sampler, generator, micro_batches, steps_per_epoch)


@dataclass
class _Optimisation:
    """Optimiser, schedule, precision and loss scaler of a run (what a checkpoint restores)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: str
    scaler: torch.amp.GradScaler
    grad_clip: float | None


def _optimisation(module: nn.Module, optim: OptimConfig, precision: str, device: torch.device, total_steps: int) -> _Optimisation:
    optimizer = build_optimizer(module, optim)
    scheduler = build_scheduler(optimizer, optim, total_steps)
    resolved = resolve_precision(precision, device)
    return _Optimisation(optimizer, scheduler, resolved, grad_scaler(resolved, device), optim.grad_clip)


def _distributed(module: nn.Module, ctx: DistributedContext, train: TrainConfig) -> nn.Module:
    """The module the forward/backward passes call: wrapped in DDP with several processes."""
    if not ctx.is_distributed:
        return module
    device = ctx.device
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=train.find_unused_parameters,
    )


def _optimizer_steps(
    data: _TrainingData, progress: TrainingProgress, train: TrainConfig, total_steps: int
) -> Iterator[Iterator[Any]]:
    """For each optimizer step left, the batch iterator to take its ``grad_accum`` micro-batches from.

    The caller advances ``progress`` after each step; a new epoch starts a new iterator positioned
    where ``progress`` stands, so a resumed run continues with exactly the next batch.
    """
    while progress.step < total_steps:
        data.sampler.set_position(progress.epoch, progress.batches_in_epoch * train.batch_size)
        # Worker seeds depend on the epoch only, not on where a previous process stopped.
        data.generator.manual_seed(train.seed + progress.epoch)
        batches = iter(data.loader)
        epoch = progress.epoch
        while progress.epoch == epoch and progress.step < total_steps:
            yield batches


def _train_step(
    module: nn.Module,
    wrapped: nn.Module,
    batches: Iterator[Any],
    forward_kwargs: Callable[[], dict[str, Any]],
    opt: _Optimisation,
    train: TrainConfig,
    ctx: DistributedContext,
) -> list[dict[str, torch.Tensor]]:
    """One optimizer step over ``grad_accum`` micro-batches.

    Returns:
        Per micro-batch, its detached losses divided by ``grad_accum`` (they sum to the step's mean).
    """
    module.train()
    losses: list[dict[str, torch.Tensor]] = []
    for micro in range(train.grad_accum):
        batch = to_device(next(batches), ctx.device)
        last = micro == train.grad_accum - 1
        # Gradients are all-reduced once, on the last micro-batch of the accumulation.
        sync = contextlib.nullcontext() if last or not ctx.is_distributed else wrapped.no_sync()
        with sync:
            with autocast(opt.precision, ctx.device):
                output = wrapped(batch, **forward_kwargs())
            opt.scaler.scale(output.loss / train.grad_accum).backward()
        losses.append({name: value / train.grad_accum for name, value in _loss_values(output).items()})
    _optimizer_step(module, opt.optimizer, opt.scaler, opt.grad_clip)
    opt.scheduler.step()
    return losses


def _advance(progress: TrainingProgress, train: TrainConfig, ctx: DistributedContext, micro_batches: int) -> None:
    """Count one optimizer step in ``progress``, rolling over to the next epoch at its end."""
    progress.step += 1
    progress.batches_in_epoch += train.grad_accum
    progress.samples_seen += train.batch_size * train.grad_accum * ctx.world_size
    if progress.batches_in_epoch >= micro_batches:
        progress.epoch += 1
        progress.batches_in_epoch = 0


class _LossWindow:
    """Losses summed over the optimizer steps since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.totals: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, micro_losses: list[dict[str, torch.Tensor]]) -> None:
        """Add one optimizer step's micro-batch losses, in order."""
        for losses in micro_losses:
            for name, value in losses.items():
                self.totals[name] = self.totals.get(name, 0.0) + value
        self.steps += 1

    def flush(
        self, optimizer: torch.optim.Optimizer, progress: TrainingProgress, train: TrainConfig, ctx: DistributedContext
    ) -> dict[str, Any]:
        """The window's log values (see :func:`_log_window`); starts a new window."""
        values = _log_window(self.totals, self.steps, self.start, optimizer, progress, train, ctx)
        self.reset()
        return values


def _record_validation(
    module: nn.Module,
    validate: Validate,
    progress: TrainingProgress,
    validation: list[dict[str, float]],
    logger: MetricsLogger,
    ctx: DistributedContext,
) -> None:
    """Score the module, append the result to ``validation`` (kept in the checkpoint) and log it."""
    validation.append(_validate(module, validate, progress, ctx))
    progress.extra["validation"] = validation
    if ctx.is_main:
        logger.log(progress.step, {f"val/{k}": v for k, v in validation[-1].items() if k != "step"})


def _best_checkpoint(validation: list[dict[str, float]], checkpoints_dir: Path) -> Path | None:
    """The checkpoint of the best validation score (``None`` without validation)."""
    if not validation:
        return None
    best = max(validation, key=lambda v: v["score"])
    return checkpoints_dir / checkpoint_name(int(best["step"]))


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
    opt: _Optimisation,
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
            checkpoints_dir, module, progress, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler,
            rng_states=rng_states,
        )
        protect = {path.name}
        validation = progress.extra.get("validation")
        if validation:
            protect.add(checkpoint_name(int(max(validation, key=lambda v: v["score"])["step"])))
        prune_checkpoints(checkpoints_dir, keep=train.keep_checkpoints, protect=protect)
    barrier()
    return path
