"""Pixel-difference convolutions (PiDiNet, Su et al., ICCV 2021) and central difference convolution (CDC, Yu et
al., CVPR 2020); used by FRD-Net's Differential Progressive Module (paper 004, Eq. 5–6).

A 3×3 kernel is indexed ``0 1 2 / 3 4 5 / 6 7 8`` (centre 4). Each operator has two equivalent forms:

* the **difference form** (the definition): the kernel weights multiply pixel *differences*;
  * central (CPDC / CDC): ``y = Σ_i w_i·(x_i − θ·x_c)`` — CPDC is θ = 1, CDC's usual value is θ = 0.7;
  * angular (APDC): ``y = Σ_j w_j·(x_j − x_cw(j))`` over the 8-ring, ``cw`` = next neighbour clockwise
    (0→1→2→5→8→7→6→3→0); the centre tap is unused.
* the **re-parameterised form**: one ordinary 3×3 convolution with a transformed kernel ``W′``;
  * central: ``W′ = W`` except ``W′_c = W_c − θ·ΣW``;
  * angular: ``W′ = W − W[π]`` with the PiDiNet clockwise permutation ``π = [3,0,1,6,4,2,7,8,5]``.

:class:`PixelDifferenceConv2d` trains through the re-parameterised kernel (computed from ``W`` on every call, so
gradients reach ``W`` exactly as in the difference form, and as the official PiDiNet/FRD-Net code does);
:meth:`PixelDifferenceConv2d.difference_form` evaluates the definition explicitly (unfold + weighted
differences) and is the reference the kernel is tested against. For deployment,
:meth:`PDCBlock.reparameterize` replaces the difference convolution by a plain ``nn.Conv2d`` holding ``W′`` under
a different attribute name (``depthwise_fused``), so a fused state dict never loads silently into a training model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: index permutation of the 3×3 taps: W′ = W − W[ANGULAR_PERMUTATION] (PiDiNet "ad", clockwise)
ANGULAR_PERMUTATION = (3, 0, 1, 6, 4, 2, 7, 8, 5)
#: next clockwise neighbour of each tap of the 8-ring (tap 4, the centre, is not in the ring)
CLOCKWISE_NEXT = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}
PDC_OPS = ("central", "angular")


def reparameterized_kernel(weight: torch.Tensor, op: str, theta: float = 1.0) -> torch.Tensor:
    """The single 3×3 kernel ``W′`` equal to the difference operator ``op`` with weights ``weight`` (O×I×3×3)."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"pixel-difference kernels are 3×3, got {tuple(weight.shape[-2:])}")
    if op == "central":
        centre = torch.zeros_like(weight)
        centre[..., 1, 1] = 1.0
        return weight - theta * weight.sum(dim=(-2, -1), keepdim=True) * centre
    if op == "angular":
        flat = weight.flatten(-2)
        return (flat - flat[..., list(ANGULAR_PERMUTATION)]).view_as(weight)
    raise ValueError(f"unknown pixel-difference op '{op}' (known: {', '.join(PDC_OPS)})")


class PixelDifferenceConv2d(nn.Module):
    """3×3 pixel-difference convolution (PiDiNet, ICCV 2021): ``op`` ``"central"`` (CPDC; CDC with ``theta`` < 1)
    or ``"angular"`` (APDC, clockwise). Zero padding of ``dilation`` keeps the size at stride 1, as in PiDiNet.

    Initialisation: Kaiming-uniform with a = √5 (PiDiNet / FRD-Net), bias (if any) uniform ±1/√fan_in.
    """

    def __init__(self, in_channels: int, out_channels: int, op: str = "central", theta: float = 1.0,
                 stride: int = 1, dilation: int = 1, groups: int = 1, bias: bool = False):
        super().__init__()
        if op not in PDC_OPS:
            raise ValueError(f"unknown pixel-difference op '{op}' (known: {', '.join(PDC_OPS)})")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups={groups}")
        if op == "angular" and theta != 1.0:
            raise ValueError("theta applies to the central difference only")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.op, self.theta = op, float(theta)
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        theta = f", theta={self.theta}" if self.op == "central" else ""
        return (f"{self.in_channels}, {self.out_channels}, op={self.op}{theta}, stride={self.stride}, "
                f"dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")

    def kernel(self) -> torch.Tensor:
        """Re-parameterised kernel ``W′`` (differentiable in ``W``)."""
        return reparameterized_kernel(self.weight, self.op, self.theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.dilation, self.dilation, self.groups)

    def difference_form(self, x: torch.Tensor) -> torch.Tensor:
        """The operator as defined: unfold the 3×3 neighbourhoods, take pixel differences, weight and sum."""
        B, C, H, W = x.shape
        patches = F.unfold(x, 3, dilation=self.dilation, padding=self.dilation, stride=self.stride)
        L = patches.shape[-1]
        patches = patches.view(B, C, 9, L)
        if self.op == "central":
            diffs = patches - self.theta * patches[:, :, 4:5]
        else:
            nxt = [CLOCKWISE_NEXT.get(i, 4) for i in range(9)]  # the centre maps to itself: difference 0
            diffs = patches - patches[:, :, nxt]
        g, cin, cout = self.groups, C // self.groups, self.out_channels // self.groups
        diffs = diffs.view(B, g, cin * 9, L)
        weight = self.weight.view(g, cout, cin * 9)
        y = torch.einsum("gok,bgkl->bgol", weight, diffs).reshape(B, self.out_channels, L)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1)
        # kernel 3 with padding = dilation: out = (size - 1) // stride + 1
        return y.view(B, self.out_channels, (H - 1) // self.stride + 1, (W - 1) // self.stride + 1)

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` computing the same function (weights ``W′``), for inference."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, stride=self.stride, padding=self.dilation,
                         dilation=self.dilation, groups=self.groups, bias=self.bias is not None)
        conv = conv.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


class PDCBlock(nn.Module):
    """PiDiNet block as used by FRD-Net (official code ``PDCBlock``): depth-wise 3×3 PDC (no bias) → ReLU → 1×1
    conv C→C_out (no bias). No residual inside the block (the official shortcut is disabled)."""

    def __init__(self, channels: int, out_channels: int | None = None, op: str = "central", theta: float = 1.0):
        super().__init__()
        self.depthwise: PixelDifferenceConv2d | None = PixelDifferenceConv2d(
            channels, channels, op=op, theta=theta, groups=channels, bias=False)
        self.depthwise_fused: nn.Conv2d | None = None
        self.act = nn.ReLU()
        self.pointwise = nn.Conv2d(channels, out_channels or channels, kernel_size=1, bias=False)

    @property
    def is_reparameterized(self) -> bool:
        return self.depthwise_fused is not None

    def reparameterize(self) -> None:
        """Fuse the difference convolution into a plain depth-wise conv (inference only; irreversible)."""
        if self.depthwise is not None:
            self.depthwise_fused = self.depthwise.to_conv2d()
            self.depthwise = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.depthwise_fused if self.depthwise is None else self.depthwise
        return self.pointwise(self.act(conv(x)))


def reparameterize_pdc(module: nn.Module) -> nn.Module:
    """Fuse every :class:`PDCBlock` inside ``module`` for inference; returns ``module``."""
    for sub in module.modules():
        if isinstance(sub, PDCBlock):
            sub.reparameterize()
    return module
