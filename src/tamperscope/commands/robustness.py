"""`tamperscope robustness MODEL... --data DATA --out DIR` (or ``--checkpoint MODEL...``, as in ``compare``): protocol
metrics under JPEG, blur, noise, gamma and resize perturbations (see :mod:`tamperscope.engine.robustness`)."""
from __future__ import annotations

from ._common import add_inference_arguments, add_model_arguments, input_paths, model_specs, refuse_outputs

NAME = "robustness"
HELP = "metrics of one or more models under graded JPEG / blur / noise / gamma / resize perturbations"


def add_arguments(p):
    add_model_arguments(p)  # several models share one plot per perturbation
    p.add_argument("--data", required=True, help="JSON list, Tp/Gt(/Au) folder")
    p.add_argument("--out", required=True, help="output folder: robustness.json + robustness_<kind>.png")
    p.add_argument("--kinds", help="comma-separated subset of jpeg,blur,noise,gamma,resize (default: all)")
    p.add_argument("--levels", action="append", default=[], metavar="KIND:L1,L2",
                   help="levels of one kind instead of its default grid, e.g. --levels jpeg:90,70 (repeatable)")
    add_inference_arguments(p)


def run(args) -> int:
    from ..engine.distributed import is_main
    from ..engine.robustness import (format_robustness, parse_kinds, parse_levels, run_robustness, sweep_plan,
                                     write_robustness)
    from ..errors import UserError
    from ..registry import parse_overrides
    from ..sizes import check_image_size

    if args.image_size is not None:
        check_image_size(args.image_size, "--image-size")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    plan = sweep_plan(parse_kinds(args.kinds), parse_levels(args.levels))
    refuse_outputs(args.out, ["robustness.json"] + [f"robustness_{k}.png" for k in dict.fromkeys(k for k, _ in plan)],
                   input_paths([args.data], model_specs(args)))
    result = run_robustness(model_specs(args), args.data, plan, threshold=args.threshold, image_size=args.image_size,
                            batch_size=args.batch_size, device=args.device, workers=args.workers,
                            on_mismatch=args.on_mismatch, overrides=parse_overrides(args.set),
                            progress=not args.no_progress)
    if is_main():
        print(format_robustness(result))
        written = write_robustness(result, args.out)
        print(f"written: {', '.join(str(p) for p in written)}")
    return 0
