"""Diffusion timestep embeddings (DDPM, Ho et al. 2020, §4 / appendix B; used by DiffForensics, paper 003 §3.1)."""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) timesteps ``t`` (``B``) → ``B×dim``:
    ``[sin(t·ω_i), cos(t·ω_i)]`` with ``ω_i = max_period^(−i/(dim/2 − 1))`` (the DDPM reference layout)."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal embedding dim must be even and >= 4, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat((torch.sin(args), torch.cos(args)), dim=-1)


class TimestepEmbedding(nn.Module):
    """Sinusoidal(``dim``) → Linear(dim→hidden) → SiLU → Linear(hidden→hidden) (DDPM time MLP)."""

    def __init__(self, dim: int = 128, hidden: int = 512):
        super().__init__()
        self.dim = dim
        self.linear_1 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(t, self.dim).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(emb)))
