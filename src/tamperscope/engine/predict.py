"""Prediction on any photo: the ``tamperscope.predict`` API, sliding-window tiling, and the ``predict`` outputs.

Model choice (:func:`load_predictor`)
- ``None`` or ``"default"`` (the bundled default model), a run folder, a ``.safetensors`` checkpoint or the name of
  a weight-free registered model (the ``ela`` baseline): :func:`tamperscope.engine.loading.load_model`; the model
  runs at the size it was trained at, else 512.
- a ``.onnx`` file from ``tamperscope export-onnx``: its network run by ONNX Runtime or OpenVINO on the CPU, with
  the checkpoint's calibration (:mod:`tamperscope.engine.onnx_runtime`).

Any image size
- A model whose class sets ``native_resolution = True`` (ELA: resampling would destroy the JPEG traces it reads)
  sees the photo at its own size, padded at the bottom/right by edge replication to its ``input_multiple`` (32;
  weight-free experts 1: unpadded), which keeps the 8×8 JPEG grid aligned; the map is cropped back.
- Any other model sees the photo resized to ``S×S`` (bilinear, as the training data loader does) and its map is
  resized back to the photo's size (bilinear, :func:`upsample_to`), so the output always has the photo's size.
  The EXIF orientation is applied when reading, so maps match the photo as viewers show it.

Tiling (``tiles=True``, for large photos)
- Windows of ``tile_size`` pixels (default: the model's input size ``S``; a window is cut to the photo where the
  photo is smaller) slide with ``tile_overlap`` (default 1/4) overlap; the first and last windows touch the
  borders and the rest are evenly spaced. For native-resolution models the window corners are moved down to
  the 16-pixel JPEG grid (the last windows grow by the remainder, under 16 pixels, to reach the border), and a
  photo over ``NATIVE_TILE_PIXELS`` is tiled with ``NATIVE_TILE``-pixel windows even without ``tiles`` (memory).
  Each window is processed exactly like a whole photo (above), the maps
  are averaged where windows overlap, and the image score is the maximum of the window scores. One window
  covering the whole photo therefore gives exactly the untiled result.

Verdict, regions and confidence
- The map and the image score are the model's probabilities after its calibration (``export --calibrate``,
  :func:`tamperscope.inference.model_probabilities`): absolute, never normalised per photo, with 0.5 the
  operating points chosen on validation data (for the score: at most 10 % of the authentic photos above it).
- ``verdict`` is ``"tampered"`` when the score is above ``image_threshold`` (strict, as the metrics) and at least
  one pixel is above ``threshold``; ``"inconclusive"`` when the score is above ``image_threshold`` but no pixel
  is, or when it is in ``(inconclusive_from, image_threshold]`` (a calibrated model's band, up to 2.5 times its
  validation false-alarm rate; an uncalibrated model has none); else ``"authentic"``.
- ``mask`` (the drawn regions: mask, overlay) is ``probability > threshold``, except for an authentic verdict,
  where it is empty unless ``raw_map``; ``tampered_area_pct`` is the mask's share of pixels.
- ``false_alarm_rate`` / ``miss_rate``: the share of the validation set's authentic photos that score at least as
  high / of its tampered photos that score at most as high (the checkpoint's stored scores, None without them);
  ``confidence`` says the one that fits the verdict in a sentence.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io as _io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..data.transforms import JPEG_GRID
from ..errors import ImageReadError, UserError
from ..inference import calibrate_score, padded_probabilities, uncalibrate_score, upsample_to
from ..io import atomic_write_bytes, atomic_write_text, check_protected, encode_image, read_image, read_image_bytes
from ..nn.norm import imagenet_normalize
from ..report.visualize import heatmap as heatmap_rgb, mask_image, overlay as overlay_rgb
from ..sizes import INPUT_MULTIPLE, check_image_size
from .distributed import resolve_device
from .experts import build_experts, evidence_names, expert_maps, fuse_photo
from .loading import load_model

PathLike = Union[str, os.PathLike]

DEFAULT_THRESHOLD = 0.5
DEFAULT_TILE_OVERLAP = 0.25
NATIVE_TILE_PIXELS = 24_000_000
NATIVE_TILE = 4096
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jfif", ".ppm", ".pgm")
OUTPUT_KINDS = ("heatmap", "mask", "overlay", "probability")
RESULT_FIELDS = ("input", "sha256", "output_stem", "status", "score", "verdict", "confidence", "false_alarm_rate",
                 "miss_rate", "tampered_area_pct", "raw_map", "model", "threshold", "image_threshold",
                 "inconclusive_from", "width", "height", "tiles", "fired", "heatmap", "mask", "overlay", "probability",
                 "error")
MANIFEST = "predict-manifest.json"
MANIFEST_TAG = "tamperscope predict"


# --------------------------------------------------------------------------------------------- the result


@dataclass
class Prediction:
    """One photo's result: the ``H×W`` probability map at the photo's size, the image score and the decision
    settings (module docstring: verdict, regions and confidence)."""

    probability: np.ndarray
    score: float
    threshold: float
    model: str
    image: np.ndarray | None = field(default=None, repr=False)
    path: str | None = None
    tiles: int = 1
    image_threshold: float = DEFAULT_THRESHOLD
    inconclusive_from: float | None = None
    raw_map: bool = False
    #: the score before calibration, and the checkpoint's ``calibration["image"]`` (validation scores) or None
    raw_score: float | None = None
    reference: dict | None = field(default=None, repr=False)
    #: each expert's image score (the learned model under its own name) when the model has experts
    #: (:mod:`tamperscope.engine.experts`); ``score`` is their maximum
    experts: dict[str, float] = field(default_factory=dict)
    #: what each deciding expert's firing means, in words (:attr:`TamperModel.finding`)
    findings: dict[str, str] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.probability.shape[0])

    @property
    def width(self) -> int:
        return int(self.probability.shape[1])

    @property
    def flagged(self) -> np.ndarray:
        """The pixels above ``threshold``, whatever the verdict."""
        return self.probability > self.threshold

    @property
    def verdict(self) -> str:
        """``"tampered"``, ``"inconclusive"`` or ``"authentic"`` (module docstring)."""
        if self.score > self.image_threshold:
            return "tampered" if self.flagged.any() else "inconclusive"
        if self.inconclusive_from is not None and self.score > self.inconclusive_from:
            return "inconclusive"
        return "authentic"

    @property
    def mask(self) -> np.ndarray:
        """The drawn regions: :attr:`flagged`, empty for an authentic verdict unless ``raw_map``."""
        flagged = self.flagged
        return flagged if self.raw_map or self.verdict != "authentic" else np.zeros_like(flagged)

    @property
    def tampered_area_pct(self) -> float:
        return 100.0 * float(np.count_nonzero(self.mask)) / float(self.probability.size)

    def _share(self, key: str, above: bool) -> float | None:
        values = (self.reference or {}).get(key)
        if not values:
            return None
        raw = round(self.score if self.raw_score is None else self.raw_score, 5)  # as the stored scores
        side = int(np.searchsorted(values, raw, side="left" if above else "right"))
        return (len(values) - side if above else side) / len(values)

    @property
    def fired(self) -> list[str]:
        """The experts whose own score is above ``image_threshold``."""
        return [name for name, score in self.experts.items() if score > self.image_threshold]

    @property
    def false_alarm_rate(self) -> float | None:
        """Share of the validation set's authentic photos scoring at least this high (None without them)."""
        return self._share("authentic_scores", above=True)

    @property
    def miss_rate(self) -> float | None:
        """Share of the validation set's tampered photos scoring at most this high (None without them)."""
        return self._share("tampered_scores", above=False)

    @property
    def confidence(self) -> str:
        """How common the score is among the validation photos of the other kind, in one sentence."""
        if self.verdict == "authentic":
            rate, text = self.miss_rate, "of tampered validation photos score this low"
        else:
            rate, text = self.false_alarm_rate, "of authentic validation photos score this high"
        return "no validation scores stored with this model" if rate is None else f"{100 * rate:.3g} % {text}"

    def heatmap(self) -> np.ndarray:
        """``H×W×3`` uint8 colour map of the (calibrated, absolute) tampering probabilities."""
        return heatmap_rgb(self.probability)

    def mask_png(self) -> np.ndarray:
        return mask_image(self.mask)

    def overlay(self) -> np.ndarray:
        """The photo with the drawn regions (:attr:`mask`) tinted and outlined (needs the photo)."""
        if self.image is None:
            raise UserError("this prediction holds no photo to draw the overlay on")
        return overlay_rgb(self.image, self.mask)

    def to_dict(self) -> dict:
        rates = {k: None if v is None else round(v, 6)
                 for k, v in (("false_alarm_rate", self.false_alarm_rate), ("miss_rate", self.miss_rate))}
        return {"input": self.path, "score": round(float(self.score), 6), "verdict": self.verdict,
                "confidence": self.confidence, **rates, "tampered_area_pct": round(self.tampered_area_pct, 4),
                "raw_map": self.raw_map, "model": self.model, "threshold": self.threshold,
                "image_threshold": self.image_threshold,
                "inconclusive_from": None if self.inconclusive_from is None else round(self.inconclusive_from, 6),
                "width": self.width, "height": self.height, "tiles": self.tiles,
                **({"experts": {k: round(float(v), 6) for k, v in self.experts.items()}, "fired": self.fired,
                    "findings": {k: self.findings[k] for k in self.fired if self.findings.get(k)}}
                   if self.experts else {})}


def verdict_line(row: dict) -> str:
    """A :meth:`Prediction.to_dict` row in words: ``tampered (score 0.910; 2 % of authentic validation photos score
    this high; 3.1 % of pixels flagged; fired: copymove — a region is copied elsewhere …)``."""
    findings = row.get("findings") or {}
    fired = ", ".join(name + (f" — {findings[name]}" if name in findings else "") for name in row.get("fired") or ())
    fired = f"; fired: {fired}" if fired else ""
    return (f"{row['verdict']} (score {row['score']:.3f}; {row['confidence']}; "
            f"{row['tampered_area_pct']:.3g} % of pixels flagged{fired})")


# --------------------------------------------------------------------------------------------- the model


@dataclass
class Predictor:
    """A loaded model with the input size it expects; turns RGB photos into :class:`Prediction` objects."""

    model: torch.nn.Module
    image_size: int
    device: torch.device
    name: str
    batch_size: int = 4
    #: weight-free experts fused with the model on the whole photo (:mod:`tamperscope.engine.experts`)
    experts: dict = field(default_factory=dict)

    @property
    def native_resolution(self) -> bool:
        return bool(self.model.native_resolution)

    def _run(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        return padded_probabilities(self.model, imagenet_normalize(x).to(self.device))

    def _native(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        probs, scores = self._run(crop[None])
        return probs[0, 0].clamp(0, 1).cpu().numpy(), float(scores[0])

    def maps(self, crops: Sequence[np.ndarray]) -> list[tuple[np.ndarray, float]]:
        """(probability map at the crop's size, image score) for each RGB uint8 crop."""
        if self.native_resolution:
            return [self._native(c) for c in crops]
        s = self.image_size
        out = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            batch = np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_LINEAR) if c.shape[:2] != (s, s)
                              else c for c in chunk])
            probs, scores = self._run(batch)
            out += [(upsample_to(probs[i].float(), c.shape[:2]), float(scores[i])) for i, c in enumerate(chunk)]
        return out

    def predict_array(self, image: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                      image_threshold: float = DEFAULT_THRESHOLD, raw_map: bool = False, tiles: bool = False,
                      tile_size: int | None = None, tile_overlap: float = DEFAULT_TILE_OVERLAP,
                      path: str | None = None) -> Prediction:
        """Predict on an ``H×W×3`` uint8 RGB photo (module docstring: sizes, tiling, verdict)."""
        for name, value in (("threshold", threshold), ("image threshold", image_threshold)):
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {value}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise UserError(f"expected an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
        if not tiles and self.native_resolution and image.shape[0] * image.shape[1] > NATIVE_TILE_PIXELS:
            tiles, tile_size = True, NATIVE_TILE
        if tiles:
            prob, score, n = self._tiled(image, tile_size or self.image_size, tile_overlap)
        else:
            (prob, score), n = self.maps([image])[0], 1
        calibration = self.model.calibration
        reference = (calibration or {}).get("image")
        band = None
        if reference:  # the raw inconclusive bound, calibrated as the score is
            bound = calibrate_score(torch.tensor(float(reference["inconclusive_from"]), dtype=torch.float64),
                                    calibration)
            band = min(float(bound), float(image_threshold))
        raw_score = uncalibrate_score(score, calibration)
        scores = {}
        if self.experts:  # fused on the whole photo (engine.experts.fuse)
            scores[self.model.model_name or "model"] = score
            outputs = expert_maps(self.experts, image, self.device)
            evidence = evidence_names(self.experts)
            prob, _ = fuse_photo(prob, score, outputs, evidence)  # the score and who decides it: below
            for name, (_, expert_score) in outputs.items():
                if name in evidence:  # evidence shapes the map only; it never decides
                    continue
                scores[name] = expert_score
                if expert_score > score:  # this expert decides: its own validation scores give the rates
                    score, raw_score, reference = expert_score, expert_score, self.experts[name][1]
        return Prediction(prob.astype(np.float32), score, float(threshold), self.name, image, path, n,
                          image_threshold=float(image_threshold), inconclusive_from=band, raw_map=bool(raw_map),
                          raw_score=raw_score, reference=reference, experts=scores,
                          findings={name: model.finding for name, (model, _) in self.experts.items() if model.finding})

    def _tiled(self, image: np.ndarray, tile: int, overlap: float) -> tuple[np.ndarray, float, int]:
        h, w = image.shape[:2]
        grid = JPEG_GRID if self.native_resolution else 1
        windows = [(y, x, th, tw) for y, th in tile_windows(h, tile, overlap, grid)
                   for x, tw in tile_windows(w, tile, overlap, grid)]
        total = np.zeros((h, w), np.float32)
        count = np.zeros((h, w), np.float32)
        best = 0.0
        for start in range(0, len(windows), self.batch_size):  # a batch of windows at a time: bounded memory
            chunk = windows[start:start + self.batch_size]
            crops = [np.ascontiguousarray(image[y:y + th, x:x + tw]) for y, x, th, tw in chunk]
            for (y, x, th, tw), (prob, score) in zip(chunk, self.maps(crops)):
                total[y:y + th, x:x + tw] += prob
                count[y:y + th, x:x + tw] += 1.0
                best = max(best, score)
        return total / count, best, len(windows)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Window offsets along one axis: first at 0, last at ``length - tile``, evenly spaced in between."""
    if tile < INPUT_MULTIPLE:
        raise UserError(f"tile size must be at least {INPUT_MULTIPLE} pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"tile overlap must be in [0, 1), got {overlap}")
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    n = math.ceil((length - tile) / stride) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - tile, n)})


def tile_windows(length: int, tile: int, overlap: float, grid: int = 1) -> list[tuple[int, int]]:
    """(start, size) of the windows along one axis: :func:`tile_starts` moved down to multiples of ``grid``,
    each window ``tile`` long (cut to the photo) and the last one reaching the end."""
    starts = sorted({s - s % grid for s in tile_starts(length, tile, overlap)})
    return [(s, length - s if i == len(starts) - 1 else min(tile, length - s)) for i, s in enumerate(starts)]


def load_predictor(checkpoint: PathLike | None = None, *, device: str | torch.device | None = "cpu",
                   image_size: int | None = None, batch_size: int = 4, onnx_runtime: str = "auto",
                   experts: bool = True) -> Predictor:
    """Load the default model, a checkpoint, a weight-free built-in model (:func:`~tamperscope.engine.loading.
    load_model`) or an ONNX export, with the experts the checkpoint names unless ``experts`` is False
    (:mod:`tamperscope.engine.experts`)."""
    dev = resolve_device(device)
    if str(checkpoint).endswith(".onnx"):  # `tamperscope export-onnx`, run by ONNX Runtime or OpenVINO
        from .onnx_runtime import load_onnx_model

        if image_size is not None:
            check_image_size(image_size)
        model, size, name, attached = load_onnx_model(checkpoint, onnx_runtime, image_size, experts)
        fused = build_experts(attached, str(checkpoint))
        return Predictor(model.to(dev).eval(), int(size), dev, name, batch_size,
                         {k: (m.to(dev), ref) for k, (m, ref) in fused.items()})
    loaded = load_model(checkpoint, dev, experts=experts, image_size=image_size)
    return Predictor(loaded.model, loaded.image_size, dev, loaded.name, batch_size, loaded.experts)


@lru_cache(maxsize=2)
def _cached_predictor(checkpoint: str | None, mtime: float, device: str, image_size: int | None) -> Predictor:
    return load_predictor(checkpoint, device=device, image_size=image_size)


def _as_rgb(image) -> tuple[np.ndarray, str | None]:
    """A path, bytes, PIL image or numpy array (uint8, or float in [0, 1]) as ``H×W×3`` uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image), os.fspath(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return read_image_bytes(bytes(image)), None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy(), None
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.size == 0:
        raise UserError(f"expected an H×W×3 RGB image, got an array of shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if arr.dtype.kind != "f" or not (np.nanmin(arr) >= 0.0 and np.nanmax(arr) <= 1.0):
            raise UserError(f"expected uint8 RGB or float RGB in [0, 1], got {arr.dtype} with range "
                            f"[{np.nanmin(arr)}, {np.nanmax(arr)}]")
        arr = np.round(np.nan_to_num(arr) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr), None


def predict(image, checkpoint: PathLike | None = None, *, threshold: float = DEFAULT_THRESHOLD,
            image_threshold: float = DEFAULT_THRESHOLD, raw_map: bool = False, tiles: bool = False,
            tile_size: int | None = None, tile_overlap: float = DEFAULT_TILE_OVERLAP,
            device: str = "cpu", image_size: int | None = None) -> Prediction:
    """Predict on one photo (a path, bytes, PIL image or RGB array) with the default model or ``checkpoint``.

    ``threshold`` applies to pixels, ``image_threshold`` to the image score; ``raw_map`` draws the regions above
    ``threshold`` even for an authentic verdict. The loaded model is cached, so repeated calls with the same
    checkpoint do not reload it."""
    key = None if checkpoint is None else os.fspath(checkpoint)
    mtime = os.path.getmtime(key) if key is not None and os.path.exists(key) else 0.0
    predictor = _cached_predictor(key, mtime, str(device), image_size)
    rgb, path = _as_rgb(image)
    return predictor.predict_array(rgb, threshold=threshold, image_threshold=image_threshold, raw_map=raw_map,
                                   tiles=tiles, tile_size=tile_size, tile_overlap=tile_overlap, path=path)


# --------------------------------------------------------------------------------------------- files


def collect_inputs(items: Iterable[PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (recursively: image suffixes only, skipping hidden files and our own outputs) and
    glob patterns into a de-duplicated list of files, plus ``(item, problem)`` for items that match nothing."""
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and not any(f.name.endswith(f".{kind}.png") for kind in OUTPUT_KINDS))
            if not files:
                problems.append((text, "folder holds no image files"))
            found += files
        elif p.exists():
            found.append(p)
        elif glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_file()]
            if not matches:
                problems.append((text, "no files match this pattern"))
            found += matches
        else:
            problems.append((text, "file not found"))
    unique: dict[str, Path] = {}
    for f in found:
        unique.setdefault(os.path.realpath(f), f)
    return list(unique.values()), problems


def output_stems(paths: Sequence[Path]) -> list[str]:
    """``<stem>`` per input, with ``-2``, ``-3`` … appended where two inputs share a stem."""
    taken: set[str] = set()
    stems = []
    for p in paths:
        candidate, n = p.stem, 1
        while candidate in taken:
            n += 1
            candidate = f"{p.stem}-{n}"
        taken.add(candidate)
        stems.append(candidate)
    return stems


def check_finite(pred: Prediction, where: str) -> None:
    """A map or score that is NaN or infinite (e.g. damaged weights) is an error, never a verdict."""
    if not (math.isfinite(float(pred.score)) and bool(np.isfinite(pred.probability).all())):
        raise UserError(f"{where}: the model {pred.model} gave non-finite outputs (NaN or infinity); its weights "
                        "are probably damaged")


#: zlib level of the output PNGs: a 12 MP overlay encodes in 1.7 s instead of PIL's default level 6's 4.9 s, for
#: 7 % more bytes (2-core CPU, docs/BENCHMARKS.md); the pixels are the same
PNG_LEVEL = 3


def probability_png(prob: np.ndarray) -> bytes:
    """The raw probability map as a 16-bit grey PNG (0–65535 = probability 0–1), readable by
    ``evaluate --predictions`` (:func:`tamperscope.io.read_probability_map`)."""
    return encode_image(np.round(np.clip(prob, 0.0, 1.0) * 65535.0).astype(np.uint16), compress_level=PNG_LEVEL)


def sha256_of(path: PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class OutputManifest:
    """What ``predict`` wrote into an output folder, ``predict-manifest.json``: ``{file name: [SHA-256, ...]}``.

    Each file is recorded *before* it is written (with the digest of what it held until then), so a run that was
    interrupted has recorded every file it may have touched; a later run replaces exactly the recorded files whose
    content is still what a run wrote, and nothing else (a file the user edited or put there is kept)."""

    def __init__(self, out_dir: PathLike):
        self.path = Path(out_dir) / MANIFEST
        self.files: dict[str, list[str]] = {}
        self.foreign = False  # a file of that name that predict did not write
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                files = data["files"] if isinstance(data, dict) and data.get("written_by") == MANIFEST_TAG else None
                if not (isinstance(files, dict) and all(isinstance(v, list) for v in files.values())):
                    raise ValueError
                self.files = {str(k): [str(d) for d in v] for k, v in files.items()}
            except (OSError, ValueError, KeyError, UnicodeDecodeError):
                self.foreign = True

    def ours(self, path: Path) -> bool:
        """Whether ``path`` (in the folder) is a file a run recorded and still holds what that run wrote."""
        digests = self.files.get(path.name)
        return bool(digests) and (not path.exists() or sha256_of(path) in digests)

    def record(self, path: Path, data: bytes, protect: Iterable[PathLike] = ()) -> None:
        """Record ``path`` as about to receive ``data`` (call before writing it)."""
        keep = [sha256_of(path)] if path.is_file() and self.ours(path) else []
        new = hashlib.sha256(data).hexdigest()
        self.files[path.name] = list(dict.fromkeys(keep + [new]))
        body = {"written_by": MANIFEST_TAG, "files": self.files}
        atomic_write_text(self.path, json.dumps(body, indent=1, sort_keys=True) + "\n", protect=protect)


def _write_recorded(path: Path, data: bytes, manifest: OutputManifest | None, protect: list) -> None:
    check_protected(path, protect)  # before the manifest names it
    if manifest is not None:
        manifest.record(path, data, protect)
    atomic_write_bytes(path, data, protect=protect)


def write_prediction_images(pred: Prediction, out_dir: PathLike, stem: str, protect: Iterable[PathLike] = (),
                            manifest: OutputManifest | None = None) -> dict[str, str]:
    """``<stem>.heatmap.png``, ``<stem>.mask.png``, ``<stem>.overlay.png`` and the raw map
    ``<stem>.probability.png`` (16-bit, :func:`probability_png`) in ``out_dir``, each recorded in ``manifest``
    before it is written; returns the paths."""
    out_dir = Path(out_dir)
    protect = list(protect)
    images = {"heatmap": encode_image(pred.heatmap(), compress_level=PNG_LEVEL),
              "mask": encode_image(pred.mask_png(), compress_level=PNG_LEVEL),
              "overlay": encode_image(pred.overlay(), compress_level=PNG_LEVEL),
              "probability": probability_png(pred.probability)}
    paths = {}
    for kind in OUTPUT_KINDS:
        target = out_dir / f"{stem}.{kind}.png"
        _write_recorded(target, images[kind], manifest, protect)
        paths[kind] = str(target)
    return paths


def write_results(rows: list[dict], out_dir: PathLike, protect: Iterable[PathLike] = (),
                  manifest: OutputManifest | None = None) -> tuple[Path, Path]:
    """``results.json`` (a list of rows), ``results.csv`` (one row per input, :data:`RESULT_FIELDS`) and
    ``scores.json`` (``{output stem: score}``, so that ``evaluate --predictions OUT`` scores this output)."""
    out_dir = Path(out_dir)
    protect = list(protect)
    json_path = out_dir / "results.json"
    csv_path = out_dir / "results.csv"
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else ";".join(row[k]) if isinstance(row.get(k), list)
                             else row.get(k)) for k in RESULT_FIELDS})
    scores = {r["output_stem"]: r["score"] for r in rows if r.get("status") == "ok"}
    for path, text in ((json_path, json.dumps(rows, indent=2, allow_nan=False) + "\n"), (csv_path, buf.getvalue()),
                       (out_dir / "scores.json", json.dumps(scores, indent=1, allow_nan=False) + "\n")):
        _write_recorded(path, text.encode("utf-8"), manifest, protect)
    return json_path, csv_path


@dataclass
class BatchResult:
    rows: list[dict]
    n_ok: int
    n_failed: int
    results_json: Path
    results_csv: Path


def files_not_written_by_predict(out_dir: Path, manifest: OutputManifest | None = None) -> set[Path]:
    """Files already in ``out_dir`` that no earlier ``predict`` into it wrote (:class:`OutputManifest`; for
    folders written before the manifest existed, the files its ``results.json`` lists): they must never be
    overwritten, even when their names look like our outputs."""
    if not out_dir.is_dir():
        return set()
    manifest = manifest or OutputManifest(out_dir)
    existing = {p.resolve() for p in out_dir.iterdir() if p.is_file()}
    ours = {p for p in existing if manifest.ours(p)}
    if not manifest.foreign:
        ours.add(manifest.path.resolve())
    if not manifest.files:
        ours |= _legacy_outputs(out_dir)
    return existing - ours


def _legacy_outputs(out_dir: Path) -> set[Path]:
    """The files a ``predict`` from before :class:`OutputManifest` wrote, by its ``results.json``."""
    try:
        rows = json.loads((out_dir / "results.json").read_text())
    except (OSError, ValueError):
        return set()
    if not (isinstance(rows, list) and all(isinstance(r, dict) and "status" in r for r in rows)):
        return set()
    ours = {(out_dir / name).resolve() for name in ("results.json", "results.csv")}
    return ours | {(out_dir / Path(r[kind]).name).resolve() for r in rows for kind in OUTPUT_KINDS
                   if isinstance(r.get(kind), str)}


def predict_files(predictor: Predictor, items: Iterable[PathLike], out_dir: PathLike, *, progress: bool = True,
                  report: Callable[[str], None] | None = None, **settings) -> BatchResult:
    """Predict every image of ``items`` into ``out_dir`` with the ``settings`` of :meth:`Predictor.predict_array`
    (threshold, image_threshold, raw_map, tiles, tile_size, tile_overlap); a bad file is reported (one line) and
    skipped, and so is a non-finite map or score (:func:`check_finite`). Each result row carries the input's SHA-256.

    Nothing is ever written over an input file, nor over a file in ``out_dir`` that an earlier ``predict`` did not
    write (:func:`files_not_written_by_predict`; all go to the writers' ``protect`` list); every file written is
    recorded first in the folder's :class:`OutputManifest`."""
    report = report or (lambda line: tqdm.write(line, file=sys.stderr))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output folder {out_dir}: exists and is not a folder")
    files, problems = collect_inputs(items)
    manifest = OutputManifest(out_dir)
    if manifest.foreign:
        raise UserError(f"output folder {out_dir}: holds a {MANIFEST} that tamperscope predict did not write; "
                        "choose another folder")
    foreign = files_not_written_by_predict(out_dir, manifest)
    for name in ("results.json", "results.csv", "scores.json"):
        if (out_dir / name).resolve() in foreign:
            raise UserError(f"output folder {out_dir}: holds a {name} that tamperscope predict did not write; "
                            "choose another folder")
    protect = list(files) + sorted(foreign)  # e.g. a ground truth photo.mask.png beside photo.png
    rows: list[dict] = []
    for item, problem in problems:
        report(f"failed: {item}: {problem}")
        rows.append({"input": item, "status": "error", "error": f"{item}: {problem}"})
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"output folder {out_dir}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"output folder {out_dir}: not writable")
    for path, stem in tqdm(list(zip(files, output_stems(files))), desc="predict", unit="img",
                           disable=not progress, leave=False):
        try:
            digest = sha256_of(path)
            pred = predictor.predict_array(read_image(path), path=str(path), **settings)
            check_finite(pred, str(path))
            written = write_prediction_images(pred, out_dir, stem, protect, manifest)
        except (ImageReadError, UserError, MemoryError, RuntimeError, cv2.error, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, OSError) and not isinstance(exc, UserError):
                message = exc.strerror or message
            if not message.startswith(str(path)) and not message.startswith(str(out_dir)):
                message = f"{path}: {message}"
            report(f"failed: {message}")
            rows.append({"input": str(path), "output_stem": stem, "status": "error", "error": message})
            continue
        rows.append({**pred.to_dict(), "sha256": digest, "output_stem": stem, "status": "ok", **written,
                     "error": None})
    json_path, csv_path = write_results(rows, out_dir, protect, manifest)
    n_ok = sum(r["status"] == "ok" for r in rows)
    return BatchResult(rows, n_ok, len(rows) - n_ok, json_path, csv_path)
