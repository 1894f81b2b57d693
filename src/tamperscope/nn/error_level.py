"""Error levels (Krawetz, Black Hat 2007): how much a photo changes when it is JPEG-compressed once more.
Regions already compressed at that quality change little; pasted or edited regions with another compression
history change more. Shared by the ``ela`` baseline and the ``ela-unet`` model's input."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .jpeg import jpeg_roundtrip
from .norm import imagenet_denormalize


def error_level(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``H×W×3`` float32 ``|rgb − JPEG_quality(rgb)|`` of one uint8 RGB photo (OpenCV/libjpeg, 4:2:0)."""
    return np.abs(rgb.astype(np.float32) - jpeg_roundtrip(rgb, quality).astype(np.float32))


def to_uint8_rgb(image: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised ``B×3×H×W`` tensor back to ``B×H×W×3`` uint8 pixels (exact for an input that was
    normalised from uint8)."""
    rgb = (imagenet_denormalize(image.detach().float()).clamp(0, 1) * 255.0).round().to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def error_level_channels(image: torch.Tensor, qualities: tuple[int, ...], scale: float) -> torch.Tensor:
    """``B×3k×H×W`` error levels of an ImageNet-normalised batch at each of the k ``qualities``, divided by
    ``scale``; computed on the CPU with OpenCV, returned on the input's device and dtype. On the meta device
    (complexity counting, where there are no pixels) the maps are shape-only placeholders."""
    if image.is_meta:
        return image.new_empty((image.shape[0], 3 * len(qualities), *image.shape[2:]))
    b, _, h, w = image.shape
    maps = np.empty((b, 3 * len(qualities), h, w), np.float32)
    for i, rgb in enumerate(to_uint8_rgb(image)):
        rgb = np.ascontiguousarray(rgb)
        for j, q in enumerate(qualities):  # |a − b| of uint8 is exact in uint8: the same values as error_level
            maps[i, 3 * j:3 * j + 3] = cv2.absdiff(rgb, jpeg_roundtrip(rgb, q)).transpose(2, 0, 1)
    return torch.from_numpy(maps).div_(scale).to(device=image.device, dtype=image.dtype)
