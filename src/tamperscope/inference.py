"""Inference primitives below both the models and the engine (ARCHITECTURE.md, "Layers"): bf16 autocast, the model
contract's probabilities, the operating points that ``tamperscope export --calibrate`` stores in a checkpoint, and
the bilinear upsampling of a map to its photo (the input-size rules: :mod:`tamperscope.sizes`)."""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def model_probabilities(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask probabilities ``B×1×H×W`` float32, image probabilities ``B`` float64) from the model contract, both
    passed through the model's ``calibration`` when it has one (:func:`calibrate_map`, :func:`calibrate_score`)."""
    device = images.device
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast_for(device):
        out = model(images)
    calibration = model.calibration
    probs = calibrate_map(torch.sigmoid(out["mask_logits"].float()), calibration)
    return probs, calibrate_score(torch.sigmoid(out["image_logit"].double().reshape(-1)), calibration)


def padded_probabilities(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`model_probabilities` of photos of any size: padded at the bottom/right by edge replication to a
    multiple of the model's ``input_multiple``, run, and the map cropped back to the photo."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % model.input_multiple, -w % model.input_multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    probs, scores = model_probabilities(model, images)
    return probs[..., :h, :w], scores


def logit_shift(prob: torch.Tensor, t: float) -> torch.Tensor:
    """``prob`` with its logit moved by −logit(t), so that ``p > t`` becomes ``> 0.5`` (the ranking is kept)."""
    shift = torch.logit(torch.tensor(float(t), dtype=torch.float64), eps=1e-12)
    return torch.sigmoid(torch.logit(prob.double(), eps=1e-12) - shift).to(prob.dtype)


def calibrate_map(prob: torch.Tensor, calibration: dict | None) -> torch.Tensor:
    """Apply a checkpoint's pixel operating point ``{"mode": "absolute", "threshold": t, ...}``: ``p > t`` becomes
    ``> 0.5`` (:func:`logit_shift`). ``None``: unchanged."""
    return logit_shift(prob, calibration["threshold"]) if calibration else prob


def calibrate_score(score: torch.Tensor, calibration: dict | None) -> torch.Tensor:
    """Apply a checkpoint's image operating point ``calibration["image"]["threshold"]`` (the same shift as
    :func:`calibrate_map`); unchanged without one."""
    image = (calibration or {}).get("image")
    return logit_shift(score, image["threshold"]) if image else score


def uncalibrate_score(score: float, calibration: dict | None) -> float:
    """The image probability before :func:`calibrate_score` (its inverse: the shift by −logit(1 − t))."""
    image = (calibration or {}).get("image")
    return float(logit_shift(torch.tensor(score, dtype=torch.float64), 1.0 - image["threshold"])) if image else score


def false_alarm_threshold(authentic_scores, max_false_alarm: float) -> float:
    """The smallest threshold ``t`` such that at most ``max_false_alarm`` of ``authentic_scores`` are ``> t``: the
    order statistic ``a[n − 1 − k]`` with ``k = ⌊rate·n⌋`` allowed false alarms (ties stay at or below it), or 0
    when every score may be above it."""
    a = np.sort(np.asarray(authentic_scores, dtype=np.float64))
    k = math.floor(max_false_alarm * len(a) + 1e-9)
    return float(a[len(a) - 1 - k]) if k < len(a) else 0.0


def upsample_to(prob: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A ``1×h×w`` probability map bilinearly resized to ``size`` (H, W), as numpy float32."""
    if tuple(prob.shape[-2:]) != tuple(size):
        prob = F.interpolate(prob[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return prob[0].clamp_(0, 1).cpu().numpy()
