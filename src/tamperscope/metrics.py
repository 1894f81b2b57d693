"""Exact pixel- and image-level metrics for manipulation localisation and detection (IMDL-BenCo and TruFor metric code).

Definitions (p = predicted probability map, g = ground truth, τ = threshold, b = 1[p > τ], strict ">"
as in IMDL-BenCo):

- ``f1`` = 2TP / (2TP + FP + FN), ``iou`` = TP / (TP + FP + FN), per image at τ.
- ``auc``: per-image ROC-AUC over pixels, ties counted one half, which is exactly what scikit-learn's
  ``roc_auc_score`` computes (a trapezoid over the ROC points at the *distinct* scores). Undefined
  (``None``) when g is all-0 or all-1.
- ``f1_permuted`` (CAT-Net / IMDL-BenCo ``PixelF1(mode="double")``): max(F1(b, g), F1(1 − b, g)).
- ``f1_permuted_band`` (TruFor, fixed threshold): the ground truth gets a tolerance band, core positives
  = erode(g) with an ``erode``×``erode`` minimum filter (default 15), core negatives = NOT dilate(g) with a
  ``dilate``×``dilate`` maximum filter (default 11); other pixels are ignored. Max over both polarities
  at τ. The filters use scipy's default ``reflect`` border, as TruFor's ``extractGTs`` does.
- ``f1_best`` (TruFor "optimal" permuted F1, also FRD-Net's ``F1opt``): on the band-kept pixels, the
  maximum over every threshold t of max(F1(p > t), F1(p ≤ t)). It is an oracle (one threshold per
  image, chosen with the ground truth) and is reported as such. Because both polarities are taken,
  sweeping the distinct values of p, as TruFor does, reaches every attainable value.
- ``f1_best_plain``: best-threshold F1 without band or permutation: max over every t of F1(p > t),
  the all-positive prediction included; this equals the maximum F1 along scikit-learn's
  ``precision_recall_curve``.

Resolved ambiguities (resolved choices where the papers do not say, and IMDL-BenCo pitfalls avoided):

- Pixel means run over **tampered images only** (g has a positive pixel). An authentic image still
  returns TP/FP/FN/TN (they enter the pooled ``pixel_f1_pooled`` / ``pixel_iou_pooled``, which sum the
  confusion counts of *all* images, so false alarms on authentic images count), but its F1, IoU, AUC
  and the other per-image scores are ``None`` and never enter a mean.
- A tampered image whose AUC is undefined (all-tampered mask) is left out of the AUC mean and counted
  in ``n_auc_undefined``; one whose band has no core positive pixel (a mask thinner than the erosion
  window) has undefined band scores (``None``), is left out of those means and counted in
  ``n_band_undefined``. (TruFor scores such an image as 0 or NaN depending on the prediction.)
- The oracle and AUC use one sort per image (O(n log n)); all other scores are O(n). Thresholds are the
  map's own values at its own precision (TruFor first casts the map to float32).
- Image-level metrics use the score s (``image_logit`` through a sigmoid, or max p for models without a
  detection head), fake = positive class, decisions at s > 0.5 whatever the pixel τ (the image threshold of
  :class:`MetricAccumulator` is separate, as R@50 and ACC are defined at 0.5). EER: the point on the ROC where
  FPR = FNR, linearly interpolated between the two ROC points where FPR − FNR changes sign.
- Nothing is dropped: :class:`MetricAccumulator` keeps one scalar record per image, de-duplicated by
  dataset index, and merges records across ``torch.distributed`` ranks before computing.
"""
from __future__ import annotations

from numbers import Number
from typing import Any, Iterable

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

from .errors import UserError

__all__ = ["pixel_stats", "image_metrics", "MetricAccumulator", "tolerance_band"]

PIXEL_MEAN_KEYS = ("f1", "iou", "auc", "f1_permuted", "f1_permuted_band", "f1_best", "f1_best_plain")
IMAGE_KEYS = ("image_auc", "image_acc", "image_balanced_acc", "image_eer", "image_f1", "fake_recall",
              "real_recall")


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _f1(tp, fp, fn):
    """F1 = 2TP / (2TP + FP + FN); the caller guarantees a positive denominator."""
    return 2.0 * tp / (2.0 * tp + fp + fn)


def _cumulative_counts_at_cuts(sorted_values: np.ndarray, sorted_positive: np.ndarray):
    """For values sorted ascending: positives and negatives with value ≤ t for every distinct value t.

    Returns ``(pos_le, neg_le)``, one entry per distinct value (the end of each run of equal values), so
    that the prediction ``p > t`` has TP = P − pos_le and FP = N − neg_le.
    """
    run_end = np.empty(sorted_values.shape[0], dtype=bool)
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=run_end[:-1])
    run_end[-1] = True
    pos_le = np.cumsum(sorted_positive, dtype=np.int64)[run_end]
    neg_le = np.arange(1, sorted_values.shape[0] + 1, dtype=np.int64)[run_end] - pos_le
    return pos_le, neg_le


def _auc_from_counts(pos_le: np.ndarray, neg_le: np.ndarray) -> float:
    """Mann–Whitney ROC-AUC with ties counted one half (= scikit-learn's trapezoid over distinct scores)."""
    n_pos, n_neg = int(pos_le[-1]), int(neg_le[-1])
    pos_in_run = np.diff(pos_le, prepend=0).astype(np.float64)
    neg_in_run = np.diff(neg_le, prepend=0).astype(np.float64)
    neg_below = neg_le - neg_in_run
    return float(np.dot(pos_in_run, neg_below + 0.5 * neg_in_run) / (float(n_pos) * float(n_neg)))


def _as_numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device/dtype) or nested sequence."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _binary_mask(gt: np.ndarray) -> np.ndarray:
    """Ground truth as bool: bool arrays as they are, anything else tampered where > 0.5."""
    return gt if gt.dtype == np.bool_ else gt > 0.5


def _check_probabilities(prob: np.ndarray, what: str) -> np.ndarray:
    """``prob`` as a float array after checking it holds finite values in [0, 1] (else UserError)."""
    if prob.dtype.kind not in "fiub":
        raise UserError(f"{what} must be numeric, got dtype {prob.dtype}")
    if prob.dtype.kind != "f" or prob.dtype.itemsize < 4:
        prob = prob.astype(np.float64)
    if prob.size:
        if not np.isfinite(prob).all():
            raise UserError(f"{what} contains NaN or infinite values")
        lo, hi = float(prob.min()), float(prob.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError(f"{what} must be probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                            "(logits? apply a sigmoid first)")
    return prob


def tolerance_band(gt: np.ndarray, erode: int = 15, dilate: int = 11):
    """TruFor tolerance band (grip-unina/TruFor metrics code): ``(core_positive, core_negative)`` bool maps.

    core_positive = erode(g) with an ``erode``×``erode`` minimum filter; core_negative = NOT dilate(g)
    with a ``dilate``×``dilate`` maximum filter; pixels in neither are ignored by the band metrics.
    """
    if int(erode) < 1 or int(dilate) < 1:
        raise UserError(f"tolerance band sizes must be >= 1, got erode={erode}, dilate={dilate}")
    g = _binary_mask(np.asarray(gt)).astype(np.uint8)
    core_positive = minimum_filter(g, size=int(erode)).astype(bool)
    core_negative = ~maximum_filter(g, size=int(dilate)).astype(bool)
    return core_positive, core_negative


# ----------------------------------------------------------------------------------------------------
# pixel level
# ----------------------------------------------------------------------------------------------------
def pixel_stats(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5, erode: int = 15,
                dilate: int = 11) -> dict:
    """Per-image pixel metrics (IMDL-BenCo definitions) of an ``H×W`` probability map against an ``H×W`` mask.

    Returns ``tp, fp, fn, tn`` (ints, prediction ``prob > threshold``), ``tampered`` (mask has a positive
    pixel) and the scores ``f1, iou, auc, f1_permuted, f1_permuted_band, f1_best, f1_best_plain``
    (floats, or ``None`` where undefined: every score of an authentic image, ``auc`` of an all-tampered
    mask, the band scores when erosion leaves no core positive pixel). ``erode``/``dilate`` are the
    TruFor band window sizes.
    """
    prob = _check_probabilities(_as_numpy(prob), "prediction map")
    gt = _binary_mask(_as_numpy(gt))
    if prob.ndim != 2 or gt.shape != prob.shape:
        raise UserError(f"prediction map of shape {tuple(prob.shape)} does not match mask of shape "
                        f"{tuple(gt.shape)} (both must be H×W)")
    if prob.size == 0:
        raise UserError("empty prediction map (0 pixels)")
    pred = prob > threshold
    tp = int(np.count_nonzero(pred & gt))
    n_pred = int(np.count_nonzero(pred))
    n_pos = int(np.count_nonzero(gt))
    fp, fn = n_pred - tp, n_pos - tp
    tn = int(prob.size) - tp - fp - fn
    out: dict = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "tampered": n_pos > 0}
    for key in PIXEL_MEAN_KEYS:
        out[key] = None
    if n_pos == 0:
        return out

    out["f1"] = _f1(tp, fp, fn)
    out["iou"] = tp / (tp + fp + fn)
    out["f1_permuted"] = max(out["f1"], _f1(fn, tn, tp))  # inverted map: TP'=FN, FP'=TN, FN'=TP

    flat_prob, flat_gt = prob.ravel(), gt.ravel()
    order = np.argsort(flat_prob, kind="quicksort")
    sorted_values = flat_prob[order]
    pos_le, neg_le = _cumulative_counts_at_cuts(sorted_values, flat_gt[order])
    n_neg = int(prob.size) - n_pos
    if n_neg > 0:
        out["auc"] = _auc_from_counts(pos_le, neg_le)
    # cuts p > t at each distinct t, plus the all-positive prediction (pos_le = neg_le = 0)
    tp_cut = n_pos - pos_le
    fp_cut = n_neg - neg_le
    out["f1_best_plain"] = float(max(np.max(_f1(tp_cut, fp_cut, pos_le)), _f1(n_pos, n_neg, 0)))

    core_pos, core_neg = tolerance_band(gt, erode, dilate)
    n_core_pos = int(np.count_nonzero(core_pos))
    if n_core_pos == 0:
        return out
    kept = core_pos | core_neg
    n_core_neg = int(np.count_nonzero(core_neg))
    tp_b = int(np.count_nonzero(pred & core_pos))
    fp_b = int(np.count_nonzero(pred & core_neg))
    fn_b, tn_b = n_core_pos - tp_b, n_core_neg - fp_b
    out["f1_permuted_band"] = max(_f1(tp_b, fp_b, fn_b), _f1(fn_b, tn_b, tp_b))

    kept_order = order[kept.ravel()[order]]  # still sorted by value
    pos_le_b, neg_le_b = _cumulative_counts_at_cuts(flat_prob[kept_order], core_pos.ravel()[kept_order])
    tp_b_cut, fp_b_cut = n_core_pos - pos_le_b, n_core_neg - neg_le_b
    best_direct = np.max(_f1(tp_b_cut, fp_b_cut, pos_le_b))
    best_inverted = np.max(_f1(pos_le_b, neg_le_b, tp_b_cut))  # p ≤ t: TP'=FN, FP'=TN, FN'=TP
    out["f1_best"] = float(max(best_direct, best_inverted, _f1(n_core_pos, n_core_neg, 0)))
    return out


def f1_at_thresholds(prob: np.ndarray, gt: np.ndarray, thresholds: Iterable[float]) -> np.ndarray:
    """Pixel F1 of ``prob > t`` for every ``t`` in ``thresholds`` (one sort, exact; the ``f1`` of
    :func:`pixel_stats` at each threshold). A tampered mask is required (authentic images have no pixel F1)."""
    prob = _check_probabilities(_as_numpy(prob), "prediction map").ravel()
    gt = _binary_mask(_as_numpy(gt)).ravel()
    if prob.shape != gt.shape:
        raise UserError(f"prediction map of {prob.size} pixels does not match a mask of {gt.size}")
    if not gt.any():
        raise UserError("pixel F1 is undefined for an authentic (all-zero) mask")
    t = np.asarray(list(thresholds), dtype=prob.dtype)  # compared in the map's precision, as `prob > t`
    pos, neg = np.sort(prob[gt]), np.sort(prob[~gt])
    tp = pos.size - np.searchsorted(pos, t, side="right")
    fp = neg.size - np.searchsorted(neg, t, side="right")
    return _f1(tp, fp, pos.size - tp)


# ----------------------------------------------------------------------------------------------------
# image level
# ----------------------------------------------------------------------------------------------------
def image_metrics(scores: Iterable[float], labels: Iterable[int], threshold: float = 0.5) -> dict:
    """Detection metrics over images (paper 003 §4.1, paper 001 §5), fake (label 1) = positive, decision s > τ.

    Keys ``image_auc, image_acc, image_balanced_acc, image_eer, image_f1, fake_recall, real_recall``;
    ``None`` where undefined: AUC, EER and balanced accuracy need both classes, ``fake_recall`` and
    ``image_f1`` need a fake image, ``real_recall`` an authentic one, accuracy any image. Scores must be
    probabilities in [0, 1].
    """
    scores = _check_probabilities(_as_numpy(scores).astype(np.float64).reshape(-1), "image scores")
    labels = _as_numpy(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise UserError(f"{scores.size} image scores but {labels.size} labels")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise UserError(f"image labels must be 0 (authentic) or 1 (fake), got {np.unique(labels)[:5]}")
    labels = labels.astype(bool)
    out = dict.fromkeys(IMAGE_KEYS)
    if scores.size == 0:
        return out
    pred = scores > threshold
    n_fake = int(np.count_nonzero(labels))
    n_real = int(labels.size) - n_fake
    tp = int(np.count_nonzero(pred & labels))
    tn = int(np.count_nonzero(~pred & ~labels))
    out["image_acc"] = (tp + tn) / labels.size
    if n_fake:
        out["fake_recall"] = tp / n_fake
        out["image_f1"] = _f1(tp, n_real - tn, n_fake - tp)
    if n_real:
        out["real_recall"] = tn / n_real
    if n_fake and n_real:
        out["image_balanced_acc"] = 0.5 * (out["fake_recall"] + out["real_recall"])
        order = np.argsort(scores, kind="quicksort")
        pos_le, neg_le = _cumulative_counts_at_cuts(scores[order], labels[order])
        out["image_auc"] = _auc_from_counts(pos_le, neg_le)
        out["image_eer"] = _equal_error_rate(pos_le, neg_le)
    return out


def _equal_error_rate(pos_le: np.ndarray, neg_le: np.ndarray) -> float:
    """EER from the ROC points at the distinct scores: where FPR − FNR crosses 0, linearly interpolated."""
    n_pos, n_neg = float(pos_le[-1]), float(neg_le[-1])
    # ROC points from (0, 0) (cut above the largest score) to (1, 1) (all positive)
    pos_le = np.concatenate(([0], pos_le))[::-1]
    neg_le = np.concatenate(([0], neg_le))[::-1]
    fpr = (n_neg - neg_le) / n_neg
    fnr = pos_le / n_pos
    gap = fpr - fnr  # non-decreasing from −1 to +1
    k = int(np.searchsorted(gap, 0.0, side="left"))
    t = -gap[k - 1] / (gap[k] - gap[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


# ----------------------------------------------------------------------------------------------------
# streaming, distributed-safe accumulation
# ----------------------------------------------------------------------------------------------------
class MetricAccumulator:
    """Collects one scalar record per image and computes the flat metric dict of ARCHITECTURE.md.

    ``add`` takes one image (``H×W`` maps) or a batch (``B×H×W`` or ``B×1×H×W``, numpy or torch), stores
    only :func:`pixel_stats` scalars plus score/label/groups, and ignores an index it has already seen.
    In ``torch.distributed`` runs call :meth:`gather` on every rank before :meth:`compute`: it merges the
    records of all ranks and de-duplicates the samples that ``DistributedSampler`` repeats as padding,
    so every image is counted exactly once whatever the batch size or world size.
    """

    def __init__(self, threshold: float = 0.5, erode: int = 15, dilate: int = 11, image_threshold: float = 0.5):
        self.threshold = float(threshold)  # pixel decisions
        self.image_threshold = float(image_threshold)  # image decisions: 0.5 in every paper's protocol
        self.erode = int(erode)
        self.dilate = int(dilate)
        self._records: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[dict]:
        """Per-image records sorted by dataset index (JSON-serialisable dicts)."""
        return [self._records[i] for i in sorted(self._records)]

    def add(self, index, prob, gt, score=None, label=None, groups=None) -> None:
        """Add one image or a batch.

        ``index``: dataset position(s). ``prob``: probabilities in [0, 1]. ``gt``: mask (bool, or
        tampered where > 0.5). ``score``: image score(s); ``None`` = max of ``prob``. ``label``: 1 = fake;
        ``None`` = whether ``gt`` has a positive pixel. ``groups``: a dict such as ``{"region": "stuff"}``
        for one image, or for a batch a list of such dicts or a dict of length-B sequences.
        """
        prob = _as_numpy(prob)
        gt = _as_numpy(gt)
        single = prob.ndim == 2
        if single:
            prob, gt = prob[None], gt[None]
        if prob.ndim == 4 and prob.shape[1] == 1:
            prob = prob[:, 0]
        if gt.ndim == 4 and gt.shape[1] == 1:
            gt = gt[:, 0]
        if prob.ndim != 3 or gt.shape != prob.shape:
            raise UserError(f"predictions of shape {tuple(prob.shape)} do not match masks of shape "
                            f"{tuple(gt.shape)} (expected H×W, B×H×W or B×1×H×W)")
        batch = prob.shape[0]
        indices = _as_numpy(index).reshape(-1)
        if indices.size != batch or indices.dtype.kind not in "iu":
            raise UserError(f"expected {batch} integer dataset indices, got {indices.tolist()!r}")
        scores = [None] * batch if score is None else _check_probabilities(
            _as_numpy(score).astype(np.float64).reshape(-1), "image scores")
        labels = [None] * batch if label is None else _as_numpy(label).reshape(-1)
        if len(scores) != batch or len(labels) != batch:
            raise UserError(f"batch of {batch} maps but {len(scores)} scores and {len(labels)} labels")
        group_list = _split_groups(groups, batch)

        for i in range(batch):
            idx = int(indices[i])
            if idx in self._records:
                continue
            try:
                stats = pixel_stats(prob[i], gt[i], self.threshold, self.erode, self.dilate)
            except UserError as err:
                raise UserError(f"image index {idx}: {err}") from None
            image_score = float(prob[i].max()) if scores[i] is None else float(scores[i])
            if labels[i] is None:
                image_label = int(stats["tampered"])
            elif float(labels[i]) in (0.0, 1.0):
                image_label = int(labels[i])
            else:
                raise UserError(f"image index {idx}: label must be 0 or 1, got {labels[i]!r}")
            self._records[idx] = {"index": idx, "score": image_score, "label": image_label,
                                  **stats, "groups": group_list[i]}

    def gather(self) -> "MetricAccumulator":
        """Merge the records of all ``torch.distributed`` ranks (a no-op without a process group).

        Collective: every rank must call it. Records are de-duplicated by index, so the padding that
        ``DistributedSampler`` adds is counted once.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, list(self._records.values()))
        merged: dict[int, dict] = {}
        for part in parts:
            for record in part:
                merged.setdefault(record["index"], record)
        self._records = merged
        return self

    def compute(self, group_by: str | None = None) -> dict:
        """Flat metric dict; with ``group_by=KEY`` one such dict per value of ``groups[KEY]``."""
        records = self.records
        if group_by is None:
            return _summarise(records, self.threshold, self.image_threshold)
        missing = [r["index"] for r in records if group_by not in r["groups"]]
        if missing:
            raise UserError(f"{len(missing)} image(s) have no group '{group_by}' (e.g. index {missing[0]})")
        values = sorted({r["groups"][group_by] for r in records}, key=str)
        return {value: _summarise([r for r in records if r["groups"][group_by] == value], self.threshold,
                                  self.image_threshold)
                for value in values}


def _split_groups(groups, batch: int) -> list[dict]:
    """Normalise the ``groups`` argument of :meth:`MetricAccumulator.add` to one dict per image."""
    if groups is None:
        return [{} for _ in range(batch)]
    if isinstance(groups, dict):
        if all(isinstance(v, (str, Number)) for v in groups.values()):
            if batch != 1:
                raise UserError(f"groups {groups!r} given as scalars for a batch of {batch}; "
                                "pass a list of dicts or a dict of sequences")
            return [_plain_group_dict(groups)]
        columns = {k: list(_as_numpy(v).reshape(-1)) if hasattr(v, "detach") else list(v)
                   for k, v in groups.items()}
        if any(len(v) != batch for v in columns.values()):
            raise UserError(f"every groups sequence must have length {batch}")
        return [_plain_group_dict({k: v[i] for k, v in columns.items()}) for i in range(batch)]
    groups = list(groups)
    if len(groups) != batch or not all(isinstance(g, dict) for g in groups):
        raise UserError(f"groups must be a list of {batch} dicts")
    return [_plain_group_dict(g) for g in groups]


def _plain_group_dict(group: dict) -> dict:
    """Group values as plain Python scalars (JSON-serialisable, picklable across ranks)."""
    return {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in group.items()}


def _summarise(records: list[dict], threshold: float, image_threshold: float = 0.5) -> dict:
    """The flat ``evaluate`` keys from per-image records (pixel means over tampered images only; pixel decisions at
    ``threshold``, image decisions at ``image_threshold``)."""
    tampered = [r for r in records if r["tampered"]]
    out: dict = {
        "threshold": threshold,
        "n_images": len(records),
        "n_tampered": len(tampered),
        "n_authentic": len(records) - len(tampered),
        "n_auc_undefined": sum(r["auc"] is None for r in tampered),
        "n_band_undefined": sum(r["f1_permuted_band"] is None for r in tampered),
    }
    for key in PIXEL_MEAN_KEYS:
        values = [r[key] for r in tampered if r[key] is not None]
        out[f"pixel_{key}"] = float(np.mean(values)) if values else None
    tp = sum(r["tp"] for r in records)
    fp = sum(r["fp"] for r in records)
    fn = sum(r["fn"] for r in records)
    denominator = tp + fp + fn
    out["pixel_f1_pooled"] = _f1(tp, fp, fn) if denominator else None
    out["pixel_iou_pooled"] = tp / denominator if denominator else None
    out.update(image_metrics([r["score"] for r in records], [r["label"] for r in records], image_threshold))
    return out
