"""`tamperscope evaluate (--checkpoint RUN | --predictions DIR) --data DATA`: exact protocol metrics. A checkpoint's
maps and image scores pass through its calibration (``export --calibrate``), so the pixel and image decisions at
0.5 are its validation operating points (for the image: at most its false-alarm rate on the validation photos)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from ._common import add_inference_arguments, inference_options, input_paths

NAME = "evaluate"
HELP = "score a checkpoint or saved prediction maps with the exact protocol metrics"


def add_arguments(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run folder, .safetensors checkpoint, default (the bundled model) or a "
                     "weight-free model name (ela)")
    src.add_argument("--predictions", help="folder of <image stem>.png maps (0–255) and optional scores.json")
    p.add_argument("--data", required=True, help="JSON list, Tp/Gt(/Au) folder")
    p.add_argument("--perturb", help="KIND:LEVEL, e.g. jpeg:70, blur:7, noise:11, gamma:1.3, resize:0.5")
    add_inference_arguments(p)
    p.add_argument("--group-by", choices=["region", "method", "area_bin", "area", "source", "generator_family"],
                   help="also report metrics per subgroup (needs metadata.jsonl beside the data)")
    p.add_argument("--out", help="write the metrics as flat JSON (atomically)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiles before it runs)")
    p.add_argument("--no-experts", action="store_true",
                   help="score a checkpoint's learned model without the experts it is fused with (the default "
                        "model's copy-move expert, double-JPEG evidence and JPEG-lattice expert); score an expert "
                        "alone with --checkpoint copymove, doublejpeg or jpeglattice")


def check_out(out: Path, inputs: list[Path]) -> None:
    """Before any work: ``--out`` is no input, no folder, and its folder can be written."""
    from ..io import check_protected

    check_protected(out, inputs)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name such as {out / 'metrics.json'}")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {folder} (permission denied or read-only)")


def run(args) -> int:
    from ..engine.evaluate import format_table
    from ..engine.runs import evaluate_source

    inputs = input_paths([args.data], [args.checkpoint or args.predictions]) if args.out else []
    if args.out:  # checked before the work
        check_out(Path(args.out), inputs)
    options = inference_options(args)
    if args.perturb and args.predictions:
        raise UserError("--perturb applies to a model, not to saved predictions")
    group_by = "area_bin" if args.group_by == "area" else args.group_by
    metrics, groups = evaluate_source(checkpoint=args.checkpoint, predictions=args.predictions, data=args.data,
                                      perturb=args.perturb, group_by=group_by, compile=args.compile,
                                      experts=not args.no_experts, **options)
    print(format_table(metrics, f"{args.checkpoint or args.predictions} on {args.data}"
                                + (f" ({args.perturb})" if args.perturb else "")))
    for value, m in (groups or {}).items():
        print(format_table(m, f"[{group_by} = {value}]"))
    if args.out:
        from ..io import atomic_write_text

        payload = dict(metrics)
        if groups:
            payload["groups"] = {str(k): v for k, v in groups.items()}
        text = json.dumps(payload, indent=2, allow_nan=False)
        try:
            atomic_write_text(Path(args.out), text, protect=inputs)
        except UserError as exc:  # full disk, folder gone read-only: the computed metrics are not lost
            print(text)
            raise UserError(f"{exc}; the metrics are printed above as JSON") from None
        print(f"metrics written to {args.out}")
    return 0
