"""`tamperscope profile MODEL|--all`: params, GMACs, latency, images/s and peak memory."""
from __future__ import annotations

import json
import platform

from ..sizes import DEFAULT_IMAGE_SIZE, check_image_size

NAME = "profile"
HELP = "measure params, GMACs, latency, throughput and peak memory of a model (or --all)"


def add_arguments(p):
    p.add_argument("model", nargs="?", help="registered model name (see `tamperscope models`)")
    p.add_argument("--all", action="store_true", help="profile every registered model (complexity table)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                   help=f"square input size in pixels (default {DEFAULT_IMAGE_SIZE})")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the throughput measurement (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--iters", type=int, default=3, help="timed iterations (median reported)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set ensemble_size=1 (JSON values)")
    p.add_argument("--json", action="store_true", help="print one flat JSON object (per model)")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write a Markdown table: measured values beside the papers' reported numbers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _row(r: dict) -> str:
    paper = ""
    if "paper_params_m" in r:
        paper = f"  (paper: {r['paper_params_m']} M / {r.get('paper_gmacs', '-')} G)"
    return (f"{r['model']:<18} {r['params_m']:>9.2f} M {r['trainable_params_m']:>9.2f} M {r['gmacs']:>8.1f} G "
            f"{r['latency_ms']:>9.1f} ms {r['images_per_s']:>8.2f} img/s {r['peak_mem_mb']:>8.0f} MB{paper}")


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown_table(rows: list[dict], image_size: int, device: str) -> str:
    """The complexity table: our measurements next to the papers' numbers (``PAPER_COMPLEXITY``); methods the
    papers compare against but that are not implemented here are listed as reference rows ("paper only")."""
    import torch

    from ..engine.profile import PAPER_COMPLEXITY
    from ..registry import list_models

    def source(paper: dict) -> str:
        return paper.get("source", "") + (f"; {paper['fps']} images/s" if paper.get("fps") else "")

    if device.startswith("cuda") and torch.cuda.is_available():
        hardware = torch.cuda.get_device_name(torch.device(device))
    else:
        hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [f"Complexity at {image_size}×{image_size} on {device} ({hardware}; torch {torch.__version__}). "
             "GMACs = multiply-accumulates of one forward pass (attention included); latency at batch 1 "
             "(median); throughput at the best batch size; paper numbers as reported (their hardware).", "",
             f"| model | params (M) | paper params (M) | GMACs @{image_size} | paper GMACs | latency (ms) | "
             "images/s (batch) | peak mem (MB) | paper source |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    measured = set()
    for r in rows:
        measured.add(r["model"])
        paper = PAPER_COMPLEXITY.get(r["model"], {})
        lines.append(f"| {r['model']} | {_num(r['params_m'], '.2f')} | {_num(paper.get('params_m'), '.2f')} | "
                     f"{_num(r['gmacs'], '.1f')} | {_num(paper.get('gmacs'), '.1f')} | "
                     f"{_num(r['latency_ms'], '.1f')} | "
                     f"{_num(r['images_per_s'], '.2f')} ({r.get('best_batch_size', '–')}) | "
                     f"{_num(r['peak_mem_mb'], '.0f')} | {source(paper)} |")
    registered = set(list_models())
    for name, paper in PAPER_COMPLEXITY.items():
        if name not in measured and name not in registered:
            lines.append(f"| {name} (paper only) | – | {_num(paper.get('params_m'), '.2f')} | – | "
                         f"{_num(paper.get('gmacs'), '.1f')} | – | – | – | {source(paper)} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from ..engine.profile import profile_model
    from ..registry import list_models, parse_overrides

    if not args.model and not args.all:
        raise ValueError("give a MODEL name or --all")
    check_image_size(args.image_size, "--image-size")
    names = list_models() if args.all else [args.model]
    overrides = parse_overrides(args.set)
    if not args.json:
        print(f"{'model':<18} {'params':>11} {'trainable':>11} {'GMACs':>10} {'latency':>12} {'throughput':>14} {'peak mem':>11}")
    from tqdm import tqdm

    rows = []
    bar = tqdm(total=len(names), desc="profile", unit="model", disable=args.no_progress, leave=False,
               dynamic_ncols=True, bar_format="{desc}: {n}/{total} models{postfix}")
    for name in names:
        def on_stage(text, done, total, name=name):
            bar.set_postfix_str(f"{name}: {text} ({done + 1}/{total})")

        r = profile_model(name, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                          iters=args.iters, best_batch=args.all, on_stage=on_stage, **overrides)
        bar.update(1)
        rows.append(r)
        tqdm.write(json.dumps(r) if args.json else _row(r))
    bar.close()
    if args.markdown:
        from pathlib import Path

        from ..io import atomic_write_text

        atomic_write_text(Path(args.markdown), markdown_table(rows, args.image_size, args.device))
        if not args.json:
            print(f"table written to {args.markdown}")
    return 0
