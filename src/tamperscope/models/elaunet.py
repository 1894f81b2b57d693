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
- Network: a stride-2 3×3 stem (BN, ReLU) to ``widths[0]`` channels at half resolution, then a U-Net over
  ``widths`` (24, 48, 96, 192): two 3×3 conv-BN-ReLU per level, 2×2 max-pooling down, bilinear ×2 up with
  the skip concatenated, a 1×1 conv to one logit map, bilinear ×2 back to the input size.
- Loss: BCE + ``dice_weight`` × per-image linear Dice (:func:`~tamperscope.nn.losses.dice_per_image`).
- Image logit: the maximum mask logit (SEED-SPECS §8.1, no detection head), so the verdict is a weak detector.
- ``native_resolution = True``: JPEG traces live on the 8×8 block grid and vanish under resampling, so the
  model trains on S×S windows of each photo at its own size whose corners sit on the 16-pixel JPEG grid,
  and evaluation, ``predict`` and ``serve`` run it on the whole photo (padded to a multiple of 32).
- Limits: it reads compression inconsistencies; on photos without a JPEG history (PNG screenshots, renders)
  or after strong re-compression and resizing it has little to go on (docs/MODELS.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..nn.error_level import error_level_channels
from ..nn.losses import bce, dice_per_image
from ..registry import register_model
from .base import TamperModel, max_pool_image_logit
from .ela import ErrorLevelAnalysis

PAPER = ("tamperscope's own model: error-level analysis (Krawetz, Black Hat 2007) as input to a U-Net "
         "(Ronneberger et al., MICCAI 2015)")
DEFAULT_CONFIG = {"qualities": [90, 75], "error_scale": 8.0, "ela_map": False, "ela_prior": False,
                  "widths": [24, 48, 96, 192], "dice_weight": 1.0}
ELA_PRIOR_EPS = 1e-4
PRESETS = {
    # the CPU recipe of the default model (configs/default-model.yaml)
    "default": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "epochs": 20, "warmup_epochs": 0.2,
                "schedule": "cosine", "min_lr": 1e-5, "batch_size": 8},
}


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


@register_model("ela-unet", default_config=DEFAULT_CONFIG, paper=PAPER, train_presets=PRESETS,
                description="compact U-Net over RGB + JPEG error levels at native resolution; the default model")
class ErrorLevelUNet(TamperModel):
    """See the module docstring."""

    native_resolution = True

    def __init__(self, qualities=(90, 75), error_scale: float = 8.0, ela_map: bool = False, ela_prior: bool = False,
                 widths=(24, 48, 96, 192), dice_weight: float = 1.0):
        super().__init__()
        qualities, widths = tuple(int(q) for q in qualities), tuple(int(w) for w in widths)
        if any(not 1 <= q <= 100 for q in qualities):
            raise UserError(f"ela-unet: qualities must be in 1..100, got {list(qualities)}")
        if len(widths) < 2 or min(widths) < 1:
            raise UserError(f"ela-unet: widths needs at least two positive channel counts, got {list(widths)}")
        if error_scale <= 0:
            raise UserError(f"ela-unet: error_scale must be positive, got {error_scale}")
        if ela_prior and not ela_map:
            raise UserError("ela-unet: ela_prior needs ela_map (the prior is that input channel)")
        self.qualities, self.error_scale, self.dice_weight = qualities, float(error_scale), float(dice_weight)
        self.ela = ErrorLevelAnalysis() if ela_map else None
        self.stem = conv_bn_relu(3 + 3 * len(qualities) + int(bool(ela_map)), widths[0], stride=2)
        self.down = nn.ModuleList(double_conv(widths[max(i - 1, 0)], w) for i, w in enumerate(widths))
        self.up = nn.ModuleList(double_conv(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.out = nn.Conv2d(widths[0], 1, 1)
        self.ela_prior = bool(ela_prior)
        if self.ela_prior:  # start from the ELA baseline exactly
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The network input: RGB and the error levels (module docstring)."""
        parts = [image, error_level_channels(image, self.qualities, self.error_scale)]
        if self.ela is not None:  # (shape-only on the meta device, as the error levels)
            parts.append(image.new_empty((image.shape[0], 1, *image.shape[2:])) if image.is_meta
                         else self.ela(image)["level_map"].to(image.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, image: torch.Tensor) -> dict:
        feats = self.features(image)
        x = self.stem(feats)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        logits = F.interpolate(self.out(x), size=image.shape[-2:], mode="bilinear", align_corners=False)
        if self.ela_prior:
            logits = logits + torch.logit(feats[:, -1:].clamp(ELA_PRIOR_EPS, 1.0 - ELA_PRIOR_EPS))
        return {"mask_logits": logits, "image_logit": max_pool_image_logit(logits)}

    def loss(self, outputs: dict, batch: dict) -> dict:
        seg = bce(outputs["mask_logits"], batch["mask"])
        dice = dice_per_image(torch.sigmoid(outputs["mask_logits"].float()), batch["mask"])
        return {"total": seg + self.dice_weight * dice, "bce": seg, "dice": dice}
