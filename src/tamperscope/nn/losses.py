"""Loss primitives with explicit names (FRD-Net Eq. 9, DiffForensics Eq. 6, V-Net).

``p`` is a probability, ``g`` the GT."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def wbce(logits: torch.Tensor, target: torch.Tensor, w_pos: float, w_neg: float) -> torch.Tensor:
    """−mean[w_pos·g·log p + w_neg·(1−g)·log(1−p)], computed stably from logits."""
    logits, target = logits.float(), target.float()
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    return -(w_pos * target * log_p + w_neg * (1 - target) * log_1mp).mean()


def dice_linear(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − (2Σpg + s)/(Σp + Σg + s) over the flattened batch."""
    prob, target = prob.float().flatten(), target.float().flatten()
    return 1 - (2 * (prob * target).sum() + smooth) / (prob.sum() + target.sum() + smooth)


def dice_sq(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """V-Net form 1 − (2Σpg + s)/(Σp² + Σg² + s) over the flattened batch."""
    prob, target = prob.float().flatten(), target.float().flatten()
    return 1 - (2 * (prob * target).sum() + smooth) / ((prob * prob).sum() + (target * target).sum() + smooth)


def dice_per_image(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of each image's 1 − (2Σpg + s)/(Σp + Σg + s): small regions count as much as large
    ones, and an authentic image's term pulls its whole map to zero."""
    prob, target = prob.float().flatten(1), target.float().flatten(1)
    inter, total = (prob * target).sum(1), prob.sum(1) + target.sum(1)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()
