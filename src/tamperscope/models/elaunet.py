"""ELA-UNet: the toolkit's own compact localiser and the bundled default model (docs/MODELS.md).

Not one of the five papers. It exists because the analyst's default has to be trained by the project on a
2-core CPU from random initialisation, and there the transformers of the papers learn too slowly (a random-init
SegFormer-b0 reaches about ELA's CASIA test F1 after 604 steps only with a threshold chosen on val, 0.241 vs 0.234;
this network's map reaches ELA's pixel AUC within a few hundred steps, and after 3,000 steps with an operating
point calibrated on val it passes ELA's pixel F1 clearly, 0.279).
It combines two classics: error-level analysis (Krawetz, Black Hat 2007; the ``ela`` baseline's cue) as input
and a U-Net (Ronneberger et al., MICCAI 2015) as the localiser.

- Input, computed inside ``forward`` without gradient: the ImageNet-normalised RGB photo and, for each JPEG
  quality q in ``qualities`` (90, 75), the error level ``|rgb − JPEG_q(rgb)|`` per channel divided by
  ``error_scale`` (8): 3 + 3·k channels (:mod:`tamperscope.nn.error_level`). With ``ela_map`` one more
  channel: the ``ela`` baseline's own map (quality 90, smoothed, divided by the input's 99.5th percentile), so
  the network sees each error level relative to the rest of the photo, which a U-Net's receptive field cannot
  compute by itself. With ``ela_prior`` (needs ``ela_map``) the network predicts a correction to the ELA
  baseline: ``mask_logits = logit(clip(ela_map, 1e-4, 1 − 1e-4)) + U-Net``, with the last 1×1 conv zero-initialised
  so that training starts from exactly the ``ela`` baseline's map.
- With ``residual``: three more channels, the grey photo's noise residuals under the three fixed high-pass
  filters of SRM that RGB-N keeps (Zhou et al., CVPR 2018, §3.2; Fridrich & Kodovsky 2012), divided by
  ``residual_scale`` (4) and truncated to ±3 (SRM's truncation), a camera-noise cue next to the compression cue.
- With ``global_context``: each photo is compared with itself, in either direction, as TruFor's anomaly decoder
  does with its pooled statistics (Guillaro et al., CVPR 2023, §3.2): the forensic input channels and the
  bottleneck features get a twin ``(x − μ) / σ``, with μ and σ the per-channel mean and standard deviation over
  the whole photo (the whole window in training). A region is then suspicious because it differs from the rest
  of its own photo, whatever the photo's overall compression or noise level.
- With ``detection_head``: the image logit comes from a small MLP (64 hidden units) over pooled statistics,
  trained with BCE on the image label (weight ``cls_weight``); without it, the maximum mask logit. With
  ``head_pooling: max`` the statistics are the bottleneck's global average and maximum and the maximum and the
  top-1 % mean of the mask logits. Maxima grow with the number of pixels, so a head trained on 256-pixel windows
  reads a 12-megapixel photo as suspicious; ``head_pooling: top`` replaces each maximum by the mean of the top
  share (1 % of the bottleneck's positions, 0.1 % of the logits), which stays put on an authentic photo of any
  size while a forged region of that share still dominates it.
- Network: a stride-2 3×3 stem (BN, ReLU) to ``widths[0]`` channels at half resolution, then a U-Net over
  ``widths`` (24, 48, 96, 192): two 3×3 conv-BN-ReLU per level, 2×2 max-pooling down, bilinear ×2 up with
  the skip concatenated, a 1×1 conv to one logit map, bilinear ×2 back to the input size.
- Loss: BCE + ``dice_weight`` × per-image linear Dice (:func:`~tamperscope.nn.losses.dice_per_image`), plus
  ``cls_weight`` × image BCE with the detection head.
- ``native_resolution = True``: JPEG traces live on the 8×8 block grid and vanish under resampling, so the
  model trains on S×S windows of each photo at its own size whose corners sit on the 16-pixel JPEG grid,
  and evaluation, ``predict`` and ``serve`` run it on the whole photo (padded to a multiple of 32).
- Limits: it reads compression inconsistencies; on photos without a JPEG history (PNG screenshots, renders)
  or after strong re-compression and resizing it has little to go on (docs/MODELS.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..nn.error_level import error_level_channels
from ..nn.losses import bce, dice_per_image
from ..nn.norm import imagenet_denormalize
from ..registry import register_model
from .base import TamperModel, max_pool_image_logit
from .ela import ErrorLevelAnalysis

PAPER = ("tamperscope's own model: error-level analysis (Krawetz, Black Hat 2007) as input to a U-Net "
         "(Ronneberger et al., MICCAI 2015)")
ELA_PRIOR_EPS = 1e-4
#: SRM's three residual filters kept by RGB-N (Zhou et al., CVPR 2018, §3.2), each with its own normaliser
SRM_KERNELS = (
    np.array([[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]) / 4.0,
    np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2],
              [-1, 2, -2, 2, -1]]) / 12.0,
    np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]) / 2.0,
)
TOP_DIVISOR = 100  # the top 1 % (of the half-resolution logits; with head_pooling "top", of the bottleneck too)
PEAK_DIVISOR = 1000  # head_pooling "top": the top 0.1 % of the logits stands for their maximum
HEAD_POOLINGS = ("max", "top")
PRESETS = {
    # the CPU recipe of the default model (configs/default-model.yaml)
    "default": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "epochs": 20, "warmup_epochs": 0.2,
                "schedule": "cosine", "min_lr": 1e-5, "batch_size": 8},
}


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


@register_model("ela-unet", paper=PAPER, train_presets=PRESETS,
                description="compact U-Net over RGB + JPEG error levels at native resolution; the default model")
class ErrorLevelUNet(TamperModel):
    """See the module docstring."""

    native_resolution = True
    compile_parts = ("decode",)  # not the OpenCV error levels
    #: inference in channels-last memory format: faster on the 2-core CPU (docs/BENCHMARKS.md), not in training
    channels_last_inference = True

    def __init__(self, qualities=(90, 75), error_scale: float = 8.0, ela_map: bool = False, ela_prior: bool = False,
                 residual: bool = False, residual_scale: float = 4.0, global_context: bool = False,
                 detection_head: bool = False, head_pooling: str = "max", widths=(24, 48, 96, 192),
                 dice_weight: float = 1.0, cls_weight: float = 0.5):
        super().__init__()
        qualities, widths = tuple(int(q) for q in qualities), tuple(int(w) for w in widths)
        if any(not 1 <= q <= 100 for q in qualities):
            raise UserError(f"ela-unet: qualities must be in 1..100, got {list(qualities)}")
        if len(widths) < 2 or min(widths) < 1:
            raise UserError(f"ela-unet: widths needs at least two positive channel counts, got {list(widths)}")
        if error_scale <= 0 or residual_scale <= 0:
            raise UserError(f"ela-unet: error_scale and residual_scale must be positive, got {error_scale}, "
                            f"{residual_scale}")
        if head_pooling not in HEAD_POOLINGS:
            raise UserError(f"ela-unet: head_pooling must be one of {', '.join(HEAD_POOLINGS)}, got {head_pooling!r}")
        if ela_prior and not ela_map:
            raise UserError("ela-unet: ela_prior needs ela_map (the prior is that input channel)")
        self.qualities, self.error_scale, self.dice_weight = qualities, float(error_scale), float(dice_weight)
        self.residual_scale, self.cls_weight = float(residual_scale), float(cls_weight)
        self.global_context, self.head_pooling = bool(global_context), head_pooling
        self.ela = ErrorLevelAnalysis() if ela_map else None
        if residual:
            self.register_buffer("srm", torch.tensor(np.stack(SRM_KERNELS), dtype=torch.float32)[:, None],
                                 persistent=False)
        else:
            self.srm = None
        forensic = 3 * len(qualities) + int(bool(ela_map)) + (3 if residual else 0)
        self.stem = conv_bn_relu(3 + forensic * (2 if self.global_context else 1), widths[0], stride=2)
        self.down = nn.ModuleList(double_conv(widths[max(i - 1, 0)], w) for i, w in enumerate(widths))
        bottom = widths[-1] * (2 if self.global_context else 1)
        self.up = nn.ModuleList(double_conv((bottom if i == len(widths) - 2 else widths[i + 1]) + widths[i], widths[i])
                                for i in range(len(widths) - 1))
        self.out = nn.Conv2d(widths[0], 1, 1)
        self.head = nn.Sequential(nn.Linear(2 * bottom + 2, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)) \
            if detection_head else None
        self.ela_prior = bool(ela_prior)
        if self.ela_prior:  # start from the ELA baseline exactly
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def residuals(self, image: torch.Tensor) -> torch.Tensor:
        """SRM residuals of the grey photo (0-255 scale), divided by ``residual_scale`` and truncated to ±3."""
        grey = (imagenet_denormalize(image.float()) * 255.0).mul(
            image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        res = F.conv2d(F.pad(grey, (2, 2, 2, 2), mode="replicate"), self.srm)
        return (res / self.residual_scale).clamp(-3.0, 3.0).to(image.dtype)

    def forensic(self, image: torch.Tensor) -> torch.Tensor:
        """The forensic channels before the global context: error levels, ELA map, SRM residuals."""
        parts = [error_level_channels(image, self.qualities, self.error_scale)]
        if self.ela is not None:  # (shape-only on the meta device, as the error levels)
            parts.append(image.new_empty((image.shape[0], 1, *image.shape[2:])) if image.is_meta
                         else self.ela(image)["level_map"].to(image.dtype))
        if self.srm is not None:
            parts.append(self.residuals(image))
        return torch.cat(parts, dim=1)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The network input: RGB and the forensic channels (module docstring)."""
        forensic = self.forensic(image)
        if self.global_context:
            forensic = with_context(forensic)
        return torch.cat([image, forensic], dim=1)

    def forward(self, image: torch.Tensor) -> dict:
        return self.decode(self.features(image))

    def export_inputs(self, image: torch.Tensor):
        """RGB and :meth:`forensic`, and with ``global_context`` their per-photo mean and standard deviation: the
        OpenCV JPEG round trips and the whole-photo sums stay outside an exported (ONNX) graph (ONNX Runtime's and
        OpenVINO's float32 means over a million pixels drift by 1e-3), the rest goes inside it."""
        inputs = torch.cat([image, self.forensic(image)], dim=1)
        return (inputs, *context_stats(inputs[:, 3:])) if self.global_context else inputs

    def export_forward(self, inputs: torch.Tensor, *stats: torch.Tensor) -> dict:
        if self.global_context:  # [RGB, forensic, (forensic − μ) / σ]: features(), with μ, σ given
            mu, sigma = stats
            inputs = torch.cat([inputs, (inputs[:, 3:] - mu) / sigma], dim=1)
        return self.decode(inputs)

    def decode(self, feats: torch.Tensor) -> dict:
        """``forward`` from the network input :meth:`features` (pure tensor maths: the part ONNX export traces)."""
        if self.channels_last_inference and not self.training:
            feats = feats.contiguous(memory_format=torch.channels_last)
        x = self.stem(feats)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        if self.global_context:
            x = skips[-1] = with_context(x)
        bottom = x
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        half = self.out(x)
        logits = F.interpolate(half, size=feats.shape[-2:], mode="bilinear", align_corners=False)
        if self.ela_prior:
            logits = logits + torch.logit(feats[:, -1:].clamp(ELA_PRIOR_EPS, 1.0 - ELA_PRIOR_EPS))
        if self.head is None:
            return {"mask_logits": logits, "image_logit": max_pool_image_logit(logits)}
        return {"mask_logits": logits, "image_logit": self.head(self.pooled(bottom, half)).squeeze(1)}

    def pooled(self, bottom: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
        """The detection head's input (module docstring, ``head_pooling``): ``B × (2·C + 2)``."""
        flat = half.flatten(1)
        top = top_mean(flat, TOP_DIVISOR)[:, None]
        if self.head_pooling == "max":
            return torch.cat([bottom.mean((2, 3)), bottom.amax((2, 3)), flat.amax(1, keepdim=True), top], 1)
        return torch.cat([bottom.mean((2, 3)), top_mean(bottom.flatten(2), TOP_DIVISOR),
                          top_mean(flat, PEAK_DIVISOR)[:, None], top], 1)

    def loss(self, outputs: dict, batch: dict) -> dict:
        seg = bce(outputs["mask_logits"], batch["mask"])
        dice = dice_per_image(torch.sigmoid(outputs["mask_logits"].float()), batch["mask"])
        terms = {"total": seg + self.dice_weight * dice, "bce": seg, "dice": dice}
        if self.head is not None:
            terms["cls"] = bce(outputs["image_logit"], batch["label"])
            terms["total"] = terms["total"] + self.cls_weight * terms["cls"]
        return terms


def top_count(n, divisor: int = TOP_DIVISOR):
    """``max(1, ⌊n / divisor⌋)`` (the top 1 % by default) in integer arithmetic, so that a traced (ONNX) graph keeps
    it a function of the input size instead of a constant (equal to the former ``int(0.01 * n)`` for every n)."""
    return torch.sym_max(1, n // divisor)


def top_mean(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Mean of the top ``1 / divisor`` share of the last axis (:func:`top_count`)."""
    return x.topk(top_count(x.shape[-1], divisor), dim=-1).values.mean(-1)


def context_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(μ, σ)``, ``B×C×1×1``: each channel's mean and standard deviation over the whole photo."""
    mu = x.mean((2, 3), keepdim=True)
    sigma = x.float().var((2, 3), keepdim=True, unbiased=False).add(1e-6).sqrt().to(x.dtype)
    return mu, sigma


def with_context(x: torch.Tensor) -> torch.Tensor:
    """``[x, (x − μ) / σ]``: each channel beside its deviation from the photo's own mean, in units of the photo's
    own standard deviation (module docstring, ``global_context``)."""
    mu, sigma = context_stats(x)
    return torch.cat([x, (x - mu) / sigma], dim=1)
