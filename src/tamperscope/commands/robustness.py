"""`tamperscope robustness MODEL... --data DATA --out DIR` (or ``--checkpoint MODEL...``, as in ``compare``): protocol
metrics under JPEG, blur, noise, gamma and resize perturbations (see :mod:`tamperscope.engine.robustness`)."""
from __future__ import annotations

from ..errors import UserError
from ._common import (add_inference_arguments, add_model_arguments, inference_options, input_paths, model_specs,
                      refuse_outputs)

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


def parse_kinds(text: str | None) -> list[str]:
    """``"jpeg,blur"`` -> ``["jpeg", "blur"]`` (all kinds when empty); unknown kinds raise a UserError."""
    from ..engine.robustness import DEFAULT_LEVELS

    if not text:
        return list(DEFAULT_LEVELS)
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in DEFAULT_LEVELS]
    if unknown:
        raise UserError(f"--kinds: unknown perturbation '{unknown[0]}'; choose from {', '.join(DEFAULT_LEVELS)}")
    return list(dict.fromkeys(kinds))


def parse_levels(items: list[str] | None) -> dict[str, tuple[float, ...]]:
    """``["jpeg:90,70", "blur:3"]`` -> ``{"jpeg": (90.0, 70.0), "blur": (3.0,)}``; each level is validated."""
    from ..data.transforms import parse_perturb

    out: dict[str, tuple[float, ...]] = {}
    for item in items or []:
        kind, sep, values = item.partition(":")
        kind = kind.strip().lower()
        if not sep or not values.strip():
            raise UserError(f"--levels '{item}': expected KIND:L1,L2,..., e.g. jpeg:90,70")
        out[kind] = tuple(parse_perturb(f"{kind}:{v.strip()}")[1] for v in values.split(",") if v.strip())
    return out


def sweep_plan(kinds: list[str], levels: dict[str, tuple[float, ...]]) -> list[tuple[str, float]]:
    """The (kind, level) pairs to run: ``levels[kind]`` when given, else the default grid of that kind."""
    from ..engine.robustness import DEFAULT_LEVELS

    extra = [k for k in levels if k not in kinds]
    if extra:
        raise UserError(f"--levels names '{extra[0]}', which is not among --kinds ({', '.join(kinds)})")
    return [(kind, float(level)) for kind in kinds for level in levels.get(kind, DEFAULT_LEVELS[kind])]


def run(args) -> int:
    from ..engine.distributed import is_main
    from ..engine.robustness import format_robustness, robustness_files, run_robustness, write_robustness

    options = inference_options(args)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    plan = sweep_plan(parse_kinds(args.kinds), parse_levels(args.levels))
    refuse_outputs(args.out, robustness_files(kind for kind, _ in plan), input_paths([args.data], model_specs(args)))
    result = run_robustness(model_specs(args), args.data, plan, **options)
    if is_main():
        print(format_robustness(result))
        written = write_robustness(result, args.out)
        print(f"written: {', '.join(str(p) for p in written)}")
    return 0
