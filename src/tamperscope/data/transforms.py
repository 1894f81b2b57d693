"""Training augmentation and robustness perturbations (IMDL-BenCo's MVSS-style list; ARCHITECTURE.md "Data").

Augmentation — the MVSS-style list of IMDLBenCo's ``get_albu_transforms('train')``, re-implemented with
NumPy/OpenCV and driven by a ``numpy.random.Generator`` so that a sample is reproducible from its seed.
In order (:func:`augment`):

1. random rescale by a factor U(0.8, 1.2) (image bilinear, mask nearest);
2. random copy-move, p = 0.1: a window of 5–80 % of the height and width is copied onto another window of
   the same size; the *pasted* window is written to the mask (as IMDLBenCo does);
3. random OpenCV inpainting, p = 0.1: a window of 5–80 % of each side is inpainted (radius 3, Telea or
   Navier–Stokes with equal odds) and written to the mask;
4. horizontal flip p = 0.5, vertical flip p = 0.5;
5. brightness and contrast, p = 1: ``x · (1 + c) + 255 · b`` with b, c ~ U(−0.1, 0.1) (albumentations'
   ``RandomBrightnessContrast`` with brightness relative to the maximum);
6. JPEG re-compression with quality U{70..100}, p = 0.2;
7. random 90° rotation, p = 0.5, by k·90° with k ~ U{0..3} (albumentations' ``RandomRotate90``, so k = 0 is
   possible);
8. Gaussian blur with an odd kernel from {3, 5, 7}, p = 0.2 (σ from the kernel size, OpenCV's rule).

``forgery_ops=False`` drops steps 2–3. A model names its policy in ``data_requirements()["augment"]``
(:func:`augment_policy`): ``full`` (the list), ``no_forgery`` (without steps 2–3: IFA-Net, resolved choice) or
``flips`` (step 4 only: DiffForensics, paper 003 §4.1, where no augmentation is stated). The final
resize to S (:func:`resize_pair`, bilinear as IMDLBenCo) is separate because the edge ground truth is computed before it.

Native-resolution models (those that read JPEG traces, which any resampling erases) train on S×S windows of the
photo at its own size instead: :func:`grid_window` puts the window's corner on the 16-pixel grid of 4:2:0 JPEG
blocks and :func:`crop_pad` cuts it (replicate padding at the bottom/right when a side is shorter than S). Their
augmentation (:func:`augment_native`) is the list above without the rescale, with the flips and the rotation
applied to the window after the crop (a flip of the whole photo would move the block grid when a side is not a
multiple of 16; on an S×S window with S a multiple of 16 it does not).

Perturbations (:func:`perturb`, :func:`parse_perturb`) for robustness evaluation: ``jpeg:Q`` (quality 1–100;
always re-encodes, so no level is the identity), ``blur:K`` (Gaussian kernel size K, odd; 0 = none),
``noise:S`` (additive Gaussian noise with σ = S in 0–255 units, seeded; IMDLBenCo's wrapper takes a
variance instead), ``gamma:G`` (``255·(x/255)^G``; 1 = none), ``resize:F`` (the image is resized by the
factor F and the model sees that image; area interpolation when shrinking, bilinear when enlarging;
1 = none). Evaluation scores at the original ground-truth resolution by upsampling the prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..errors import UserError
from ..nn.jpeg import jpeg_roundtrip
from ..sizes import INPUT_MULTIPLE

PERTURB_KINDS = ("jpeg", "blur", "noise", "gamma", "resize")
JPEG_GRID = 16  # side of a 4:2:0 JPEG minimum coded unit


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the MVSS-style list (IMDL-BenCo's values as defaults)."""
    scale_range: tuple[float, float] = (0.8, 1.2)
    copy_move_p: float = 0.1
    inpaint_p: float = 0.1
    window_range: tuple[float, float] = (0.05, 0.8)
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    jpeg_p: float = 0.2
    jpeg_quality: tuple[int, int] = (70, 100)
    rot90_p: float = 0.5
    blur_p: float = 0.2
    blur_kernels: tuple[int, ...] = (3, 5, 7)


#: step 4 (the flips) alone
FLIPS_ONLY = AugmentConfig(scale_range=(1.0, 1.0), copy_move_p=0.0, inpaint_p=0.0, brightness=0.0, contrast=0.0,
                           jpeg_p=0.0, rot90_p=0.0, blur_p=0.0)
#: training augmentation policies: name -> (config, forgery_ops)
AUGMENT_POLICIES = {"full": (AugmentConfig(), True), "no_forgery": (AugmentConfig(), False),
                    "flips": (FLIPS_ONLY, False)}


def augment_policy(name: str) -> tuple[AugmentConfig, bool]:
    """``(config, forgery_ops)`` of a training augmentation policy (module docstring)."""
    if name not in AUGMENT_POLICIES:
        raise UserError(f"unknown augmentation policy '{name}'; choose one of {', '.join(AUGMENT_POLICIES)}")
    return AUGMENT_POLICIES[name]


# --------------------------------------------------------------------------------------------- helpers


def _random_window(rng: np.random.Generator, height: int, width: int, frac: tuple[float, float],
                   size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a window whose sides are ``frac`` of the image sides (or of a given ``size``)."""
    if size is None:
        lo_h, hi_h = max(1, int(height * frac[0])), max(2, int(height * frac[1]))
        lo_w, hi_w = max(1, int(width * frac[0])), max(2, int(width * frac[1]))
        h = int(rng.integers(lo_h, max(lo_h + 1, hi_h)))
        w = int(rng.integers(lo_w, max(lo_w + 1, hi_w)))
    else:
        h, w = size
    h, w = min(h, height), min(w, width)
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return top, left, h, w


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Image resize: area interpolation when shrinking both sides, bilinear otherwise."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height <= image.shape[0] and width <= image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask (as IMDL-BenCo resizes masks)."""
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Final resize to ``size×size``: image bilinear (albumentations' ``Resize`` default, as IMDLBenCo), mask nearest."""
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image, resize_mask(mask, size, size)


# --------------------------------------------------------------------------------------------- augmentation


def random_copy_move(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                     window_range: tuple[float, float] = (0.05, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    """Copy a random window onto another random window of the same size; the pasted window becomes tampered."""
    height, width = mask.shape
    _, _, h, w = src = _random_window(rng, height, width, window_range)
    top, left, _, _ = _random_window(rng, height, width, window_range, size=(h, w))
    image, mask = image.copy(), mask.copy()
    image[top:top + h, left:left + w] = image[src[0]:src[0] + h, src[1]:src[1] + w].copy()
    mask[top:top + h, left:left + w] = True
    return image, mask


def random_inpaint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   window_range: tuple[float, float] = (0.05, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV-inpaint a random window (radius 3; Telea or Navier–Stokes) and mark it tampered."""
    height, width = mask.shape
    top, left, h, w = _random_window(rng, height, width, window_range)
    hole = np.zeros((height, width), np.uint8)
    hole[top:top + h, left:left + w] = 1
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
    out = cv2.inpaint(np.ascontiguousarray(image), hole, 3, method)
    mask = mask.copy()
    mask[top:top + h, left:left + w] = True
    return out, mask


def brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``x · (1 + contrast) + 255 · brightness``, clipped to uint8 (through a 256-entry lookup table)."""
    lut = np.clip(np.arange(256, dtype=np.float64) * (1.0 + contrast) + 255.0 * brightness, 0, 255)
    return np.rint(lut).astype(np.uint8)[image]


def gaussian_blur(image: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian blur with an odd kernel; σ follows OpenCV's rule 0.3·((k−1)/2 − 1) + 0.8."""
    return cv2.GaussianBlur(image, (kernel, kernel), 0)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, forgery_ops: bool = True,
            config: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MVSS-style training list (module docstring), without the final resize. Returns (image, mask)."""
    cfg = config or AugmentConfig()
    mask = np.asarray(mask, dtype=bool)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"augmentation needs an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise UserError(f"augmentation needs a mask of the image size {image.shape[:2]}, got {mask.shape}")
    factor = rng.uniform(*cfg.scale_range)
    h, w = mask.shape
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        mask = resize_mask(mask, nh, nw)
    if forgery_ops:
        if rng.random() < cfg.copy_move_p:
            image, mask = random_copy_move(image, mask, rng, cfg.window_range)
        if rng.random() < cfg.inpaint_p:
            image, mask = random_inpaint(image, mask, rng, cfg.window_range)
    if rng.random() < cfg.hflip_p:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < cfg.vflip_p:
        image, mask = image[::-1], mask[::-1]
    image = np.ascontiguousarray(image)
    image = brightness_contrast(image, rng.uniform(-cfg.brightness, cfg.brightness),
                                rng.uniform(-cfg.contrast, cfg.contrast))
    if rng.random() < cfg.jpeg_p:
        image = jpeg_roundtrip(image, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    if rng.random() < cfg.rot90_p:
        k = int(rng.integers(0, 4))
        image, mask = np.rot90(image, k), np.rot90(mask, k)
    if rng.random() < cfg.blur_p:
        image = gaussian_blur(np.ascontiguousarray(image), int(rng.choice(cfg.blur_kernels)))
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


# --------------------------------------------------------------------------------------------- native resolution


def grid_window(height: int, width: int, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Random top-left corner of a ``size×size`` window, on the :data:`JPEG_GRID` (0 where a side is shorter)."""
    top = JPEG_GRID * int(rng.integers(0, max(height - size, 0) // JPEG_GRID + 1))
    left = JPEG_GRID * int(rng.integers(0, max(width - size, 0) // JPEG_GRID + 1))
    return top, left


def pad_bottom_right(array: np.ndarray, height: int, width: int, replicate: bool) -> np.ndarray:
    """Pad to at least ``height×width`` at the bottom/right (keeps the block grid): edge replication for
    images, zeros for masks."""
    ph, pw = max(height - array.shape[0], 0), max(width - array.shape[1], 0)
    if not (ph or pw):
        return array
    pads = ((0, ph), (0, pw)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pads, mode="edge" if replicate else "constant")


def crop_pad(array: np.ndarray, top: int, left: int, size: int, replicate: bool) -> np.ndarray:
    """The ``size×size`` window at (top, left), padded by :func:`pad_bottom_right` where the photo ends."""
    window = array[top:top + size, left:left + size]
    return np.ascontiguousarray(pad_bottom_right(window, size, size, replicate))


def pad_to_multiple(array: np.ndarray, replicate: bool, multiple: int = INPUT_MULTIPLE) -> np.ndarray:
    """Pad the bottom/right to the next multiple of ``multiple`` (a native-resolution model input)."""
    h, w = array.shape[:2]
    return pad_bottom_right(array, h + (-h % multiple), w + (-w % multiple), replicate)


_NO_GEOMETRY = {"scale_range": (1.0, 1.0), "hflip_p": 0.0, "vflip_p": 0.0, "rot90_p": 0.0}


def augment_native(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int,
                   forgery_ops: bool = True, config: AugmentConfig | None = None,
                   extra: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, ...]:
    """Random grid-aligned ``size×size`` window of the photo (module docstring) with, when ``config`` is given,
    the flips and rotation of the augmentation list applied to the window (the caller applies the rest to the
    photo first, :func:`photometric_config`). ``extra`` maps (the edge ground truth of the full-size mask) are
    cut like the mask.
    Returns ``(image, mask, *extra)``."""
    if size % JPEG_GRID:
        raise UserError(f"a native-resolution crop must be a multiple of {JPEG_GRID} pixels, got {size}")
    top, left = grid_window(mask.shape[0], mask.shape[1], size, rng)
    out = [crop_pad(image, top, left, size, True), crop_pad(mask, top, left, size, False)]
    out += [crop_pad(e, top, left, size, False) for e in extra]
    if config is not None:
        if rng.random() < config.hflip_p:
            out = [a[:, ::-1] for a in out]
        if rng.random() < config.vflip_p:
            out = [a[::-1] for a in out]
        if rng.random() < config.rot90_p:
            k = int(rng.integers(0, 4))
            out = [np.rot90(a, k) for a in out]
    return tuple(np.ascontiguousarray(a) for a in out)


def photometric_config(config: AugmentConfig | None) -> AugmentConfig:
    """``config`` without the steps that move the JPEG block grid (rescale, flips, rotation)."""
    return replace(config or AugmentConfig(), **_NO_GEOMETRY)


# --------------------------------------------------------------------------------------------- perturbations


def _check_level(kind: str, level: float) -> float:
    if kind not in PERTURB_KINDS:
        raise UserError(f"unknown perturbation '{kind}'; choose one of {', '.join(PERTURB_KINDS)}")
    if not np.isfinite(level):
        raise UserError(f"perturbation {kind}: level must be a finite number, got {level}")
    if kind == "jpeg" and not (1 <= level <= 100 and float(level).is_integer()):
        raise UserError(f"perturbation jpeg: quality must be an integer 1–100, got {level:g}")
    if kind == "blur" and not (level >= 0 and float(level).is_integer() and (level <= 1 or level % 2 == 1)):
        raise UserError(f"perturbation blur: kernel size must be 0 (none) or an odd integer, got {level:g}")
    if kind == "noise" and level < 0:
        raise UserError(f"perturbation noise: sigma must be >= 0 (0–255 units), got {level:g}")
    if kind in ("gamma", "resize") and level <= 0:
        raise UserError(f"perturbation {kind}: level must be > 0, got {level:g}")
    return float(level)


def parse_perturb(spec: str) -> tuple[str, float]:
    """``"jpeg:70"`` -> ``("jpeg", 70.0)``; a clear UserError for unknown kinds or bad levels."""
    kind, sep, value = str(spec).strip().partition(":")
    kind = kind.strip().lower()
    if not sep or not value.strip():
        raise UserError(f"perturbation '{spec}': expected KIND:LEVEL, e.g. jpeg:70, blur:5, noise:3, "
                        "gamma:1.2, resize:0.5")
    try:
        level = float(value)
    except ValueError:
        raise UserError(f"perturbation '{spec}': level '{value.strip()}' is not a number") from None
    return kind, _check_level(kind, level)


def perturb(image: np.ndarray, kind: str, level: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Apply one robustness perturbation to an RGB uint8 image (module docstring). ``rng`` seeds the noise."""
    level = _check_level(kind, level)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"perturbations need an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    if kind == "jpeg":
        return jpeg_roundtrip(image, int(level))
    if kind == "blur":
        return image if level <= 1 else gaussian_blur(image, int(level))
    if kind == "noise":
        if level == 0:
            return image
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)
        noisy = image.astype(np.float32) + gen.normal(0.0, level, size=image.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "gamma":
        if level == 1:
            return image
        lut = np.rint(255.0 * (np.arange(256) / 255.0) ** level).astype(np.uint8)
        return lut[image]
    if level == 1:
        return image
    h, w = image.shape[:2]
    return resize_image(image, max(1, int(round(h * level))), max(1, int(round(w * level))))
