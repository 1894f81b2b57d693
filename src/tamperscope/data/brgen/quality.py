"""Evaluation stage, built-in back end: weight-free quality filters (paper 001 §3.2.3;
weight-free stand-ins: resolved choice).

BR-Gen filters its forgeries with (a) BRISQUE > 60 rejected, (b) DreamSim similarity to the original and
(c) CLIP prompt alignment. Without weights:

(a) naturalness  MSCN coefficients (Mittal et al., the features BRISQUE is built on) of the whole forgery;
                 the GGD shape parameter alpha is fitted by moment matching and must lie in the range seen on
                 the real pool [min, max], widened on each side by ``naturalness_margin`` x (max - min) +
                 ``naturalness_min_pad`` (the pad keeps a small or uniform pool from rejecting everything).
(b) similarity   outside the mask the forgery must equal the photo: PSNR >= ``min_psnr_outside`` dB and SSIM
                 (grey, 7x7 windows wholly outside the mask) >= ``min_ssim_outside``. Inside the mask the edit
                 must be visible: mean absolute change >= ``min_change_mad`` grey levels or the colour-
                 histogram chi-square (8x8x8 RGB bins, 0.5 sum (p-q)^2/(p+q), in [0, 1]) >= ``min_change_chi2``,
                 and chi-square <= ``max_change_chi2`` (not an alien colour distribution).
(c) alignment    needs CLIP weights: done by the model back end when given, otherwise recorded as skipped.
(d) seam         mean gradient magnitude on the 3-px mask boundary over that of the ring around it
                 (8 px each side, boundary excluded). Resolved ambiguity: the forgery's ratio is divided by the
                 same ratio on the authentic photo (floored at 1) before the "> 3 rejects" rule, so a mask that
                 follows a real edge (the sky line a band region is snapped to) is not rejected for that edge.
PSNR of identical pixels is reported as 100 dB (JSON has no infinity).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy.special import gammaln

PSNR_CAP = 100.0
_ALPHA_GRID = np.arange(0.2, 10.0, 0.001)
_RATIO_GRID = np.exp(gammaln(1 / _ALPHA_GRID) + gammaln(3 / _ALPHA_GRID) - 2 * gammaln(2 / _ALPHA_GRID))


@dataclass
class QualityThresholds:
    """Acceptance thresholds of the built-in quality filters (see the module docstring)."""

    naturalness_margin: float = 0.1
    naturalness_min_pad: float = 0.2
    min_psnr_outside: float = 40.0
    min_ssim_outside: float = 0.98
    min_change_mad: float = 2.0
    min_change_chi2: float = 0.02
    max_change_chi2: float = 0.9
    max_seam_ratio: float = 3.0

    def to_dict(self) -> dict:
        return asdict(self)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)


def mscn_coefficients(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (7x7 Gaussian window, sigma 7/6, C = 1)."""
    mu = cv2.GaussianBlur(gray, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
    var = cv2.GaussianBlur(gray * gray, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu
    return (gray - mu) / (np.sqrt(np.abs(var)) + 1.0)


def ggd_shape(values: np.ndarray) -> float:
    """Shape alpha of a zero-mean generalised Gaussian fitted by moment matching (E[x^2] / E[|x|]^2)."""
    x = np.asarray(values, np.float64).ravel()
    rho = np.mean(x * x) / (np.mean(np.abs(x)) ** 2 + 1e-12)
    return float(_ALPHA_GRID[int(np.argmin(np.abs(_RATIO_GRID - rho)))])


def naturalness_alpha(image: np.ndarray) -> float:
    """GGD shape of the MSCN coefficients of an RGB uint8 image."""
    return ggd_shape(mscn_coefficients(_gray(image)))


@dataclass
class NaturalnessRange:
    """The accepted interval of MSCN GGD shapes, calibrated on the real photos."""

    low: float
    high: float
    pool_min: float
    pool_max: float
    n_photos: int

    @classmethod
    def calibrate(cls, alphas: list[float], margin: float, min_pad: float) -> "NaturalnessRange":
        lo, hi = float(min(alphas)), float(max(alphas))
        pad = margin * (hi - lo) + min_pad
        return cls(round(lo - pad, 4), round(hi + pad, 4), round(lo, 4), round(hi, 4), len(alphas))

    def accepts(self, alpha: float) -> bool:
        return self.low <= alpha <= self.high


def psnr_outside(original: np.ndarray, forged: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) over the pixels outside the mask; ``PSNR_CAP`` when they are identical."""
    outside = ~mask
    if not outside.any():
        return PSNR_CAP
    diff = original[outside].astype(np.float64) - forged[outside].astype(np.float64)
    mse = float(np.mean(diff * diff))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(255.0 ** 2 / mse))


def ssim_outside(original: np.ndarray, forged: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean grey SSIM over 7x7 windows lying wholly outside the mask (None if there are none)."""
    from skimage.metrics import structural_similarity

    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    if not far.any():
        return None
    _, smap = structural_similarity(_gray(original), _gray(forged), data_range=255.0, win_size=7, full=True)
    return float(smap[far].mean())


def colour_chi2(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Chi-square distance 0.5 sum (p-q)^2/(p+q) between the RGB histograms of two N x 3 pixel sets."""
    def hist(px: np.ndarray) -> np.ndarray:
        q = (px.astype(np.int64) * bins) // 256
        idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
        h = np.bincount(idx, minlength=bins ** 3).astype(np.float64)
        return h / max(h.sum(), 1.0)
    p, q = hist(a), hist(b)
    denom = p + q
    nz = denom > 0
    return float(0.5 * np.sum((p[nz] - q[nz]) ** 2 / denom[nz]))


def _boundary_and_ring(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = mask.astype(np.uint8)
    k3 = np.ones((3, 3), np.uint8)
    boundary = cv2.dilate(m, k3, iterations=1).astype(bool) & ~cv2.erode(m, k3, iterations=2).astype(bool)
    wide = cv2.dilate(m, k3, iterations=9).astype(bool) & ~cv2.erode(m, k3, iterations=10).astype(bool)
    return boundary, wide & ~boundary


def seam_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean Sobel gradient magnitude on the 3-px mask boundary divided by that on the ring around it."""
    g = _gray(image)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3))
    boundary, ring = _boundary_and_ring(mask)
    if not boundary.any() or not ring.any():
        return 1.0
    return float(mag[boundary].mean() / (mag[ring].mean() + 1e-6))


def evaluate_forgery(original: np.ndarray, forged: np.ndarray, mask: np.ndarray,
                     naturalness: NaturalnessRange | None,
                     thresholds: QualityThresholds) -> tuple[dict, list[str]]:
    """All built-in quality scores of one forgery and the list of rejection reasons (empty = accepted)."""
    reasons: list[str] = []
    scores: dict = {}
    alpha = naturalness_alpha(forged)
    scores["mscn_alpha"] = round(alpha, 4)
    if naturalness is not None and not naturalness.accepts(alpha):
        reasons.append("naturalness")
    psnr = psnr_outside(original, forged, mask)
    ssim = ssim_outside(original, forged, mask)
    scores["psnr_outside"] = round(psnr, 3)
    scores["ssim_outside"] = None if ssim is None else round(ssim, 5)
    if psnr < thresholds.min_psnr_outside or (ssim is not None and ssim < thresholds.min_ssim_outside):
        reasons.append("outside_changed")
    inside_o, inside_f = original[mask], forged[mask]
    mad = float(np.abs(inside_o.astype(np.int16) - inside_f.astype(np.int16)).mean())
    chi2 = colour_chi2(inside_o, inside_f)
    scores["change_mad"] = round(mad, 4)
    scores["change_chi2"] = round(chi2, 5)
    if mad < thresholds.min_change_mad and chi2 < thresholds.min_change_chi2:
        reasons.append("no_visible_change")
    if chi2 > thresholds.max_change_chi2:
        reasons.append("change_too_large")
    seam = seam_ratio(forged, mask) / max(1.0, seam_ratio(original, mask))
    scores["seam_ratio"] = round(seam, 4)
    if seam > thresholds.max_seam_ratio:
        reasons.append("seam")
    return scores, reasons
