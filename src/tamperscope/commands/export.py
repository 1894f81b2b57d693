"""`tamperscope export RUN FILE.safetensors`: a run's selected model as one self-describing file (weights,
model config, training recipe and the best validation metrics in the safetensors metadata; no pickle). This is
how the bundled default model was made and how a model is shared or passed to ``predict --checkpoint``.

``--calibrate VAL``: a model trained with Dice terms on many authentic windows is often conservative at 0.5,
and its probability levels can vary from photo to photo more than its ranking of pixels within a photo. The
operating point that maximises the mean per-image pixel F1 of the tampered images of a *validation* set is
chosen among absolute thresholds t (0.05, 0.10, ..., 0.95) and, unless ``--absolute-only``, thresholds relative
to each photo's own 99th / 99.5th percentile (the normalisation of error-level analysis), and stored in the
file's ``calibration`` (:func:`tamperscope.engine.evaluate.calibrate_map`), applied at inference only so that
0.5 (the default of predict, serve and evaluate) is that operating point. A relative map always marks the
most suspicious part of a photo, authentic or not; the image score is unaffected. Never calibrate on a test
set: the choice is model selection."""
from __future__ import annotations

import json
from pathlib import Path

NAME = "export"
HELP = "write a run's selected model as one .safetensors file (weights + config + recipe)"


def add_arguments(p):
    p.add_argument("run", help="run folder written by `tamperscope train`")
    p.add_argument("out", help="output file, ending in .safetensors")
    p.add_argument("--calibrate", metavar="VAL", help="validation data on which to choose the mask threshold that "
                   "becomes the model's 0.5 (module docstring); never the test set")
    p.add_argument("--absolute-only", action="store_true", help="consider absolute thresholds only")
    p.add_argument("--weights", choices=("selected", "last"), default="selected",
                   help="the model selected on val during training (default) or the run's last saved state")
    p.add_argument("--on-mismatch", choices=("error", "skip", "resize"), default="skip",
                   help="masks whose size differs from their image in the calibration data (default skip)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


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
        raise UserError(f"{out}: the output must end in .safetensors")
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
        cal = model.calibration
        where = f" × the photo's {cal['percentile']:g}th percentile" if cal["mode"] == "relative" else ""
        print(f"calibrated on {args.calibrate}: {cal['mode']} threshold {cal['threshold']:.2f}{where} "
              f"(mean pixel F1 {cal['pixel_f1_at_0.5']:.4f} at 0.5 → {cal['pixel_f1']:.4f})")
    save_checkpoint(model, out, extra=extra)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, model {cfg['model']}, "
          f"trained at {extra['train'].get('image_size', '?')} px)")
    return 0


CALIBRATION_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
RELATIVE_PERCENTILES = (99.0, 99.5)


def calibrate(model, data: str, args, image_size: int) -> dict:
    """The ``calibration`` entry of the module docstring, measured on ``data``."""
    from ..data.datasets import load_evaluation_records
    from ..engine.evaluate import evaluation_dataset, threshold_sweep
    from ..engine.predict import resolve_device

    device = resolve_device(args.device)
    model.to(device)
    ds = evaluation_dataset(model, load_evaluation_records(data), image_size, on_mismatch=args.on_mismatch)
    sweeps = threshold_sweep(model, ds, CALIBRATION_THRESHOLDS, device=device, progress=not args.no_progress,
                             percentiles=() if args.absolute_only else RELATIVE_PERCENTILES)
    model.to("cpu")
    at_half = CALIBRATION_THRESHOLDS.index(0.5)
    # the best (mode, threshold); ties keep the absolute mode and the lower percentile
    q, k = max(((q, int(f1.argmax())) for q, f1 in sweeps.items()), key=lambda qk: sweeps[qk[0]][qk[1]])
    out = {"mode": "absolute" if q is None else "relative", "threshold": CALIBRATION_THRESHOLDS[k],
           "pixel_f1": float(sweeps[q][k]), "pixel_f1_at_0.5": float(sweeps[None][at_half]), "data": str(data),
           "thresholds": list(CALIBRATION_THRESHOLDS),
           "pixel_f1_by_threshold": {("absolute" if p is None else f"relative_p{p:g}"): [round(float(v), 6) for v in f1]
                                     for p, f1 in sweeps.items()}}
    if q is not None:
        out["percentile"] = q
    return out
