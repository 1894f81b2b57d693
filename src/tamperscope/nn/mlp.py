"""Two-layer MLP over the last dimension (ViT / MetaFormer ``Mlp``): Linear → GELU → Linear."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``dim → hidden → dim`` with GELU; parameter names ``fc1``/``fc2`` as in timm-layout checkpoints."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
