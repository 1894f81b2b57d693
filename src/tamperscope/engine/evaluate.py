"""Evaluation with the exact protocol metrics (:mod:`tamperscope.metrics`): a model on a dataset, or any method's saved
probability maps (``--predictions DIR``), scored at full resolution (the prediction is upsampled to the
ground truth; the ground truth is never downsampled). Nothing is dropped: every image is scored once,
whatever the batch size or number of processes."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import ForensicsDataset, collate
from ..data.transforms import resize_mask
from ..errors import ImageReadError, UserError
from ..inference import model_probabilities, padded_probabilities, upsample_to
from ..io import orient_mask, probe_image, read_mask, read_probability_map
from ..metrics import MetricAccumulator, f1_at_thresholds
from .distributed import ResumableSampler, is_main

METRIC_KEYS = ("n_images", "n_tampered", "n_authentic", "pixel_f1", "pixel_iou", "pixel_auc", "pixel_f1_permuted",
               "pixel_f1_permuted_band", "pixel_f1_best", "pixel_f1_pooled", "image_auc", "image_acc",
               "image_balanced_acc", "image_eer", "image_f1", "fake_recall", "real_recall")


GROUP_KEYS = ("region", "method", "area_bin", "source", "generator_family")


def _groups(meta: dict | None, label: int) -> dict:
    """Subgroup keys of an image for ``--group-by``. Authentic images have no region/method/area: they form the
    group ``authentic`` (where real recall is read); a forged image without metadata is ``unknown``."""
    meta = meta or {}
    fallback = "authentic" if not label else "unknown"
    return {k: meta.get(k, fallback) for k in GROUP_KEYS}


def evaluation_dataset(model, records, image_size: int, *, on_mismatch: str = "error", perturb=None):
    """The dataset ``model`` is scored on: native-resolution models (ELA, the default model) see each photo at its
    own size (padded; resampling would erase the JPEG traces they read), the others a resize to ``image_size``.
    ``perturb``: a parsed ``(kind, level)`` or None. Used by evaluate, robustness, compare and export."""
    resolution = "native" if model.native_resolution else "resize"
    return ForensicsDataset(records, image_size=image_size, augment=False, on_mismatch=on_mismatch, perturb=perturb,
                            resolution=resolution)


def iterate_maps(model, dataset, *, batch_size: int = 8, device: torch.device | str = "cpu", workers: int = 0,
                 rank: int = 0, world_size: int = 1, progress: bool = True):
    """Run ``model`` over this rank's share of ``dataset``; yield ``(index, probability map, ground truth,
    image score, meta, path)`` per image, the map at the ground truth's full resolution.

    A dataset at ``resolution="native"`` (photos padded to a multiple of 32, for the training losses) runs one
    image per batch: its padding is cut off and the model pads the photo as it needs
    (:func:`~tamperscope.inference.padded_probabilities`: weight-free experts read it unpadded), and the map, at the
    photo the model saw (its ``input_size``: smaller or larger than the ground truth under a ``resize``
    perturbation), is resized to the ground truth."""
    native = getattr(dataset, "resolution", "resize") == "native"
    batch_size = 1 if native else batch_size
    device = torch.device(device)
    model.eval()
    sampler = ResumableSampler(len(dataset), seed=0, shuffle=False, rank=rank, world_size=world_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                        drop_last=False, generator=torch.Generator().manual_seed(0))
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not (progress and is_main()), leave=False):
        image = batch["image"].to(device, non_blocking=True)
        if native:
            h, w = batch["input_size"][0]
            probs, scores = padded_probabilities(model, image[..., :h, :w])
        else:
            probs, scores = model_probabilities(model, image)
        if not (bool(torch.isfinite(probs).all()) and bool(torch.isfinite(scores).all())):
            raise UserError(f"{batch['path'][0]}: the model gave non-finite outputs (NaN or infinity); its weights "
                            "are probably damaged")
        for i in range(probs.shape[0]):
            gt = batch["mask_full"][i].numpy().astype(bool)
            prob = probs[i]
            meta = batch.get("meta", [None] * probs.shape[0])[i]
            yield (int(batch["index"][i]), upsample_to(prob.float(), gt.shape), gt, float(scores[i]), meta,
                   batch["path"][i])


def evaluate_model(model, dataset, *, batch_size: int = 8, device: torch.device | str = "cpu",
                   threshold: float = 0.5, workers: int = 0, rank: int = 0, world_size: int = 1,
                   progress: bool = True, collect_examples: int = 0) -> tuple[MetricAccumulator, list]:
    """Run ``model`` over ``dataset`` (:func:`iterate_maps`) and accumulate per-image metric records (gathered
    across ranks). Returns the accumulator and up to ``collect_examples`` (path, probability map) pairs."""
    acc = MetricAccumulator(threshold)
    examples = []
    for index, full, gt, score, meta, path in iterate_maps(model, dataset, batch_size=batch_size, device=device,
                                                           workers=workers, rank=rank, world_size=world_size,
                                                           progress=progress):
        acc.add(index, full, gt, score=score, label=int(gt.any()), groups=_groups(meta, int(gt.any())))
        if len(examples) < collect_examples:
            examples.append((path, full))
    acc.gather()
    return acc, examples


def calibration_sweep(model, dataset, thresholds, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model pass (single process, ``kwargs`` as :func:`iterate_maps`) over validation data: the pixel F1 of
    each tampered image at each of ``thresholds`` (``n_tampered × len(thresholds)``), and every image's score and
    label (1 = tampered). Used by ``export --calibrate`` to choose the operating points."""
    f1, scores, labels = [], [], []
    for _, full, gt, score, _, _ in iterate_maps(model, dataset, **kwargs):
        scores.append(score)
        labels.append(int(gt.any()))
        if gt.any():
            f1.append(f1_at_thresholds(full, gt, thresholds))
    return np.reshape(f1, (-1, len(thresholds))), np.asarray(scores, dtype=np.float64), np.asarray(labels)


def load_prediction_map(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A saved grayscale PNG (0–255 = probability) as float32 in [0,1] at ``size``."""
    prob = torch.from_numpy(read_probability_map(path))[None]
    if size[0] != size[1] and tuple(prob.shape[-2:]) == (size[1], size[0]):
        raise UserError(f"{path}: the map is {prob.shape[-2]}×{prob.shape[-1]} (H×W), the image {size[0]}×{size[1]}: "
                        f"turned 90° (EXIF orientation?); save maps in the photo's displayed orientation")
    return upsample_to(prob, size)


def scoring_mask(rec, on_mismatch: str = "error") -> np.ndarray | None:
    """The ground truth of ``rec`` at its image's displayed size (authentic: all False). A mask drawn on the
    stored grid of an EXIF-rotated photo is turned like the photo; another size is resized (``resize``), skipped
    (``skip``: None) or an error naming both files."""
    header = probe_image(rec.image)
    size = header.oriented_hw
    if rec.mask is None:
        return np.zeros(size, dtype=bool)
    mask = read_mask(rec.mask)
    if mask.shape == size:
        return mask
    if mask.shape == header.stored_hw:
        return orient_mask(mask, header.orientation)
    if on_mismatch == "resize":
        return resize_mask(mask, *size)
    if on_mismatch == "skip":
        return None
    raise ImageReadError(f"{rec.image} is {size[0]}×{size[1]} but its mask {rec.mask} is {mask.shape[0]}×"
                         f"{mask.shape[1]} (H×W); skip such images or resize their masks", option="on_mismatch")


def evaluate_predictions(pred_dir: str | Path, records, threshold: float = 0.5, progress: bool = True,
                         on_mismatch: str = "error") -> MetricAccumulator:
    """Score saved maps ``<image stem>.png`` (+ optional ``scores.json`` ``{stem: probability}``) against the
    ground truth of ``records`` (:func:`scoring_mask`); a missing map is an error naming it. ``predict``'s own
    16-bit maps, ``<image stem>.probability.png``, are taken where no ``<image stem>.png`` exists, so its output
    folder (with its ``scores.json``) is scored as it is."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: predictions folder not found")
    scores = {}
    if (pred_dir / "scores.json").is_file():
        try:
            scores = json.loads((pred_dir / "scores.json").read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{pred_dir / 'scores.json'}: invalid JSON ({exc})")
        bad = [k for k, v in scores.items() if isinstance(v, bool) or not isinstance(v, (int, float))
               or not 0.0 <= v <= 1.0] if isinstance(scores, dict) else None
        if bad is None or bad:
            raise UserError(f"{pred_dir / 'scores.json'}: expected {{image stem: probability in [0, 1]}}"
                            + (f"; bad value for '{bad[0]}'" if bad else ""))
    by_stem: dict[str, list] = {}
    for rec in records:
        by_stem.setdefault(Path(rec.image).stem, []).append(str(rec.image))
    shared = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if shared:
        stem, paths = next(iter(shared.items()))
        raise UserError(f"{len(shared)} stem(s) name more than one image, e.g. '{stem}': {', '.join(paths[:3])}; "
                        f"saved maps are found by stem, so these images cannot be told apart")
    def map_path(stem: str) -> Path:
        plain = pred_dir / f"{stem}.png"
        own = pred_dir / f"{stem}.probability.png"
        return own if own.is_file() and not plain.is_file() else plain

    missing = [r.image for r in records if not map_path(Path(r.image).stem).is_file()]
    if missing:
        raise UserError(f"{pred_dir}: {len(missing)} prediction map(s) missing, e.g. {Path(missing[0]).stem}.png")
    acc = MetricAccumulator(threshold)
    skipped = []
    for index, rec in enumerate(tqdm(records, desc="score", unit="img", disable=not progress, leave=False)):
        gt = scoring_mask(rec, on_mismatch)
        if gt is None:
            skipped.append(str(rec.mask))
            continue
        stem = Path(rec.image).stem
        prob = load_prediction_map(map_path(stem), gt.shape)
        acc.add(index, prob, gt, score=scores.get(stem), label=int(gt.any()), groups=_groups(rec.meta, int(gt.any())))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} image(s) whose mask size differs from the image, e.g. {skipped[0]}",
                      UserWarning, stacklevel=2)
    return acc


def format_table(metrics: dict, title: str = "") -> str:
    """A two-column text table of the flat metric keys."""
    lines = [title] if title else []
    for key in METRIC_KEYS:
        if key in metrics:
            v = metrics[key]
            lines.append(f"  {key:<24} {('-' if v is None else (f'{v:.4f}' if isinstance(v, float) else v))}")
    return "\n".join(lines)
