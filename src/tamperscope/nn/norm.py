"""Input normalisation shared by every model (IMDL-BenCo, as in the official code): ImageNet mean/std after
scaling to [0,1]."""
from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return mean, std


def imagenet_normalize(x01: torch.Tensor) -> torch.Tensor:
    mean, std = _stats(x01)
    return (x01 - mean) / std


def imagenet_denormalize(x: torch.Tensor) -> torch.Tensor:
    """Back to RGB in [0,1] (values may leave the range slightly after augmentation)."""
    mean, std = _stats(x)
    return x * std + mean
