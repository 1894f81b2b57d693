"""Task-Adaptive Prior Injection (IFA-Net, paper 000 §3.4; layer sizes: resolved choice): a prompt encoder that
turns the coarse mask into prompt tokens, and FiLM (Perez et al., AAAI 2018) that modulates MAE tokens with them.

Resolutions [R] (the symbols are stripped from the paper text):
* prompt encoder: 4 blocks of stride-2 3×3 conv + BN + GELU, channels 1→32→64→128→256 (factor 16, so
  1024 tokens at 512), then a Linear 256→``prompt_dim`` (256);
* FiLM: ``Z′ = (1 + γ) ⊙ Z + β`` with γ, β from the token-mean of the prompts through
  Linear→GELU→Linear MLPs whose last layers start at zero, so the module is the identity at init (the
  paper writes ``γ ⊙ Z + β``); γ, β broadcast over every token, CLS included.
"""
from __future__ import annotations

import torch
from torch import nn


class PromptEncoder(nn.Module):
    """Coarse mask ``B×1×H×W`` → prompt tokens ``B×(H/16·W/16)×prompt_dim``."""

    def __init__(self, in_chans: int = 1, channels: tuple[int, ...] = (32, 64, 128, 256), prompt_dim: int = 256):
        super().__init__()
        layers, prev = [], in_chans
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.GELU()]
            prev = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(prev, prompt_dim)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(mask).flatten(2).transpose(1, 2))


class FiLM(nn.Module):
    """Global feature-wise affine modulation of ``B·k×T×D`` tokens by ``B×N_p×prompt_dim`` prompts.

    The token batch may hold ``k`` passes per image laid out pass-major (``[pass 0 of all images, pass 1 …]``),
    as IFA-Net's complementary masking produces; γ and β are repeated accordingly.
    """

    def __init__(self, prompt_dim: int = 256, feature_dim: int = 1024, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or feature_dim
        self.gamma = nn.Sequential(nn.Linear(prompt_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, feature_dim))
        self.beta = nn.Sequential(nn.Linear(prompt_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, feature_dim))
        for mlp in (self.gamma, self.beta):
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    def coefficients(self, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(γ, β)``, each ``B×D``, from the token-mean summary of the prompts."""
        summary = prompts.mean(dim=1)
        return self.gamma(summary), self.beta(summary)

    def forward(self, tokens: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.coefficients(prompts)
        passes, rem = divmod(tokens.shape[0], gamma.shape[0])
        if rem:
            raise ValueError(f"FiLM: token batch {tokens.shape[0]} is not a multiple of the prompt batch {gamma.shape[0]}")
        gamma, beta = gamma.repeat(passes, 1)[:, None], beta.repeat(passes, 1)[:, None]
        return (1 + gamma) * tokens + beta
