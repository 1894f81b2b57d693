"""The demo pipeline of ``tamperscope demo`` (``make demo``): forgeries from sample photos, a model on them, metrics,
a report.

1. Sample photos that ship inside scikit-image (its bundled ``skimage/data`` files; only those present in the
   installed package are used, nothing is downloaded) are written to ``OUT/photos/`` as a camera would: scaled
   to ``max_side`` and saved as JPEG (quality ``CAMERA_JPEG_QUALITY``). Most of them are lossless PNGs, and a
   photo without any compression history is not what analysts are handed; the edits made in step 2 then lack
   the history the rest of the photo has, which is the trace compression-aware models (the default model, ELA)
   read.
2. The built-in BR-Gen pipeline (:func:`tamperscope.data.brgen.generate`, weight-free back ends) turns them into
   ``n`` forgeries with masks in ``OUT/forgeries/`` (``Tp/ Gt/ Au/``); re-running with the same options resumes.
3. The model (the command's choice: the default model, or ``ela`` when none is installed) predicts every forged
   and authentic image; heat maps, masks and overlays go to ``OUT/predictions/``.
4. :class:`~tamperscope.metrics.MetricAccumulator` scores the maps against the known masks; ``OUT/metrics.json``
   and the HTML report ``OUT/report.html`` (originals, ground truth, predictions, metrics) are written.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from ..data.brgen import BUILTIN_METHODS, GenerateOptions, generate
from ..data.brgen.pipeline import FORMAT_VERSION, RUN_FILE, STATE_DIR
from ..data.datasets import load_records
from ..errors import UserError
from ..io import atomic_write_bytes, atomic_write_text, read_image, read_image_bytes, read_mask
from ..metrics import MetricAccumulator
from ..report.html import METRIC_MEANINGS, HtmlReport
from ..report.visualize import COLORMAP, OVERLAY_COLOR, fit_within, mask_image
from .predict import Predictor, verdict_line, write_prediction_images

#: natural colour photos among scikit-image's bundled data files
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
CAMERA_JPEG_QUALITY = 90
REPORT_METRICS = ("n_images", "n_tampered", "n_authentic", "pixel_f1", "pixel_iou", "pixel_auc", "pixel_f1_permuted",
                  "pixel_f1_best", "pixel_f1_pooled", "image_auc", "image_acc", "image_balanced_acc", "fake_recall",
                  "real_recall")


def sample_photos() -> list:
    """The scikit-image sample photos present in the installed package (importlib.resources Traversables)."""
    try:
        data = resources.files("skimage").joinpath("data")
    except ModuleNotFoundError:
        return []
    return [data.joinpath(name) for name in SAMPLE_PHOTOS if data.joinpath(name).is_file()]


def write_sample_photos(dest: Path, max_side: int) -> int:
    """Step 1 of the module docstring; returns the number of photos."""
    photos = sample_photos()
    if not photos:
        raise UserError("no sample photos found: scikit-image's bundled data files "
                        f"({', '.join(SAMPLE_PHOTOS)}) are not installed")
    for ref in photos:
        rgb = fit_within(read_image_bytes(ref.read_bytes(), name=ref.name), max_side)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, CAMERA_JPEG_QUALITY])
        if not ok:
            raise UserError(f"{ref.name}: JPEG encoding failed")
        target = dest / f"{Path(ref.name).stem}.jpg"
        if not (target.is_file() and target.read_bytes() == data.tobytes()):
            atomic_write_bytes(target, data.tobytes())
    return len(photos)


def set_aside_older_forgeries(folder: Path) -> Path | None:
    """A demo folder left by an older version of the generator cannot be resumed: move it to
    ``forgeries.format-N`` (nothing is deleted) so that the demo builds its forgeries anew; returns where it went
    (None: nothing to move)."""
    try:
        version = json.loads((folder / STATE_DIR / RUN_FILE).read_text()).get("format_version")
    except (OSError, ValueError, AttributeError):
        return None
    if version != FORMAT_VERSION:
        target = folder.with_name(f"{folder.name}.format-{version}")
        n = 1
        while target.exists():
            n += 1
            target = folder.with_name(f"{folder.name}.format-{version}-{n}")
        folder.rename(target)
        return target
    return None


def run_demo(out: Path, predictor: Predictor, *, n: int = 8, seed: int = 0, max_side: int = 512,
             threshold: float = 0.5, progress: bool = True, say: Callable[[str], None] = print) -> Path:
    """Steps 1–4 of the module docstring into ``out`` with ``predictor``; ``say`` gets one line per step (and a
    note when older forgeries are set aside). Returns the report's path."""
    n_photos = write_sample_photos(out / "photos", max_side)
    say(f"[1/4] {n_photos} sample photos from scikit-image, saved as JPEG (quality {CAMERA_JPEG_QUALITY}) "
        f"in {out / 'photos'}")
    moved = set_aside_older_forgeries(out / "forgeries")
    if moved:
        say(f"note: {out / 'forgeries'} was made by an older version of the generator; moved to {moved}")
    # every built-in kind: inpainting, splicing and copy-move (the generator's default is inpainting only)
    summary = generate(GenerateOptions(photos=out / "photos", out=out / "forgeries", n=n, seed=seed,
                                       max_side=max_side, methods=BUILTIN_METHODS, progress=progress))
    say(f"[2/4] {summary['produced']} forgeries built with the BR-Gen pipeline in {out / 'forgeries'}")

    records = load_records(out / "forgeries")
    acc = MetricAccumulator(threshold)
    shown = []
    for index, rec in enumerate(tqdm(records, desc="predict", unit="img", disable=not progress, leave=False)):
        image = read_image(rec.image)
        gt = read_mask(rec.mask, expected_size=image.shape[:2]) if rec.mask else np.zeros(image.shape[:2], bool)
        pred = predictor.predict_array(image, threshold=threshold, path=str(rec.image))
        kind = "forged" if rec.mask else "authentic"
        write_prediction_images(pred, out / "predictions", f"{kind}-{rec.image.stem}", protect=[rec.image])
        acc.add(index, pred.probability, gt, score=pred.score, label=int(gt.any()))
        shown.append((rec, image, gt, pred))
    say(f"[3/4] {predictor.name} ran on {len(records)} images; maps in {out / 'predictions'}")

    metrics = acc.compute()
    atomic_write_text(out / "metrics.json", json.dumps({"model": predictor.name, **metrics}, indent=2) + "\n")
    per_image = {r["index"]: r for r in acc.records}
    report = HtmlReport("tamperscope demo",
                        intro=(f"Model: {predictor.name}. {summary['produced']} forgeries made by the built-in "
                               f"BR-Gen pipeline from {n_photos} scikit-image sample photos saved as JPEG "
                               f"(quality {CAMERA_JPEG_QUALITY}), forgeries written losslessly (seed {seed}); "
                               f"threshold {threshold:g}. {summary.get('note', '')}"))
    report.section("Metrics", "Pixel metrics are means over the forged images; image metrics use every image. "
                              "Higher is better, except for the equal error rate.") \
        .metrics(metrics, keys=REPORT_METRICS, meanings=METRIC_MEANINGS)
    score_note = ("Each caption gives the verdict and its score: the model's probability, from 0 to 1, that the "
                  "photo was manipulated (calibrated on validation photos when the model has been calibrated); "
                  f"above {threshold:g} with flagged pixels the verdict is tampered. ")
    forged = report.section("Forgeries", "Forged image, ground-truth mask (white = manipulated), predicted "
                                         "tampering probability (heat map) and the regions drawn for the verdict. "
                            + score_note)
    forged.legend(COLORMAP, "0: authentic", "1: tampered", OVERLAY_COLOR, "overlay: flagged region")
    if predictor.model.model_name == "ela" or predictor.name == "ela":  # ELA's map marks every photo
        authentic_note = (f"Photos with no manipulation. {predictor.name} is error-level analysis: its heat map "
                          "shows how each pixel recompresses, so it is never empty, on authentic photos too; judge "
                          "these by the verdict, and a drawn region is a false alarm.")
    else:
        authentic_note = ("Photos with no manipulation. Ideally the heat map stays dark and no region is drawn; a "
                          "bright heat map or a drawn region here is a false alarm.")
    authentic = report.section("Authentic photos", authentic_note)
    authentic.legend(COLORMAP, "0: authentic", "1: tampered", OVERLAY_COLOR, "overlay: flagged region")
    for index, (rec, image, gt, pred) in enumerate(shown):
        stats = per_image[index]
        if rec.mask:
            meta = rec.meta or {}
            caption = (f"method {meta.get('method', '?')}, region {meta.get('region', '?')}, "
                       f"area {100.0 * gt.mean():.1f}%; {verdict_line(pred.to_dict())}; pixel F1 {stats['f1']:.3f}")
            forged.image_row(rec.image.name, [("forged", image), ("ground truth", mask_image(gt)),
                                              ("tampering probability", pred.heatmap()), ("overlay", pred.overlay())],
                             caption)
        else:
            authentic.image_row(rec.image.name, [("photo", image), ("tampering probability", pred.heatmap()),
                                                 ("overlay", pred.overlay())], verdict_line(pred.to_dict()))
    path = report.write(out / "report.html")
    say(f"[4/4] pixel F1 {_fmt(metrics.get('pixel_f1'))}, pixel AUC {_fmt(metrics.get('pixel_auc'))}, "
        f"image AUC {_fmt(metrics.get('image_auc'))}")
    return path


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
