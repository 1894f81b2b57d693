"""Several models on several datasets under one protocol (the ``compare`` command's pipeline): each model at the
size it was trained at (or ``image_size``), scored with the exact metrics of ``evaluate``
(:func:`tamperscope.engine.runs.evaluate_source`), plus probability maps of a few chosen images per dataset for the
qualitative grid (:mod:`tamperscope.report.compare`)."""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..data.datasets import load_evaluation_records
from ..metrics import pixel_stats
from ..report.compare import pick_examples
from .distributed import init_distributed
from .evaluate import evaluation_dataset, iterate_maps
from .loading import load_model
from .robustness import unique_labels
from .runs import evaluate_source


def example_maps(model, size, records, device, threshold, on_mismatch) -> list[dict]:
    """Probability maps (at ground-truth resolution) and per-image F1 of ``model`` on a few records."""
    ds = evaluation_dataset(model, records, size, on_mismatch=on_mismatch)
    out = []
    for _, prob, gt, _, _, path in iterate_maps(model, ds, device=device, progress=False):
        f1 = pixel_stats(prob, gt, threshold).get("f1") if gt.any() else None
        out.append({"path": path, "gt": gt, "prob": prob, "f1": f1})
    return out


def compare_models(specs: list[str], datasets: dict[str, str], *, examples: int = 3, threshold: float = 0.5,
                   image_size: int | None = None, batch_size: int = 8, device: str = "auto", workers: int = 2,
                   on_mismatch: str = "error", overrides: dict | None = None, progress: bool = True
                   ) -> tuple[dict, dict, dict]:
    """Every model spec (:func:`~tamperscope.engine.loading.load_model`) on every named dataset. Returns
    ``(results {label: {dataset: metrics}}, models {label: {"checkpoint", "image_size"}}, examples {(dataset, k):
    {"name", "path", "gt", "maps": {label: map}, "f1": {label: F1}}})`` with ``examples`` images per dataset."""
    records = {name: load_evaluation_records(path) for name, path in datasets.items()}
    chosen = {name: pick_examples(recs, examples) for name, recs in records.items()}
    labels = unique_labels(specs)
    _, _, dev = init_distributed(device)
    results: dict[str, dict[str, dict]] = {}
    models_info: dict[str, dict] = {}
    rows: dict[tuple[str, int], dict] = {}
    bar = tqdm(total=len(labels) * len(datasets), desc="compare", unit="eval", disable=not progress,
               dynamic_ncols=True)
    for spec, label in zip(specs, labels):
        loaded = load_model(spec, dev, overrides, image_size=image_size)
        model, size = loaded.fused(), loaded.image_size
        models_info[label] = {"checkpoint": str(spec), "image_size": size}
        results[label] = {}
        for name, path in datasets.items():
            bar.set_postfix_str(f"{label} on {name}")
            m, _ = evaluate_source(model=model, data=path, threshold=threshold, image_size=size,
                                   batch_size=batch_size, device=str(dev), workers=workers,
                                   on_mismatch=on_mismatch, progress=False)
            results[label][name] = m
            for k, ex in enumerate(example_maps(model, size, chosen[name], dev, threshold, on_mismatch)):
                row = rows.setdefault((name, k), {"name": f"{name}: {Path(ex['path']).stem}", "path": ex["path"],
                                                  "gt": ex["gt"], "maps": {}, "f1": {}})
                row["maps"][label], row["f1"][label] = ex["prob"], ex["f1"]
            bar.update(1)
        del model
    bar.close()
    return results, models_info, rows
