"""SegFormer baseline (Xie et al., NeurIPS 2021): MiT encoder + All-MLP head with one output channel,
bilinearly upsampled to the input size. The reference every method is compared with (IMDL-BenCo's
``segformer`` baseline: BCE loss on the mask, image score = max mask logit)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones.mit import MIT_HEAD_DIMS, MixVisionTransformer, load_all_mlp_head_weights, load_mit_weights
from ..nn.heads import AllMLPHead
from ..nn.losses import bce, dice_linear, dice_per_image
from ..registry import register_model
from .base import TamperModel, max_pool_image_logit

PAPER = "Xie et al., SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers, NeurIPS 2021"
PRESETS = {
    "default": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05, "epochs": 100, "warmup_epochs": 2,
                "schedule": "cosine", "min_lr": 1e-6, "batch_size": 16},
}

DICE_FORMS = {"batch": dice_linear, "image": dice_per_image}


class SegFormer(TamperModel):
    """MiT-bX + All-MLP head → 1 channel. ``encoder_weights``: ImageNet ``mit_b*.pth`` (NVlabs or HF);
    ``segformer_weights``: an ADE20K SegFormer checkpoint (encoder + head; the 150-class layer is skipped).
    Loss: BCE (the IMDL-BenCo baseline); ``dice_weight`` > 0 adds a linear Dice term, which helps a
    randomly initialised model on small tampered areas. ``dice_form``: ``"batch"`` (one Dice over the flattened
    batch) or ``"image"`` (mean of per-image Dice, the form of the per-image F1 the protocol reports)."""

    def __init__(self, variant: str = "b2", drop_path_rate: float = 0.1, dropout: float = 0.1,
                 encoder_weights: str | None = None, segformer_weights: str | None = None, ln_eps: float = 1e-6,
                 dice_weight: float = 0.0, dice_form: str = "batch"):
        super().__init__()
        if dice_form not in DICE_FORMS:
            raise ValueError(f"dice_form must be one of {sorted(DICE_FORMS)}, got {dice_form!r}")
        self.dice_weight, self.dice_form = float(dice_weight), dice_form
        self.encoder = MixVisionTransformer(variant, drop_path_rate=drop_path_rate, ln_eps=ln_eps)
        self.head = AllMLPHead(self.encoder.embed_dims, MIT_HEAD_DIMS[variant], 1, dropout)
        if segformer_weights:
            load_mit_weights(self.encoder, segformer_weights)
            load_all_mlp_head_weights(self.head, segformer_weights)
        elif encoder_weights:
            load_mit_weights(self.encoder, encoder_weights)

    def forward(self, image):
        logits = self.head(self.encoder(image))
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"mask_logits": logits, "image_logit": max_pool_image_logit(logits)}

    def loss(self, outputs, batch):
        seg = bce(outputs["mask_logits"], batch["mask"])
        if not self.dice_weight:
            return {"total": seg, "bce": seg}
        dice = DICE_FORMS[self.dice_form](torch.sigmoid(outputs["mask_logits"].float()), batch["mask"])
        return {"total": seg + self.dice_weight * dice, "bce": seg, "dice": dice}


for _v in ("b0", "b1", "b2", "b3", "b4", "b5"):
    register_model(f"segformer-{_v}", paper=PAPER, overrides={"variant": _v}, train_presets=PRESETS,
                   description=f"SegFormer-{_v} baseline (MiT-{_v} + All-MLP head)")(SegFormer)
