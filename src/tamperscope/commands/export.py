"""`tamperscope export RUN FILE.safetensors`: a run's selected model as one self-describing file (weights,
model config, training recipe and the best validation metrics in the safetensors metadata; no pickle). This is
how the bundled default model was made and how a model is shared or passed to ``predict --checkpoint``.

``--calibrate VAL``: the model's two operating points, chosen on a *validation* set (a JSON list or a ``mix:``
spec) in one pass and stored in the file's ``calibration``, applied at inference only
(:func:`tamperscope.inference.model_probabilities`) so that 0.5, the default of predict, serve and
evaluate, is each of them:

- pixels: the absolute threshold t (0.01, ..., 0.04, 0.05, 0.10, ..., 0.95) that maximises the mean per-image
  pixel F1 of the tampered images (a model trained with Dice terms on many authentic windows is often
  conservative at 0.5);
- the image score: the smallest threshold above which at most ``--max-false-alarm`` (default 10 %) of the
  authentic images score (:func:`tamperscope.inference.false_alarm_threshold`), and the same at 2.5 times
  that rate, from which ``predict`` calls a photo inconclusive. The sorted validation scores of the authentic and
  the tampered images are kept, so that ``predict`` can say how rare a score is.

``{"mode": "absolute", "threshold": t, "pixel_f1": ..., "pixel_f1_at_0.5": ..., "data": VAL, "thresholds": [...],
"pixel_f1_by_threshold": [...], "image": {"threshold": t_img, "inconclusive_from": t_low, "max_false_alarm": 0.1,
"authentic_scores": [...], "tampered_scores": [...]}}`` (raw probabilities). Never calibrate on a test
set: the choice is model selection."""
from __future__ import annotations

import json
from pathlib import Path

NAME = "export"
HELP = "write a run's selected model as one .safetensors file (weights + config + recipe)"


def add_arguments(p):
    p.add_argument("run", help="run folder written by `tamperscope train`")
    p.add_argument("out", help="output file, ending in .safetensors")
    p.add_argument("--calibrate", metavar="VAL", help="validation data on which to choose the pixel and image "
                   "thresholds that become the model's 0.5 (module docstring); never the test set")
    p.add_argument("--max-false-alarm", type=float, default=0.10, metavar="RATE",
                   help="share of the validation set's authentic images allowed above the image threshold "
                        "(default 0.10)")
    p.add_argument("--weights", choices=("selected", "last"), default="selected",
                   help="the model selected on val during training (default) or the run's last saved state")
    p.add_argument("--on-mismatch", choices=("error", "skip", "resize"), default="skip",
                   help="masks whose size differs from their image in the calibration data (default skip)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def last_state_weights(run: Path) -> Path:
    """``model.safetensors`` of the run's last saved training state (``trainer_state.json``)."""
    from ..errors import UserError

    state_file = run / "trainer_state.json"
    if not state_file.is_file():
        raise UserError(f"{run}: no trainer_state.json (not a training run folder)")
    weights = run / json.loads(state_file.read_text())["checkpoint"] / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{weights}: missing")
    return weights


def best_val_metrics(run: Path) -> dict | None:
    """The validation row of the epoch the run selected (``metrics.jsonl`` + ``trainer_state.json``)."""
    state_file, log = run / "trainer_state.json", run / "metrics.jsonl"
    if not (state_file.is_file() and log.is_file()):
        return None
    best = (json.loads(state_file.read_text()).get("best") or {}).get("epoch")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    match = [r for r in rows if r.get("type") == "val" and r.get("epoch") == best]
    return match[-1] if match else None


def run(args) -> int:
    from ..checkpoint import load_checkpoint, load_weights, read_checkpoint_config, read_weights_file, save_checkpoint
    from ..errors import UserError

    src, out = Path(args.run), Path(args.out)
    if not src.is_dir():
        raise UserError(f"{src}: not a run folder")
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must end in .safetensors" +
                        (" (for ONNX: tamperscope export-onnx CHECKPOINT FILE.onnx)" if out.suffix == ".onnx" else ""))
    if out.resolve() == (src / "model.safetensors").resolve():
        raise UserError(f"{out}: would overwrite the run's own weights; choose another path")
    inside_run = src.resolve() in out.resolve().parents
    if out.exists() and (inside_run or out.name == "model.safetensors" or (out.parent / "trainer_state.json").exists()):
        raise UserError(f"{out}: would overwrite a run's weights or saved state; choose another path")
    cfg = read_checkpoint_config(src)
    model = load_checkpoint(src, map_location="cpu")
    if args.weights == "last":
        last = last_state_weights(src)
        load_weights(model, read_weights_file(last), str(last))
        print(f"weights: the run's last state ({last.parent.name})")
    extra = {"train": cfg.get("train") or (cfg.get("extra") or {}).get("train") or {}, "source_run": src.name,
             "weights": args.weights,
             "val": best_val_metrics(src) if args.weights == "selected" else None}
    if args.calibrate:
        model.calibration = calibrate(model, args.calibrate, args, (extra["train"] or {}).get("image_size", 512))
    save_checkpoint(model, out, extra=extra)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, model {cfg['model']}, "
          f"trained at {extra['train'].get('image_size', '?')} px)")
    return 0


CALIBRATION_THRESHOLDS = (0.01, 0.02, 0.03, 0.04) + tuple(round(0.05 * k, 2) for k in range(1, 20))
INCONCLUSIVE_FACTOR = 2.5


def calibrate(model, data: str, args, image_size: int) -> dict:
    """The ``calibration`` entry of the module docstring, measured on ``data``; prints the operating points."""
    from ..data.datasets import load_evaluation_records
    from ..engine.evaluate import calibration_sweep, evaluation_dataset
    from ..engine.predict import resolve_device
    from ..errors import UserError

    rate = args.max_false_alarm
    if not 0.0 <= rate < 1.0:
        raise UserError(f"--max-false-alarm must be in [0, 1), got {rate}")
    device = resolve_device(args.device)
    model.calibration = None
    model.to(device)
    ds = evaluation_dataset(model, load_evaluation_records(data), image_size, on_mismatch=args.on_mismatch)
    per_image_f1, scores, labels = calibration_sweep(model, ds, CALIBRATION_THRESHOLDS, device=device,
                                                     progress=not args.no_progress)
    model.to("cpu")
    image = image_calibration(scores, labels, rate, data)
    f1 = per_image_f1.mean(axis=0)
    k = int(f1.argmax())
    out = {"mode": "absolute", "threshold": CALIBRATION_THRESHOLDS[k], "pixel_f1": float(f1[k]),
           "pixel_f1_at_0.5": float(f1[CALIBRATION_THRESHOLDS.index(0.5)]), "data": str(data),
           "thresholds": list(CALIBRATION_THRESHOLDS), "pixel_f1_by_threshold": [round(float(v), 6) for v in f1],
           "image": image}
    authentic, tampered = scores[labels == 0], scores[labels == 1]
    print(f"calibrated on {data}: pixel threshold {out['threshold']:.2f} (mean pixel F1 {out['pixel_f1_at_0.5']:.4f} "
          f"at 0.5 → {out['pixel_f1']:.4f}); image threshold {image['threshold']:.4f}, inconclusive from "
          f"{image['inconclusive_from']:.4f}: on val {(authentic > image['threshold']).mean():.1%} false alarms "
          f"({len(authentic)} authentic), recall {(tampered > image['threshold']).mean():.1%} "
          f"({len(tampered)} tampered)")
    return out


def image_calibration(scores, labels, max_false_alarm: float, data: str) -> dict:
    """The ``image`` block of the calibration from validation ``scores`` (raw image probabilities) and ``labels``."""
    from ..inference import false_alarm_threshold
    from ..errors import UserError

    authentic, tampered = sorted(scores[labels == 0].tolist()), sorted(scores[labels == 1].tolist())
    if not (authentic and tampered):
        raise UserError(f"{data}: image calibration needs at least one authentic and one tampered image "
                        f"(found {len(authentic)} authentic, {len(tampered)} tampered)")
    return {"threshold": false_alarm_threshold(authentic, max_false_alarm),
            "inconclusive_from": false_alarm_threshold(authentic, min(1.0, INCONCLUSIVE_FACTOR * max_false_alarm)),
            "max_false_alarm": max_false_alarm,
            "authentic_scores": [round(v, 5) for v in authentic], "tampered_scores": [round(v, 5) for v in tampered]}
