"""Dense-field copy-move detection (Cozzolino, Poggi & Verdoliva, "Efficient dense-field copy-move forgery
detection", IEEE TIFS 10(11), 2015; GRIP's official MATLAB code ``CMFD-PM`` gives the parameter values).

A weight-free expert that marks **both** copies of a region pasted elsewhere in the same photo. Every step is
vectorised over the whole field (OpenCV filters, torch gathers); nothing loops over pixels.

1. **Features** (§III-A): the grey photo's Zernike moment magnitudes ``|Z_nm|`` of order ≤ ``zm_order`` (5: 12
   moments) over a disc of ``diameter`` (16) pixels around every pixel, computed as correlations with the
   moments' complex basis kernels. ``features="zm-polar"`` (the official demo's default, ``type_feat = 2``):
   the disc is resampled on a polar grid (26 radii × 32 angles, bilinear) and the moments are sums over that
   grid, which keeps the magnitudes invariant to rotations that are not multiples of 90°; ``"zm-cart"`` sums
   over the pixel grid. Each moment is scaled by ``√(n+1)`` (the official code's orthonormal factor). The
   magnitudes are min-max normalised over the photo as the official code does before matching.
2. **Matching** (§III-B): a nearest-neighbour field ``δ(s)`` over the photo itself with PatchMatch: random
   initialisation, propagation of the neighbours' offsets with zero-order ``δ(s−e)`` and first-order
   ``2δ(s−e) − δ(s−2e)`` predictors (the paper's modification that follows rotated and scaled fields), and a
   random search with halving radius, for ``iterations`` (8) rounds; offsets shorter than ``min_offset``
   (T_D1 = 8) are forbidden. Resolved choice: PatchMatch's raster scan is sequential; here each round proposes
   the neighbours at distances ``max_jump``, …, 4, 2, 1 for all pixels at once (jump flooding; from above and
   the left in even rounds, from below and the right in odd ones, as PatchMatch alternates its scan order),
   which spreads a good offset over a region in a logarithmic number of steps instead of one scan.
3. **Post-processing** (§III-C): the field is median-filtered over a disc of radius ``median_radius`` (ρ_M = 4);
   dense linear fitting: at each pixel an affine model ``δ(s') ≈ A s' + b`` is fitted over a disc of radius
   ``fit_radius`` (ρ_N = 6) and pixels whose summed squared fitting error exceeds ``fit_error`` (T²_ε = 300) are
   dropped (a copied region's field is affine: translation, rotation, scaling); pixels whose clone is nearer
   than ``min_distance`` (T_D2 = 50) are dropped; regions under ``min_area`` (T_S = 1200) pixels are removed;
   the detection is mirrored onto the matched pixels ``s + δ(s)`` (so source and target are both marked),
   small regions are removed again, and the mask is dilated by a disc of ``dilation_radius`` (ρ_D = ρ_N + ρ_M).

Resolved choices for the model contract (the paper outputs a binary mask):
- **Analysis size**: every pixel parameter above (the 16-pixel window, ρ_M, ρ_N, T_D1, T_D2, T_S, ρ_D) is the
  official demo's for the paper's test photos of 1024×768 pixels. Photos under ``min_pixels`` (786 432 =
  1024×768) are upsampled (bicubic) to that pixel count, photos over ``max_pixels`` (1 MP) are downsampled
  (area), and the mask is resized back. Without the upsampling, a copy of 1 % of a 481×321 photo (1 544
  pixels) loses a band of about 8 pixels to the window (windows that straddle its border do not match) and 6
  more to the fitting disc, leaves a few hundred matched pixels and fails T_S = 1200 — the main cause of the
  missed small copies measured in issue 17 (docs/MODELS.md). The cost is that of a 1024×768 photo. The
  upsampling is at most ``max_upscale`` (2.5×, enough for BSDS500's 481×321): it adds no detail, so on a
  thumbnail a larger factor only inflates flat look-alike regions past T_S (validation thumbnails of 100×66 to
  100×78 pixels scored up to 0.30 at 10–12× and 0.002 at 2.5×).
- **Window on an upsampled photo** (``scale_window``, issue 17's missed translations): §III-A computes the
  features over a 16×16 block *of the photo*; upsampling by ``s`` adds no detail, so a 16-pixel window would see
  only ``16/s`` photo pixels (7 on BSDS500's 481×321 at 2.26×), and inside flat-ish copies other offsets then
  match better than the true one (measured on the validation translations: the field held the true offset at
  26–64 % of the weak copies' pixels, 51–100 % at native size). So the window keeps the paper's content: its
  diameter at the analysis size is ``round(diameter·s)`` (36 at 2.26×) while every other value stays the
  paper's at the paper's photo size. A larger window loses a wider band at the copy's border (half the window),
  so the final dilation (§III-C: ρ_D restores what the median filter and the fit erode) also restores that
  extra half-window: ``ρ_D + (round(diameter·s) − diameter) / 2``. Photos analysed at scale ≤ 1 are unchanged.
  The bundled default's fused expert sets it off (chosen on CASIA v1 val: fewer false fires on small authentic
  photos, where a fire overrides the learned map; docs/MODELS.md).
- ``mask_logits``: ``±logit(1 − eps)`` inside / outside the final mask. ``image_logit``: ``log(a / min_area)``
  with ``a`` the largest connected region that passes the fitting and distance rules, so the image probability
  ``a / (a + min_area)`` is 0.5 exactly at the paper's size rule and grows with the matched area.
- Matching is random; its generator is seeded with ``seed`` per photo, so a photo always gives the same result.
- ``native_resolution = True``, ``input_multiple = 1`` (:class:`~tamperscope.models.base.PhotoExpert`): ``predict``
  and ``evaluate`` give it the photo at its own size, unpadded.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..errors import UserError
from ..registry import register_model
from .base import PhotoExpert

PAPER = ("Cozzolino, Poggi & Verdoliva, Efficient dense-field copy-move forgery detection, IEEE TIFS 10(11), "
         "2015 (official code: GRIP CMFD-PM)")
#: the official code's polar grid for ZM-polar: radii from the centre to the border, angles around it
POLAR_GRID = (26, 32)
FEATURES = ("zm-polar", "zm-cart")
#: first-order predictions use neighbours up to this far (beyond, a field's curvature makes them unreliable)
FIRST_ORDER_JUMP = 2


def zernike_radial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """Zernike radial polynomial ``R_nm(rho)``."""
    return sum((-1) ** k * math.factorial(n - k)
               / (math.factorial(k) * math.factorial((n + m) // 2 - k) * math.factorial((n - m) // 2 - k))
               * rho ** (n - 2 * k) for k in range((n - m) // 2 + 1))


def zernike_kernels(diameter: int, order: int, polar: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``K×d×d`` complex conjugate Zernike basis ``V*_nm`` over the disc inscribed in a ``d×d`` square, for every
    ``n ≤ order``, ``0 ≤ m ≤ n``, ``n − m`` even; and the (n, m) list. Each kernel is scaled by ``√(n+1)`` and
    normalised to unit energy of the ``(0, 0)`` kernel (the official code's orthonormal ``factor``).

    ``polar=None`` ("ZM-cart"): the basis sampled on the pixel centres inside the disc. ``polar=(radii, angles)``
    ("ZM-polar", §III-A): the patch is resampled on a polar grid of ``radii`` radii from 0 to ``(d−1)/2`` and
    ``angles`` angles by bilinear interpolation and the moments are sums over that grid with the polar area
    element ``rho``; the interpolation is folded into the kernels, so it is still one correlation per kernel."""
    orders = [(n, m) for n in range(order + 1) for m in range(n % 2, n + 1, 2)]
    c = np.arange(diameter) - (diameter - 1) / 2.0  # pixel centres relative to the patch centre
    if polar is None:
        y, x = np.meshgrid(c, c, indexing="ij")
        rho, theta = np.hypot(x, y) / (diameter / 2.0), np.arctan2(y, x)
        inside = (rho <= 1.0).astype(np.float64)
        kernels = np.stack([inside * zernike_radial(n, m, rho) * np.exp(-1j * m * theta) for n, m in orders])
    else:
        radii, angles = polar
        r = np.linspace(0.0, (diameter - 1) / 2.0, radii)
        a = 2 * np.pi * np.arange(angles) / angles
        py, px = (r[:, None] * np.sin(a)[None]).ravel(), (r[:, None] * np.cos(a)[None]).ravel()
        # bilinear weights of every polar sample on every pixel: S×d×d
        interp = (np.clip(1 - np.abs(c[None, :, None] - py[:, None, None]), 0, None)
                  * np.clip(1 - np.abs(c[None, None, :] - px[:, None, None]), 0, None))
        rho = np.repeat(r / (diameter / 2.0), angles)
        theta = np.tile(a, radii)
        weights = np.stack([zernike_radial(n, m, rho) * np.exp(-1j * m * theta) * rho for n, m in orders])
        kernels = np.tensordot(weights, interp, axes=1)
    kernels = kernels * np.sqrt([n + 1.0 for n, _ in orders])[:, None, None]
    return kernels / np.sqrt((np.abs(kernels[0]) ** 2).sum()), orders


def zernike_features(grey: np.ndarray, diameter: int, order: int, polar: tuple[int, int] | None = None
                      ) -> np.ndarray:
    """``(H−d+1)×(W−d+1)×K`` moment magnitudes of every ``d×d`` window (its top-left corner indexes it),
    min-max normalised to [0, 1] over the photo."""
    kernels, _ = zernike_kernels(diameter, order, polar)
    h, w = grey.shape
    vh, vw = h - diameter + 1, w - diameter + 1
    feats = np.empty((vh, vw, len(kernels)), np.float32)
    for i, k in enumerate(kernels):
        real = cv2.filter2D(grey, cv2.CV_32F, np.ascontiguousarray(k.real, np.float32), anchor=(0, 0),
                            borderType=cv2.BORDER_REPLICATE)[:vh, :vw]
        if np.abs(k.imag).max() > 0:
            imag = cv2.filter2D(grey, cv2.CV_32F, np.ascontiguousarray(k.imag, np.float32), anchor=(0, 0),
                                borderType=cv2.BORDER_REPLICATE)[:vh, :vw]
            feats[:, :, i] = np.hypot(real, imag)
        else:
            feats[:, :, i] = np.abs(real)
    lo, hi = float(feats.min()), float(feats.max())
    return (feats - lo) / (hi - lo) if hi > lo else np.zeros_like(feats)


class OffsetField:
    """PatchMatch over one feature map matched with itself (module docstring, step 2). Offsets and coordinates are
    contiguous int32 arrays (exact: every value is under the photo's size), which halves the memory traffic of
    the integer arithmetic that dominates each cost evaluation next to the feature gather."""

    def __init__(self, features: np.ndarray, min_offset: int, generator: torch.Generator):
        self.h, self.w, k = features.shape
        self.flat = torch.from_numpy(np.ascontiguousarray(features.reshape(self.h * self.w, k)))
        self.gathered = torch.empty_like(self.flat)  # reused by every cost evaluation (no 12-channel temporaries)
        ys = torch.arange(self.h, dtype=torch.int32).view(-1, 1).expand(self.h, self.w).contiguous()
        xs = torch.arange(self.w, dtype=torch.int32).view(1, -1).expand(self.h, self.w).contiguous()
        # the offsets that keep each pixel's match inside the photo, and each pixel's own row in ``flat``
        self.low_y, self.high_y, self.low_x, self.high_x = -ys, self.h - 1 - ys, -xs, self.w - 1 - xs
        self.row = ys * self.w + xs
        self.min_offset2 = min_offset * min_offset
        self.gen = generator
        self.dy = self.randint(0, self.h) - ys
        self.dx = self.randint(0, self.w) - xs
        self.cost = torch.full((self.h, self.w), float("inf"))
        self.propose(self.dy, self.dx)

    def randint(self, low: int, high: int) -> torch.Tensor:
        """An ``h×w`` int32 array uniform in ``[low, high)`` from the field's generator."""
        return torch.randint(low, high, (self.h, self.w), generator=self.gen, dtype=torch.int32)

    def costs(self, dy: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Offsets moved inside the photo, and their squared feature distance (infinite for offsets shorter than
        ``min_offset``)."""
        dy, dx = torch.clamp(dy, self.low_y, self.high_y), torch.clamp(dx, self.low_x, self.high_x)
        torch.index_select(self.flat, 0, torch.add(self.row, dy, alpha=self.w).add_(dx).view(-1), out=self.gathered)
        cost = self.gathered.sub_(self.flat).square_().sum(1).view(self.h, self.w)
        near = torch.mul(dy, dy).addcmul_(dx, dx) < self.min_offset2
        return dy, dx, cost.masked_fill_(near, float("inf"))

    def propose(self, dy: torch.Tensor, dx: torch.Tensor) -> None:
        dy, dx, cost = self.costs(dy, dx)
        better = cost < self.cost
        torch.where(better, dy, self.dy, out=self.dy)
        torch.where(better, dx, self.dx, out=self.dx)
        torch.where(better, cost, self.cost, out=self.cost)

    def propagate(self, jump: int, directions: tuple[tuple[int, int], ...], first_order: bool) -> None:
        """Zero-order (and, with ``first_order``, first-order) predictions from the neighbours ``jump`` pixels
        away in ``directions`` ((dim, sign) pairs)."""
        for dim, sign in directions:
            shift = sign * jump
            ny, nx = torch.roll(self.dy, shift, dim), torch.roll(self.dx, shift, dim)
            self.propose(ny, nx)
            if first_order:
                self.propose(ny.mul_(2).sub_(torch.roll(self.dy, 2 * shift, dim)),
                             nx.mul_(2).sub_(torch.roll(self.dx, 2 * shift, dim)))

    def random_search(self) -> None:
        radius = max(self.h, self.w)
        while radius >= 1:
            self.propose(self.randint(-radius, radius + 1).add_(self.dy),
                         self.randint(-radius, radius + 1).add_(self.dx))
            radius //= 2

    def run(self, iterations: int, max_jump: int) -> tuple[np.ndarray, np.ndarray]:
        """PatchMatch rounds; as PatchMatch alternates its scan order, even rounds propagate from above and the
        left and odd rounds from below and the right; first-order predictions come from the nearest neighbours."""
        jumps = [1 << j for j in range(int(math.log2(max(1, max_jump))), -1, -1)]
        for i in range(iterations):
            directions = ((0, 1), (1, 1)) if i % 2 == 0 else ((0, -1), (1, -1))
            for jump in jumps:
                self.propagate(jump, directions, first_order=jump <= FIRST_ORDER_JUMP)
            self.random_search()
        return self.dy.numpy().astype(np.float32), self.dx.numpy().astype(np.float32)


def disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius).astype(np.uint8)


def median_on_disc(field: np.ndarray, radius: int) -> np.ndarray:
    """Median of ``field`` over a disc around every pixel (replicated borders)."""
    from scipy.ndimage import median_filter

    return median_filter(field, footprint=disc(radius).astype(bool), mode="nearest")


def linear_fit_error(dy: np.ndarray, dx: np.ndarray, radius: int) -> np.ndarray:
    """Summed squared error of the least-squares affine fit ``δ(s') ≈ A s' + b`` over a disc of ``radius`` around
    every pixel, for both offset components (§III-C). On the symmetric disc the normal equations decouple:
    ``SSE = Σδ² − (Σδ)²/n − (Σu_yδ)²/S − (Σu_xδ)²/S`` with ``u`` the position relative to the centre and
    ``S = Σu_y² = Σu_x²``; every sum is one correlation (replicated borders)."""
    d = disc(radius).astype(np.float64)
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    uy, ux = d * r[:, None], d * r[None, :]
    n, s = float(d.sum()), float((uy * uy).sum())
    total = np.zeros(dy.shape, np.float64)
    for f in (dy.astype(np.float64), dx.astype(np.float64)):
        def corr(k, src=f):
            return cv2.filter2D(src, cv2.CV_64F, k, borderType=cv2.BORDER_REPLICATE)
        total += corr(d, f * f) - corr(d) ** 2 / n - corr(uy) ** 2 / s - corr(ux) ** 2 / s
    return np.maximum(total, 0.0)


def remove_small(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, int]:
    """``mask`` without its 8-connected regions under ``min_area`` pixels, and the largest region's area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    return (areas >= min_area)[labels] & mask, int(areas.max()) if n > 1 else 0


def mirror(mask: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """``mask`` plus the pixels its pixels are matched to, ``s + δ(s)``."""
    ys, xs = np.nonzero(mask)
    ty = np.clip(np.rint(ys + dy[ys, xs]).astype(np.int64), 0, mask.shape[0] - 1)
    tx = np.clip(np.rint(xs + dx[ys, xs]).astype(np.int64), 0, mask.shape[1] - 1)
    out = mask.copy()
    out[ty, tx] = True
    return out


@register_model("copymove", paper=PAPER,
                description="dense-field copy-move detector (Zernike moments, PatchMatch, linear fitting); no weights")
class DenseFieldCopyMove(PhotoExpert):
    """See the module docstring."""

    finding = "a region is copied elsewhere in the same photo (both copies drawn)"

    def __init__(self, features: str = "zm-polar", diameter: int = 16, zm_order: int = 5, iterations: int = 8,
                 min_offset: int = 8, max_jump: int = 64, median_radius: int = 4, fit_radius: int = 6,
                 fit_error: float = 300.0, min_distance: int = 50, min_area: int = 1200, dilation_radius: int = 10,
                 min_pixels: int = 786_432, max_upscale: float = 2.5, max_pixels: int = 1_000_000,
                 scale_window: bool = True, seed: int = 0, eps: float = 1e-3):
        super().__init__()
        for name, value, low in (("diameter", diameter, 4), ("zm_order", zm_order, 1), ("iterations", iterations, 1),
                                 ("min_offset", min_offset, 1), ("max_jump", max_jump, 1),
                                 ("median_radius", median_radius, 0), ("fit_radius", fit_radius, 1),
                                 ("min_distance", min_distance, 0), ("min_area", min_area, 1),
                                 ("dilation_radius", dilation_radius, 0), ("min_pixels", min_pixels, 0),
                                 ("max_pixels", max_pixels, 4096)):
            if int(value) != value or value < low:
                raise UserError(f"copymove: {name} must be an integer >= {low}, got {value}")
        if features not in FEATURES:
            raise UserError(f"copymove: features must be one of {', '.join(FEATURES)}, got {features!r}")
        if min_pixels > max_pixels:
            raise UserError(f"copymove: min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
        if not max_upscale >= 1:
            raise UserError(f"copymove: max_upscale must be >= 1, got {max_upscale}")
        if fit_error <= 0 or not 0 < eps < 0.5:
            raise UserError(f"copymove: fit_error must be > 0 and eps in (0, 0.5), got {fit_error}, {eps}")
        self.features = features
        self.diameter, self.zm_order, self.iterations = int(diameter), int(zm_order), int(iterations)
        self.min_offset, self.max_jump, self.median_radius = int(min_offset), int(max_jump), int(median_radius)
        self.fit_radius, self.fit_error, self.min_distance = int(fit_radius), float(fit_error), int(min_distance)
        self.min_area, self.dilation_radius = int(min_area), int(dilation_radius)
        self.min_pixels, self.max_upscale, self.max_pixels = int(min_pixels), float(max_upscale), int(max_pixels)
        self.scale_window = bool(scale_window)
        self.seed, self.eps = int(seed), float(eps)

    def analysis_scale(self, h: int, w: int) -> float:
        """The factor a photo of ``h×w`` pixels is resized by before analysis (module docstring, analysis size)."""
        return min(math.sqrt(min(max(h * w, self.min_pixels), self.max_pixels) / float(h * w)), self.max_upscale)

    def analysis_window(self, scale: float) -> tuple[int, int]:
        """(feature window diameter, dilation radius) at the analysis size for a photo resized by ``scale``: with
        ``scale_window`` an upsampled photo's window covers the paper's ``diameter`` photo pixels and the
        dilation also restores the extra half-window it loses at a copy's border (module docstring)."""
        if not self.scale_window or scale <= 1.0:
            return self.diameter, self.dilation_radius
        diameter = round(self.diameter * scale)  # ≥ diameter, as scale > 1
        return diameter, self.dilation_radius + (diameter - self.diameter) // 2

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """(boolean ``H×W`` mask of both copies, largest matched region in pixels at the analysis size) for one
        uint8 RGB photo."""
        h, w = rgb.shape[:2]
        scale = self.analysis_scale(h, w)
        small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                    interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        sh, sw = grey.shape
        diameter, dilation = self.analysis_window(scale)
        if min(sh, sw) < diameter + 2 * self.min_offset:
            return np.zeros((h, w), bool), 0.0
        feats = zernike_features(grey, diameter, self.zm_order,
                                 POLAR_GRID if self.features == "zm-polar" else None)
        gen = torch.Generator().manual_seed(self.seed)
        dy, dx = OffsetField(feats, self.min_offset, gen).run(self.iterations, self.max_jump)
        if self.median_radius:
            dy, dx = median_on_disc(dy, self.median_radius), median_on_disc(dx, self.median_radius)
        candidates = (linear_fit_error(dy, dx, self.fit_radius) <= self.fit_error)
        candidates &= dy * dy + dx * dx >= self.min_distance ** 2
        mask, largest = remove_small(candidates, self.min_area)
        if mask.any():
            mask, _ = remove_small(mirror(mask, dy, dx), self.min_area)
        if mask.any() and dilation:
            mask = cv2.dilate(mask.astype(np.uint8), disc(dilation)).astype(bool)
        full = np.zeros((sh, sw), bool)  # the field indexes windows by their corner: move to their centres
        c = diameter // 2
        full[c:c + mask.shape[0], c:c + mask.shape[1]] = mask
        if scale != 1.0:
            full = cv2.resize(full.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return full, float(largest)

    def photo_logits(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """Contract outputs (module docstring) of one uint8 RGB photo."""
        mask, area = self.detect(rgb)
        sure = math.log((1.0 - self.eps) / self.eps)
        image_logit = min(max(math.log(max(area, 1e-3) / self.min_area), -sure), sure)
        return np.where(mask, sure, -sure).astype(np.float32), image_logit
