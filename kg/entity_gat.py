"""The residual graph attention network that refines TransE entity vectors (see :mod:`kg.embeddings`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.nn import GATv2Conv


class EntityGAT(torch.nn.Module):
    """``x + GAT(x)``: two GATv2 layers with their heads averaged and an ELU between them.

    The residual form starts every entity at its TransE vector, so attention over the neighbours
    adjusts it instead of learning it anew.
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.conv1 = GATv2Conv(dim, dim, heads=heads, concat=False)
        self.conv2 = GATv2Conv(dim, dim, heads=heads, concat=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Refined vectors (entities, dim) from input vectors (entities, dim) and edges (2, edges)."""
        return x + self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)
