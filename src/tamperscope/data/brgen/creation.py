"""Creation stage, built-in back end: weight-free forgers with distinct traces (paper 001 §3.2.2;
the stand-ins are a resolved choice).

BR-Gen inpaints each region with LaMa / MAT (GAN) and SDXL / BrushNet / PowerPaint (diffusion). The built-in
forgers below need no weights and are tagged with their own names so they are never confused with those:

``cvTelea``    OpenCV Telea inpainting (radius 3-9): fast-marching smear (stands in for the GAN family).
``cvNS``       OpenCV Navier-Stokes inpainting (radius 3-9): isophote-following diffusion.
               Both then add grain: white Gaussian noise with the sigma estimated around the mask (MAD of the
               Laplacian residual), as a retoucher would; without it the noise-free fill fails the naturalness
               filter for any large region (resolved ambiguity: the spec names only ``cv2.inpaint``).
``exemplar``   a texture patch (from outside the mask, or from another photo) mirror-tiled over the region and
               Poisson-blended into it (``cv2.seamlessClone``): periodic texture, gradient-domain seam.
``splice``     content from another photo (random scale and crop, partial colour transfer) pasted in:
               foreign sensor noise and a hard boundary.
``copymove``   the same photo warped by a random scale / rotation / shift (bilinear resampling) pasted in.
``pseudoLDM``  latent-style re-synthesis: another region blurred, downsampled x1/8 and upsampled (bicubic),
               latent and resampling noise, an 8x8 block periodicity aligned with the image grid, mean
               colour pulled toward the surrounding ring (the context conditioning of latent inpainters).

Every forger returns the full image with pixels outside the mask copied from the input (a hard composite),
so the unchanged part of a forgery is bit-identical to the authentic photo in lossless output.
Donor photos (for ``splice`` and optionally ``exemplar`` / ``pseudoLDM``) are drawn by the pipeline from
the same split as the target photo so no content leaks across splits.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np


@dataclass
class Donor:
    """Another real photo lent to a forger, with its source name (recorded in the metadata)."""

    image: np.ndarray
    source: str


DonorFn = Callable[[np.random.Generator], Donor]


def composite(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``generated`` inside ``mask``, ``original`` outside (uint8 RGB)."""
    out = original.copy()
    out[mask] = generated[mask]
    return out


def cover_crop(src: np.ndarray, h: int, w: int, rng: np.random.Generator,
               scale_range: tuple[float, float] = (1.0, 1.5)) -> tuple[np.ndarray, dict]:
    """Resize ``src`` to cover ``h x w`` times a random extra scale, then crop a random ``h x w`` window."""
    sh, sw = src.shape[:2]
    scale = max(h / sh, w / sw) * rng.uniform(*scale_range)
    nh, nw = max(h, int(np.ceil(sh * scale))), max(w, int(np.ceil(sw * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    big = cv2.resize(src, (nw, nh), interpolation=interp)
    y, x = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
    return big[y:y + h, x:x + w], {"donor_scale": round(float(scale), 4), "donor_offset": [y, x]}


def ring_or_outside(mask: np.ndarray, width: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    return ring if ring.any() else ~mask


class Creator(abc.ABC):
    """A forger: ``create(image, mask, rng, donor, prompt) -> (forged uint8 image, params)``."""

    tag = ""
    family = ""
    backend = "builtin"
    needs_prompt = False

    @abc.abstractmethod
    def create(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, donor: DonorFn,
               prompt: str | None = None) -> tuple[np.ndarray, dict]:
        """The forged photo (pixels outside ``mask`` equal to ``image``) and the parameters drawn."""


def noise_sigma(image: np.ndarray, where: np.ndarray) -> float:
    """Per-channel noise level of ``image`` over ``where`` (mean over channels): robust MAD of the 4-neighbour
    Laplacian residual, divided by sqrt(20), the residual gain for white noise."""
    lap = cv2.Laplacian(image.astype(np.float32), cv2.CV_32F, ksize=1)[where]
    if lap.size == 0:
        return 0.0
    mad = np.median(np.abs(lap - np.median(lap, axis=0)), axis=0)
    return float(1.4826 * mad.mean() / np.sqrt(20.0))


class OpenCVInpaint(Creator):
    """``cv2.inpaint`` with Telea's fast marching or the Navier-Stokes method, radius 3-9 (stand-in (i)), plus grain
    matched to the surrounding noise level."""

    family = "classical-inpainting"

    def __init__(self, tag: str, flag: int):
        self.tag, self.flag = tag, flag

    def create(self, image, mask, rng, donor, prompt=None):
        h, w = image.shape[:2]
        radius = int(rng.integers(3, 10))
        filled = cv2.inpaint(image, mask.astype(np.uint8) * 255, radius, self.flag).astype(np.float32)
        sigma = noise_sigma(image, ring_or_outside(mask, max(4, min(h, w) // 32)))
        filled += rng.normal(0.0, sigma, filled.shape).astype(np.float32)
        out = np.clip(filled, 0, 255).round().astype(np.uint8)
        return composite(image, out, mask), {"radius": radius, "grain_sigma": round(sigma, 4)}


def _mirror_tile(patch: np.ndarray, h: int, w: int) -> np.ndarray:
    """Tile a patch over ``h x w`` with alternate tiles mirrored, so tile borders meet without jumps."""
    block = np.concatenate([np.concatenate([patch, patch[:, ::-1]], 1),
                            np.concatenate([patch[::-1], patch[::-1, ::-1]], 1)], 0)
    reps = (int(np.ceil(h / block.shape[0])), int(np.ceil(w / block.shape[1])), 1)
    return np.tile(block, reps)[:h, :w]


def poisson_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson (gradient-domain) blending of ``source`` into ``target`` over ``mask``, in place.

    The images are reflect-padded so the mask never touches the border (``seamlessClone`` needs its ROI
    strictly inside the image); the padded mask's bounding box is cloned onto itself.
    """
    pad = 16
    src = cv2.copyMakeBorder(source, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    dst = cv2.copyMakeBorder(target, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    m = cv2.copyMakeBorder(mask.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(m)
    center = (x + w // 2, y + h // 2)
    out = cv2.seamlessClone(src, dst, m, center, cv2.NORMAL_CLONE)
    return out[pad:-pad, pad:-pad]


class ExemplarFill(Creator):
    """Exemplar texture fill + Poisson blending (stand-in (ii))."""

    tag = "exemplar"
    family = "exemplar"

    def create(self, image, mask, rng, donor, prompt=None):
        h, w = image.shape[:2]
        size = int(np.clip(rng.uniform(0.12, 0.3) * min(h, w), 16, min(h, w)))
        # windows of the photo that lie fully outside the mask (box sum of the mask == 0)
        box = cv2.boxFilter(mask.astype(np.float32), -1, (size, size), normalize=False,
                            anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[:h - size + 1, :w - size + 1]
        free = np.flatnonzero(box.ravel() < 0.5)
        params: dict = {"patch_size": size}
        if free.size and rng.random() < 0.6:
            y, x = divmod(int(rng.choice(free)), w - size + 1)
            patch = image[y:y + size, x:x + size]
            params.update(patch_source="self", patch_offset=[y, x])
        else:
            d = donor(rng)
            dh, dw = d.image.shape[:2]
            s = min(size, dh, dw)
            y, x = int(rng.integers(0, dh - s + 1)), int(rng.integers(0, dw - s + 1))
            patch = d.image[y:y + s, x:x + s]
            params.update(patch_source=d.source, patch_offset=[y, x], patch_size=s)
        canvas = _mirror_tile(np.ascontiguousarray(patch), h, w)
        blended = poisson_blend(canvas, image, mask)
        return composite(image, blended, mask), params


def colour_transfer(content: np.ndarray, reference: np.ndarray, ref_mask: np.ndarray,
                     strength: float) -> np.ndarray:
    """Move the Lab mean/std of ``content`` a fraction ``strength`` toward those of ``reference[ref_mask]``."""
    c = cv2.cvtColor(content, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)[ref_mask]
    cm, cs = c.reshape(-1, 3).mean(0), c.reshape(-1, 3).std(0) + 1e-3
    rm, rs = r.mean(0), r.std(0) + 1e-3
    matched = (c - cm) / cs * rs + rm
    out = (1 - strength) * c + strength * matched
    return cv2.cvtColor(np.clip(out, 0, 255).round().astype(np.uint8), cv2.COLOR_LAB2RGB)


class Splice(Creator):
    """Splicing from another photo: scaled random crop, partial colour transfer, hard paste."""

    tag = "splice"
    family = "splice"

    def create(self, image, mask, rng, donor, prompt=None):
        h, w = image.shape[:2]
        d = donor(rng)
        content, params = cover_crop(d.image, h, w, rng, (1.0, 1.6))
        strength = float(rng.uniform(0.0, 0.7))
        content = colour_transfer(content, image, ring_or_outside(mask, max(4, min(h, w) // 32)), strength)
        params.update(donor=d.source, colour_transfer=round(strength, 4))
        return composite(image, content, mask), params


class CopyMove(Creator):
    """Copy-move inside the photo: random scale 0.75-1.33, rotation +-30 deg, shift >= 20 % of the side."""

    tag = "copymove"
    family = "copymove"

    def create(self, image, mask, rng, donor, prompt=None):
        h, w = image.shape[:2]
        scale = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
        angle = float(rng.uniform(-30, 30))
        shift_len = rng.uniform(0.2, 0.45) * min(h, w)
        direction = rng.uniform(0, 2 * np.pi)
        shift = (float(shift_len * np.cos(direction)), float(shift_len * np.sin(direction)))
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += shift
        warped = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        params = {"scale": round(scale, 4), "angle": round(angle, 3),
                  "shift": [round(shift[0], 2), round(shift[1], 2)]}
        return composite(image, warped, mask), params


def resynthesis_source(image: np.ndarray, rng: np.random.Generator, donor: DonorFn) -> tuple[np.ndarray, dict]:
    """The content a latent re-synthesis starts from: another photo of the split (p = 0.5, random scale and
    crop) or the photo itself shifted by 20-45 % of each side (reflected at the border)."""
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        d = donor(rng)
        content, params = cover_crop(d.image, h, w, rng, (1.0, 1.4))
        params["donor"] = d.source
        return content, params
    shift = rng.uniform(0.2, 0.45, 2) * np.array([w, h]) * rng.choice([-1, 1], 2)
    matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    content = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return content, {"donor": "self", "shift": [round(float(v), 2) for v in shift]}


class PseudoLDM(Creator):
    """Latent-style re-synthesis of the masked region (stand-in (iii)); see the module docstring."""

    tag = "pseudoLDM"
    family = "latent-resynthesis"

    def create(self, image, mask, rng, donor, prompt=None):
        h, w = image.shape[:2]
        content, params = resynthesis_source(image, rng, donor)
        blur = float(rng.uniform(0.5, 1.2))
        latent_noise = float(rng.uniform(1.0, 4.0))
        resample_noise = float(rng.uniform(1.0, 3.0))
        block_amp = float(rng.uniform(1.0, 3.0))
        pull = float(rng.uniform(0.3, 0.8))
        x = cv2.GaussianBlur(content.astype(np.float32), (0, 0), blur)
        lh, lw = max(1, h // 8), max(1, w // 8)
        latent = cv2.resize(x, (lw, lh), interpolation=cv2.INTER_CUBIC)
        latent += rng.normal(0.0, latent_noise, latent.shape).astype(np.float32)
        y = cv2.resize(latent, (w, h), interpolation=cv2.INTER_CUBIC)
        y += rng.normal(0.0, resample_noise, y.shape).astype(np.float32)
        pattern = rng.uniform(-block_amp, block_amp, (8, 8, 3)).astype(np.float32)
        y += np.tile(pattern, (int(np.ceil(h / 8)), int(np.ceil(w / 8)), 1))[:h, :w]
        ring = ring_or_outside(mask, max(4, min(h, w) // 32))
        y += pull * (image[ring].astype(np.float32).mean(0) - y[mask].mean(0))
        out = np.clip(y, 0, 255).round().astype(np.uint8)
        params.update(blur_sigma=round(blur, 4), latent_noise=round(latent_noise, 4),
                      resample_noise=round(resample_noise, 4), block_amplitude=round(block_amp, 4),
                      context_pull=round(pull, 4))
        return composite(image, out, mask), params


BUILTIN_METHODS = ("cvTelea", "cvNS", "exemplar", "splice", "copymove", "pseudoLDM")
#: the default of the built-in back end: BR-Gen is an inpainting dataset (paper 001 §3.2.2): the four
#: inpainting stand-ins;
#: ``splice`` and ``copymove`` (classical tampering, e.g. to train for CASIA-style forgeries) are opt-in
DEFAULT_METHODS = ("cvTelea", "cvNS", "exemplar", "pseudoLDM")


def builtin_creators() -> dict[str, Creator]:
    """The six built-in forgers keyed by their method tag."""
    return {
        "cvTelea": OpenCVInpaint("cvTelea", cv2.INPAINT_TELEA),
        "cvNS": OpenCVInpaint("cvNS", cv2.INPAINT_NS),
        "exemplar": ExemplarFill(),
        "splice": Splice(),
        "copymove": CopyMove(),
        "pseudoLDM": PseudoLDM(),
    }
