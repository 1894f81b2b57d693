"""Decode heads shared by several methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LinearProj(nn.Module):
    """Holds the per-stage linear C_i→E (NVlabs ``linear_c{i}.proj``, its checkpoint name); applied by
    :meth:`AllMLPHead.fuse`."""

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, embed_dim)


class _ConvBNReLU(nn.Module):
    """Holds the 1×1 conv without bias, BN and ReLU (NVlabs ``linear_fuse.conv`` / ``linear_fuse.bn``); applied by
    :meth:`AllMLPHead.fuse`."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)


class AllMLPHead(nn.Module):
    """SegFormer All-MLP decoder (Xie et al. 2021, §3.2; NVlabs code): per-stage linear to E, bilinear to the
    stride-4 grid, concat (c4, c3, c2, c1), 1×1 fuse + BN + ReLU, dropout, 1×1 to ``num_classes``. Output at H/4.

    Computed in an equal order (:meth:`fuse`): the fuse conv is linear over the concatenated channels, so it is the
    sum over stages of its E×E block times that stage's map; a per-pixel channel map commutes with bilinear
    resizing (its weights sum to 1, so biases pass through), and the block and the stage's linear compose into one
    E×C_i matrix. Each stage is therefore mapped by that matrix at its own resolution and then resized, and the 4E
    channels at the stride-4 grid and their concatenation are never formed: the fuse costs ΣC_i·E per stage pixel
    instead of 4E·E per stride-4 pixel (SegFormer-b2 at 512²: ≈ 39 of its ≈ 62 GMACs). Same weights and state
    dict; outputs equal to float rounding (tested against the concatenation)."""

    def __init__(self, in_channels: tuple[int, ...], embed_dim: int, num_classes: int = 1, dropout: float = 0.1):
        super().__init__()
        for i, c in enumerate(in_channels):
            setattr(self, f"linear_c{i + 1}", _LinearProj(c, embed_dim))
        self.num_stages = len(in_channels)
        self.linear_fuse = _ConvBNReLU(embed_dim * len(in_channels), embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The fused E-channel map at the stride-4 grid, before dropout and the class layer (class docstring: each
        stage through the fuse's block of it composed with its linear, at its own resolution, then resized)."""
        size = feats[0].shape[-2:]
        blocks = self.linear_fuse.conv.weight.flatten(1).split(self.linear_fuse.conv.out_channels, dim=1)
        fused = None
        for block, i in zip(blocks, reversed(range(self.num_stages))):  # concatenation order c4, c3, c2, c1
            proj = getattr(self, f"linear_c{i + 1}").proj
            y = F.conv2d(feats[i], (block @ proj.weight)[:, :, None, None], block @ proj.bias)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused + y
        return self.linear_fuse.act(self.linear_fuse.bn(fused))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.linear_pred(self.dropout(self.fuse(feats)))
