"""Aligned double-JPEG localisation (Bianchi & Piva, "Image forgery localization via block-grained analysis of JPEG
artifacts", IEEE TIFS 7(3), 2012, §III–IV, the A-DJPG case).

A weight-free expert. A photo saved twice as JPEG on the same 8×8 grid carries the double-quantisation trace in
every block: after quantisation with step ``Q1`` and again with ``Q2``, a DCT coefficient can only take the values
``k·Q2`` that some multiple of ``Q1`` rounds to, so its histogram is periodic, with empty or doubled bins. A region
pasted from another photo (resampled, shifted off the grid, or never compressed) was quantised once by ``Q2``
only and lacks the trace. The expert gives each 8×8 block the log-likelihood ratio "quantised once" against
"quantised twice".

1. **DCT** (§II): the luminance ``Y = 0.299 R + 0.587 G + 0.114 B − 128`` (JPEG's JFIF transform) in 8×8 blocks on
   the grid from the top-left corner (an uncropped JPEG's grid), orthonormal 2-D DCT (JPEG's FDCT scaling).
2. **Last quantisation step** ``Q2`` for each of the first ``frequencies`` (15) AC frequencies in zig-zag order.
   Resolved choice: the paper reads ``Q2`` from the JPEG file; here it is estimated from the decoded pixels, so the
   expert keeps the RGB model contract and also reads JPEGs re-saved as PNG. ``Q2`` is the largest step ≤
   ``max_step`` whose lattice holds the coefficients ``|c| ≥ Q2/2``: their circular mean ``R = |E exp(2πi c/Q2)|``
   implies a rounding noise ``σ = Q2·√(−ln R / 2π²)`` below ``max_noise`` (0.8; decoding rounds to integers).
   A frequency whose step is 1 (no lattice) gives no evidence.
3. **First quantisation step** ``Q1`` (§III-B): ``k = round(c/Q2)``; under double quantisation the probability of
   ``k`` is the single-quantisation probability times ``n(k)·Q1/Q2``, where ``n(k)`` counts the integers ``v`` with
   ``round(v·Q1/Q2) = k`` (eq. 5's periodic factor). ``Q1`` is the step in ``1 … 2·Q2 + 15`` (≠ ``Q2``) that
   maximises the mean log-likelihood of the nonzero ``k`` under the mixture ``α·n(k)Q1/Q2 + (1 − α)``. Resolved
   choice: the paper fits the mixture weight by EM; here it is fixed (``alpha`` 0.9), and a frequency whose best
   ``Q1`` gains less than ``min_gain`` (0.02) nats per coefficient over single quantisation shows no double
   compression and gives no evidence.
4. **Block likelihood ratio** (§III-C, eq. 9): the sum over the frequencies with evidence of
   ``−log(α·n(k)·Q1/Q2 + 1 − α)``; coefficients quantised to zero carry no information and add nothing.
5. **Map** (§IV): the ratio map is averaged over ``smoothing``×``smoothing`` blocks (3), as the paper filters the
   likelihood map before deciding.

Contract:
- ``mask_logits``: ``weight`` × the smoothed ratio (+ ``offset`` where the photo shows double compression), set
  on every pixel of its 8×8 block; 0 — no evidence either way — on a photo without double compression and on the
  incomplete blocks at the right and bottom border. ``weight`` 1, ``offset`` 0 make ``sigmoid`` the posterior at an
  even prior; a fused checkpoint stores the weight and offset chosen on validation data (docs/MODELS.md).
- ``image_logit``: the largest mask logit (the strongest block evidence; not calibrated).
- ``evidence = True``: in a fused checkpoint its logits are added to the learned model's
  (:mod:`tamperscope.engine.experts`); it never fires or decides a verdict.
- ``native_resolution = True``, ``input_multiple = 1`` (:class:`~tamperscope.models.base.PhotoExpert`): resampling
  erases the grid, so it reads each photo at its own size, and padding would add blocks that are not the photo's.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import UserError
from ..nn.jpeg import BLOCK, MIN_SAMPLES, block_dct, jfif_luma, paint_blocks, zigzag
from ..registry import register_model
from .base import PhotoExpert

PAPER = ("Bianchi & Piva, Image forgery localization via block-grained analysis of JPEG artifacts, IEEE TIFS 7(3), "
         "2012 (aligned double JPEG)")


def estimate_step(coefficients: np.ndarray, max_step: int, max_noise: float) -> int:
    """The last quantisation step of one DCT frequency from its decoded coefficients (module docstring, step 2)."""
    best = 1
    for q in range(2, max_step + 1):
        c = coefficients[np.abs(coefficients) >= q / 2]
        if c.size < MIN_SAMPLES:
            break
        r = abs(np.exp(2j * np.pi * c / q).mean())
        if r > max(0.2, 4 / np.sqrt(c.size)) and q * np.sqrt(-np.log(r) / (2 * np.pi ** 2)) < max_noise:
            best = q
    return best


def bins_per_value(k: np.ndarray, q1: int, q2: int) -> np.ndarray:
    """``n(k)``: how many integers ``v`` satisfy ``round(v·q1/q2) = k`` (module docstring, step 3)."""
    low = np.ceil((k - 0.5) * q2 / q1 - 1e-9)
    high = np.floor((k + 0.5) * q2 / q1 - 1e-9)
    return np.maximum(high - low + 1, 0)


def first_step(values: np.ndarray, counts: np.ndarray, q2: int, alpha: float, min_gain: float) -> int | None:
    """The first quantisation step that best explains the histogram (``values`` with ``counts``) of one frequency's
    nonzero quantised coefficients, or None when none gains ``min_gain`` nats per coefficient."""
    best, step = min_gain, None
    for q1 in range(1, 2 * q2 + 16):
        if q1 == q2:
            continue
        gain = float((counts * np.log(alpha * bins_per_value(values, q1, q2) * q1 / q2 + 1 - alpha)).sum())
        if gain / counts.sum() > best:
            best, step = gain / counts.sum(), q1
    return step


@register_model("doublejpeg", paper=PAPER,
                description="aligned double-JPEG evidence per 8x8 block (Bianchi & Piva 2012); no weights")
class AlignedDoubleJpeg(PhotoExpert):
    """See the module docstring."""

    evidence = True

    def __init__(self, frequencies: int = 15, max_step: int = 40, max_noise: float = 0.8, alpha: float = 0.9,
                 min_gain: float = 0.02, smoothing: int = 3, weight: float = 1.0, offset: float = 0.0):
        super().__init__()
        if int(frequencies) != frequencies or not 1 <= frequencies <= BLOCK * BLOCK - 1:
            raise UserError(f"doublejpeg: frequencies must be an integer in 1..63, got {frequencies}")
        if int(max_step) != max_step or max_step < 2:
            raise UserError(f"doublejpeg: max_step must be an integer >= 2, got {max_step}")
        if int(smoothing) != smoothing or smoothing < 1 or smoothing % 2 == 0:
            raise UserError(f"doublejpeg: smoothing must be an odd integer >= 1, got {smoothing}")
        if not 0 < alpha < 1 or max_noise <= 0 or min_gain < 0 or weight < 0:
            raise UserError(f"doublejpeg: need 0 < alpha < 1, max_noise > 0, min_gain >= 0 and weight >= 0, got "
                            f"{alpha}, {max_noise}, {min_gain}, {weight}")
        self.frequencies, self.max_step, self.max_noise = int(frequencies), int(max_step), float(max_noise)
        self.alpha, self.min_gain, self.smoothing = float(alpha), float(min_gain), int(smoothing)
        self.weight, self.offset = float(weight), float(offset)

    def block_evidence(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """(``bh×bw`` log-likelihood ratio "quantised once" vs "twice" of each complete 8×8 block, number of
        frequencies that showed double compression) for one uint8 RGB photo (module docstring, steps 1–4)."""
        coefficients = block_dct(jfif_luma(rgb))
        ratio = np.zeros(coefficients.shape[:2])
        used = 0
        if ratio.size < MIN_SAMPLES:
            return ratio, used
        for i, j in zigzag()[1:1 + self.frequencies]:
            c = coefficients[:, :, i, j]
            q2 = estimate_step(c.ravel(), self.max_step, self.max_noise)
            if q2 < 2:
                continue
            k = np.round(c / q2)
            values, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
            nonzero = values != 0
            if counts[nonzero].sum() < MIN_SAMPLES:
                continue
            q1 = first_step(values[nonzero], counts[nonzero], q2, self.alpha, self.min_gain)
            if q1 is None:
                continue
            used += 1
            per_value = -np.log(self.alpha * bins_per_value(values, q1, q2) * q1 / q2 + 1 - self.alpha)
            ratio += np.where(nonzero, per_value, 0.0)[inverse].reshape(k.shape)
        return ratio, used

    def evidence_map(self, rgb: np.ndarray) -> np.ndarray:
        """``H×W`` float32 logits of one uint8 RGB photo (module docstring, step 5 and contract)."""
        h, w = rgb.shape[:2]
        out = np.zeros((h, w), np.float32)
        ratio, used = self.block_evidence(rgb)
        if used:
            smoothed = cv2.blur(ratio, (self.smoothing, self.smoothing), borderType=cv2.BORDER_REPLICATE)
            paint_blocks(out, self.weight * smoothed + self.offset)
        return out

    def photo_logits(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        logits = self.evidence_map(rgb)
        return logits, float(logits.max())
