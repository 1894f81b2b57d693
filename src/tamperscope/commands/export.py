"""`tamperscope export RUN FILE.safetensors`: a run's selected model as one self-describing file (weights,
model config, training recipe and the best validation metrics in the safetensors metadata; no pickle). This is
how the bundled default model was made and how a model is shared or passed to ``predict --checkpoint``.

``--calibrate VAL``: the model's pixel and image operating points, chosen on a *validation* set (a JSON list or a
``mix:`` spec) and stored in the file's ``calibration`` (:mod:`tamperscope.engine.calibration`). Never calibrate on
a test set: the choice is model selection."""
from __future__ import annotations

from ..errors import UserError

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
    from ..engine.distributed import resolve_device
    from ..engine.export import export_run

    if args.calibrate and not 0.0 <= args.max_false_alarm < 1.0:
        raise UserError(f"--max-false-alarm must be in [0, 1), got {args.max_false_alarm}")
    done = export_run(args.run, args.out, weights=args.weights, calibrate=args.calibrate,
                      max_false_alarm=args.max_false_alarm, device=resolve_device(args.device),
                      on_mismatch=args.on_mismatch, progress=not args.no_progress)
    if args.weights == "last":
        print(f"weights: the run's last state ({done.weights.parent.name})")
    if done.calibration:
        cal, val, image = done.calibration, done.validation, done.calibration["image"]
        print(f"calibrated on {args.calibrate}: pixel threshold {cal['threshold']:.2f} (mean pixel F1 "
              f"{cal['pixel_f1_at_0.5']:.4f} at 0.5 → {cal['pixel_f1']:.4f}); image threshold "
              f"{image['threshold']:.4f}, inconclusive from {image['inconclusive_from']:.4f}: on val "
              f"{val['false_alarm']:.1%} false alarms ({val['n_authentic']} authentic), recall {val['recall']:.1%} "
              f"({val['n_tampered']} tampered)")
    print(f"wrote {done.path} ({done.path.stat().st_size / 2**20:.1f} MiB, model {done.config['model']}, "
          f"trained at {done.extra['train'].get('image_size', '?')} px)")
    return 0
