"""Argument groups shared by several sub-commands (not a command itself: the CLI skips ``_`` modules)."""


def add_inference_arguments(p) -> None:
    """Options of every command that runs models over a dataset (compare, robustness)."""
    p.add_argument("--threshold", type=float, default=0.5,
                   help="pixel threshold (image-level decisions stay at 0.5, SEED-SPECS §8.1)")
    p.add_argument("--image-size", type=int, help="model input size (default: the size it was trained at, else 512)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--on-mismatch", choices=["skip", "resize", "error"], default="error")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="inference-time config override for every model (e.g. ensemble_size=1)")
    p.add_argument("--no-progress", action="store_true")
