"""`tamperscope export RUN FILE.safetensors`: a run's selected model as one self-describing file (weights,
model config, training recipe and the best validation metrics in the safetensors metadata; no pickle). This is
how the bundled default model was made and how a model is shared or passed to ``predict --checkpoint``.

``--calibrate VAL``: the model's pixel and image operating points, chosen on a *validation* set (a JSON list or a
``mix:`` spec) and stored in the file's ``calibration`` (:mod:`tamperscope.engine.calibration`). Never calibrate on
a test set: the choice is model selection."""
from __future__ import annotations

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


def run(args) -> int:
    from ..checkpoint import (MODEL_FILE, checkpoint_weights_path, load_checkpoint, load_weights,
                              read_checkpoint_config, read_weights_file, save_checkpoint)
    from ..engine.loading import trained_image_size, training_recipe
    from ..engine.train import RunFolder
    from ..errors import UserError

    src, out = Path(args.run), Path(args.out)
    if args.calibrate and not 0.0 <= args.max_false_alarm < 1.0:
        raise UserError(f"--max-false-alarm must be in [0, 1), got {args.max_false_alarm}")
    if not src.is_dir():
        raise UserError(f"{src}: not a run folder")
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must end in .safetensors" +
                        (" (for ONNX: tamperscope export-onnx CHECKPOINT FILE.onnx)" if out.suffix == ".onnx" else ""))
    if out.resolve() == checkpoint_weights_path(src).resolve():
        raise UserError(f"{out}: would overwrite the run's own weights; choose another path")
    inside_run = src.resolve() in out.resolve().parents
    if out.exists() and (inside_run or out.name == MODEL_FILE or RunFolder(out.parent).exists()):
        raise UserError(f"{out}: would overwrite a run's weights or saved state; choose another path")
    cfg = read_checkpoint_config(src)
    model = load_checkpoint(src, map_location="cpu")
    if args.weights == "last":
        last = RunFolder(src).last_state_weights()
        load_weights(model, read_weights_file(last), str(last))
        print(f"weights: the run's last state ({last.parent.name})")
    extra = {"train": training_recipe(cfg), "source_run": src.name,
             "weights": args.weights,
             "val": RunFolder(src).best_val_metrics() if args.weights == "selected" else None}
    if args.calibrate:
        model.calibration = calibrate_and_report(model, args, trained_image_size(cfg))
    save_checkpoint(model, out, extra=extra)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, model {cfg['model']}, "
          f"trained at {extra['train'].get('image_size', '?')} px)")
    return 0


def calibrate_and_report(model, args, image_size: int) -> dict:
    """The model's ``calibration`` on ``--calibrate VAL`` (:func:`tamperscope.engine.calibration.calibrate`), with
    its operating points printed."""
    from ..engine.calibration import calibrate
    from ..engine.distributed import resolve_device

    cal, val = calibrate(model, args.calibrate, image_size=image_size, max_false_alarm=args.max_false_alarm,
                         device=resolve_device(args.device), on_mismatch=args.on_mismatch,
                         progress=not args.no_progress)
    image = cal["image"]
    print(f"calibrated on {args.calibrate}: pixel threshold {cal['threshold']:.2f} (mean pixel F1 "
          f"{cal['pixel_f1_at_0.5']:.4f} at 0.5 → {cal['pixel_f1']:.4f}); image threshold {image['threshold']:.4f}, "
          f"inconclusive from {image['inconclusive_from']:.4f}: on val {val['false_alarm']:.1%} false alarms "
          f"({val['n_authentic']} authentic), recall {val['recall']:.1%} ({val['n_tampered']} tampered)")
    return cal
