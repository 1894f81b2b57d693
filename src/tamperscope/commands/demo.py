"""`tamperscope demo` (``make demo``): forgeries from sample photos, the default model on them, metrics, a report
(the pipeline: :mod:`tamperscope.engine.demo`). Without an installed default model the demo says so and runs the
weight-free ``ela`` baseline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError

NAME = "demo"
HELP = "build forgeries from bundled sample photos, run the default model, score it and write an HTML report"


def add_arguments(p):
    p.add_argument("--out", metavar="DIR", default="demo-output", help="output folder (default: ./demo-output)")
    p.add_argument("--n", type=int, default=8, help="number of forgeries to build (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the forgeries (default 0)")
    p.add_argument("--max-side", type=int, default=512, help="photos are downscaled to this longer side first")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability above which a pixel counts as tampered (default 0.5)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", dest="no_progress", help="deprecated name of --no-progress")
    p.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)  # tests and model developers


def run(args) -> int:
    from ..engine.demo import run_demo
    from ..engine.loading import default_model_available
    from ..engine.predict import load_predictor

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    checkpoint = args.checkpoint
    if checkpoint is None and not default_model_available():
        print("tamperscope demo: no default model is installed; using the weight-free 'ela' baseline instead",
              file=sys.stderr)
        checkpoint = "ela"
    predictor = load_predictor(checkpoint, device=args.device)
    report = run_demo(out, predictor, n=args.n, seed=args.seed, max_side=args.max_side, threshold=args.threshold,
                      progress=not args.no_progress)
    print(f"report: {report.resolve()}")
    return 0
