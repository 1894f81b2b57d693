"""Regions off a decoded photo's JPEG lattice (Fan & de Queiroz, "Identification of bitmap compression history:
JPEG detection and quantizer estimation", IEEE TIP 12(2), 2003; the block test follows the block-grained
likelihood analysis of Bianchi & Piva, IEEE TIFS 7(3), 2012, §III-C).

A weight-free expert for photos whose last JPEG compression was decoded and the result kept losslessly (a JPEG
edited and saved as PNG or TIFF, as inpainting and splicing tools often do). Every 8×8 block of such a photo keeps
the compression's trace: its DCT coefficients lie on the lattice ``k·Q`` of the quantisation table, up to the
rounding of the decoded pixels (Fan & de Queiroz §II–III). A region pasted, inpainted, resampled or re-compressed
after the decoding was never quantised by that table on that grid, and its coefficients fall off the lattice. A
photo whose last save was JPEG has every block on the lattice, forged or not, and a photo never compressed has no
lattice: the expert is silent on both.

1. **Grid**: the luminance ``Y − 128`` (JFIF) is cut into 8×8 blocks at each of the 64 offsets of a central window of
   at most ``grid_window`` pixels; the grid is the offset whose orthonormal DCT coefficients (the first 35 AC
   frequencies in zig-zag order) are most often near zero (``|c| < 0.6``): on the compression's grid the
   frequencies quantised to zero decode to rounding noise, off it they spread.
2. **Quantisation steps** (Fan & de Queiroz §III, the quantiser estimated from the decoded bitmap): for each of the
   first ``frequencies`` (15) AC frequencies, over the blocks without a clipped pixel (a channel at 0 or 255:
   clipping moves a block off its lattice), the share of the coefficients ``|c| ≥ q/2`` that lie within
   ``tolerance`` (0.75) of ``k·q``, corrected for chance: ``s(q) = (f(q) − 2·tol/q) / (1 − 2·tol/q)``. The step is
   the largest ``q`` in ``3 … max_step`` with ``s(q) ≥ max(min_share, 0.8·max s)`` (a multiple of the step holds
   only part of the lattice). ``s`` is the share of the photo on the lattice, so a forged region of up to
   ``1 − min_share`` (0.4) of the photo does not hide it; a larger one becomes "the photo" and the rest is
   flagged instead. Steps under ``min_step`` (3) give no evidence: the rounding noise covers their lattice. A
   photo with fewer than ``min_frequencies`` (3) such frequencies has no lattice and gives no evidence.
3. **Block log-likelihood ratio** (Bianchi & Piva §III-C, here "off the lattice" against "on it"): each coefficient
   of a used frequency with ``|c| ≥ min_magnitude`` (2) adds ``log p_off − log p_on`` with ``p_off = 1/Q`` (off the
   lattice the distance ``d = c − Q·round(c/Q)`` is uniform) and ``p_on`` the rounding noise around the lattice:
   ``(1 − w − ε)·N(d; 0, σ) + w·N(d; 0, σ_w) + ε/Q``, with ``σ`` the frequency's root mean square distance within
   the tolerance (at least ``min_noise``, 0.36), a wide part ``w`` = ``wide`` (0.04), ``σ_w`` = ``wide_noise`` (1.0)
   and outliers ``ε`` = ``outlier`` (0.005). Resolved choice: decoding rounds Y, then R, G and B, and in smooth
   blocks those errors are correlated, so the noise has a tail a single Gaussian misses; the mixture was measured
   on decoded authentic JPEGs of the validation photos (51 % of the distances under 0.25, 31 % in 0.25–0.5,
   13 % in 0.5–0.75, 5 % in 0.75–1.5 and 0.2 % beyond; docs/MODELS.md). Coefficients near zero carry nothing (a
   smooth block's are near zero whether it was quantised or not), nor do blocks with fewer than
   ``min_coefficients`` (4) informative coefficients, clipped blocks and the incomplete blocks at the borders.
4. **Map and decision**: the ratio is averaged over ``smoothing``×``smoothing`` blocks (3); blocks whose average
   exceeds ``threshold`` (2 nats: an isolated block with rounding outliers does not pass once averaged with its
   neighbours) form regions, and regions under ``min_area`` pixels (1,024) are dropped.

Contract:
- ``mask_logits``: ``weight`` × (the smoothed ratio − ``threshold``), clipped to ±20, set on every pixel of its block;
  outside the kept regions at most −1, so only they pass 0.5; −20 on a photo without a lattice and on the
  incomplete border blocks.
- ``image_logit``: ``log(a / min_area)`` with ``a`` the largest kept region's area in pixels (−20 without one), so
  the image probability is 0.5 at the area rule: the expert fires when a region of at least ``min_area`` pixels
  lies off the photo's lattice.
- ``native_resolution = True``, ``input_multiple = 1`` (:class:`~tamperscope.models.base.PhotoExpert`): resampling
  erases the lattice, so it reads each photo at its own size, and padding would add blocks that lie on no lattice.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import UserError
from ..nn.jpeg import BLOCK, MIN_SAMPLES, block_dct, jfif_luma, paint_blocks, zigzag
from ..registry import register_model
from .base import PhotoExpert

PAPER = ("Fan & de Queiroz, Identification of bitmap compression history: JPEG detection and quantizer estimation, "
         "IEEE TIP 12(2), 2003 (block test after Bianchi & Piva, IEEE TIFS 7(3), 2012)")
#: the logits' bound (contract)
LIMIT = 20.0
#: zig-zag AC frequencies, and the bound on |c|, that the grid search counts near-zero coefficients of (step 1)
GRID_FREQUENCIES, GRID_ZERO = 35, 0.6


def grid_offset(luma: np.ndarray, window: int) -> tuple[int, int]:
    """``(dy, dx)`` of the 8×8 grid on which most AC coefficients are near zero (module docstring, step 1)."""
    h, w = luma.shape
    top, left = max(0, (h - window) // 2), max(0, (w - window) // 2)
    crop = luma[top:top + window + BLOCK, left:left + window + BLOCK]
    rows, cols = (list(axis) for axis in zip(*zigzag()[1:1 + GRID_FREQUENCIES]))
    best, offset = -1.0, (0, 0)
    for dy in range(BLOCK):
        for dx in range(BLOCK):
            c = block_dct(crop[dy:dy + window, dx:dx + window])
            zeros = float((np.abs(c[:, :, rows, cols]) < GRID_ZERO).mean()) if c.size else -1.0
            if zeros > best:
                best, offset = zeros, ((top + dy) % BLOCK, (left + dx) % BLOCK)
    return offset


def lattice_step(c: np.ndarray, max_step: int, tolerance: float, min_share: float) -> tuple[int, float]:
    """(step, root mean square distance to the lattice within the tolerance) of one frequency's coefficients
    ``c``; step 1 when no lattice holds (module docstring, step 2)."""
    shares = {}
    for q in range(3, max_step + 1):
        big = c[np.abs(c) >= q / 2]
        if big.size < MIN_SAMPLES:
            break
        chance = 2 * tolerance / q
        near = np.abs(big - q * np.round(big / q)) < tolerance
        shares[q] = (float(near.mean()) - chance) / (1 - chance)
    floor = max([min_share] + [0.8 * s for s in shares.values()])
    passing = [q for q, s in shares.items() if s >= floor]
    if not passing:
        return 1, 0.0
    q = max(passing)
    big = c[np.abs(c) >= q / 2]
    d = big - q * np.round(big / q)
    return q, float(np.sqrt(np.mean(d[np.abs(d) < tolerance] ** 2)))


@register_model("jpeglattice", paper=PAPER,
                description="regions off a decoded JPEG's quantisation lattice (Fan & de Queiroz 2003); no weights")
class JpegLattice(PhotoExpert):
    """See the module docstring."""

    finding = "a region was changed after the photo was decoded from a JPEG (it lies off the photo's JPEG lattice)"

    def __init__(self, frequencies: int = 15, max_step: int = 40, tolerance: float = 0.75, min_share: float = 0.6,
                 min_step: int = 3, min_frequencies: int = 3, min_magnitude: float = 2.0, min_noise: float = 0.36,
                 wide: float = 0.04, wide_noise: float = 1.0, outlier: float = 0.005, min_coefficients: int = 4,
                 smoothing: int = 3, threshold: float = 2.0, min_area: int = 1024, grid_window: int = 512,
                 weight: float = 1.0):
        super().__init__()
        for name, value, low in (("frequencies", frequencies, 1), ("max_step", max_step, 3), ("min_step", min_step, 3),
                                 ("min_frequencies", min_frequencies, 1), ("min_coefficients", min_coefficients, 1),
                                 ("smoothing", smoothing, 1), ("min_area", min_area, 1),
                                 ("grid_window", grid_window, 4 * BLOCK)):
            if int(value) != value or value < low:
                raise UserError(f"jpeglattice: {name} must be an integer >= {low}, got {value}")
        if frequencies > BLOCK * BLOCK - 1 or smoothing % 2 == 0:
            raise UserError(f"jpeglattice: frequencies must be at most 63 and smoothing odd, got {frequencies}, "
                            f"{smoothing}")
        if not (0 < tolerance < 1.5 and 0 < min_share <= 1 and min_noise > 0 and wide_noise > 0 and wide >= 0
                and outlier > 0 and wide + outlier < 1 and weight > 0):
            raise UserError("jpeglattice: need 0 < tolerance < 1.5, 0 < min_share <= 1, min_noise > 0, wide_noise > 0, "
                            f"wide >= 0, outlier > 0, wide + outlier < 1 and weight > 0, got {tolerance}, {min_share}, "
                            f"{min_noise}, {wide_noise}, {wide}, {outlier}, {weight}")
        self.frequencies, self.max_step, self.min_step = int(frequencies), int(max_step), int(min_step)
        self.tolerance, self.min_share, self.min_frequencies = float(tolerance), float(min_share), int(min_frequencies)
        self.min_magnitude, self.min_noise = float(min_magnitude), float(min_noise)
        self.wide, self.wide_noise, self.outlier = float(wide), float(wide_noise), float(outlier)
        self.min_coefficients, self.smoothing, self.threshold = int(min_coefficients), int(smoothing), float(threshold)
        self.min_area, self.grid_window, self.weight = int(min_area), int(grid_window), float(weight)

    def on_lattice_density(self, d: np.ndarray, q: int, sigma: float) -> np.ndarray:
        """``p_on(d)``: the density of a coefficient's distance to the lattice of step ``q`` (step 3)."""
        def normal(s):
            return np.exp(-0.5 * (d / s) ** 2) / (s * np.sqrt(2 * np.pi))
        return (1 - self.wide - self.outlier) * normal(sigma) + self.wide * normal(self.wide_noise) + self.outlier / q

    def block_evidence(self, rgb: np.ndarray) -> tuple[np.ndarray | None, tuple[int, int]]:
        """(``bh×bw`` log-likelihood ratio "off" against "on the lattice" of each complete block on the photo's
        grid, or None without a lattice; the grid offset) for one uint8 RGB photo (module docstring, steps 1–3)."""
        luma = jfif_luma(rgb)
        if min(luma.shape) < 4 * BLOCK:
            return None, (0, 0)
        dy, dx = grid_offset(luma, self.grid_window)
        coefficients = block_dct(luma[dy:, dx:])
        bh, bw = coefficients.shape[:2]
        if bh * bw < MIN_SAMPLES:
            return None, (dy, dx)
        pixels = rgb[dy:dy + bh * BLOCK, dx:dx + bw * BLOCK]
        usable = ~((pixels == 0) | (pixels == 255)).any(2).reshape(bh, BLOCK, bw, BLOCK).any((1, 3))
        ratio, informative, used = np.zeros((bh, bw)), np.zeros((bh, bw), int), 0
        for i, j in zigzag()[1:1 + self.frequencies]:
            c = coefficients[:, :, i, j]
            q, sigma = lattice_step(c[usable], self.max_step, self.tolerance, self.min_share)
            if q < self.min_step:
                continue
            used += 1
            density = self.on_lattice_density(c - q * np.round(c / q), q, max(sigma, self.min_noise))
            big = np.abs(c) >= self.min_magnitude
            ratio += np.where(big, -np.log(q * density), 0.0)
            informative += big
        if used < self.min_frequencies:
            return None, (dy, dx)
        return np.where(usable & (informative >= self.min_coefficients), ratio, 0.0), (dy, dx)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """(``H×W`` float32 mask logits, image logit) of one uint8 RGB photo (module docstring, step 4 and
        contract)."""
        out = np.full(rgb.shape[:2], -LIMIT, np.float32)
        ratio, (dy, dx) = self.block_evidence(rgb)
        if ratio is None:
            return out, -LIMIT
        smoothed = cv2.blur(ratio, (self.smoothing, self.smoothing), borderType=cv2.BORDER_REPLICATE)
        _, labels, stats, _ = cv2.connectedComponentsWithStats((smoothed > self.threshold).astype(np.uint8),
                                                               connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA] * BLOCK * BLOCK
        large = np.flatnonzero(areas >= self.min_area)
        logits = np.clip(self.weight * (smoothed - self.threshold), -LIMIT, LIMIT)
        logits = np.where(np.isin(labels, 1 + large), logits, np.minimum(logits, -1.0))
        paint_blocks(out, logits, dy, dx)
        return out, (float(np.log(areas[large].max() / self.min_area)) if large.size else -LIMIT)

    def photo_logits(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        return self.detect(rgb)
