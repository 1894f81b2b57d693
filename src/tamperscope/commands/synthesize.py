"""`tamperscope synthesize`: training forgeries with mixed compression histories from authentic photos
(splice, copy-move, inpainting stand-ins, resampling, double JPEG, retouching), as the default model is trained.
See :mod:`tamperscope.data.synthetic` for what each sample goes through."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

NAME = "synthesize"
HELP = "make a training set of forgeries with mixed compression histories from authentic photos"


def add_arguments(p):
    p.add_argument("--photos", required=True, action="append", metavar="SPEC",
                   help="a folder, a .txt list of photo paths (relative to the list) or a .json list (its "
                        "authentic entries); repeat to combine")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (Tp/ Gt/ Au/, list.json, metadata.jsonl)")
    p.add_argument("--tampered", type=int, default=1000, help="number of forgeries (default 1000)")
    p.add_argument("--authentic", type=int, default=500, help="number of authentic samples (default 500)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes (default 0)")
    p.add_argument("--max-side", type=int, default=640, help="longest side of a sample window (default 640)")
    p.add_argument("--history-prob", type=float, default=0.8, metavar="P",
                   help="probability that a lossless or resized photo first gets a JPEG history (default 0.8)")
    p.add_argument("--jpeg-prob", type=float, default=0.75, metavar="P",
                   help="probability that a sample is finally saved as JPEG rather than PNG (default 0.75); "
                        "lower both for more samples that were never compressed")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..data.synthetic import load_photos, write_synthetic

    if args.tampered < 0 or args.authentic < 0 or args.tampered + args.authentic == 0:
        raise UserError("--tampered and --authentic must be ≥ 0 and not both 0")
    if args.max_side < 64:
        raise UserError(f"--max-side must be at least 64, got {args.max_side}")
    for flag, value in (("--history-prob", args.history_prob), ("--jpeg-prob", args.jpeg_prob)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} must be a probability in [0, 1], got {value}")
    out = Path(args.out).resolve()
    for spec in args.photos:
        if Path(spec).is_dir() and (out == Path(spec).resolve() or Path(spec).resolve() in out.parents):
            raise UserError(f"--out {args.out} is inside --photos {spec}; choose another folder")
    photos, bad = load_photos(args.photos)
    for line in bad:
        print(f"skipped: {line}")
    print(f"{len(photos)} photos from {len({p.source for p in photos})} sources")
    listing = write_synthetic(photos, args.out, args.tampered, args.authentic, args.seed, args.max_side,
                              max(1, args.workers), progress=not args.no_progress,
                              history_prob=args.history_prob, jpeg_prob=args.jpeg_prob)
    print(f"wrote {listing} ({args.tampered} tampered, {args.authentic} authentic)")
    return 0
