"""A small test double of the model contract for exercising the training loop quickly.

``forward(batch, alpha=...)`` returns an object with ``loss`` and ``losses`` like ``MotorModel``;
dropout draws from the RNG and a FIFO queue buffer changes with every forward pass, so a resumed
run only matches an uninterrupted one if RNG states and buffers are restored exactly.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import Dataset


class RegressionSet(Dataset):
    """``n`` fixed samples ``{"x": (6,), "y": (1,), "index": int}`` drawn from ``seed``."""

    def __init__(self, n: int = 20, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=generator)
        self.y = self.x @ torch.arange(6.0).unsqueeze(1) / 6 + 0.1 * torch.randn(n, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return {"x": self.x[index], "y": self.y[index], "index": index}


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "x": torch.stack([s["x"] for s in samples]),
        "y": torch.stack([s["y"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
    }


class ContractDouble(nn.Module):
    """Two linear layers, dropout and a feature queue used by a contrastive-style term."""

    def __init__(self, dropout: float = 0.2, queue_size: int = 7, use_queue: bool = True) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, 8)
        self.head = nn.Linear(8, 1)
        self.dropout = nn.Dropout(dropout)
        self.use_queue = use_queue
        self.register_buffer("queue", torch.zeros(queue_size, 8))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, batch: dict[str, torch.Tensor], alpha: float = 0.4) -> SimpleNamespace:
        features = self.dropout(torch.tanh(self.encoder(batch["x"])))
        regression = nn.functional.mse_loss(self.head(features), batch["y"])
        losses = {"lm": regression}
        if self.use_queue:
            losses["itc"] = alpha * (features @ self.queue.clone().T).pow(2).mean()
            self._enqueue(features.detach())
        return SimpleNamespace(loss=sum(losses.values()), losses=losses)

    @torch.no_grad()
    def _enqueue(self, features: torch.Tensor) -> None:
        rows = (self.queue_ptr + torch.arange(len(features))) % len(self.queue)
        self.queue[rows] = features
        self.queue_ptr.copy_((self.queue_ptr + len(features)) % len(self.queue))


def ddp_worker(rank: int, world_size: int, port: int, run_dir: str, out_dir: str) -> None:
    """One process of a 2-process Gloo run of the loop; saves its final weights for comparison."""
    import os

    from pipelines.config import OptimConfig, TrainConfig
    from pipelines.distributed import cleanup, init_distributed
    from pipelines.loop import fit

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
         "WORLD_SIZE": str(world_size)}
    )
    ctx = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        model = ContractDouble()
        train = TrainConfig(max_steps=3, batch_size=4, seed=0, device="cpu", checkpoint_every=0, log_every=1)
        result = fit(model, RegressionSet(), collate, train=train, optim=OptimConfig(lr=0.05), ctx=ctx,
                     run_dir=run_dir, show_progress=False)
        torch.save({"state": model.state_dict(), "samples": result.progress.samples_seen}, f"{out_dir}/rank{rank}.pt")
    finally:
        cleanup()
