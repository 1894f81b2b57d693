"""Argument groups shared by several sub-commands (not a command itself: the CLI skips ``_`` modules)."""
from pathlib import Path

from ..errors import UserError
from ..sizes import DEFAULT_IMAGE_SIZE, check_image_size


def add_inference_arguments(p) -> None:
    """Options of every command that runs models over a dataset (evaluate, compare, robustness)."""
    p.add_argument("--threshold", type=float, default=0.5,
                   help="pixel threshold for the thresholded pixel metrics (default 0.5; image-level decisions "
                        "stay at 0.5)")
    p.add_argument("--image-size", type=int,
                   help=f"model input size (default: the size it was trained at, else {DEFAULT_IMAGE_SIZE})")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per forward pass (default 8; models that read photos at their own size use 1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes (default 2; 0 = none)")
    p.add_argument("--on-mismatch", choices=["skip", "resize", "error"], default="error",
                   help="a mask whose size differs from its image: stop with an error (default), skip the image or "
                        "resize the mask")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="inference-time config override for every model (e.g. ensemble_size=1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def inference_options(args) -> dict:
    """The keywords of the engine's dataset runners (evaluate, compare, robustness) from the arguments of
    :func:`add_inference_arguments`, ``--image-size`` checked."""
    from ..registry import parse_overrides

    if args.image_size is not None:
        check_image_size(args.image_size, "--image-size")
    return {"threshold": args.threshold, "image_size": args.image_size, "batch_size": args.batch_size,
            "device": args.device, "workers": args.workers, "on_mismatch": args.on_mismatch,
            "overrides": parse_overrides(args.set), "progress": not args.no_progress}


MODEL_HELP = ("run folders, .safetensors checkpoints, 'default' (the bundled model) or a weight-free model name "
              "('ela')")


def add_model_arguments(p) -> None:
    """Models of the commands that compare several (compare, robustness): positional or after ``--checkpoint``,
    in either command; :func:`model_specs` reads them."""
    p.add_argument("models", nargs="*", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--checkpoint", nargs="+", action="extend", default=[], metavar="MODEL",
                   help=f"the same as the positional MODEL arguments: {MODEL_HELP}")


def model_specs(args) -> list[str]:
    """The models given, positional first, then those after ``--checkpoint``; at least one."""
    specs = list(args.models) + list(args.checkpoint)
    if not specs:
        raise UserError("give at least one model (MODEL ... or --checkpoint MODEL ...)")
    return specs


def input_paths(data: list[str], models: list[str] = ()) -> list:
    """Every file a command reads: the data lists (and each image, mask and ``metadata.jsonl`` they name) and the
    model files (a run folder's files, a checkpoint); outputs must never replace any of them."""
    from ..data.datasets import load_evaluation_records, parse_mix_spec

    files = []
    for spec in data:
        sources = [p for p, _ in parse_mix_spec(spec[4:])] if spec.startswith("mix:") else [spec]
        for source in sources:
            path = Path(source)
            files += [f for f in path.iterdir() if f.is_file()] if path.is_dir() else [path] if path.is_file() else []
        for rec in load_evaluation_records(spec):
            files += [Path(rec.image), Path(rec.image).parent / "metadata.jsonl"] + ([Path(rec.mask)] if rec.mask
                                                                                       else [])
    for model in models:
        path = Path(model)
        files += [f for f in path.iterdir() if f.is_file()] if path.is_dir() else [path] if path.is_file() else []
    return files


def refuse_outputs(out_dir, names, inputs) -> None:
    """Before any work: none of ``out_dir/NAME`` may be one of ``inputs`` (a one-line error naming it)."""
    from ..io import check_protected

    for name in names:
        check_protected(Path(out_dir) / name, inputs)
