"""`tamperscope predict [--checkpoint RUN_OR_FILE] INPUT... [--out DIR]`: heat map, mask and overlay per photo,
plus ``results.json`` and ``results.csv`` (see :mod:`tamperscope.engine.predict`). Bad files are reported one
line each and skipped; the exit code is 1 when any input failed, 0 otherwise."""
from __future__ import annotations

import sys

NAME = "predict"
HELP = "localise manipulations in photos (files, folders, globs): heat map, mask, overlay and a results table"


def add_arguments(p):
    from ..engine.predict import DEFAULT_THRESHOLD, DEFAULT_TILE_OVERLAP

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or globs")
    p.add_argument("--checkpoint", metavar="RUN_OR_FILE", default=None,
                   help="run folder, .safetensors checkpoint or a weight-free built-in model ('ela'); "
                        "default: the bundled default model")
    p.add_argument("--out", metavar="DIR", default="predictions", help="output folder (default: ./predictions)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="probability above which a pixel (and an image score) counts as tampered (default 0.5)")
    p.add_argument("--tiles", action="store_true",
                   help="slide windows over large photos at native resolution and stitch the maps")
    p.add_argument("--tile-size", type=int, default=None, metavar="PX",
                   help="window size in photo pixels (default: the model's input size)")
    p.add_argument("--tile-overlap", type=float, default=DEFAULT_TILE_OVERLAP, help="window overlap in [0, 1)")
    p.add_argument("--image-size", type=int, default=None,
                   help="model input size (default: the size the checkpoint was trained at, else 512)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass in --tiles mode")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..engine.predict import load_predictor, predict_files
    from ..errors import UserError

    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    predictor = load_predictor(args.checkpoint, device=args.device, image_size=args.image_size,
                               batch_size=args.batch_size)
    result = predict_files(predictor, args.inputs, args.out, threshold=args.threshold, tiles=args.tiles,
                           tile_size=args.tile_size, tile_overlap=args.tile_overlap, progress=not args.quiet)
    for row in result.rows:
        if row["status"] == "ok":
            print(f"{row['input']}: {row['verdict']} (score {row['score']:.3f}, "
                  f"{row['tampered_area_pct']:.2f}% of pixels above {row['threshold']:g})")
    print(f"{result.n_ok} image(s) done, {result.n_failed} failed; model {predictor.name}; "
          f"results in {result.results_csv} and {result.results_json}")
    if result.n_failed:
        print(f"tamperscope predict: {result.n_failed} input(s) failed (listed above)", file=sys.stderr)
        return 1
    return 0
