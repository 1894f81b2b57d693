"""Pictures of a prediction: a probability heat map, a binary mask and an overlay of the mask on the photo.

* :func:`heatmap` — probability in [0, 1] through matplotlib's perceptually uniform ``inferno`` colour map
  (0 = black, 1 = pale yellow), as ``H×W×3`` uint8 RGB.
* :func:`mask_image` — the binary mask as 0/255 grey.
* :func:`overlay` — the photo with the tampered region tinted (translucent red by default) and outlined with
  an opaque contour whose thickness grows with the image size (about 1/300 of the longer side, at least 1 px).
* :func:`fit_within` — area downscale to a longest side (for display, and BR-Gen's and the demo's working size:
  torch-free, so the built-in generator can use it).
* :func:`stretch_to_uint8` — a signed map (a noiseprint) clipped to its 1st–99th percentiles as 0–255 grey.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..errors import UserError

OVERLAY_COLOR = (255, 32, 32)
OVERLAY_ALPHA = 0.4
COLORMAP = "inferno"
PNG_PERCENTILES = (1.0, 99.0)


@lru_cache(maxsize=4)
def colormap_lut(name: str) -> np.ndarray:
    """256×3 uint8 lookup table of a matplotlib colour map."""
    from matplotlib import colormaps

    cmap = colormaps[name]
    return np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def probability_to_uint8(prob: np.ndarray) -> np.ndarray:
    """``H×W`` probabilities in [0, 1] as 0–255 grey (the ``--predictions`` PNG convention)."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise UserError(f"expected an H×W probability map, got shape {prob.shape}")
    return np.round(np.clip(np.nan_to_num(prob, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap(prob: np.ndarray, colormap: str = COLORMAP) -> np.ndarray:
    """``H×W`` probabilities → ``H×W×3`` uint8 RGB colour map."""
    return colormap_lut(colormap)[probability_to_uint8(prob)]


def mask_image(mask: np.ndarray) -> np.ndarray:
    """Boolean ``H×W`` mask → 0/255 uint8 grey."""
    return np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = OVERLAY_COLOR,
            alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The RGB photo with ``mask`` tinted by ``color`` at opacity ``alpha`` and outlined in ``color``."""
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserError(f"overlay needs an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise UserError(f"overlay: mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    out = image.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * tint
    k = 2 * max(1, round(max(mask.shape) / 300)) + 1  # the outline: about 1/300 of the longer side
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, kernel).astype(bool)
    out[edge] = tint
    return np.round(out).astype(np.uint8)


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (area interpolation) so that the longer side is at most ``max_side``; smaller images unchanged."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def stretch_to_uint8(noise_map: np.ndarray, percentiles: tuple[float, float] = PNG_PERCENTILES) -> np.ndarray:
    """Robust display scaling: clip to the given percentiles and map linearly to 0–255."""
    lo, hi = np.percentile(noise_map, percentiles)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.full(noise_map.shape, 128, dtype=np.uint8)
    scaled = (np.clip(noise_map, lo, hi) - lo) / (hi - lo)
    return np.round(scaled * 255.0).astype(np.uint8)
