"""FIFO ring buffers of per-sample entries (ITC feature queues, MOTOR's SK report queue Q)."""
from __future__ import annotations

import torch
from torch import nn

from model.gather import gather_from_all

FieldSpec = tuple[tuple[int, ...], torch.dtype]


class FeatureQueue(nn.Module):
    """A first-in-first-out queue of ``size`` entries, each a set of named tensors.

    Every field is a registered buffer of shape ``(size, *field_shape)``, so ``state_dict()``
    checkpoints the queue with the model. Slots fill from 0 upwards; once ``filled == size`` the
    oldest entries are overwritten first. A batch that does not divide ``size`` wraps around the
    end; a batch longer than the queue keeps its last ``size`` entries.

    Under ``torch.distributed`` every :meth:`enqueue` gathers the entries of all processes first
    (rank order), so every process holds the same queue.

    Args:
        size: number of entries.
        fields: name → ``(shape of one entry, dtype)``, e.g. ``{"feature": ((256,), torch.float32)}``.
    """

    def __init__(self, size: int, fields: dict[str, FieldSpec]) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive; got {size}")
        self.size = size
        self.fields = dict(fields)
        for name, (shape, dtype) in self.fields.items():
            self.register_buffer(name, torch.zeros((size, *shape), dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    @torch.no_grad()
    def enqueue(self, **entries: torch.Tensor) -> None:
        """Append one entry per row of the tensors in ``entries`` (every field, same row count)."""
        if set(entries) != set(self.fields):
            raise ValueError(f"enqueue needs exactly the fields {sorted(self.fields)}; got {sorted(entries)}")
        rows = {name: gather_from_all(value.detach()) for name, value in entries.items()}
        counts = {value.shape[0] for value in rows.values()}
        if len(counts) != 1:
            raise ValueError(f"fields hold different numbers of rows: {sorted(counts)}")
        n = counts.pop()
        if n == 0:
            return
        if n > self.size:
            rows = {name: value[-self.size :] for name, value in rows.items()}
            n = self.size
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        for name, value in rows.items():
            buffer = getattr(self, name)
            buffer[slots] = value.to(device=buffer.device, dtype=buffer.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))

    def entries(self, name: str) -> torch.Tensor:
        """The filled slots of field ``name``: ``(filled, *shape)`` in slot order (not age order)."""
        return getattr(self, name)[: int(self.filled)]

    def ordered(self, name: str) -> torch.Tensor:
        """Field ``name`` of the filled slots, oldest entry first: ``(filled, *shape)``."""
        filled = int(self.filled)
        if filled < self.size:
            return getattr(self, name)[:filled]
        order = (self.ptr + torch.arange(self.size, device=self.ptr.device)) % self.size
        return getattr(self, name)[order]
