"""`tamperscope compare MODEL... --data NAME=DATA... --out DIR` (or ``--checkpoint MODEL...``, as in ``robustness``):
every model on every dataset under one protocol, as one table (``compare.md``, ``compare.html``, ``compare.json``) with a mean row and the best in bold, plus a grid of
qualitative examples (``examples.png``); see :mod:`tamperscope.report.compare`.

Each model runs at the size it was trained at (or ``--image-size``); metrics are the exact protocol metrics of
``tamperscope evaluate`` (:mod:`tamperscope.metrics`), computed at full ground-truth resolution."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError
from ._common import (add_inference_arguments, add_model_arguments, inference_options, input_paths, model_specs,
                      refuse_outputs)

NAME = "compare"
HELP = "one table (Markdown/HTML/JSON) of several models on several datasets, with qualitative examples"


def add_arguments(p):
    add_model_arguments(p)
    p.add_argument("--data", nargs="+", required=True, metavar="NAME=DATA",
                   help="datasets (JSON list or Tp/Gt(/Au) folder), optionally named: casia1=test.json")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--metrics", help="comma-separated table columns (default: all standard metrics); "
                                     "the JSON always holds every metric")
    p.add_argument("--examples", type=int, default=3, help="qualitative examples per dataset (0 = none)")
    add_inference_arguments(p)


def parse_named_data(items: list[str]) -> dict[str, str]:
    """``["casia=a.json", "b_folder"]`` -> ``{"casia": "a.json", "b_folder": "b_folder"}`` (unique names)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or Path(item).exists():
            path = item
            p = Path(item.rstrip("/"))
            name = p.parent.name if p.suffix.lower() == ".json" and p.stem in ("test", "val", "train", "list") \
                else p.stem
            name = name or item
        if not path:
            raise UserError(f"--data '{item}': expected NAME=DATA or DATA")
        if name in out:
            raise UserError(f"--data: the name '{name}' is used twice; name them explicitly (NAME=DATA)")
        out[name] = path
    return out


def run(args) -> int:
    from ..engine.compare import compare_models
    from ..engine.evaluate import METRIC_KEYS
    from ..io import atomic_write_bytes, atomic_write_text, read_image
    from ..report.compare import COMPARE_METRICS, example_grid_png, mean_over_datasets, to_html, to_markdown

    options = inference_options(args)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else COMPARE_METRICS
    unknown = [m for m in metrics if m not in METRIC_KEYS]
    if unknown:
        raise UserError(f"--metrics: unknown metric '{unknown[0]}' (known: {', '.join(METRIC_KEYS)})")
    datasets = parse_named_data(args.data)
    refuse_outputs(args.out, ("compare.md", "compare.html", "compare.json", "examples.png"),
                   input_paths(list(datasets.values()), model_specs(args)))
    results, models_info, examples = compare_models(model_specs(args), datasets, examples=args.examples, **options)
    labels = list(models_info)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = None
    if examples:
        rows = [dict(row, image=read_image(row["path"])) for row in examples.values()]
        grid = example_grid_png(rows, labels)
        atomic_write_bytes(out / "examples.png", grid)
    command = "tamperscope compare " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["compare"] else None
    described = [f"{label} = {info['checkpoint']} (input {info['image_size']} px)"
                 for label, info in models_info.items()]
    notes = ["Datasets: " + ", ".join(f"{n} = {p}" for n, p in datasets.items()) + ".",
             "Models: " + ", ".join(described) + ".",
             f"Threshold {args.threshold:g}; per-image metrics averaged over tampered images."]
    if command:
        notes.append(f"Command: {command}")
    md = to_markdown(results, metrics)
    atomic_write_text(out / "compare.md", md)
    atomic_write_text(out / "compare.html", to_html(results, metrics, notes=notes, grid_png=grid))
    payload = {"threshold": args.threshold, "datasets": datasets, "models": models_info, "metrics": list(metrics),
               "results": results,
               "mean": mean_over_datasets(results, METRIC_KEYS[3:]) if len(datasets) > 1 else None,
               "examples": [row["path"] for row in examples.values()], "command": command}
    atomic_write_text(out / "compare.json", json.dumps(payload, indent=2))
    print(md, end="")
    print(f"written: {out / 'compare.md'}, {out / 'compare.html'}, {out / 'compare.json'}"
          + (f", {out / 'examples.png'}" if grid else ""))
    return 0
