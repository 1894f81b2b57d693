"""`tamperscope predict [--checkpoint RUN_OR_FILE] INPUT... [--out DIR]`: heat map, mask, overlay and the raw 16-bit
probability map per photo, plus ``results.json`` and ``results.csv`` (with each input's SHA-256), ``scores.json``
(so ``evaluate --predictions DIR`` scores the folder) and ``predict-manifest.json`` (what was written, so a re-run
replaces exactly that; see :mod:`tamperscope.engine.predict`), and one line per photo:
``tampered (score 0.910; 2 % of authentic validation photos score this high; 3.1 % of pixels flagged)``. The
verdict is tampered, inconclusive or authentic; no region is drawn on an authentic photo unless ``--raw-map``.
Bad files are reported one line each and skipped; the exit code is 1 when any input failed, 0 otherwise."""
from __future__ import annotations

import sys

from ..errors import UserError
from ..sizes import DEFAULT_IMAGE_SIZE, check_image_size

NAME = "predict"
HELP = "localise manipulations in photos (files, folders, globs): heat map, mask, overlay and a results table"


def add_arguments(p):
    from ..engine.predict import DEFAULT_THRESHOLD, DEFAULT_TILE_OVERLAP

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or globs")
    p.add_argument("--checkpoint", metavar="RUN_OR_FILE", default=None,
                   help="run folder, .safetensors checkpoint, 'default' (the bundled default model, used when "
                        "omitted) or a weight-free built-in model ('ela')")
    p.add_argument("--out", metavar="DIR", default="predictions", help="output folder (default: ./predictions)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="probability above which a pixel counts as tampered (default 0.5: a calibrated "
                        "checkpoint's operating point)")
    p.add_argument("--image-threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="image score above which a photo counts as tampered (default 0.5: a calibrated checkpoint's "
                        "operating point, at most 10 %% false alarms on its validation data)")
    p.add_argument("--raw-map", action="store_true",
                   help="draw the pixels above --threshold even on photos judged authentic")
    p.add_argument("--tiles", action="store_true",
                   help="slide windows over large photos at native resolution and stitch the maps")
    p.add_argument("--tile-size", type=int, default=None, metavar="PX",
                   help="window size in photo pixels (default: the model's input size)")
    p.add_argument("--tile-overlap", type=float, default=DEFAULT_TILE_OVERLAP,
                   help=f"window overlap in [0, 1) (default {DEFAULT_TILE_OVERLAP:g})")
    p.add_argument("--image-size", type=int, default=None,
                   help="model input size (default: the size the checkpoint was trained at, else "
                        f"{DEFAULT_IMAGE_SIZE})")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass in --tiles mode")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--onnx-runtime", choices=("auto", "onnxruntime", "openvino"), default="auto",
                   help="what runs a --checkpoint FILE.onnx (from `tamperscope export-onnx`): auto (default: "
                        "OpenVINO if installed, else ONNX Runtime)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (the first photo of each size compiles first)")
    p.add_argument("--no-experts", action="store_true",
                   help="run the learned model without the experts its checkpoint fuses with it (the default "
                        "model's copy-move expert, double-JPEG evidence and JPEG-lattice expert); --checkpoint "
                        "copymove, doublejpeg or jpeglattice runs one alone")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", dest="no_progress", help="deprecated name of --no-progress")


def run(args) -> int:
    from ..engine.predict import load_predictor, predict_files, verdict_line

    for flag, value in (("--threshold", args.threshold), ("--image-threshold", args.image_threshold)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} must be in [0, 1], got {value}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.image_size is not None:
        check_image_size(args.image_size, "--image-size")
    predictor = load_predictor(args.checkpoint, device=args.device, image_size=args.image_size,
                               batch_size=args.batch_size, onnx_runtime=args.onnx_runtime,
                               experts=not args.no_experts)
    if args.compile:
        from ..engine.compile import compile_model

        compile_model(predictor.model)
    result = predict_files(predictor, args.inputs, args.out, threshold=args.threshold,
                           image_threshold=args.image_threshold, raw_map=args.raw_map, tiles=args.tiles,
                           tile_size=args.tile_size, tile_overlap=args.tile_overlap, progress=not args.no_progress)
    for row in result.rows:
        if row["status"] == "ok":
            print(f"{row['input']}: {verdict_line(row)}")
    print(f"{result.n_ok} image(s) done, {result.n_failed} failed; model {predictor.name}; "
          f"results in {result.results_csv} and {result.results_json}")
    if result.n_failed:
        print(f"tamperscope predict: {result.n_failed} input(s) failed (listed above)", file=sys.stderr)
        return 1
    return 0
