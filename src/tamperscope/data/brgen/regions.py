"""Perception stage, built-in back end: region masks without detectors (paper 001 §3.2.1; weight-free
stand-ins: resolved choice).

BR-Gen edits two kinds of region per real photo: **Stuff** (sky, ground, wall, grass ... found by
GroundingDINO + SAM2) and **Background** (the inverse of a "thing" mask). Without weights we build the same
kinds of region from image statistics:

``thing``       object-like blobs: SLIC superpixels grown greedily by colour similarity from a seed segment
                ("segments"), or a random star-convex shape ("star").
``stuff``       large smooth regions: a top/bottom band whose boundary follows the strongest horizontal colour
                edge (sky / ground, "band-top" / "band-bottom"), a low-texture colour region grown from a
                smooth seed ("smooth"), or a thresholded fractal-noise field ("fractal").
``background``  the inverse of a finished thing mask.

Every strategy produces a scalar *field* (low = inside) at an analysis resolution (longest side
``ANALYSIS_SIDE``); the field is upsampled to the photo and thresholded at the quantile that gives the target
area exactly. The mask is then cleaned by a morphological open + close and a 5-px Gaussian feather that is
re-binarised at 0.5 (resolved choice). Area bins follow the paper's Table 7 (<20/<40/<60/<80/<100 % of the image).

Resolved ambiguities:
- The fractal field is an fBm of bicubically upsampled random lattices (3 octaves, base cell 128 px,
  persistence 0.5) instead of simplex noise (``backbones.simplex``): the same low-frequency character at a
  fraction of the cost, and any thresholded smooth field serves as a stuff-like shape.
- Which area bins a region type can produce (``area_policy``): ``paper`` (default) — stuff reaches every bin
  below 80 % (<20 ... <80: the paper reports a <20 % bin in Table 7, and BR-Gen's only small regions are Stuff),
  thing 2–20 % (<20), background the inverse of such a thing (<100); ``table7`` lets things and backgrounds reach
  more of Table 7's bins too (thing <20/<40, background <60..<100), for datasets that should cover all five bins
  evenly. The limits apply to these built-in regions only: detected regions (the GroundingDINO + SAM back end)
  keep the area the detector gives them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from ...report.visualize import fit_within

ANALYSIS_SIDE = 256
FEATHER_PX = 5
AREA_BINS = ("<20", "<40", "<60", "<80", "<100")
REGION_TYPES = ("stuff", "background", "thing")
REGION_LABELS = {"stuff": "Stuff", "background": "Background", "thing": "Thing"}
AREA_POLICIES = {
    "paper": {"thing": ("<20",), "stuff": ("<20", "<40", "<60", "<80"), "background": ("<100",)},
    "table7": {"thing": ("<20", "<40"), "stuff": ("<20", "<40", "<60", "<80"), "background": ("<60", "<80", "<100")},
}
THING_SHAPES = ("segments", "star")
STUFF_SHAPES = ("band-top", "band-bottom", "smooth", "fractal")
# margin (area fraction) kept from the bin edges when drawing a target area, so cleaning cannot leave the bin
_BIN_MARGIN = 0.025
_MIN_AREA = 0.03
_MAX_AREA = 0.97


def compatible_bins(kind: str, policy: str = "paper") -> tuple[str, ...]:
    """The area bins a region type may produce under an area policy (module docstring)."""
    if policy not in AREA_POLICIES:
        raise ValueError(f"unknown area policy {policy!r}; choose from {', '.join(AREA_POLICIES)}")
    return AREA_POLICIES[policy][kind]


def bin_range(name: str) -> tuple[float, float]:
    """The half-open area interval ``[lo, hi)`` (fractions of the image) of an area bin such as ``"<40"``."""
    if name not in AREA_BINS:
        raise ValueError(f"unknown area bin {name!r}; choose from {', '.join(AREA_BINS)}")
    i = AREA_BINS.index(name)
    return i / 5, (i + 1) / 5


def area_bin_of(fraction: float) -> str:
    """The area bin (``"<20"`` ... ``"<100"``) holding a mask area fraction in (0, 1)."""
    return AREA_BINS[min(int(fraction * 5), len(AREA_BINS) - 1)]


def draw_target_area(bin_name: str, rng: np.random.Generator) -> float:
    """A target area fraction drawn uniformly inside a bin, away from its edges."""
    lo, hi = bin_range(bin_name)
    lo, hi = max(lo + _BIN_MARGIN, _MIN_AREA), min(hi - _BIN_MARGIN, _MAX_AREA)
    return float(rng.uniform(lo, hi))


@dataclass
class Region:
    """One proposed edit region: a boolean mask plus how it was found."""

    mask: np.ndarray
    kind: str
    shape: str
    category: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def area(self) -> float:
        return float(self.mask.mean())


# ------------------------------------------------------------------------------------------------------
# shared helpers


def analysis_image(image: np.ndarray) -> np.ndarray:
    """The photo downscaled (area interpolation) so its longest side is at most ``ANALYSIS_SIDE``."""
    return fit_within(image, ANALYSIS_SIDE)


def threshold_field(field_small: np.ndarray, shape: tuple[int, int], target: float) -> np.ndarray:
    """Upsample a field (low = inside) to ``shape`` and keep the ``target`` fraction of lowest values."""
    h, w = shape
    full = cv2.resize(field_small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    t = np.quantile(full, target)
    return full <= t


def finish_mask(mask: np.ndarray, feather_px: int = FEATHER_PX) -> np.ndarray:
    """Morphological open + close, then a Gaussian feather re-binarised at 0.5 (resolved choice: soft edges)."""
    h, w = mask.shape
    k = max(3, round(min(h, w) / 128)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    m = mask.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigmaX=feather_px / 2.0, borderType=cv2.BORDER_REFLECT)
    return soft > 0.5


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Negative inside, positive outside (pixels); thresholding it at t grows (t>0) or shrinks the mask."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    return outside - inside


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)


def _local_texture(gray: np.ndarray, size: int = 7) -> np.ndarray:
    """Local standard deviation of a grey image (box window)."""
    g = gray.astype(np.float32)
    mean = cv2.blur(g, (size, size))
    sq = cv2.blur(g * g, (size, size))
    return np.sqrt(np.maximum(sq - mean * mean, 0.0))


def fbm_field(shape: tuple[int, int], rng: np.random.Generator, cell: float, octaves: int = 3,
              persistence: float = 0.5) -> np.ndarray:
    """Fractal (fBm) noise: a sum of bicubically upsampled random lattices, cell size halving per octave."""
    h, w = shape
    total = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        gh, gw = int(np.ceil(h / cell)) + 3, int(np.ceil(w / cell)) + 3
        lattice = rng.standard_normal((gh, gw)).astype(np.float32)
        up = cv2.resize(lattice, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
        oy, ox = rng.integers(0, max(1, up.shape[0] - h)), rng.integers(0, max(1, up.shape[1] - w))
        total += amp * up[oy:oy + h, ox:ox + w]
        amp *= persistence
        cell = max(cell / 2.0, 2.0)
    return total


# ------------------------------------------------------------------------------------------------------
# thing fields


def star_field(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """|p - c| / R(theta) for a random star-convex radius function R (low-order Fourier series)."""
    h, w = shape
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    harmonics = int(rng.integers(3, 7))
    amps = rng.uniform(0.0, 0.35, harmonics) / np.arange(1, harmonics + 1)
    phases = rng.uniform(0, 2 * np.pi, harmonics)
    aspect = float(rng.uniform(0.6, 1.6))
    rot = float(rng.uniform(0, np.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) * aspect
    theta = np.arctan2(v, u)
    k = np.arange(1, harmonics + 1)[:, None, None]
    radius = 1.0 + (amps[:, None, None] * np.cos(k * theta[None] + phases[:, None, None])).sum(0)
    radius = np.maximum(radius, 0.3)
    dist = np.sqrt(u * u + v * v)
    return dist / radius, {"center": [round(cy / h, 4), round(cx / w, 4)], "harmonics": harmonics,
                           "aspect": round(aspect, 4)}


def segments_field(image: np.ndarray, target: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """SLIC superpixels grown greedily from a seed by colour similarity; returned as a signed distance."""
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    labels = slic(image, n_segments=150, compactness=10.0, start_label=0, channel_axis=-1)
    n = int(labels.max()) + 1
    lab = _lab(image).reshape(-1, 3)
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    means = np.stack([np.bincount(flat, weights=lab[:, c], minlength=n) for c in range(3)], 1) / np.maximum(
        counts[:, None], 1)
    # adjacency from horizontally and vertically neighbouring label pairs
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    adj = np.zeros((n, n), bool)
    adj[pairs[:, 0], pairs[:, 1]] = True
    adj[pairs[:, 1], pairs[:, 0]] = True
    # seed: a segment away from the border (objects rarely touch every edge)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    interior = np.setdiff1d(np.arange(n), border)
    seed = int(rng.choice(interior if interior.size else np.arange(n)))
    member = np.zeros(n, bool)
    member[seed] = True
    area = counts[seed]
    goal = target * h * w
    while area < goal:
        frontier = np.flatnonzero(adj[member].any(0) & ~member)
        if frontier.size == 0:
            break
        region_mean = (means[member] * counts[member, None]).sum(0) / counts[member].sum()
        cost = np.linalg.norm(means[frontier] - region_mean, axis=1) + rng.uniform(0, 4.0, frontier.size)
        pick = frontier[int(np.argmin(cost))]
        member[pick] = True
        area += counts[pick]
    return signed_distance(member[labels]), {"seed_segment": seed, "segments": int(member.sum())}


# ------------------------------------------------------------------------------------------------------
# stuff fields


def band_field(image: np.ndarray, target: float, top: bool, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A top (sky) or bottom (ground) band whose boundary follows the strongest horizontal colour edge."""
    h, w = image.shape[:2]
    lab = cv2.GaussianBlur(_lab(image), (0, 0), 1.5)
    grad = np.linalg.norm(cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3), axis=2)
    h0 = target * h if top else (1.0 - target) * h
    rows = np.arange(h, dtype=np.float32)[:, None]
    window = 0.15 * h
    score = grad / (grad.max() + 1e-6) - 0.8 * np.abs(rows - h0) / window
    score[np.abs(rows[:, 0] - h0) > window] = -np.inf
    boundary = np.argmax(score, axis=0).astype(np.float32)
    boundary = ndimage.median_filter(boundary, size=max(3, w // 10), mode="nearest")
    boundary = ndimage.gaussian_filter1d(boundary, sigma=max(1.0, w / 40), mode="nearest")
    period = rng.uniform(0.3, 1.0) * w
    amp = rng.uniform(0.0, 0.03) * h
    boundary += amp * np.sin(2 * np.pi * np.arange(w) / period + rng.uniform(0, 2 * np.pi))
    field_ = rows - boundary[None, :] if top else boundary[None, :] - rows
    return np.broadcast_to(field_, (h, w)).copy(), {"wave_amplitude": round(float(amp / h), 4)}


def smooth_field(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A low-texture colour region: colour distance to a smooth seed, plus texture and distance penalties."""
    h, w = image.shape[:2]
    lab = _lab(image)
    texture = _local_texture(lab[..., 0])
    smooth_pixels = np.flatnonzero(texture.ravel() <= np.quantile(texture, 0.3))
    seed = int(rng.choice(smooth_pixels))
    sy, sx = divmod(seed, w)
    y0, y1, x0, x1 = max(0, sy - 3), min(h, sy + 4), max(0, sx - 3), min(w, sx + 4)
    seed_colour = lab[y0:y1, x0:x1].reshape(-1, 3).mean(0)
    colour = np.linalg.norm(lab - seed_colour, axis=2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    spatial = np.sqrt((yy - sy) ** 2 + (xx - sx) ** 2) / np.hypot(h, w)
    field_ = colour / (colour.std() + 1e-6) + texture / (texture.std() + 1e-6) * 0.5 + 2.0 * spatial
    field_ = cv2.GaussianBlur(field_.astype(np.float32), (0, 0), max(1.0, min(h, w) / 64))
    return field_, {"seed": [round(sy / h, 4), round(sx / w, 4)]}


# ------------------------------------------------------------------------------------------------------
# the back end


class BuiltinRegions:
    """Weight-free region proposals (resolved choice: module docstring); ``propose`` returns a finished
    :class:`Region`."""

    name = "builtin"
    decides_area = False  # drawn to a target area, so the area policy's bins apply

    def propose(self, image: np.ndarray, kind: str, target: float, rng: np.random.Generator) -> Region:
        """A ``kind`` region (``thing``/``stuff``/``background``) covering about ``target`` of ``image``."""
        if kind == "background":
            thing = self.propose(image, "thing", 1.0 - target, rng)
            params = dict(thing.params, target_area=round(target, 4))
            return Region(~thing.mask, "background", thing.shape, None, params)
        small = analysis_image(image)
        shape = image.shape[:2]
        if kind == "thing":
            strategy = str(rng.choice(THING_SHAPES))
            if strategy == "star":
                field_, params = star_field(small.shape[:2], rng)
            else:
                field_, params = segments_field(small, target, rng)
        elif kind == "stuff":
            strategy = str(rng.choice(STUFF_SHAPES))
            if strategy.startswith("band"):
                field_, params = band_field(small, target, strategy == "band-top", rng)
            elif strategy == "smooth":
                field_, params = smooth_field(small, rng)
            else:
                cell = 128.0 * small.shape[0] / shape[0]
                field_, params = fbm_field(small.shape[:2], rng, cell=max(cell, 4.0)), {"octaves": 3}
        else:
            raise ValueError(f"unknown region type {kind!r}; choose from {', '.join(REGION_TYPES)}")
        mask = finish_mask(threshold_field(field_, shape, target))
        params["target_area"] = round(target, 4)
        return Region(mask, kind, strategy, None, params)
