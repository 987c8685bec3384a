"""Process-group set-up from torchrun's environment, and rank helpers that are no-ops alone.

``torchrun --nproc_per_node N -m pipelines.cli pretrain ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`init_distributed` reads them, picks NCCL for CUDA and Gloo for CPU, and binds
each process to GPU ``LOCAL_RANK``. Multi-node runs use torchrun's usual ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint`` flags; nothing here changes. Without those variables every
helper behaves as a single process of rank 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from kg.errors import InputError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: global rank, rank on its node, number of processes, its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether a process group with more than one process is running."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``, ``"cpu"`` or ``"cuda"`` as a device; CUDA devices are indexed by ``local_rank``.

    Raises:
        InputError: ``"cuda"`` was asked for and no GPU is visible.
    """
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError("no CUDA device is visible; use --set train.device=cpu", field="train.device")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes, or describe a single process.

    Args:
        device: ``train.device`` setting (``auto``, ``cpu`` or ``cuda``).

    Returns:
        The context; with ``WORLD_SIZE`` > 1 the default process group is initialised (NCCL on
        CUDA, Gloo on CPU) unless it already was.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every process; returns at once in a single process."""
    if is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process (picklable Python objects); identity alone."""
    if not is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` from every process, indexed by rank (``[obj]`` in a single process)."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (a new tensor); a copy in a single process."""
    value = value.detach().clone()
    if is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if is_initialized():
        dist.destroy_process_group()
