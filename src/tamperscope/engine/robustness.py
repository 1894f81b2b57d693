"""Robustness sweeps: the protocol metrics of one or more models on a dataset under graded perturbations, as in the
papers' robustness figures (IFA-Net §4 JPEG/blur, DiffIML §4.4 JPEG/blur/noise, DiffForensics §4.5 JPEG/noise,
FRD-Net §4.4 noise/blur/JPEG/gamma).

Levels (:data:`DEFAULT_LEVELS`, the union of the papers' grids): JPEG quality 100…50, Gaussian blur kernel 0…19,
Gaussian noise σ 0…23 (0–255 units), gamma 0.7…1.3 and resize factor 0.5…1. The perturbation is applied to the
photo at its own size before the model's resize (:func:`tamperscope.data.transforms.perturb`); the prediction is
scored against the untouched ground truth at full resolution, exactly as ``tamperscope evaluate --perturb``.

Resolved choices:
- Identity levels (blur 0, noise 0, gamma 1, resize 1) give the same input as the clean data, so they are
  evaluated once per model and the clean metrics are reported at each of them (``"identity": true``). JPEG 100
  still re-encodes and is evaluated.
- Noise is seeded per image (dataset seed 0, image index), so a sweep is reproducible and every model sees the
  same noisy images.
- A checkpoint argument is a run folder, a ``.safetensors`` checkpoint, or the name of a registered model without
  parameters (``ela``), which runs from its default config.
"""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from ..data.datasets import load_evaluation_records
from ..errors import UserError
from ..io import atomic_write_text
from .distributed import init_distributed, is_main
from .evaluate import evaluate_model, evaluation_dataset
from .loading import load_model

#: perturbation grids of the papers' robustness figures (module docstring)
DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "jpeg": (100, 90, 80, 70, 60, 50),
    "blur": (0, 3, 7, 11, 15, 19),
    "noise": (0, 3, 7, 11, 15, 19, 23),
    "gamma": (0.7, 0.85, 1.0, 1.15, 1.3),
    "resize": (0.5, 0.75, 1.0),
}
#: levels whose perturbation returns the photo unchanged
IDENTITY_LEVEL = {"blur": 0.0, "noise": 0.0, "gamma": 1.0, "resize": 1.0}
#: metrics kept per level and drawn in the plots
ROBUSTNESS_METRICS = ("pixel_f1", "pixel_iou", "pixel_auc", "image_auc")


def is_identity(kind: str, level: float) -> bool:
    return kind in IDENTITY_LEVEL and float(level) == IDENTITY_LEVEL[kind]


def unique_labels(specs: list[str]) -> list[str]:
    """Short, distinct names for the models (run folder names; parent folders added to break ties)."""
    base = [Path(s).stem if Path(s).suffix == ".safetensors" else (Path(s).name or str(s)) for s in specs]
    labels = ["/".join(Path(s).parts[-2:]) if base.count(b) > 1 else b for s, b in zip(specs, base)]
    repeated = {label for label in labels if labels.count(label) > 1}
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in repeated:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label}#{seen[label]}"
    return labels


def run_robustness(checkpoints: list[str], data: str, plan: list[tuple[str, float]], *, threshold: float = 0.5,
                   image_size: int | None = None, batch_size: int = 8, device: str = "auto", workers: int = 0,
                   on_mismatch: str = "error", overrides: dict | None = None, progress: bool = True) -> dict:
    """Evaluate every model (:func:`~tamperscope.engine.loading.load_model`, with config ``overrides``) at every
    (kind, level) of ``plan``; returns the JSON-ready result (see
    :func:`write_robustness`): ``{"data", "threshold", "models": {label: {"checkpoint", "image_size"}},
    "results": {label: {kind: [{"level", "identity", metric: value, ...}, ...]}}}``."""
    if not checkpoints:
        raise UserError("robustness: no model to run")
    if not plan:
        raise UserError("robustness: no (kind, level) to run")
    records = load_evaluation_records(data)
    if len(records) == 0:
        raise UserError(f"{data}: no images")
    rank, world, dev = init_distributed(device)
    labels = unique_labels(checkpoints)
    out = {"data": str(data), "threshold": threshold, "metrics": list(ROBUSTNESS_METRICS), "models": {},
           "results": {}}
    bar = tqdm(total=len(checkpoints) * len(plan), desc="robustness", unit="run",
               disable=not (progress and is_main()), dynamic_ncols=True)
    for spec, label in zip(checkpoints, labels):
        loaded = load_model(spec, dev, overrides, image_size=image_size)
        model, size = loaded.fused(), loaded.image_size
        out["models"][label] = {"checkpoint": str(spec), "image_size": size}
        per_kind: dict[str, list[dict]] = {}
        clean = None
        for kind, level in plan:
            bar.set_postfix_str(f"{label} {kind}:{level:g}")
            identity = is_identity(kind, level)
            if identity and clean is not None:
                metrics = clean
            else:
                ds = evaluation_dataset(model, records, size, on_mismatch=on_mismatch,
                                        perturb=None if identity else (kind, level))
                acc, _ = evaluate_model(model, ds, batch_size=batch_size, device=dev, threshold=threshold,
                                        workers=workers, rank=rank, world_size=world, progress=False)
                computed = acc.compute()
                metrics = {k: computed.get(k) for k in ("n_images", "n_tampered", "n_authentic") + ROBUSTNESS_METRICS}
                if identity:
                    clean = metrics
            per_kind.setdefault(kind, []).append({"level": level, "identity": identity, **metrics})
            bar.update(1)
        out["results"][label] = per_kind
        del model
    bar.close()
    return out


def robustness_files(kinds) -> list[str]:
    """The files :func:`write_robustness` writes for the perturbation ``kinds``: ``robustness.json``, then one
    ``robustness_<kind>.png`` per kind."""
    return ["robustness.json"] + [f"robustness_{kind}.png" for kind in dict.fromkeys(kinds)]


def write_robustness(result: dict, out_dir: str | Path) -> list[Path]:
    """:func:`robustness_files` in ``out_dir`` (one line per model in each plot); returns the paths."""
    from ..report.plots import plot_robustness

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = list(dict.fromkeys(k for per_kind in result["results"].values() for k in per_kind))
    results_file, *plots = (out_dir / name for name in robustness_files(kinds))
    written = [atomic_write_text(results_file, json.dumps(result, indent=2))]
    curves = {label: {kind: [(row["level"], row) for row in rows] for kind, rows in per_kind.items()}
              for label, per_kind in result["results"].items()}
    for kind, path in zip(kinds, plots):
        plot_robustness(curves, kind, path, metrics=tuple(result.get("metrics") or ROBUSTNESS_METRICS))
        written.append(path)
    return written


def format_robustness(result: dict) -> str:
    """A text table: one line per (model, kind, level)."""
    metrics = result.get("metrics") or ROBUSTNESS_METRICS
    lines = [f"{'model':<20} {'perturbation':<14}" + "".join(f" {m:>10}" for m in metrics)]
    for label, per_kind in result["results"].items():
        for kind, rows in per_kind.items():
            for row in rows:
                vals = "".join(f" {'-' if row.get(m) is None else format(row[m], '.4f'):>10}" for m in metrics)
                lines.append(f"{label:<20} {kind + ':' + format(row['level'], 'g'):<14}{vals}")
    return "\n".join(lines)
