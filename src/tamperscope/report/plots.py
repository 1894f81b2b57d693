"""Plots people would rather look at than read: training curves, robustness curves."""
from __future__ import annotations

import io as _io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_training_curves(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Training loss (and its terms) per step, validation metrics per epoch, from ``metrics.jsonl``."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("type") == "train"]
    val = [r for r in rows if r.get("type") == "val"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r["step"] for r in train]
        for key in sorted({k for r in train for k in r if k.startswith("loss")}):
            axes[0].plot(steps, [r.get(key) for r in train], label=key, lw=1.2)
        axes[0].set_xlabel("step")
        axes[0].set_title("training loss")
    if val:
        steps = [r["step"] for r in val]
        for key in ("val_loss", "pixel_f1", "pixel_iou", "pixel_auc", "image_auc", "recon_f1"):
            ys = [r.get(key) for r in val]
            if any(isinstance(y, (int, float)) for y in ys):
                axes[1].plot(steps, ys, marker="o", label=key, lw=1.2)
        axes[1].set_xlabel("step")
        axes[1].set_title("validation")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, Path(out_png))


def plot_robustness(results: dict[str, dict[str, list[tuple[float, dict]]]], kind: str, out_png: str | Path,
                    metrics=("pixel_f1", "pixel_auc", "image_auc")) -> None:
    """One figure per perturbation ``kind``: metric vs level, one line per model (``results[model][kind]``).

    The x axis runs from the mildest to the strongest level, so JPEG quality is drawn decreasing (100 → 50) as in
    the papers' robustness figures; missing values (e.g. image AUC without authentic images) leave gaps."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    axes = axes[0]
    levels = sorted({lvl for per_kind in results.values() for lvl, _ in per_kind.get(kind, [])})
    for ax, metric in zip(axes, metrics):
        for model, per_kind in results.items():
            pts = sorted(per_kind.get(kind, []), key=lambda p: p[0])
            ax.plot([lvl for lvl, _ in pts], [m.get(metric) if m.get(metric) is not None else float("nan")
                                              for _, m in pts], marker="o", label=model)
        ax.set_xlabel("JPEG quality" if kind == "jpeg" else kind)
        if levels and len(levels) <= 8:
            ax.set_xticks(levels)
            ax.set_xticklabels([f"{lvl:g}" for lvl in levels])
        if kind == "jpeg":
            ax.invert_xaxis()
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"robustness to {kind}")
    _save(fig, Path(out_png))
