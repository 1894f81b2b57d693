"""`tamperscope train MODEL --train DATA [--val DATA] --out RUN ...` (one CPU to many GPUs via torchrun)."""
from __future__ import annotations

from dataclasses import fields

from ..sizes import DEFAULT_IMAGE_SIZE, check_image_size

NAME = "train"
HELP = "train a model (multi-GPU with torchrun; --resume continues exactly)"


def add_arguments(p):
    p.add_argument("model", help="registered model name (see `tamperscope models`)")
    p.add_argument("--train", required=True, help="JSON list, Tp/Gt folder, folder of photos, or mix:A,B@N")
    p.add_argument("--val", help="validation data (the model is selected on it; never pass a test set)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--stage", help="training stage of a multi-stage method")
    p.add_argument("--pretrained", help="run folder/checkpoint of the previous stage (loaded strict=False)")
    p.add_argument("--preset", help="training recipe preset of the model (e.g. official, paper)")
    p.add_argument("--config", help="YAML with model: and train: sections")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="images per batch and process (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                   help=f"training input size in pixels (default {DEFAULT_IMAGE_SIZE})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--workers", type=int, default=2, help="data-loader processes")
    p.add_argument("--accum", type=int, default=None,
                   help="gradient accumulation steps (default: what the preset's global batch needs, else 1)")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    p.add_argument("--seed", type=int, default=42, help="random seed of weights, data order and augmentation "
                                                        "(default 42)")
    p.add_argument("--max-steps", type=int,
                   help="train this many optimisation steps; when fewer than the epochs' steps, the warm-up (its "
                        "share of the run) and the LR decay are laid over them")
    p.add_argument("--save-every", type=int, default=0, help="also save a resumable state every N steps")
    p.add_argument("--log-every", type=int, default=10,
                   help="write a training line to metrics.jsonl every N steps (default 10)")
    p.add_argument("--no-augment", action="store_true", help="disable the training augmentation")
    p.add_argument("--on-mismatch", choices=["skip", "resize", "error"], default="skip",
                   help="image/mask size mismatch handling (default for training: skip with a warning)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiles on the first steps)")


def run(args) -> int:
    from ..engine.train import TrainOptions, train
    from ..registry import parse_overrides

    check_image_size(args.image_size, "--image-size")
    same_name = {f.name: getattr(args, f.name) for f in fields(TrainOptions) if hasattr(args, f.name)}
    opts = TrainOptions(**same_name, config_file=args.config, augment=not args.no_augment,
                        model_overrides=parse_overrides(args.set), progress=not args.no_progress)
    try:
        state = train(opts)
    except KeyboardInterrupt as exc:
        print(f"tamperscope train: {exc.args[0]}; resume with --resume --out {args.out}" if exc.args
              else "tamperscope train: interrupted")
        return 130
    best = state.get("best")
    msg = f"done: {state['global_step']} steps; run folder {args.out}"
    if best:
        msg += f"; best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}"
    print(msg)
    return 0
