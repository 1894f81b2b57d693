"""`tamperscope generate`: build a BR-Gen-style localized-forgery dataset from a folder of real photos
(paper 001 §3, README of clpbc/BR-Gen). See :mod:`tamperscope.data.brgen.pipeline` for the plan, naming, splits and
resumability, and :mod:`tamperscope.data.brgen.backends` for the model back ends.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from ..errors import UserError

NAME = "generate"
HELP = "generate a BR-Gen-style forgery dataset (Au/ Tp/ Gt/, splits, metadata) from real photos"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _area_bins(text: str) -> tuple[str, ...]:
    """Accept ``<20``, ``20`` or ``0-20`` for each bin."""
    bins = []
    for token in _csv(text):
        upper = token.lstrip("<").split("-")[-1].rstrip("%")
        bins.append(f"<{upper}")
    return tuple(bins)


def _model_dirs(entries: list[str] | None) -> dict:
    dirs = {}
    for entry in entries or []:
        key, sep, path = entry.partition("=")
        if not sep or not key or not path:
            raise UserError(f"--model-dir {entry!r}: expected KEY=DIR (detector, sam, inpaint, taesd or clip)")
        if key.strip() in dirs:
            raise UserError(f"--model-dir {key.strip()}= given twice ({dirs[key.strip()]}, {path.strip()}); "
                            f"one folder per key")
        dirs[key.strip()] = path.strip()
    return dirs


def add_arguments(p):
    from ..data.brgen import AREA_BINS, BUILTIN_METHODS, DEFAULT_METHODS, REGION_TYPES

    p.add_argument("--photos", metavar="DIR", help="folder of real photos (searched recursively); required except "
                                                   "with --merge")
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (not inside --photos)")
    p.add_argument("--n", type=int, default=100,
                   help="number of forgeries (default 100); each photo gets one mask per region type, forged by "
                        "every method, so a photo yields regions x methods forgeries")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same bytes (default 0)")
    p.add_argument("--methods", type=_csv, default=None,
                   help=f"comma list; built-in: {','.join(BUILTIN_METHODS)} (default: the inpainters "
                        f"{','.join(DEFAULT_METHODS)}, or the model back end's creators)")
    p.add_argument("--regions", type=_csv, default=("stuff", "background"),
                   help=f"comma list of {','.join(REGION_TYPES)} (default stuff,background as in BR-Gen)")
    p.add_argument("--area-bins", type=_area_bins, default=AREA_BINS,
                   help="comma list of mask-area bins in %% of the image: 20,40,60,80,100 (= <20 ... <100; "
                        "default all)")
    p.add_argument("--area-policy", choices=("paper", "table7"), default="paper",
                   help="area bins of the built-in regions: paper (stuff 3-80%% incl. the <20%% bin of the paper's "
                        "Table 7, thing 2-20%%, background its inverse, 80-98%%); table7: things and backgrounds "
                        "reach more bins too. Detected regions (--backend models) keep their own area")
    p.add_argument("--max-side", type=int, default=1024, help="downscale larger photos first (default 1024)")
    p.add_argument("--jpeg-quality", type=int, default=None,
                   help="write Tp/Au as JPEG of this quality (default: lossless PNG)")
    p.add_argument("--retries", type=int, default=5, help="regenerations of a rejected sample (default 5)")
    p.add_argument("--backend", choices=("builtin", "models"), default="builtin",
                   help="builtin (no weights) or models (local model folders via --model-dir)")
    p.add_argument("--model-dir", action="append", metavar="KEY=DIR", dest="model_dirs",
                   help="local model folder for --backend models: detector=, sam=, inpaint=, taesd=, clip= "
                        "(repeatable)")
    p.add_argument("--device", default="cpu", help="torch device of the model back ends (default cpu)")
    p.add_argument("--inpaint-steps", type=int, default=30, help="denoising steps of the inpainting model")
    p.add_argument("--clip-min-score", type=float, default=0.2, help="reject CLIP image-text cosine below this")
    p.add_argument("--shard", metavar="K/N",
                   help="make only shard K of N (whole photos: slots s with s mod N == K) into the shared --out; "
                        "'auto' reads RANK/WORLD_SIZE (torchrun) or SLURM_ARRAY_TASK_ID/COUNT; then run --merge")
    p.add_argument("--workers", type=int, default=1,
                   help="run this many shards as processes on this machine, then merge (default 1)")
    p.add_argument("--merge", action="store_true",
                   help="write the dataset (lists, metadata, summary) of a sharded --out once every shard is done")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args) -> int:
    from ..data.brgen import GenerateOptions, generate
    from ..data.brgen.pipeline import merge, parse_shard

    if args.merge:
        if args.shard or args.workers != 1:
            raise UserError("--merge takes only --out (the options come from the run's state)")
        summary = merge(Path(args.out), progress=not args.no_progress)
        for text in summary["warnings"]:
            print(f"warning: {text}", file=sys.stderr)
        return _print_summary(summary, args.out)
    if not args.photos:
        raise UserError("--photos DIR is required (except with --merge)")
    same_name = {f.name: getattr(args, f.name) for f in fields(GenerateOptions) if hasattr(args, f.name)}
    opts = GenerateOptions(**same_name | {
        "photos": Path(args.photos), "out": Path(args.out), "model_dirs": _model_dirs(args.model_dirs),
        "shard": parse_shard(args.shard) if args.shard else None}, progress=not args.no_progress)
    result = generate(opts)
    if opts.shard is not None:
        k, n = opts.shard
        made = f"{result['produced']} forgeries ({result['failed']} failed)" if "produced" in result else \
            f"{result['workers']} worker shards"
        print(f"shard {k}/{n}: {made} in {args.out}; when every shard is done: tamperscope generate --merge "
              f"--out {args.out}")
        return 0
    return _print_summary(result, args.out)


def _print_summary(summary: dict, out) -> int:
    print(f"wrote {summary['produced']} forgeries ({summary['failed']} failed after retries) to {out}")
    for key in ("method", "region", "area_bin"):
        print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in summary["counts"][key].items()))
    if summary["rejections"]:
        print("  rejections: " + ", ".join(f"{k} {v}" for k, v in summary["rejections"].items()))
    return 0 if summary["produced"] else 1
