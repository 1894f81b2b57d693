"""A small self-contained HTML report builder: sections holding image grids and metric tables.

Used by ``tamperscope demo`` and reusable by ``compare``::

    report = HtmlReport("Demo")
    sec = report.section("Forgeries", "Built with the BR-Gen pipeline.")
    sec.image_row("splice_0001", [("forged", rgb), ("truth", mask), ("prediction", heat)], caption="F1 0.41")
    sec.table([{"image": "a", "f1": 0.4}, ...], title="Per image")
    sec.metrics({"pixel_f1": 0.41, "image_auc": None})
    path = report.write("out/report.html")

Images are ``H×W`` (grey) or ``H×W×3`` uint8 RGB arrays, shrunk to ``max_side`` pixels, encoded as PNG and
either embedded as base64 data URLs (``embed=True``, one portable file) or written beside the HTML into
``<name>_files/`` (``embed=False``). All text is HTML-escaped; numbers are shown with 4 significant decimals and
``None`` as an en dash. The page needs no script and no network.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import UserError
from ..io import atomic_write_bytes, atomic_write_text, encode_image
from .visualize import colormap_lut, fit_within

DEFAULT_MAX_SIDE = 384

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f;background:#fafafa}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
p.note{color:#555;max-width:60rem}
.row{display:flex;flex-wrap:wrap;gap:.8rem;align-items:flex-start;margin:1rem 0}
.row h3{width:100%;margin:.2rem 0;font-size:1rem;font-weight:600}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:.4rem}
figure img{display:block;max-width:220px;max-height:220px;border:1px solid #8a8a8a}
figcaption{font-size:.8rem;color:#444;margin-top:.3rem;text-align:center}
.caption{width:100%;font-size:.85rem;color:#333}
table{border-collapse:collapse;margin:1rem 0;background:#fff;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend{display:flex;align-items:center;gap:.5rem;font-size:.85rem;color:#333;margin:.6rem 0}
.legend .ramp{display:inline-block;width:16rem;height:.9rem;border:1px solid #8a8a8a}
.legend .swatch{display:inline-block;width:.9rem;height:.9rem;border:1px solid #8a8a8a}
"""

#: what each flat metric key means, for tables read by people (``Section.metrics(..., meanings=METRIC_MEANINGS)``)
METRIC_MEANINGS = {
    "n_images": "images scored",
    "n_tampered": "images with a manipulated region (a non-empty ground-truth mask)",
    "n_authentic": "images without one",
    "pixel_f1": "per-image F1 of the pixels above the threshold against the ground truth, averaged over the "
                "tampered images (1 = the exact region, 0 = none of it)",
    "pixel_iou": "per-image intersection over union of the flagged and the true region, averaged over the tampered "
                 "images",
    "pixel_auc": "per-image area under the ROC curve of the pixel probabilities (threshold-free; 0.5 = chance), "
                 "averaged over the tampered images",
    "pixel_f1_permuted": "pixel F1 that also accepts the inverted mask (the better of the two), as in TruFor "
                         "(Guillaro et al., CVPR 2023)",
    "pixel_f1_permuted_band": "permuted pixel F1 ignoring a thin band around the true region's border (TruFor)",
    "pixel_f1_best": "pixel F1 at the best threshold for each image: an upper bound that needs the answer, not a "
                     "score to report as the model's",
    "pixel_f1_pooled": "pixel F1 over all tampered images' pixels pooled together",
    "image_auc": "area under the ROC curve of the image scores, tampered against authentic (0.5 = chance)",
    "image_acc": "share of images whose verdict at score 0.5 is right",
    "image_balanced_acc": "mean of the tampered and the authentic images' accuracy",
    "image_eer": "equal error rate: where the false-alarm rate equals the miss rate (lower is better)",
    "image_f1": "F1 of the image verdicts at score 0.5, tampered being the positive class",
    "fake_recall": "share of tampered images scored above 0.5",
    "real_recall": "share of authentic images scored at or below 0.5",
}


def format_value(value: Any) -> str:
    """Table text for a value: 4 decimals for floats, an en dash for None."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _png_bytes(image: np.ndarray, max_side: int) -> bytes:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
        raise UserError(f"report images must be H×W or H×W×3 uint8 arrays, got {arr.shape} {arr.dtype}")
    return encode_image(fit_within(arr, max_side), optimize=True)


@dataclass
class _ImageRow:
    title: str
    cells: list[tuple[str, np.ndarray]]
    caption: str


@dataclass
class _Legend:
    colormap: str
    low: str
    high: str
    swatch: tuple[int, int, int] | None
    swatch_label: str


@dataclass
class _Table:
    title: str
    columns: list[str]
    rows: list[dict]


@dataclass
class Section:
    """One ``<h2>`` section: an optional paragraph, then image rows and tables in the order they were added."""

    title: str
    text: str = ""
    items: list = field(default_factory=list)

    def image_row(self, title: str, cells: Sequence[tuple[str, np.ndarray]], caption: str = "") -> "Section":
        """A row of labelled images (e.g. original, ground truth, prediction)."""
        self.items.append(_ImageRow(title, list(cells), caption))
        return self

    def table(self, rows: Iterable[dict], columns: Sequence[str] | None = None, title: str = "") -> "Section":
        """A table of dict rows; the columns default to the keys in first-seen order."""
        rows = list(rows)
        if columns is None:
            columns = list(dict.fromkeys(k for r in rows for k in r))
        self.items.append(_Table(title, list(columns), rows))
        return self

    def metrics(self, metrics: dict, title: str = "", keys: Sequence[str] | None = None,
                meanings: dict | None = None) -> "Section":
        """A metric/value table of flat metric keys (all keys, or ``keys`` in that order), with a third column
        saying what each means when ``meanings`` (e.g. :data:`METRIC_MEANINGS`) is given."""
        keys = list(keys) if keys is not None else list(metrics)
        rows = [{"metric": k, "value": metrics.get(k), "meaning": (meanings or {}).get(k, "")}
                for k in keys if k in metrics]
        return self.table(rows, ["metric", "value", "meaning"] if meanings else ["metric", "value"], title)

    def legend(self, colormap: str = "inferno", low: str = "0", high: str = "1",
               swatch: tuple[int, int, int] | None = None, swatch_label: str = "") -> "Section":
        """A colour bar of ``colormap`` from ``low`` to ``high`` (the heat maps' scale), and optionally a colour
        ``swatch`` with its label (the overlay's colour)."""
        self.items.append(_Legend(colormap, low, high, swatch, swatch_label))
        return self


class HtmlReport:
    """Collects sections and writes one HTML page (see the module docstring)."""

    def __init__(self, title: str, intro: str = "", embed: bool = True, max_side: int = DEFAULT_MAX_SIDE):
        self.title = title
        self.intro = intro
        self.embed = embed
        self.max_side = int(max_side)
        self.sections: list[Section] = []

    def section(self, title: str, text: str = "") -> Section:
        sec = Section(title, text)
        self.sections.append(sec)
        return sec

    def write(self, path: str | Path, protect: Iterable[str | Path] = ()) -> Path:
        """Write the page (and, without embedding, its PNGs into ``<name>_files/``); returns the HTML path."""
        path = Path(path)
        protect = list(protect)
        files_dir = path.parent / f"{path.stem}_files"
        counter = 0

        def image_src(label: str, image: np.ndarray) -> str:
            nonlocal counter
            data = _png_bytes(image, self.max_side)
            if self.embed:
                return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            counter += 1
            name = f"{counter:04d}_{re.sub(r'[^A-Za-z0-9-]+', '-', label).strip('-')[:40] or 'image'}.png"
            atomic_write_bytes(files_dir / name, data, protect=protect)
            return f"{files_dir.name}/{name}"

        esc = html.escape
        parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{esc(self.title)}</title><style>{STYLE}</style></head><body>",
                 f"<h1>{esc(self.title)}</h1>"]
        if self.intro:
            parts.append(f'<p class="note">{esc(self.intro)}</p>')
        for sec in self.sections:
            parts.append(f"<section><h2>{esc(sec.title)}</h2>")
            if sec.text:
                parts.append(f'<p class="note">{esc(sec.text)}</p>')
            for item in sec.items:
                if isinstance(item, _ImageRow):
                    parts.append('<div class="row">')
                    if item.title:
                        parts.append(f"<h3>{esc(item.title)}</h3>")
                    for label, image in item.cells:
                        parts.append(f'<figure><img src="{image_src(f"{item.title}-{label}", image)}" '
                                     f'alt="{esc(label)}"><figcaption>{esc(label)}</figcaption></figure>')
                    if item.caption:
                        parts.append(f'<div class="caption">{esc(item.caption)}</div>')
                    parts.append("</div>")
                elif isinstance(item, _Legend):
                    parts.append(_legend_html(item))
                else:
                    parts.append(_table_html(item))
            parts.append("</section>")
        parts.append("</body></html>")
        atomic_write_text(path, "\n".join(parts) + "\n", protect=protect)
        return path


def _legend_html(legend: _Legend) -> str:
    lut = colormap_lut(legend.colormap)
    stops = ", ".join("#%02x%02x%02x" % tuple(int(v) for v in lut[i]) for i in range(0, 256, 28)) + \
        ", #%02x%02x%02x" % tuple(int(v) for v in lut[255])
    esc = html.escape
    out = [f'<div class="legend"><span>{esc(legend.low)}</span>'
           f'<span class="ramp" style="background:linear-gradient(to right, {stops})"></span>'
           f"<span>{esc(legend.high)}</span>"]
    if legend.swatch is not None:
        out.append(f'<span class="swatch" style="background:rgb{tuple(int(c) for c in legend.swatch)}"></span>'
                   f"<span>{esc(legend.swatch_label)}</span>")
    out.append("</div>")
    return "".join(out)


def _table_html(table: _Table) -> str:
    esc = html.escape
    out = ["<table>"]
    if table.title:
        out.append(f"<caption>{esc(table.title)}</caption>")
    out.append("<tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in table.columns) + "</tr>")
    for row in table.rows:
        cells = []
        for c in table.columns:
            v = row.get(c)
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{esc(format_value(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)
