"""Metrics against scikit-learn and hand-computed cases (IMDL-BenCo and TruFor definitions, IMDL-BenCo pitfalls)."""
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             jaccard_score, precision_recall_curve, recall_score, roc_auc_score, roc_curve)

from tamperscope.errors import UserError
from tamperscope.metrics import MetricAccumulator, f1_at_thresholds, image_metrics, pixel_stats, tolerance_band

TOL = 1e-6


def _random_case(seed, size=48, levels=None):
    """A blob-shaped mask and a noisy map correlated with it (optionally quantised to create ties)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), bool)
    y0, x0 = rng.integers(0, size // 2, 2)
    h, w = rng.integers(size // 4, size // 2, 2)
    gt[y0:y0 + h, x0:x0 + w] = True
    prob = np.clip(rng.random((size, size)) * 0.8 + 0.35 * gt, 0, 1)
    if levels:
        prob = np.round(prob * (levels - 1)) / (levels - 1)
    return prob, gt


def _best_f1_sklearn(y, s):
    """Maximum F1 along scikit-learn's precision-recall curve (cuts s >= t at every distinct t)."""
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    return float(np.max(np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0)))


@pytest.mark.parametrize("seed,levels", [(0, None), (1, None), (2, 5), (3, 2), (4, 11)])
def test_pixel_stats_match_sklearn(seed, levels):
    prob, gt = _random_case(seed, levels=levels)
    s = pixel_stats(prob, gt)
    y, b = gt.ravel(), prob.ravel() > 0.5
    tn, fp, fn, tp = confusion_matrix(y, b, labels=[0, 1]).ravel()
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (tp, fp, fn, tn)
    assert s["f1"] == pytest.approx(f1_score(y, b), abs=TOL)
    assert s["iou"] == pytest.approx(jaccard_score(y, b), abs=TOL)
    assert s["auc"] == pytest.approx(roc_auc_score(y, prob.ravel()), abs=TOL)
    assert s["f1_permuted"] == pytest.approx(max(f1_score(y, b), f1_score(y, ~b)), abs=TOL)
    assert s["f1_best_plain"] == pytest.approx(_best_f1_sklearn(y, prob.ravel()), abs=TOL)


@pytest.mark.parametrize("seed,levels,dtype", [(0, None, np.float64), (1, None, np.float32), (2, 5, np.float32),
                                               (3, 2, np.float64), (4, 21, np.float32)])
def test_f1_at_thresholds_matches_sklearn_at_each_threshold(seed, levels, dtype):
    prob, gt = _random_case(seed, levels=levels)
    prob = prob.astype(dtype)
    thresholds = [0.0, 0.05, 0.3, 0.35, 0.5, 0.7, 0.95, 1.0]  # on the quantisation levels too (ties, strict >)
    f1 = f1_at_thresholds(prob, gt, thresholds)
    for t, value in zip(thresholds, f1):
        assert value == pytest.approx(f1_score(gt.ravel(), prob.ravel() > dtype(t), zero_division=0), abs=TOL)
        assert value == pytest.approx(pixel_stats(prob, gt, threshold=t)["f1"], abs=TOL)
    with pytest.raises(UserError, match="authentic"):
        f1_at_thresholds(prob, np.zeros_like(gt), [0.5])


@pytest.mark.parametrize("seed,levels", [(5, None), (6, 3), (7, 17)])
@pytest.mark.parametrize("erode,dilate", [(15, 11), (5, 3), (4, 6)])
def test_band_scores_match_sklearn_on_kept_pixels(seed, levels, erode, dilate):
    prob, gt = _random_case(seed, size=64, levels=levels)
    s = pixel_stats(prob, gt, erode=erode, dilate=dilate)
    core_pos, core_neg = tolerance_band(gt, erode, dilate)
    kept = core_pos | core_neg
    y, p = core_pos[kept], prob[kept]
    assert s["f1_permuted_band"] == pytest.approx(max(f1_score(y, p > 0.5), f1_score(y, p <= 0.5)), abs=TOL)
    # oracle over both polarities: PR curve of p (cuts p >= t) and of -p (cuts p <= t)
    assert s["f1_best"] == pytest.approx(max(_best_f1_sklearn(y, p), _best_f1_sklearn(y, -p)), abs=TOL)
    assert s["f1_best"] >= s["f1_permuted_band"] - TOL


def test_band_hand_checked_on_tiny_mask():
    gt = np.zeros((7, 7), bool)
    gt[2:5, 2:5] = True  # 3×3 square
    core_pos, core_neg = tolerance_band(gt, erode=3, dilate=3)
    assert core_pos.sum() == 1 and core_pos[3, 3]  # erosion leaves only the centre
    expected_neg = np.ones((7, 7), bool)
    expected_neg[1:6, 1:6] = False  # dilation covers the 5×5 block
    assert (core_neg == expected_neg).all()
    prob = np.zeros((7, 7))
    prob[2:5, 2:5] = 0.9  # the square: 1 kept TP (centre), 8 ignored
    prob[1, 3] = prob[5, 3] = 0.8  # ring pixels: ignored by the band, FP without it
    prob[0, 0] = 0.7  # outer pixel: FP in both
    s = pixel_stats(prob, gt, erode=3, dilate=3)
    assert s["f1"] == pytest.approx(2 * 9 / (2 * 9 + 3))  # TP=9, FP=3, FN=0
    # band: TP=1, FP=1, FN=0, TN=23 -> 2/3; inverted: TP'=0 -> 0
    assert s["f1_permuted_band"] == pytest.approx(2 / 3)
    # oracle: t in [0.7, 0.8) or [0.8, 0.9) keeps only the centre -> F1 = 1
    assert s["f1_best"] == pytest.approx(1.0)


def test_band_reflects_at_the_border_like_trufor():
    gt = np.zeros((7, 7), bool)
    gt[:, :3] = True  # a 3-column strip touching the left border
    core_pos, _ = tolerance_band(gt, erode=3, dilate=3)
    expected = np.zeros((7, 7), bool)
    expected[:, :2] = True  # scipy "reflect": the border is not eroded
    assert (core_pos == expected).all()


def test_band_of_size_one_is_the_plain_permuted_f1():
    prob, gt = _random_case(8, levels=7)
    s = pixel_stats(prob, gt, erode=1, dilate=1)
    assert s["f1_permuted_band"] == pytest.approx(s["f1_permuted"], abs=TOL)
    y = gt.ravel()
    assert s["f1_best"] == pytest.approx(max(_best_f1_sklearn(y, prob.ravel()),
                                             _best_f1_sklearn(y, -prob.ravel())), abs=TOL)


def test_band_undefined_when_mask_thinner_than_erosion():
    gt = np.zeros((40, 40), bool)
    gt[10:30, 18:22] = True  # 4 px wide: a 15×15 erosion removes it
    s = pixel_stats(np.full((40, 40), 0.6), gt)
    assert s["f1_permuted_band"] is None and s["f1_best"] is None
    assert s["f1"] is not None and s["f1_best_plain"] is not None
    acc = MetricAccumulator()
    acc.add(0, np.full((40, 40), 0.6), gt)
    out = acc.compute()
    assert out["n_band_undefined"] == 1 and out["pixel_f1_best"] is None


def test_authentic_image_has_counts_but_no_scores():
    prob = np.zeros((32, 32))
    prob[0, :4] = 0.9
    s = pixel_stats(prob, np.zeros((32, 32), bool))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (0, 4, 0, 1020)
    assert s["tampered"] is False
    for key in ("f1", "iou", "auc", "f1_permuted", "f1_permuted_band", "f1_best", "f1_best_plain"):
        assert s[key] is None


def test_all_tampered_mask_auc_undefined_without_nan():
    prob, _ = _random_case(9)
    gt = np.ones_like(prob, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = pixel_stats(prob, gt)
    assert s["auc"] is None
    b = prob.ravel() > 0.5
    assert s["f1"] == pytest.approx(f1_score(gt.ravel(), b), abs=TOL)
    for key, value in s.items():
        assert value is None or not (isinstance(value, float) and math.isnan(value)), key
    # no core negatives: the oracle is reached by predicting everything positive
    assert s["f1_best"] == pytest.approx(1.0)


def test_perfect_and_inverted_predictions():
    _, gt = _random_case(10, size=64)
    perfect = pixel_stats(gt.astype(np.float32), gt)
    for key in ("f1", "iou", "auc", "f1_permuted", "f1_permuted_band", "f1_best", "f1_best_plain"):
        assert perfect[key] == pytest.approx(1.0), key
    inverted = pixel_stats(1.0 - gt.astype(np.float32), gt)
    assert inverted["f1"] == 0.0 and inverted["iou"] == 0.0 and inverted["auc"] == pytest.approx(0.0)
    assert inverted["f1_permuted"] == pytest.approx(1.0)  # TruFor's permuted F1 identity
    assert inverted["f1_permuted_band"] == pytest.approx(1.0)
    assert inverted["f1_best"] == pytest.approx(1.0)


def test_binary_predictions_with_ties_auc_equals_sklearn_not_naive_trapezoid():
    rng = np.random.default_rng(11)
    gt = np.zeros((32, 32), bool)
    gt[:12, :12] = True
    prob = (rng.random((32, 32)) < np.where(gt, 0.6, 0.3)).astype(np.float64)  # only 0 and 1
    y, p = gt.ravel(), prob.ravel()
    order = np.argsort(-p, kind="stable")  # IMDL-BenCo-style: one ROC step per pixel, ties ignored
    tpr = np.concatenate(([0], np.cumsum(y[order]) / y.sum()))
    fpr = np.concatenate(([0], np.cumsum(~y[order]) / (~y).sum()))
    naive = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    reference = roc_auc_score(y, p)
    assert abs(naive - reference) > 1e-3
    assert pixel_stats(prob, gt)["auc"] == pytest.approx(reference, abs=TOL)


def test_constant_prediction():
    _, gt = _random_case(12)
    s = pixel_stats(np.full(gt.shape, 0.3), gt)
    assert s["f1"] == 0.0 and s["iou"] == 0.0
    assert s["auc"] == pytest.approx(0.5)
    n_pos, n = gt.sum(), gt.size
    assert s["f1_best_plain"] == pytest.approx(2 * n_pos / (2 * n_pos + n - n_pos))  # all positive
    assert s["f1_best_plain"] == pytest.approx(_best_f1_sklearn(gt.ravel(), np.full(n, 0.3)), abs=TOL)
    assert s["f1_permuted"] == pytest.approx(f1_score(gt.ravel(), np.ones(n, bool)), abs=TOL)


def test_threshold_is_strict():
    gt = np.array([[True, False]])
    s = pixel_stats(np.array([[0.5, 0.5]]), gt)
    assert s["tp"] == 0 and s["fp"] == 0
    s = pixel_stats(np.array([[0.5, 0.5]]), gt, threshold=0.49)
    assert s["tp"] == 1 and s["fp"] == 1


def test_bad_inputs_raise_user_error():
    gt = np.zeros((8, 8), bool)
    with pytest.raises(UserError, match="does not match"):
        pixel_stats(np.zeros((8, 9)), gt)
    with pytest.raises(UserError, match="NaN"):
        pixel_stats(np.full((8, 8), np.nan), gt)
    with pytest.raises(UserError, match="logits"):
        pixel_stats(np.full((8, 8), 3.0), gt)
    with pytest.raises(UserError, match="labels"):
        image_metrics([0.1, 0.2], [0, 1, 1])
    with pytest.raises(UserError, match="0 \\(authentic\\) or 1"):
        image_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(UserError, match="image scores"):
        image_metrics([0.1, 2.5], [0, 1])
    acc = MetricAccumulator()
    with pytest.raises(UserError, match="image index 3"):
        acc.add(3, np.full((8, 8), -1.0), gt)
    with pytest.raises(UserError, match="label must be 0 or 1"):
        acc.add(4, np.zeros((8, 8)), gt, label=0.7)
    with pytest.raises(UserError, match="image scores"):
        acc.add(5, np.zeros((8, 8)), gt, score=float("nan"))
    assert len(acc) == 0


# ---------------------------------------------------------------------------------------------------
# image level
# ---------------------------------------------------------------------------------------------------
def _eer_reference(labels, scores):
    """EER from scikit-learn's ROC: linear interpolation where FPR − FNR changes sign."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    gap = fpr - (1 - tpr)
    k = int(np.argmax(gap >= 0))
    t = -gap[k - 1] / (gap[k] - gap[k - 1])
    return fpr[k - 1] + t * (fpr[k] - fpr[k - 1])


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 4), (2, None)])
def test_image_metrics_match_sklearn(seed, levels):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(rng.random(200) * 0.7 + 0.3 * labels, 0, 1)
    if levels:
        scores = np.round(scores * (levels - 1)) / (levels - 1)
    m = image_metrics(scores, labels)
    pred = scores > 0.5
    assert m["image_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
    assert m["image_acc"] == pytest.approx(accuracy_score(labels, pred), abs=TOL)
    assert m["image_balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, pred), abs=TOL)
    assert m["image_f1"] == pytest.approx(f1_score(labels, pred), abs=TOL)
    assert m["fake_recall"] == pytest.approx(recall_score(labels, pred, pos_label=1), abs=TOL)
    assert m["real_recall"] == pytest.approx(recall_score(labels, pred, pos_label=0), abs=TOL)
    assert m["image_eer"] == pytest.approx(_eer_reference(labels, scores), abs=TOL)


def test_eer_perfect_separator_is_zero_and_inverse_is_one():
    labels = np.array([0, 0, 0, 1, 1])
    assert image_metrics([0.1, 0.2, 0.3, 0.7, 0.9], labels)["image_eer"] == pytest.approx(0.0)
    assert image_metrics([0.9, 0.8, 0.7, 0.2, 0.1], labels)["image_eer"] == pytest.approx(1.0)


def test_eer_hand_computed():
    # reals 0.1, 0.6, 0.7, 0.8; fakes 0.5, 0.9. ROC from the top: (0,0) .9F (0,.5) .8R (.25,.5)
    # .7R (.5,.5) .6R (.75,.5) .5F (.75,1) .1R (1,1). FPR−FNR: −.25 at (.25,.5), 0 at (.5,.5) -> EER .5
    m = image_metrics([0.1, 0.6, 0.7, 0.8, 0.5, 0.9], [0, 0, 0, 0, 1, 1])
    assert m["image_eer"] == pytest.approx(0.5)
    # reals 0.2, 0.6; fakes 0.4, 0.8, 0.9. ROC: (0,0) (0,1/3) (0,2/3) (.5,2/3) (.5,1) (1,1).
    # FPR−FNR: −1/3 at (0,2/3), +1/6 at (.5,2/3) -> t = (1/3)/(1/2) = 2/3, EER = 2/3 · 0.5 = 1/3
    m = image_metrics([0.2, 0.6, 0.4, 0.8, 0.9], [0, 0, 1, 1, 1])
    assert m["image_eer"] == pytest.approx(1 / 3)
    # the common value is also the FNR at that point: 1 − 2/3
    assert m["image_auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1, 1], [0.2, 0.6, 0.4, 0.8, 0.9]))


def test_image_metrics_with_one_class_are_none_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        only_fake = image_metrics([0.2, 0.9, 0.7], [1, 1, 1])
        only_real = image_metrics([0.2, 0.9, 0.7], [0, 0, 0])
        empty = image_metrics([], [])
    assert only_fake["image_auc"] is None and only_fake["image_eer"] is None
    assert only_fake["image_balanced_acc"] is None and only_fake["real_recall"] is None
    assert only_fake["fake_recall"] == pytest.approx(2 / 3) and only_fake["image_acc"] == pytest.approx(2 / 3)
    assert only_fake["image_f1"] == pytest.approx(f1_score([1, 1, 1], [0, 1, 1]))
    assert only_real["fake_recall"] is None and only_real["image_f1"] is None
    assert only_real["real_recall"] == pytest.approx(1 / 3)
    assert all(v is None for v in empty.values())


# ---------------------------------------------------------------------------------------------------
# accumulator
# ---------------------------------------------------------------------------------------------------
def _eight_images():
    """5 tampered + 3 authentic images (one mask covers the whole image, one is a thin stroke)."""
    rng = np.random.default_rng(20)
    probs, gts = [], []
    for i in range(8):
        prob, gt = _random_case(100 + i, size=64, levels=9 if i % 2 else None)
        if i >= 5:
            gt[:] = False
        if i == 1:  # a 4-px-wide stroke: no core positive pixel under the 15×15 erosion
            gt[:] = False
            gt[10:40, 20:24] = True
        if i == 4:
            gt[:] = True
        probs.append(prob.astype(np.float32))
        gts.append(gt)
    scores = rng.random(8)
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    regions = ["stuff", "object", "stuff", "object", "stuff", "stuff", "object", "stuff"]
    return np.stack(probs), np.stack(gts), scores, labels, regions


def _accumulate(batch_size, as_torch=False):
    probs, gts, scores, labels, regions = _eight_images()
    acc = MetricAccumulator()
    for start in range(0, 8, batch_size):
        sl = slice(start, start + batch_size)
        p, g = probs[sl][:, None], gts[sl][:, None].astype(np.float32)  # B×1×H×W like the engine
        idx, sc, lb = np.arange(8)[sl], scores[sl], labels[sl].astype(np.float32)
        if as_torch:
            p, g, idx, sc, lb = map(torch.from_numpy, (p, g, idx, sc, lb))
        acc.add(idx, p, g, sc, lb, groups={"region": regions[sl]})
    return acc


def test_accumulator_is_independent_of_batch_size():
    results = [_accumulate(b).compute() for b in (1, 3, 7)] + [_accumulate(3, as_torch=True).compute()]
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for key, value in results[0].items():
            assert other[key] == pytest.approx(value, abs=TOL), key
    assert results[0]["n_images"] == 8  # no tail dropped


def test_accumulator_means_tampered_only_and_pooled_over_all():
    probs, gts, scores, labels, _ = _eight_images()
    out = _accumulate(3).compute()
    assert (out["n_images"], out["n_tampered"], out["n_authentic"]) == (8, 5, 3)
    stats = [pixel_stats(p, g) for p, g in zip(probs, gts)]
    f1s = [f1_score(g.ravel(), p.ravel() > 0.5) for p, g in zip(probs[:5], gts[:5])]
    assert out["pixel_f1"] == pytest.approx(np.mean(f1s), abs=TOL)
    assert out["pixel_iou"] == pytest.approx(np.mean([s["iou"] for s in stats[:5]]), abs=TOL)
    aucs = [roc_auc_score(g.ravel(), p.ravel()) for p, g in zip(probs[:4], gts[:4])]
    assert out["pixel_auc"] == pytest.approx(np.mean(aucs), abs=TOL)  # image 4 is all-tampered
    assert out["n_auc_undefined"] == 1
    band_undefined = [s["f1_best"] is None for s in stats[:5]]
    assert out["n_band_undefined"] == sum(band_undefined) == 1  # image 1: a mask thinner than 15 px
    for key in ("f1_permuted", "f1_permuted_band", "f1_best", "f1_best_plain"):
        values = [s[key] for s in stats[:5] if s[key] is not None]
        assert out[f"pixel_{key}"] == pytest.approx(np.mean(values), abs=TOL), key
    y, b = gts.ravel(), probs.ravel() > 0.5  # pooled: every pixel of every image
    assert out["pixel_f1_pooled"] == pytest.approx(f1_score(y, b), abs=TOL)
    assert out["pixel_iou_pooled"] == pytest.approx(jaccard_score(y, b), abs=TOL)
    assert out["image_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
    assert out["image_f1"] == pytest.approx(f1_score(labels, scores > 0.5), abs=TOL)


def test_pixel_threshold_leaves_image_decisions_at_one_half():
    """--threshold moves pixel decisions only: ACC, F1, R@50 are defined at 0.5 (as in the papers)."""
    probs, gts, scores, labels, _ = _eight_images()
    acc = MetricAccumulator(threshold=0.3)
    acc.add(np.arange(8), probs, gts, scores, labels)
    out = acc.compute()
    assert out["threshold"] == 0.3
    f1s = [f1_score(g.ravel(), p.ravel() > 0.3) for p, g in zip(probs[:5], gts[:5])]
    assert out["pixel_f1"] == pytest.approx(np.mean(f1s), abs=TOL)
    assert out["image_acc"] == pytest.approx(accuracy_score(labels, scores > 0.5), abs=TOL)
    assert out["image_f1"] == pytest.approx(f1_score(labels, scores > 0.5), abs=TOL)
    assert out["fake_recall"] == pytest.approx(recall_score(labels, scores > 0.5), abs=TOL)
    assert (scores > 0.3).sum() != (scores > 0.5).sum()  # the data tells the two thresholds apart


def test_accumulator_records_groups_and_duplicates():
    acc = _accumulate(7)
    probs, gts, _, _, _ = _eight_images()
    acc.add(np.array([0, 1]), probs[:2] * 0, gts[:2])  # repeated indices (sampler padding): ignored
    assert len(acc) == 8
    records = acc.records
    assert [r["index"] for r in records] == list(range(8))
    for record in records:
        for key, value in record.items():
            assert key == "groups" or value is None or isinstance(value, (bool, int, float)), key
    by_region = acc.compute(group_by="region")
    assert set(by_region) == {"stuff", "object"}
    assert by_region["stuff"]["n_images"] == 5 and by_region["object"]["n_images"] == 3
    stuff = MetricAccumulator()
    for i in (0, 2, 4, 5, 7):
        stuff.add(i, probs[i], gts[i], records[i]["score"], records[i]["label"])
    for key, value in stuff.compute().items():
        assert by_region["stuff"][key] == pytest.approx(value, abs=TOL), key
    with pytest.raises(UserError, match="no group 'source'"):
        acc.compute(group_by="source")


def test_accumulator_defaults_score_to_max_and_label_to_mask():
    probs, gts, _, _, _ = _eight_images()
    acc = MetricAccumulator(threshold=0.5)
    acc.add(torch.arange(8), torch.from_numpy(probs), torch.from_numpy(gts))
    records = acc.records
    assert [r["score"] for r in records] == pytest.approx([float(p.max()) for p in probs])
    assert [r["label"] for r in records] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert acc.compute()["image_auc"] == pytest.approx(
        roc_auc_score([1, 1, 1, 1, 1, 0, 0, 0], probs.reshape(8, -1).max(1)), abs=TOL)
