"""Training forgeries that teach inconsistency rather than content: edits with mixed compression histories.

Used to train the default detector (docs/MODELS.md) through ``tamperscope synthesize``. Each sample starts from
one authentic photo and goes through what a real photo goes through, so that the only thing that tells a
forgery from an authentic sample is the edit itself:

1. **Window** (:func:`photo_window`): with probability 0.25 the photo is first downscaled (web-style resizing,
   which erases its JPEG traces), then a window of at most ``max_side`` pixels is cut with its corner on the
   8-pixel JPEG grid (so a camera JPEG keeps its aligned block grid).
2. **First history** (:func:`camera_history`): a lossless or resized photo is JPEG-compressed at a random
   quality (65-98) with probability ``history_prob`` (0.8), as a camera or an earlier save would.
3. **Edit** (only for tampered samples; :data:`FORGERY_KINDS`) over an object-like, stuff-like or background
   region (:class:`tamperscope.data.brgen.regions.BuiltinRegions`, 2-20 %, 20-60 % or 80-95 % of the window):
   ``splice``       content of a photo from another source (another camera or set) with its own history:
                    random rescale, JPEG at another quality on a random grid offset, partial Lab colour
                    transfer (as BR-Gen's splice), pasted with a feathered or a hard edge;
   ``copymove``     the same photo warped (scale, rotation, shift; bilinear resampling) into the region;
   ``inpaint``      one of the built-in inpainting stand-ins (OpenCV Telea / Navier-Stokes, exemplar fill,
                    latent-style re-synthesis; :mod:`tamperscope.data.brgen.creation`);
   ``resample``     the region's own content resampled in place (scale 0.85-1.2, rotation within 5 degrees);
   ``double_jpeg``  the region's own content compressed once more at another quality, on the photo's grid
                    (aligned) or shifted by 1-7 pixels (misaligned), content unchanged;
   ``retouch``      a local edit of the region: brightness/contrast/gamma, blur, sharpening or added noise.
4. **Final save** (:func:`final_save`): JPEG at quality 70-100 with probability ``jpeg_prob`` (0.75; the whole
   photo shares the last compression, forgery or not), else kept lossless (PNG).

Authentic samples go through steps 1, 2 and 4 with the same probabilities. Lowering ``history_prob`` and
``jpeg_prob`` makes more samples that were never compressed at all (forgeries and authentic alike). Every random draw of sample ``i``
comes from ``numpy.random.default_rng([seed, i])``, so a sample never depends on the others (shardable and
reproducible byte for byte).
"""
from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import ImageReadError, UserError
from ..io import atomic_write_bytes, atomic_write_text, read_image, write_png
from .brgen.creation import Donor, builtin_creators, colour_transfer, composite, cover_crop, ring_or_outside
from .brgen.regions import BuiltinRegions, area_bin_of
from .datasets import load_records
from .transforms import jpeg_roundtrip

#: the edits of step 3 and how often each is drawn
FORGERY_KINDS = {"splice": 0.25, "copymove": 0.2, "inpaint": 0.25, "resample": 0.1, "double_jpeg": 0.1,
                 "retouch": 0.1}
INPAINTERS = ("cvTelea", "cvNS", "exemplar", "pseudoLDM")
#: region type → (probability, area range as a fraction of the window)
REGION_PLAN = {"thing": (0.6, (0.02, 0.20)), "stuff": (0.3, (0.20, 0.60)), "background": (0.1, (0.80, 0.95))}
JPEG_GRID = 8
#: step 2's and step 4's probabilities of a JPEG compression
HISTORY_PROB, JPEG_PROB = 0.8, 0.75
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class Photo:
    """An authentic photo: its pixels, where it came from (a camera or a set: splices take content from another
    source) and whether it is stored losslessly."""

    image: np.ndarray
    source: str
    lossless: bool


def photo_window(photo: Photo, rng: np.random.Generator, max_side: int) -> tuple[np.ndarray, bool]:
    """Step 1: the (possibly downscaled) window and whether it was resampled."""
    image, resized = photo.image, False
    h, w = image.shape[:2]
    if rng.random() < 0.25 and min(h, w) > 192:
        scale = rng.uniform(max(0.3, 160 / min(h, w)), 0.9)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        resized = True
    th, tw = min(h, max_side), min(w, max_side)
    y = int(rng.integers(0, (h - th) // JPEG_GRID + 1)) * JPEG_GRID
    x = int(rng.integers(0, (w - tw) // JPEG_GRID + 1)) * JPEG_GRID
    return np.ascontiguousarray(image[y:y + th, x:x + tw]), resized


def camera_history(image: np.ndarray, rng: np.random.Generator, lossless: bool,
                   prob: float = HISTORY_PROB) -> np.ndarray:
    """Step 2: a JPEG history, with probability ``prob``, for a window that has none (lossless source or
    resampled)."""
    if lossless and rng.random() < prob:
        return jpeg_roundtrip(image, int(rng.integers(65, 99)))
    return image


def jpeg_on_grid(image: np.ndarray, quality: int, dy: int, dx: int) -> np.ndarray:
    """JPEG round trip with the block grid shifted by ``(dy, dx)`` pixels (reflect-padded, cropped back)."""
    if dy == 0 and dx == 0:
        return jpeg_roundtrip(image, quality)
    padded = cv2.copyMakeBorder(image, dy, 0, dx, 0, cv2.BORDER_REFLECT_101)
    return jpeg_roundtrip(padded, quality)[dy:, dx:]


def draw_region(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    kinds = list(REGION_PLAN)
    kind = kinds[int(rng.choice(len(kinds), p=[REGION_PLAN[k][0] for k in kinds]))]
    lo, hi = REGION_PLAN[kind][1]
    for _ in range(5):  # a degenerate proposal (empty, or the whole window) is drawn again
        mask = BuiltinRegions().propose(image, kind, float(rng.uniform(lo, hi)), rng).mask
        if 0 < np.count_nonzero(mask) < mask.size:
            return mask, kind
    raise ValueError(f"no usable {kind} region in a {image.shape[1]}x{image.shape[0]} window")


def feathered_paste(image: np.ndarray, content: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """``content`` inside ``mask`` with an edge blurred by ``sigma`` pixels (0: hard edge)."""
    if sigma <= 0:
        return composite(image, content, mask)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)[..., None]
    out = alpha * content.astype(np.float32) + (1 - alpha) * image.astype(np.float32)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def splice(image: np.ndarray, mask: np.ndarray, donor: Photo, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    h, w = image.shape[:2]
    content, params = cover_crop(donor.image, h, w, rng, (0.7, 1.6))
    quality = int(rng.integers(50, 96))
    if rng.random() < 0.7:
        dy, dx = (int(v) for v in rng.integers(0, JPEG_GRID, 2))
        content = jpeg_on_grid(content, quality, dy, dx)
        params.update(donor_jpeg=quality, donor_grid_shift=[dy, dx])
    strength = float(rng.uniform(0.0, 0.8))
    content = colour_transfer(content, image, ring_or_outside(mask, max(4, min(h, w) // 32)), strength)
    sigma = float(rng.choice([0.0, rng.uniform(0.5, 2.5)]))
    params.update(donor=donor.source, colour_transfer=round(strength, 3), feather=round(sigma, 3))
    return feathered_paste(image, content, mask, sigma), params


def resample(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    ys, xs = np.nonzero(mask)
    centre = (float(xs.mean()), float(ys.mean()))
    scale = float(rng.uniform(0.85, 1.2))
    angle = float(rng.uniform(-5, 5))
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    h, w = image.shape[:2]
    warped = cv2.warpAffine(image, matrix, (w, h), flags=int(rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC])),
                            borderMode=cv2.BORDER_REFLECT_101)
    return composite(image, warped, mask), {"scale": round(scale, 4), "angle": round(angle, 3)}


def double_jpeg(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    quality = int(rng.integers(45, 91))
    aligned = bool(rng.random() < 0.5)
    dy, dx = (0, 0) if aligned else tuple(int(v) for v in rng.integers(1, JPEG_GRID, 2))
    return composite(image, jpeg_on_grid(image, quality, dy, dx), mask), {"quality": quality, "grid_shift": [dy, dx]}


def retouch(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    x = image.astype(np.float32)
    op = str(rng.choice(["tone", "blur", "sharpen", "noise"]))
    if op == "tone":
        gain, bias, gamma = rng.uniform(0.8, 1.25), rng.uniform(-20, 20), rng.uniform(0.8, 1.25)
        y = 255.0 * (np.clip(x * gain + bias, 0, 255) / 255.0) ** gamma
    elif op == "blur":
        y = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.8, 2.5)))
    elif op == "sharpen":
        y = x + float(rng.uniform(0.5, 1.5)) * (x - cv2.GaussianBlur(x, (0, 0), 1.5))
    else:
        y = x + rng.normal(0, float(rng.uniform(2, 8)), x.shape)
    return composite(image, np.clip(y, 0, 255).round().astype(np.uint8), mask), {"op": op}


def final_save(image: np.ndarray, rng: np.random.Generator, prob: float = JPEG_PROB) -> tuple[str, int | None]:
    """Step 4: ``("jpg", quality)`` with probability ``prob``, else ``("png", None)``."""
    if rng.random() < prob:
        return "jpg", int(rng.integers(70, 101))
    return "png", None


def make_sample(photos: list[Photo], index: int, seed: int, tampered: bool, max_side: int = 640,
                history_prob: float = HISTORY_PROB, jpeg_prob: float = JPEG_PROB) -> dict:
    """Sample ``index``: ``{"image", "mask" (bool or None), "format", "quality", "meta"}`` (module docstring)."""
    rng = np.random.default_rng([seed, index])
    photo = photos[int(rng.integers(len(photos)))]
    window, resized = photo_window(photo, rng, max_side)
    image = camera_history(window, rng, photo.lossless or resized, history_prob)
    meta = {"photo_source": photo.source, "resized": resized}
    mask = None
    if tampered:
        kinds = list(FORGERY_KINDS)
        kind = kinds[int(rng.choice(len(kinds), p=list(FORGERY_KINDS.values())))]
        mask, region = draw_region(image, rng)
        if kind == "splice":
            others = [p for p in photos if p.source != photo.source] or photos
            image, params = splice(image, mask, others[int(rng.integers(len(others)))], rng)
        elif kind in ("copymove", "inpaint"):
            tag = "copymove" if kind == "copymove" else str(rng.choice(INPAINTERS))
            def donor(r, _photos=photos):
                p = _photos[int(r.integers(len(_photos)))]
                return Donor(p.image, p.source)
            image, params = builtin_creators()[tag].create(image, mask, rng, donor)
            params["method"] = tag
        elif kind == "resample":
            image, params = resample(image, mask, rng)
        elif kind == "double_jpeg":
            image, params = double_jpeg(image, mask, rng)
        else:
            image, params = retouch(image, mask, rng)
        area = float(mask.mean())
        meta.update(kind=kind, method=params.get("method", kind), region=region, area=round(area, 4),
                    area_bin=area_bin_of(area), params=params)
    fmt, quality = final_save(image, rng, jpeg_prob)
    meta.update(format=fmt, quality=quality)
    return {"image": image, "mask": mask, "format": fmt, "quality": quality, "meta": meta}


# --------------------------------------------------------------------------------------------- a dataset on disk


def photo_paths(spec: str | Path) -> list[Path]:
    """The photos named by ``spec``: a folder (searched recursively), a ``.txt`` list (one path a line, relative
    to the list's folder) or an IMDL-BenCo ``.json`` list (its authentic, ``"Negative"`` entries)."""
    spec = Path(spec)
    if spec.is_dir():
        return sorted(p for p in spec.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not spec.is_file():
        raise UserError(f"{spec}: no such folder or list")
    if spec.suffix == ".txt":
        lines = [line.strip() for line in spec.read_text().splitlines()]
        return [(spec.parent / line) for line in lines if line and not line.startswith("#")]
    if spec.suffix == ".json":
        return [Path(r.image) for r in load_records(spec) if r.mask is None]
    raise UserError(f"{spec}: expected a folder, a .txt list or a .json list of photos")


def photo_source(path: Path) -> str:
    """A photo's source for splicing: its camera (EXIF Make + Model) or else its folder."""
    try:
        exif = Image.open(path).getexif()
        camera = " ".join(f"{exif.get(271, '')} {exif.get(272, '')}".replace("\x00", " ").split())
    except (OSError, ValueError):
        camera = ""
    return camera or str(path.parent)


def load_photos(specs: list[str | Path]) -> tuple[list[Photo], list[str]]:
    """Every readable photo of ``specs`` (:func:`photo_paths`) and a line per unreadable one."""
    photos, bad = [], []
    for spec in specs:
        for path in photo_paths(spec):
            try:
                image = read_image(path)
            except ImageReadError as err:
                bad.append(str(err))
                continue
            photos.append(Photo(image, photo_source(path), path.suffix.lower() not in (".jpg", ".jpeg")))
    if not photos:
        raise UserError(f"no readable photo in {', '.join(map(str, specs))}")
    return photos, bad


def _encode(sample: dict) -> bytes:
    bgr = cv2.cvtColor(sample["image"], cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, sample["quality"]] if sample["format"] == "jpg" else []
    ok, data = cv2.imencode("." + sample["format"], bgr, params)
    if not ok:
        raise UserError(f"could not encode a {sample['format']} sample")
    return data.tobytes()


def _write_one(job: tuple) -> dict:
    photos, out, index, seed, tampered, max_side, history_prob, jpeg_prob = job
    folder, stem = ("Tp", f"tp_{index:06d}") if tampered else ("Au", f"au_{index:06d}")
    sample = make_sample(photos, index, seed, tampered, max_side, history_prob, jpeg_prob)
    name = f"{folder}/{stem}.{sample['format']}"
    mask = f"Gt/{stem}_gt.png" if tampered else "Negative"
    # a finished sample is kept (resume): the draw is the same, so are its bytes; the mask is written first
    if tampered and not (out / mask).is_file():
        write_png(out / mask, sample["mask"].astype(np.uint8) * 255)
    if not (out / name).is_file():
        atomic_write_bytes(out / name, _encode(sample))
    return {"entry": [name, mask], "meta": dict(sample["meta"], image=name)}


_PHOTOS: list[Photo] = []


def _work(job: tuple) -> dict:
    return _write_one((_PHOTOS,) + job)


def write_synthetic(photos: list[Photo], out: str | Path, tampered: int, authentic: int, seed: int,
                    max_side: int = 640, workers: int = 1, progress: bool = True,
                    history_prob: float = HISTORY_PROB, jpeg_prob: float = JPEG_PROB) -> Path:
    """Write ``tampered`` forgeries and ``authentic`` samples under ``out`` (``Tp/``, ``Gt/``, ``Au/``), the list
    ``out/list.json`` (IMDL-BenCo, relative paths) and ``out/metadata.jsonl`` (what was drawn for each sample; its
    ``method``, ``region`` and ``area_bin`` are what ``evaluate --group-by`` reads).
    Existing samples are kept, so an interrupted run continues where it stopped."""
    global _PHOTOS
    out = Path(out)
    for sub in ("Tp", "Gt", "Au"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # tampered samples use indices 0..T-1, authentic ones T..T+A-1: no two samples share a random stream
    jobs = [(out, i, seed, True, max_side, history_prob, jpeg_prob) for i in range(tampered)]
    jobs += [(out, tampered + i, seed, False, max_side, history_prob, jpeg_prob) for i in range(authentic)]
    _PHOTOS = photos
    bar = dict(total=len(jobs), desc="synthesize", unit="img", disable=not progress)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            rows = list(tqdm(pool.imap(_work, jobs, chunksize=8), **bar))
    else:
        rows = [_work(job) for job in tqdm(jobs, **bar)]
    atomic_write_text(out / "metadata.jsonl", "".join(json.dumps(r["meta"]) + "\n" for r in rows))
    atomic_write_text(out / "list.json", json.dumps([r["entry"] for r in rows], indent=0) + "\n")
    return out / "list.json"
