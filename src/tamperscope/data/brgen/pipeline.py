"""The BR-Gen Perception -> Creation -> Evaluation pipeline (paper 001 §3.2, SEED-SPECS §7) behind
``tamperscope generate``.

Plan (all derived from ``--seed``, never from global RNG state or timing)
- Photos are found recursively under ``--photos`` (sorted relative paths); unreadable files are reported and
  skipped. Photos with a side above ``--max-side`` are downscaled first (area interpolation); the downscaled
  photo is the authentic image ``Au/<source>.png``.
- Splits 8:1:1 **by real photo** (a seeded permutation; val and test get round(P/10) photos each, at least one
  each from 3 photos on), so a source's Au image and all its forgeries share one split; donor photos for
  splicing are drawn from the target's split only.
- Sample ``i`` uses photo ``order[i mod P]`` (a seeded permutation) and the (method, region) pair
  ``combos[perm_c[i mod C]]`` with a fresh seeded permutation per cycle ``c = i div C``, so methods and region
  types stay balanced. Its own ``numpy.random.Generator`` comes from ``SeedSequence([seed, 1, i])``; it draws
  the area bin (uniform over the requested bins the region type can produce), the region, the creation
  parameters, and then every retry in sequence.

Evaluation and retries: a sample is rejected when its mask area leaves the bin or a quality filter fails
(:mod:`quality`); it is regenerated (new region and parameters) up to ``--retries`` times, and the reasons are
counted in the summary. A sample id that exhausts its retries is recorded as failed and the next id takes its
place (ids run on past ``n - 1``, at most ``n`` replacements), so ``--n`` forgeries are written whenever possible.

Resumability: a sample is done when ``.brgen/records/<id>.json`` exists; it is written atomically *after* the
sample's image files. A restart with the same options skips done ids; any other option change is refused.
``metadata.jsonl``, the split lists, the summary and the contact sheet are rebuilt from the records at the end
of every run, in id order, so an interrupted-and-resumed run gives the same bytes as an uninterrupted one.

Names: ``Tp/{method}_{Region}_{source}_{id:06d}.png``, ``Gt/<same>_mask.png`` (0/255), ``Au/{source}.png``
(``.jpg`` for Tp/Au with ``--jpeg-quality``). ``source`` is the photo's relative path without extension,
with every character outside ``[A-Za-z0-9-]`` replaced by ``-`` (so names split on ``_`` unambiguously).
``metadata.jsonl`` has one line per forgery keyed by its Tp file name (``image``) with ``region``
(Stuff/Background/Thing), ``method``, ``area_bin`` (<20 ... <100), ``mask_area``, ``source_photo``, ``quality``
scores, ``backend`` per stage and the seeds: the keys ``evaluate --group-by region|method|area`` reads.
Bit-exact reproducibility holds on CPU; model back ends on a GPU are only as deterministic as their kernels.
With ``--jpeg-quality`` the Tp and Au images are compressed separately (4:2:0), so pixels outside the mask may
differ within the 16×16 units that touch it and a few pixels beyond (chroma upsampling); the quality filters
always see the lossless arrays. Besides ``{split}.json`` (forgeries then their authentic photos), each split
has ``{split}_tp.json`` and ``{split}_au.json`` for balanced real/fake sampling at load time
(``mix:train_tp.json,train_au.json@N``, §7.2). ``generator_family`` sorts methods for Split A: ``GAN-like``
(classical and exemplar inpainting, §7.2's stand-ins for LaMa/MAT), ``Diffusion-like`` (latent re-synthesis and
diffusion inpainting) and ``other`` (splice, copy-move).
"""
from __future__ import annotations

import io as _io
import itertools
import json
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...errors import ImageReadError, UserError
from ...io import atomic_write_bytes, atomic_write_text, read_image, write_png
from .creation import Creator, Donor
from .prompts import make_prompt
from .quality import NaturalnessRange, QualityThresholds, evaluate_forgery, naturalness_alpha
from .regions import (AREA_BINS, AREA_POLICIES, REGION_LABELS, REGION_TYPES, area_bin_of, compatible_bins,
                      draw_target_area)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm"}
STATE_DIR = ".brgen"
RUN_FILE = "run.json"
FORMAT = "tamperscope-brgen"
FORMAT_VERSION = 2  # 2: CLIP alignment only for prompted methods; §7.2 area limits (area_policy)
CALIBRATION_PHOTOS = 200
_CACHE_SIZE = 32
# option keys that define the plan: a resumed run must match them
_PLAN_KEYS = ("photos", "n", "seed", "methods", "regions", "area_bins", "area_policy", "max_side", "jpeg_quality",
              "retries", "backend", "model_dirs", "inpaint_steps", "clip_min_score", "thresholds")


@dataclass
class GenerateOptions:
    """Options of :func:`generate` (the ``tamperscope generate`` flags)."""

    photos: Path
    out: Path
    n: int = 100
    seed: int = 0
    methods: tuple[str, ...] | None = None
    regions: tuple[str, ...] = ("stuff", "background")
    area_bins: tuple[str, ...] = AREA_BINS
    area_policy: str = "spec"  # which bins a region type may reach (regions.AREA_POLICIES)
    max_side: int = 1024
    jpeg_quality: int | None = None
    retries: int = 5
    backend: str = "builtin"
    model_dirs: dict = field(default_factory=dict)
    device: str = "cpu"
    inpaint_steps: int = 30
    clip_min_score: float = 0.2
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    progress: bool = True


@dataclass
class Source:
    """One usable real photo."""

    name: str
    relpath: str
    split: str = ""


# --------------------------------------------------------------------------------------------- helpers


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A Generator from ``SeedSequence([seed, *stream])``: stream 1 = samples, 2 = splits, 3 = photo order,
    4 = method/region cycles."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, stream)]))


def source_name(relpath: str) -> str:
    """``a/b_c.png`` -> ``a-b-c``: the photo's relative path without extension, restricted to [A-Za-z0-9-]."""
    stem = relpath.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "photo"


def find_photos(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under ``root`` (recursive, hidden entries skipped, sorted)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Area-downscale so the longest side is at most ``max_side`` (smaller photos are kept as they are)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def split_sources(names: list[str], seed: int) -> dict[str, str]:
    """8:1:1 train/val/test assignment of photo names (seeded permutation, see the module docstring)."""
    p = len(names)
    n_eval = round(p / 10) if p >= 10 else (1 if p >= 3 else 0)
    n_test = n_eval if p >= 10 else (1 if p >= 2 else 0)
    order = rng_for(seed, 2).permutation(p)
    split = {}
    for rank, idx in enumerate(order):
        split[names[idx]] = "test" if rank < n_test else ("val" if rank < n_test + n_eval else "train")
    return split


def save_image(out: Path, rel_stem: str, image: np.ndarray, jpeg_quality: int | None) -> str:
    """Write ``image`` atomically as ``rel_stem.png`` (lossless) or ``.jpg``; return the relative path."""
    if jpeg_quality is None:
        write_png(out / f"{rel_stem}.png", image)
        return f"{rel_stem}.png"
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(jpeg_quality))
    atomic_write_bytes(out / f"{rel_stem}.jpg", buf.getvalue())
    return f"{rel_stem}.jpg"


def _is_relative_to(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- the run


class _PhotoCache:
    """Downscaled photos by source name, read lazily with a small LRU cache."""

    def __init__(self, root: Path, sources: dict[str, Source], max_side: int):
        self.root, self.sources, self.max_side = root, sources, max_side
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, name: str) -> np.ndarray:
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        image = downscale(read_image(self.root / self.sources[name].relpath), self.max_side)
        self._cache[name] = image
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return image


def validate_options(opts: GenerateOptions) -> GenerateOptions:
    """Check the paths, counts, regions and area bins; raise one-line UserErrors."""
    photos, out = Path(opts.photos).resolve(), Path(opts.out).resolve()
    if not photos.is_dir():
        raise UserError(f"--photos {opts.photos}: not a folder")
    if out == photos or _is_relative_to(out, photos):
        raise UserError(f"--out {opts.out}: must not be the photos folder or inside it ({opts.photos})")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {opts.out}: exists and is not a folder")
    if opts.n < 1:
        raise UserError(f"--n must be at least 1, got {opts.n}")
    if opts.retries < 0:
        raise UserError(f"--retries must be >= 0, got {opts.retries}")
    if opts.max_side < 32:
        raise UserError(f"--max-side must be at least 32, got {opts.max_side}")
    if opts.jpeg_quality is not None and not 1 <= opts.jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality must be in 1..100, got {opts.jpeg_quality}")
    bad_regions = [r for r in opts.regions if r not in REGION_TYPES]
    if bad_regions or not opts.regions:
        raise UserError(f"--regions: choose from {', '.join(REGION_TYPES)}, got {', '.join(opts.regions) or 'none'}")
    bad_bins = [b for b in opts.area_bins if b not in AREA_BINS]
    if bad_bins or not opts.area_bins:
        raise UserError(f"--area-bins: choose from {', '.join(AREA_BINS)}, got {', '.join(opts.area_bins) or 'none'}")
    if opts.area_policy not in AREA_POLICIES:
        raise UserError(f"--area-policy: choose from {', '.join(AREA_POLICIES)}, got {opts.area_policy!r}")
    for region in opts.regions:
        allowed = compatible_bins(region, opts.area_policy)
        if not set(allowed) & set(opts.area_bins):
            raise UserError(f"--regions {region} cannot produce masks in --area-bins {','.join(opts.area_bins)} "
                            f"under --area-policy {opts.area_policy}; it covers {','.join(allowed)}")
    return GenerateOptions(**{**opts.__dict__, "photos": photos, "out": out,
                              "model_dirs": {k: str(Path(v).resolve()) for k, v in opts.model_dirs.items()},
                              "regions": tuple(dict.fromkeys(opts.regions)),
                              "area_bins": tuple(b for b in AREA_BINS if b in opts.area_bins)})


def resolve_methods(opts: GenerateOptions, available: tuple[str, ...], defaults: tuple[str, ...]) -> GenerateOptions:
    """Fill the default method list of the back end and reject unknown or unavailable methods."""
    methods = tuple(dict.fromkeys(opts.methods)) if opts.methods else defaults
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise UserError(f"--methods: unknown or unavailable {', '.join(unknown)} for --backend {opts.backend}; "
                        f"available: {', '.join(available)}")
    return GenerateOptions(**{**opts.__dict__, "methods": methods})


def _plan_record(opts: GenerateOptions) -> dict:
    return {"photos": str(opts.photos), "n": opts.n, "seed": opts.seed, "methods": list(opts.methods),
            "regions": list(opts.regions), "area_bins": list(opts.area_bins), "area_policy": opts.area_policy,
            "max_side": opts.max_side,
            "jpeg_quality": opts.jpeg_quality, "retries": opts.retries, "backend": opts.backend,
            "model_dirs": {k: str(v) for k, v in sorted(opts.model_dirs.items())},
            "inpaint_steps": opts.inpaint_steps, "clip_min_score": opts.clip_min_score,
            "thresholds": opts.thresholds.to_dict()}


def _scan_photos(opts: GenerateOptions) -> dict:
    """Read every photo once: usable sources, bad files, and the naturalness calibration."""
    rels = find_photos(opts.photos)
    if not rels:
        raise UserError(f"--photos {opts.photos}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    sources, bad, used_names = [], [], set()
    calib_every = max(1, int(np.ceil(len(rels) / CALIBRATION_PHOTOS)))
    alphas = []
    for k, rel in enumerate(tqdm(rels, desc="checking photos", unit="photo", disable=not opts.progress)):
        try:
            image = read_image(opts.photos / rel)
        except ImageReadError as exc:
            bad.append({"photo": rel, "reason": str(exc)})
            tqdm.write(f"skipping {exc}")
            continue
        if min(image.shape[:2]) < 32:
            bad.append({"photo": rel, "reason": f"too small ({image.shape[1]}x{image.shape[0]})"})
            tqdm.write(f"skipping {rel}: too small ({image.shape[1]}x{image.shape[0]}; at least 32 px needed)")
            continue
        name, base, j = source_name(rel), source_name(rel), 2
        while name in used_names:
            name, j = f"{base}-{j}", j + 1
        used_names.add(name)
        sources.append({"name": name, "relpath": rel})
        if k % calib_every == 0:
            alphas.append(naturalness_alpha(downscale(image, opts.max_side)))
    if not sources:
        raise UserError(f"--photos {opts.photos}: none of the {len(rels)} image files could be read")
    return {"sources": sources, "bad_photos": bad, "calibration_alphas": [round(a, 6) for a in alphas]}


def _load_or_create_state(opts: GenerateOptions) -> dict:
    state_dir = opts.out / STATE_DIR
    run_file = state_dir / RUN_FILE
    plan = _plan_record(opts)
    if run_file.is_file():
        state = json.loads(run_file.read_text())
        if state.get("format") != FORMAT:
            raise UserError(f"{run_file}: not a tamperscope generate state file")
        if state.get("format_version") != FORMAT_VERSION:
            raise UserError(f"--out {opts.out} was generated by another version of the pipeline (format "
                            f"{state.get('format_version')}, now {FORMAT_VERSION}); finish it with that version or "
                            f"use a new --out")
        diffs = [k for k in _PLAN_KEYS if state["plan"].get(k) != plan[k]]
        if diffs:
            k = diffs[0]
            raise UserError(f"--out {opts.out} was generated with other options ({k}: {state['plan'].get(k)!r} "
                            f"there, {plan[k]!r} now); use the same options to resume or a new --out")
        return state
    if opts.out.is_dir() and any(opts.out.iterdir()):
        raise UserError(f"--out {opts.out}: folder is not empty and holds no tamperscope generate run")
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "plan": plan, **_scan_photos(opts)}
    (state_dir / "records").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(state, indent=1) + "\n")
    return state


def _plan_sample(i: int, opts: GenerateOptions, order: np.ndarray, names: list[str],
                 combos: list[tuple[str, str]], cycle_perms: dict) -> tuple[str, str, str]:
    cycle, pos = divmod(i, len(combos))
    if cycle not in cycle_perms:
        cycle_perms[cycle] = rng_for(opts.seed, 4, cycle).permutation(len(combos))
    method, region = combos[cycle_perms[cycle][pos]]
    return names[order[i % len(names)]], method, region


class _Run:
    """One invocation of the pipeline over a prepared state."""

    def __init__(self, opts: GenerateOptions, state: dict, regions_backend, creators: dict[str, Creator],
                 aligner, backend_info: dict):
        self.opts, self.state = opts, state
        self.regions_backend, self.creators, self.aligner = regions_backend, creators, aligner
        self.backend_info = backend_info
        self.sources = {s["name"]: Source(s["name"], s["relpath"]) for s in state["sources"]}
        self.names = [s["name"] for s in state["sources"]]
        for name, split in split_sources(self.names, opts.seed).items():
            self.sources[name].split = split
        self.by_split: dict[str, list[str]] = {}
        for name in self.names:
            self.by_split.setdefault(self.sources[name].split, []).append(name)
        self.photos = _PhotoCache(opts.photos, self.sources, opts.max_side)
        self.naturalness = NaturalnessRange.calibrate(
            state["calibration_alphas"], opts.thresholds.naturalness_margin, opts.thresholds.naturalness_min_pad)
        self.order = rng_for(opts.seed, 3).permutation(len(self.names))
        self.combos = list(itertools.product(opts.methods, opts.regions))
        self.cycle_perms: dict = {}
        self.records_dir = opts.out / STATE_DIR / "records"

    # -- one sample ---------------------------------------------------------------------------------

    def _donor_fn(self, source: str):
        split_names = [n for n in self.by_split[self.sources[source].split] if n != source]

        def donor(rng: np.random.Generator) -> Donor:
            if not split_names:  # a split holding a single photo: lend its mirror image
                return Donor(np.ascontiguousarray(self.photos.get(source)[:, ::-1]), f"{source}(mirrored)")
            name = split_names[int(rng.integers(len(split_names)))]
            return Donor(self.photos.get(name), name)
        return donor

    def make_sample(self, i: int) -> dict:
        """Generate, evaluate and (when accepted) write sample ``i``; return its record."""
        opts = self.opts
        source, method, region_kind = _plan_sample(i, opts, self.order, self.names, self.combos, self.cycle_perms)
        rng = rng_for(opts.seed, 1, i)
        bins = [b for b in opts.area_bins if b in compatible_bins(region_kind, opts.area_policy)]
        area_bin = bins[int(rng.integers(len(bins)))]
        image = self.photos.get(source)
        creator = self.creators[method]
        donor = self._donor_fn(source)
        rejections: list[list[str]] = []
        scores: dict = {}
        for attempt in range(opts.retries + 1):
            target = draw_target_area(area_bin, rng)
            region = self.regions_backend.propose(image, region_kind, target, rng)
            area = region.area
            if area == 0 or area == 1:
                rejections.append(["empty_mask" if area == 0 else "full_mask"])
                continue
            if area_bin_of(area) not in bins:
                rejections.append(["area_out_of_bin"])
                continue
            prompt, prompt_info = None, None
            if creator.needs_prompt:
                prompt, prompt_info = make_prompt(region_kind, region.category, rng)
            try:
                forged, params = creator.create(image, region.mask, rng, donor, prompt)
            except cv2.error as exc:
                rejections.append([f"creation_error: {str(exc).strip().splitlines()[-1][:120]}"])
                continue
            scores, reasons = evaluate_forgery(image, forged, region.mask, self.naturalness, opts.thresholds)
            if self.aligner is not None and creator.needs_prompt:  # §7.1 (c): prompt alignment of prompted methods
                clip = self.aligner.score(forged, region.mask, prompt)
                scores["clip_score"] = round(clip, 5)
                if clip < self.aligner.min_score:
                    reasons.append("alignment")
            else:
                scores["clip_score"] = None
            if reasons:
                rejections.append(reasons)
                continue
            return self._write_sample(i, source, method, region, area, image, forged, params, scores, prompt,
                                      prompt_info, attempt, rejections)
        return {"id": i, "status": "failed", "source": source, "method": method, "region": REGION_LABELS[region_kind],
                "area_bin": area_bin, "attempts": opts.retries + 1, "rejections": rejections,
                "last_quality": scores or None}

    def _write_sample(self, i, source, method, region, area, image, forged, params, scores, prompt, prompt_info,
                      attempt, rejections) -> dict:
        opts = self.opts
        stem = f"{method}_{REGION_LABELS[region.kind]}_{source}_{i:06d}"
        tp = save_image(opts.out, f"Tp/{stem}", forged, opts.jpeg_quality)
        gt = f"Gt/{stem}_mask.png"
        write_png(opts.out / gt, region.mask.astype(np.uint8) * 255)
        au = f"Au/{source}" + Path(tp).suffix
        if not (opts.out / au).is_file():
            save_image(opts.out, f"Au/{source}", image, opts.jpeg_quality)
        h, w = image.shape[:2]
        return {
            "id": i, "status": "done", "image": Path(tp).name, "mask": Path(gt).name, "authentic": Path(au).name,
            "tp_path": tp, "gt_path": gt, "au_path": au, "split": self.sources[source].split,
            "source": source, "source_photo": self.sources[source].relpath, "width": w, "height": h,
            "region": REGION_LABELS[region.kind], "region_shape": region.shape, "region_params": region.params,
            "method": method, "family": self.creators[method].family, "method_params": params,
            "mask_area": round(area, 6), "area_bin": area_bin_of(area), "prompt": prompt,
            "prompt_info": prompt_info, "quality": scores, "attempts": attempt + 1, "rejections": rejections,
            "backend": {"regions": self.backend_info["regions"], "creation": self.creators[method].backend,
                        "alignment": self.backend_info["alignment"]},
            "seed": opts.seed, "sample_seed": [opts.seed, 1, i], "jpeg_quality": opts.jpeg_quality,
        }

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        """Process ids 0, 1, 2, ... until ``n`` samples are accepted; a failed id is replaced by the next id,
        at most ``n`` replacements in all. Ids with a record on disk are read back, not regenerated."""
        n = self.opts.n
        existing = {int(p.stem) for p in self.records_dir.glob("*.json")}
        if existing and self.opts.progress:
            tqdm.write(f"resuming {self.opts.out}: {len(existing)} sample ids already done")
        records: list[dict] = []
        accepted = 0
        bar = tqdm(total=n, desc="generating", unit="sample", disable=not self.opts.progress)
        for i in range(2 * n):
            path = self.records_dir / f"{i:06d}.json"
            if i in existing:
                record = json.loads(path.read_text())
            else:
                record = self.make_sample(i)
                atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            records.append(record)
            failed = sum(r["status"] == "failed" for r in records)
            if record["status"] == "done":
                accepted += 1
                bar.update(1)
            bar.set_postfix_str(f"{record['method']}/{record['region']} {record['status']}, {failed} failed")
            if accepted == n:
                break
        bar.close()
        return records


# --------------------------------------------------------------------------------------------- outputs

_GENERATOR_FAMILIES = {"classical-inpainting": "GAN-like", "exemplar": "GAN-like",
                       "latent-resynthesis": "Diffusion-like", "diffusion-inpainting": "Diffusion-like"}


def generator_family(family: str) -> str:
    """Split A's side of a creation family (GAN-like / Diffusion-like; ``other`` for splice and copy-move)."""
    return _GENERATOR_FAMILIES.get(family, "other")


def _metadata_line(rec: dict) -> dict:
    keys = ("image", "mask", "authentic", "split", "source", "source_photo", "width", "height", "region",
            "region_shape", "method", "family", "mask_area", "area_bin", "quality", "attempts", "prompt",
            "backend", "seed", "sample_seed", "id", "method_params", "region_params", "prompt_info",
            "jpeg_quality")
    return {k: rec[k] for k in keys} | {"generator_family": generator_family(rec["family"])}


def _write_outputs(opts: GenerateOptions, state: dict, run: _Run, records: list[dict]) -> dict:
    from .report import build_summary, contact_sheet, summary_markdown

    done = [r for r in records if r["status"] == "done"]
    lines = "".join(json.dumps(_metadata_line(r)) + "\n" for r in done)
    atomic_write_text(opts.out / "metadata.jsonl", lines)
    for split in ("train", "val", "test"):
        items = [[r["tp_path"], r["gt_path"]] for r in done if r["split"] == split]
        authentic = sorted({r["au_path"] for r in done if r["split"] == split})
        fakes, reals = items, [[a, "Negative"] for a in authentic]
        for name, part in ((split, fakes + reals), (f"{split}_tp", fakes), (f"{split}_au", reals)):
            # {split}_tp / {split}_au: balanced real/fake epochs with mix:{split}_tp.json,{split}_au.json@N (§7.2)
            atomic_write_text(opts.out / f"{name}.json", "[\n" + ",\n".join(json.dumps(it) for it in part) + "\n]\n")
    summary = build_summary(opts, state, run, records)
    atomic_write_text(opts.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(opts.out / "summary.md", summary_markdown(summary))
    if done:
        write_png(opts.out / "contact_sheet.png", contact_sheet(opts.out, done))
    return summary


def generate(opts: GenerateOptions) -> dict:
    """Run (or resume) the pipeline; returns the summary dict also written to ``summary.json``."""
    from .backends import build_backends

    opts = validate_options(opts)
    backends = build_backends(opts.backend, opts.model_dirs, opts.device, opts.inpaint_steps, opts.clip_min_score)
    opts = resolve_methods(opts, tuple(backends.creators), backends.default_methods)
    creators = {m: backends.creators[m] for m in opts.methods}
    opts.out.mkdir(parents=True, exist_ok=True)
    state = _load_or_create_state(opts)
    run = _Run(opts, state, backends.regions, creators, backends.aligner, backends.info)
    records = run.run()
    return _write_outputs(opts, state, run, records)


def rejection_counts(records: list[dict]) -> Counter:
    """How often each rejection reason fired over all attempts of all samples."""
    counts: Counter = Counter()
    for r in records:
        for reasons in r["rejections"]:
            counts.update(reason.split(":")[0] for reason in reasons)
    return counts


__all__ = ["GenerateOptions", "generate", "find_photos", "split_sources", "source_name", "rng_for",
           "rejection_counts"]
