"""Gathering queue entries across processes; a no-op in a single process."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def gather_from_all(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (n_rank, ...) from every process along dim 0, in rank order.

    Processes may hold different ``n_rank`` (a short last batch): sizes are exchanged first and
    every tensor is padded to the largest before ``all_gather``, then trimmed. The result carries
    no gradient. Without an initialised process group (or with one process) ``tensor`` itself is
    returned.
    """
    if not is_distributed():
        return tensor
    if tensor.dtype == torch.bool:
        # Not every backend reduces or gathers bool tensors (gloo does not).
        return gather_from_all(tensor.to(torch.uint8)).bool()
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)])
