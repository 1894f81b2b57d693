"""Operating points chosen on validation data, stored in a checkpoint's ``calibration`` by ``tamperscope export
--calibrate VAL`` and applied at inference only (:func:`tamperscope.inference.model_probabilities`), so that 0.5,
the default of predict, serve and evaluate, is each of them:

- pixels: the absolute threshold t (0.01, ..., 0.04, 0.05, 0.10, ..., 0.95) that maximises the mean per-image
  pixel F1 of the tampered images (a model trained with Dice terms on many authentic windows is often
  conservative at 0.5);
- the image score: the smallest threshold above which at most ``max_false_alarm`` (default 10 %) of the
  authentic images score (:func:`tamperscope.inference.false_alarm_threshold`), and the same at 2.5 times
  that rate, from which ``predict`` calls a photo inconclusive. The sorted validation scores of the authentic and
  the tampered images are kept, so that ``predict`` can say how rare a score is.

``{"mode": "absolute", "threshold": t, "pixel_f1": ..., "pixel_f1_at_0.5": ..., "data": VAL, "thresholds": [...],
"pixel_f1_by_threshold": [...], "image": {"threshold": t_img, "inconclusive_from": t_low, "max_false_alarm": 0.1,
"authentic_scores": [...], "tampered_scores": [...]}}`` (raw probabilities). Never calibrate on a test
set: the choice is model selection."""
from __future__ import annotations

import torch

from ..data.datasets import load_evaluation_records
from ..errors import UserError
from ..inference import false_alarm_threshold
from .evaluate import calibration_sweep, evaluation_dataset

CALIBRATION_THRESHOLDS = (0.01, 0.02, 0.03, 0.04) + tuple(round(0.05 * k, 2) for k in range(1, 20))
INCONCLUSIVE_FACTOR = 2.5


def calibrate(model, data: str, *, image_size: int, max_false_alarm: float = 0.10, device: torch.device,
              on_mismatch: str = "skip", progress: bool = True) -> tuple[dict, dict]:
    """(the ``calibration`` entry of the module docstring measured on ``data`` in one pass, the image operating
    point on that data: ``{"false_alarm", "recall", "n_authentic", "n_tampered"}``). The model is left on the CPU
    without a calibration."""
    if not 0.0 <= max_false_alarm < 1.0:
        raise UserError(f"the false-alarm rate must be in [0, 1), got {max_false_alarm}")
    model.calibration = None
    model.to(device)
    ds = evaluation_dataset(model, load_evaluation_records(data), image_size, on_mismatch=on_mismatch)
    per_image_f1, scores, labels = calibration_sweep(model, ds, CALIBRATION_THRESHOLDS, device=device,
                                                     progress=progress)
    model.to("cpu")
    image = image_calibration(scores, labels, max_false_alarm, data)
    f1 = per_image_f1.mean(axis=0)
    k = int(f1.argmax())
    out = {"mode": "absolute", "threshold": CALIBRATION_THRESHOLDS[k], "pixel_f1": float(f1[k]),
           "pixel_f1_at_0.5": float(f1[CALIBRATION_THRESHOLDS.index(0.5)]), "data": str(data),
           "thresholds": list(CALIBRATION_THRESHOLDS), "pixel_f1_by_threshold": [round(float(v), 6) for v in f1],
           "image": image}
    authentic, tampered = scores[labels == 0], scores[labels == 1]
    val = {"false_alarm": float((authentic > image["threshold"]).mean()),
           "recall": float((tampered > image["threshold"]).mean()),
           "n_authentic": len(authentic), "n_tampered": len(tampered)}
    return out, val


def image_calibration(scores, labels, max_false_alarm: float, data: str) -> dict:
    """The ``image`` block of the calibration from validation ``scores`` (raw image probabilities) and ``labels``."""
    authentic, tampered = sorted(scores[labels == 0].tolist()), sorted(scores[labels == 1].tolist())
    if not (authentic and tampered):
        raise UserError(f"{data}: image calibration needs at least one authentic and one tampered image "
                        f"(found {len(authentic)} authentic, {len(tampered)} tampered)")
    return {"threshold": false_alarm_threshold(authentic, max_false_alarm),
            "inconclusive_from": false_alarm_threshold(authentic, min(1.0, INCONCLUSIVE_FACTOR * max_false_alarm)),
            "max_false_alarm": max_false_alarm,
            "authentic_scores": [round(v, 5) for v in authentic], "tampered_scores": [round(v, 5) for v in tampered]}
