"""The run report of ``tamperscope generate``: ``summary.json``, ``summary.md`` and ``contact_sheet.png``.

The summary holds counts per method / region / area bin / split, the rejection reasons over all attempts, the
warnings (a partly forged last photo, an empty split), the calibrated naturalness range, the thresholds and the
back ends. It holds no timings or host details, so the
same seed and options give byte-identical reports.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from ...io import read_image, read_mask
from .creation import BUILTIN_METHODS
from .regions import AREA_BINS, REGION_LABELS

SYNTHETIC_NOTE = ("Built-in methods (cvTelea, cvNS, exemplar, splice, copymove, pseudoLDM) are weight-free "
                  "synthetic stand-ins, not the BR-Gen generators (LaMa, MAT, SDXL, BrushNet, PowerPaint).")
CELL_W, CELL_H, LABEL_H = 192, 128, 18
MAX_EXAMPLES = 12


def _ordered_counts(values: list[str], order: list[str]) -> dict:
    counts = Counter(values)
    return {k: counts[k] for k in order if counts[k]} | {k: counts[k] for k in sorted(counts) if k not in order}


def rejection_counts(records: list[dict]) -> Counter:
    """How often each rejection reason fired over all attempts of all samples (a group's mask redraws once)."""
    counts: Counter = Counter()
    seen_groups = set()
    for r in records:
        if r["group"] not in seen_groups:
            seen_groups.add(r["group"])
            for reasons in r["mask_rejections"]:
                counts.update(reason.split(":")[0] for reason in reasons)
        for reasons in r["rejections"]:
            counts.update(reason.split(":")[0] for reason in reasons)
    return counts


def build_summary(opts, state: dict, run, records: list[dict], warnings: list[str] = ()) -> dict:
    """The summary dict (see the module docstring); ``run`` is the pipeline's plan (names, sources, naturalness
    range, back-end report)."""
    done = [r for r in records if r["status"] == "done"]
    failed = [r for r in records if r["status"] == "failed"]
    methods = list(opts.methods)
    regions = [REGION_LABELS[r] for r in opts.regions]
    splits = {}
    for split in ("train", "val", "test"):
        photos = [n for n in run.names if run.sources[n].split == split]
        in_split = [r for r in done if r["split"] == split]
        splits[split] = {"photos": len(photos), "tampered": len(in_split),
                         "authentic": len({r["source"] for r in in_split})}
    quality_means = {}
    for m in methods:
        rs = [r["quality"] for r in done if r["method"] == m]
        if rs:
            quality_means[m] = {k: round(float(np.mean([q[k] for q in rs])), 4)
                                for k in ("mscn_alpha", "change_mad", "change_chi2", "seam_ratio")}
    return {
        "format": "tamperscope-brgen-summary",
        "note": SYNTHETIC_NOTE if set(methods) & set(BUILTIN_METHODS) else "",
        "requested": opts.n,
        "produced": len(done),
        "failed": len(failed),
        "forgeries_per_photo": len(opts.methods) * len(opts.regions),
        "warnings": list(warnings),
        "photos": {"found": len(state["sources"]) + len(state["bad_photos"]), "usable": len(state["sources"]),
                   "bad": state["bad_photos"]},
        "splits": splits,
        "counts": {
            "method": _ordered_counts([r["method"] for r in done], methods),
            "region": _ordered_counts([r["region"] for r in done], regions),
            "area_bin": _ordered_counts([r["area_bin"] for r in done], list(AREA_BINS)),
            "method_region": _ordered_counts([f"{r['method']}/{r['region']}" for r in done],
                                             [f"{m}/{g}" for m in methods for g in regions]),
        },
        "attempts": sum(r["attempts"] for r in records),
        "rejections": dict(sorted(rejection_counts(records).items())),
        "failed_ids": [r["id"] for r in failed],
        "quality_means": quality_means,
        "naturalness_range": run.naturalness.__dict__,
        "thresholds": opts.thresholds.to_dict(),
        "backend": run.backend_info,
        "options": state["plan"],
    }


def _table(title: str, counts: dict) -> str:
    rows = "".join(f"| {k} | {v} |\n" for k, v in counts.items())
    return f"### {title}\n\n| {title.lower()} | count |\n|---|---|\n{rows}\n"


def summary_markdown(summary: dict) -> str:
    """``summary.md``: the counts and rejection reasons as Markdown tables."""
    parts = [
        "# tamperscope generate: BR-Gen-style dataset\n\n",
        f"{summary['note']}\n\n" if summary["note"] else "",
        f"- requested {summary['requested']}, produced {summary['produced']}; {summary['failed']} sample ids failed "
        f"after {summary['options']['retries']} retries each (not replaced: every method forges the same mask of a "
        f"photo); {summary['attempts']} attempts in all\n",
        f"- {summary['forgeries_per_photo']} forgeries per photo: one mask per region type, forged by every method\n",
        "".join(f"- **warning**: {w}\n" for w in summary["warnings"]),
        f"- photos: {summary['photos']['usable']} usable of {summary['photos']['found']} found\n",
        f"- back ends: {', '.join(f'{k} = {v}' for k, v in summary['backend'].items())}\n\n",
        "### splits\n\n| split | photos | tampered | authentic |\n|---|---|---|---|\n",
        "".join(f"| {s} | {v['photos']} | {v['tampered']} | {v['authentic']} |\n"
                for s, v in summary["splits"].items()), "\n",
        _table("Method", summary["counts"]["method"]),
        _table("Region", summary["counts"]["region"]),
        _table("Area bin", summary["counts"]["area_bin"]),
        _table("Rejection reason", summary["rejections"]) if summary["rejections"] else "No rejections.\n\n",
    ]
    if summary["produced"]:
        parts.append("### examples\n\n![authentic | forgery | mask](contact_sheet.png)\n\n")
    if summary["photos"]["bad"]:
        parts.append("### skipped photos\n\n" + "".join(f"- {b['photo']}: {b['reason']}\n"
                                                        for b in summary["photos"]["bad"]) + "\n")
    return "".join(parts)


def _fit(image: np.ndarray) -> np.ndarray:
    """Letterbox an RGB image into a CELL_W x CELL_H cell."""
    h, w = image.shape[:2]
    s = min(CELL_W / w, CELL_H / h)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    cell = np.full((CELL_H, CELL_W, 3), 32, np.uint8)
    y, x = (CELL_H - small.shape[0]) // 2, (CELL_W - small.shape[1]) // 2
    cell[y:y + small.shape[0], x:x + small.shape[1]] = small
    return cell


def pick_examples(records: list[dict], limit: int = MAX_EXAMPLES) -> list[dict]:
    """One example per (method, region) first, in id order, then the next ids, up to ``limit``."""
    seen, first, rest = set(), [], []
    for r in records:
        key = (r["method"], r["region"])
        (rest if key in seen else first).append(r)
        seen.add(key)
    return (first + rest)[:limit]


def contact_sheet(out: Path, records: list[dict]) -> np.ndarray:
    """Rows of (authentic, forgery, mask) thumbnails with a label per row, as an RGB array."""
    rows = []
    for r in pick_examples(records):
        au, tp = read_image(out / r["au_path"]), read_image(out / r["tp_path"])
        mask = np.repeat(read_mask(out / r["gt_path"])[..., None].astype(np.uint8) * 255, 3, axis=2)
        label = np.full((LABEL_H, 3 * CELL_W, 3), 255, np.uint8)
        text = f"{r['id']}  {r['method']}  {r['region']}  area {100 * r['mask_area']:.0f}%  {r['source']}"
        cv2.putText(label, text, (4, LABEL_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(label)
        rows.append(np.concatenate([_fit(au), _fit(tp), _fit(mask)], axis=1))
    return np.concatenate(rows, axis=0)
