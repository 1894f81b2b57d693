"""Edge operators on feature maps: DiffForensics' Edge Cue Enhancement Module (ECEM, paper 003 §3.2, Eq. 2–3).

The paper's text fixes the order: first the absolute difference between adjacent **rows** is written back
to the current row, then the same is done between adjacent **columns** of that result,
``g = |V * |H * d||``. The last row (column) is replicate-padded, so its difference is 0. (Eq. 2 names
``H = [1, −1]`` as the horizontal operator, i.e. it acts along a row; the text's order is used: resolved choice.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def row_abs_diff(d: torch.Tensor) -> torch.Tensor:
    """``h[i, j] = |d[i, j] − d[i+1, j]|`` over the last two dims, last row replicate-padded (→ 0)."""
    below = torch.cat((d[..., 1:, :], d[..., -1:, :]), dim=-2)
    return (d - below).abs()


def col_abs_diff(d: torch.Tensor) -> torch.Tensor:
    """``g[i, j] = |d[i, j] − d[i, j+1]|`` over the last two dims, last column replicate-padded (→ 0)."""
    right = torch.cat((d[..., :, 1:], d[..., :, -1:]), dim=-1)
    return (d - right).abs()


def ecem_edge_cues(d: torch.Tensor) -> torch.Tensor:
    """Edge-enhanced features ``g_k = |V * |H * d_k||`` (Eq. 2): rows first, then columns."""
    return col_abs_diff(row_abs_diff(d))


class EdgeCueEnhancement(nn.Module):
    """ECEM side branch on a decoder map ``d_k`` (Eq. 3): ``f_k = U(σ(Conv3×3_{C→1}(d_k − g_k)))``.

    ``forward(d, size)`` returns ``(edge probability B×1×size, d − g)``; the caller decides whether
    ``d − g`` replaces ``d`` in the decoder (DiffForensics' ``ecem_feed`` flag). Sigmoid comes before the
    bilinear upsampling, in the paper's order.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=3, padding=1)

    def forward(self, d: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        enhanced = d - ecem_edge_cues(d)
        prob = torch.sigmoid(self.conv(enhanced))
        if tuple(prob.shape[-2:]) != tuple(size):
            prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
        return prob, enhanced
