"""The comparison report of ``tamperscope compare``: one table of every model on every dataset (Markdown, HTML,
JSON) and a grid of qualitative examples (photo, ground truth, each model's probability map).

Table layout: one block of rows per dataset (one row per model) and a final ``mean`` block (each model's mean over
the datasets where the metric is defined, e.g. image AUC needs both classes). Within a block the best value of
each column is bold (ties all bold, nothing when all are equal; lower is better for ``image_eer``, higher for
everything else).
``pixel_f1_best`` is the per-image oracle threshold F1 (TruFor's "optimal" F1) and is labelled as such.
"""
from __future__ import annotations

import base64
import html
import io as _io
import math

import numpy as np

from .html import STYLE
from .visualize import fit_within, heatmap, mask_image

#: columns of the table by default (every flat metric key is kept in the JSON)
COMPARE_METRICS = ("pixel_f1", "pixel_iou", "pixel_auc", "pixel_f1_permuted", "pixel_f1_permuted_band",
                   "pixel_f1_best", "image_auc", "image_acc", "image_balanced_acc", "image_eer")
LOWER_IS_BETTER = frozenset({"image_eer"})
COLUMN_TITLES = {"pixel_f1_best": "pixel_f1_best (oracle)"}
MEAN_ROW = "mean"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_over_datasets(results: dict[str, dict[str, dict]], metrics) -> dict[str, dict]:
    """``{model: {metric: mean over datasets with a finite value, or None}}``."""
    out = {}
    for model, per_data in results.items():
        out[model] = {}
        for m in metrics:
            vals = [d.get(m) for d in per_data.values() if _finite(d.get(m))]
            out[model][m] = float(np.mean(vals)) if vals else None
    return out


def best_models(block: dict[str, dict], metric: str) -> set[str]:
    """Models holding the best value of ``metric`` in one block ``{model: metrics}`` (empty with fewer than two
    values or when all are equal: nothing stands out)."""
    vals = {model: m.get(metric) for model, m in block.items() if _finite(m.get(metric))}
    if len(vals) < 2 or max(vals.values()) - min(vals.values()) <= 1e-12:
        return set()
    target = (min if metric in LOWER_IS_BETTER else max)(vals.values())
    return {model for model, v in vals.items() if abs(v - target) <= 1e-12}


def table_rows(results: dict[str, dict[str, dict]], metrics) -> list[tuple[str, str, dict, set[str]]]:
    """``(dataset or "mean", model, metrics, bold metric names)`` rows in display order."""
    datasets = list(dict.fromkeys(d for per_data in results.values() for d in per_data))
    blocks = [(d, {model: results[model].get(d, {}) for model in results}) for d in datasets]
    if len(datasets) > 1:
        blocks.append((MEAN_ROW, mean_over_datasets(results, metrics)))
    rows = []
    for name, block in blocks:
        best = {m: best_models(block, m) for m in metrics}
        for model, vals in block.items():
            rows.append((name, model, vals, {m for m in metrics if model in best[m]}))
    return rows


def _fmt(value) -> str:
    return f"{value:.3f}" if _finite(value) else "–"


def to_markdown(results: dict[str, dict[str, dict]], metrics=COMPARE_METRICS) -> str:
    """A GitHub-Markdown table (best per dataset block in bold)."""
    head = ["dataset", "model"] + [COLUMN_TITLES.get(m, m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(metrics)) + "|"]
    for name, model, vals, bold in table_rows(results, metrics):
        cells = [f"**{_fmt(vals.get(m))}**" if m in bold else _fmt(vals.get(m)) for m in metrics]
        lines.append("| " + " | ".join([name, model] + cells) + " |")
    return "\n".join(lines) + "\n"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


#: the house style of :mod:`tamperscope.report.html`, plus block separators for the comparison table
_CSS_EXTRA = "tr.mean td{background:#f4f4f4}tr.first td{border-top:2px solid #888}img.grid{max-width:100%}"


def to_html(results: dict[str, dict[str, dict]], metrics=COMPARE_METRICS, *, title: str = "tamperscope compare",
            notes: list[str] | None = None, grid_png: bytes | None = None) -> str:
    """A self-contained HTML page in the style of :mod:`tamperscope.report.html`: the table (best in bold; that
    module's tables escape every cell, so this one is written here), optional notes and the examples grid inline."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{STYLE}{_CSS_EXTRA}</style></head><body><h1>{esc(title)}</h1>"]
    for note in notes or []:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append("<table><thead><tr><th>dataset</th><th>model</th>"
                 + "".join(f"<th>{esc(COLUMN_TITLES.get(m, m))}</th>" for m in metrics) + "</tr></thead><tbody>")
    previous = None
    for name, model, vals, bold in table_rows(results, metrics):
        classes = [c for c, on in (("mean", name == MEAN_ROW), ("first", name != previous)) if on]
        previous = name
        cells = "".join(f"<td class='num'>{'<b>' if m in bold else ''}{_fmt(vals.get(m))}{'</b>' if m in bold else ''}"
                        "</td>" for m in metrics)
        parts.append(f"<tr class='{' '.join(classes)}'><td>{esc(name)}</td><td>{esc(model)}</td>{cells}</tr>")
    parts.append("</tbody></table>")
    if grid_png:
        parts.append("<h2>Examples</h2><p>Photo, ground truth and each model's tampering probability, "
                     "calibrated when the checkpoint is (inferno colour map: black 0, yellow 1); the number is that "
                     "image's pixel F1 at 0.5.</p>"
                     f"<img class='grid' alt='qualitative examples' src='{png_data_uri(grid_png)}'>")
    parts.append("</body></html>\n")
    return "".join(parts)


def example_grid_png(rows: list[dict], models: list[str], tile: int = 192) -> bytes:
    """PNG bytes of a grid: one row per example (``{"name", "image" H×W×3 uint8, "gt" H×W bool,
    "maps": {model: H×W float}, "f1": {model: float|None}}``), columns photo, ground truth, one per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 + len(models)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(ncols * tile / 80, len(rows) * tile / 80 + 0.4),
                             squeeze=False)
    for r, ex in enumerate(rows):
        tiles = [fit_within(ex["image"], tile), fit_within(mask_image(ex["gt"]), tile)]
        tiles += [fit_within(heatmap(ex["maps"][m]), tile) for m in models]
        titles = ["photo", "ground truth"] + list(models)
        for c, (ax, img) in enumerate(zip(axes[r], tiles)):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c >= 2:
                f1 = ex["f1"].get(models[c - 2])
                ax.set_xlabel(f"F1 {_fmt(f1)}", fontsize=8)
        axes[r][0].set_ylabel(ex["name"], fontsize=7)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def pick_examples(records, n: int) -> list:
    """``n`` tampered records evenly spread over the dataset order (deterministic); authentic ones if none."""
    if n <= 0:
        return []
    tampered = [r for r in records if r.mask is not None]
    pool = tampered or list(records)
    if len(pool) <= n:
        return pool
    idx = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return [pool[i] for i in dict.fromkeys(idx.tolist())]

