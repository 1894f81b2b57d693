"""Decode heads shared by several methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LinearProj(nn.Module):
    """Per-stage linear C_i→E on the flattened map (NVlabs ``linear_c{i}.proj``)."""

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, -1, H, W)


class _ConvBNReLU(nn.Module):
    """1×1 conv without bias, BN, ReLU (NVlabs ``linear_fuse.conv`` / ``linear_fuse.bn``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class AllMLPHead(nn.Module):
    """SegFormer All-MLP decoder (Xie et al.; NVlabs code): per-stage linear to E, bilinear to the stride-4 grid,
    concat (c4, c3, c2, c1), 1×1 fuse + BN + ReLU, dropout, 1×1 to ``num_classes``. Output at H/4."""

    def __init__(self, in_channels: tuple[int, ...], embed_dim: int, num_classes: int = 1, dropout: float = 0.1):
        super().__init__()
        for i, c in enumerate(in_channels):
            setattr(self, f"linear_c{i + 1}", _LinearProj(c, embed_dim))
        self.num_stages = len(in_channels)
        self.linear_fuse = _ConvBNReLU(embed_dim * len(in_channels), embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The fused E-channel map at the stride-4 grid, before dropout and the class layer."""
        size = feats[0].shape[-2:]
        ups = []
        for i in reversed(range(self.num_stages)):
            y = getattr(self, f"linear_c{i + 1}")(feats[i])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            ups.append(y)
        return self.linear_fuse(torch.cat(ups, dim=1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.linear_pred(self.dropout(self.fuse(feats)))
