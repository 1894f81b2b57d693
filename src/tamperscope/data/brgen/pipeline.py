"""The BR-Gen Perception -> Creation -> Evaluation pipeline (paper 001 §3.2) behind ``tamperscope generate``.

Plan (all derived from ``--seed``, never from global RNG state or timing), as the paper builds BR-Gen (§3.2.1:
a Stuff mask and a Background mask per real photo; §3.2.2: every inpainter runs on both, "10 forgeries per real
image" with five inpainters):
- Photos are found recursively under ``--photos`` (sorted relative paths); unreadable files are reported and
  skipped. Photos with a side above ``--max-side`` are downscaled first (area interpolation); the downscaled
  photo is the authentic image ``Au/<source>.png``.
- Splits 8:1:1 **by real photo** (paper 001 §3.4; a seeded permutation; val and test get round(P/10) photos each, at least
  one each from 3 photos on), so a source's Au image and all its forgeries share one split; donor photos for
  splicing are drawn from the target's split only.
- Photos are visited in *slots*: a seeded order that interleaves the splits in proportion (the first three slots
  hold a test, a val and a train photo), so a run that covers few photos still reaches every split. Slot ``s``
  has one *group* per region type (``--regions``, default Stuff then Background); group ``g`` is one region mask
  with its caption, and every method (``--methods``) forges that same mask: sample id ``i`` is method
  ``i mod M`` of group ``i div M`` (``M`` methods, ``R`` region types, ``R*M`` forgeries per photo). ``--n`` counts
  forgeries: a run makes ids ``0 .. n-1``; a warning says when ``n`` is not a multiple of ``R*M`` (the last
  photo is partly forged) or when a split gets no forgery.
- Group ``g`` draws from ``SeedSequence([seed, 5, g])``: its area bin (uniform over the requested bins the region
  type can produce), the mask (redrawn while it is empty, full or out of its bin, up to ``--retries`` times) and
  the caption. Sample ``i`` draws its creation parameters from ``SeedSequence([seed, 1, i])``.

Evaluation and retries: a forgery that fails a quality filter (:mod:`quality`) is made again on the same mask
with new parameters, up to ``--retries`` times (the paper regenerates rejected samples, §3.2.3). A sample that
exhausts its retries is recorded as failed and is not replaced (a replacement would be another photo or region,
and methods would no longer be compared on the same regions); the summary lists the failed ids.

Area limits: the built-in (weight-free) regions are drawn inside the area bins of ``--area-policy``; a region
back end that *detects* regions (GroundingDINO/OWL-ViT + SAM, ``decides_area``) decides the area itself, so only
an explicit ``--area-bins`` subset filters its masks.

Sharding: ``--shard K/N`` makes the photo slots ``s`` with ``s mod N == K`` (whole photos, so each Au image and
each mask is made once) and writes only their samples and records; ``--merge`` then writes the dataset files
(lists, metadata, summary, contact sheet) from all records once every id is done. Shards share ``--out`` and the
same options; the union of the shards plus the merge equals a single run byte for byte. ``--workers W`` runs
``W`` shards as processes on one machine and merges.

Resumability: a sample is done when ``.brgen/records/<id>.json`` exists; it is written atomically *after* the
sample's image files. A restart with the same options skips done ids; any other option change is refused.
``metadata.jsonl``, the split lists, the summary and the contact sheet are rebuilt from the records at the end
of every run, in id order, so an interrupted-and-resumed run gives the same bytes as an uninterrupted one.

Names: ``Tp/{method}_{Region}_{source}_{id:06d}.png``, ``Gt/<same>_mask.png`` (0/255), ``Au/{source}.png``
(``.jpg`` for Tp/Au with ``--jpeg-quality``). ``source`` is the photo's relative path without extension,
with every character outside ``[A-Za-z0-9-]`` replaced by ``-`` (so names split on ``_`` unambiguously).
``metadata.jsonl`` has one line per forgery keyed by its Tp file name (``image``) with ``region``
(Stuff/Background/Thing), ``method``, ``group`` (forgeries of one mask share it), ``area_bin`` (<20 ... <100),
``mask_area``, ``source_photo``, ``quality`` scores, ``backend`` per stage and the seeds: the keys
``evaluate --group-by region|method|area`` reads.
Bit-exact reproducibility holds on CPU; model back ends on a GPU are only as deterministic as their kernels.
With ``--jpeg-quality`` the Tp and Au images are compressed separately (4:2:0), so pixels outside the mask may
differ within the 16×16 units that touch it and a few pixels beyond (chroma upsampling); the quality filters
always see the lossless arrays. Besides ``{split}.json`` (forgeries then their authentic photos), each split
has ``{split}_tp.json`` and ``{split}_au.json`` for balanced real/fake sampling at load time
(``mix:train_tp.json,train_au.json@N``; the BR-Gen README subsamples fakes to the number of reals).
``generator_family`` sorts methods for Split A (paper 001 §5.2, GAN vs Diffusion): ``Diffusion`` (a real diffusion
inpainting model), ``Diffusion-like`` (latent re-synthesis stand-ins: pseudoLDM, the TAESD round trip),
``classical`` (OpenCV Telea / Navier–Stokes and exemplar fill: no learned generator, so neither GAN nor
diffusion) and ``other`` (splice, copy-move). No built-in method imitates a GAN inpainter, so none is "GAN".
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...errors import ImageReadError, UserError
from ...io import atomic_write_bytes, atomic_write_text, encode_image, read_image, write_png
from ...report.visualize import fit_within
from .creation import Creator, Donor
from .prompts import make_prompt
from .quality import NaturalnessRange, QualityThresholds, evaluate_forgery, naturalness_alpha
from .regions import (AREA_BINS, AREA_POLICIES, REGION_LABELS, REGION_TYPES, area_bin_of, compatible_bins,
                      draw_target_area)
from .report import build_summary, contact_sheet, summary_markdown

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm"}
STATE_DIR = ".brgen"
RUN_FILE = "run.json"
FORMAT = "tamperscope-brgen"
FORMAT_VERSION = 3  # 3: one mask per (photo, region type) shared by every method; shards; Stuff reaches <20
CALIBRATION_PHOTOS = 200
SPLITS = ("train", "val", "test")
_CACHE_SIZE = 32
# option keys that define the plan: a resumed run (or another shard) must match them
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
    area_policy: str = "paper"  # which bins a built-in region type may reach (regions.AREA_POLICIES)
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
    shard: tuple[int, int] | None = None  # (K, N): make only photo slots s with s mod N == K; no dataset files
    workers: int = 1  # shards run as processes on this machine, then merged


@dataclass
class Source:
    """One usable real photo."""

    name: str
    relpath: str
    split: str = ""


# --------------------------------------------------------------------------------------------- helpers


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A Generator from ``SeedSequence([seed, *stream])``: stream 1 = samples, 2 = splits, 3 = photo order,
    5 = groups (mask and caption)."""
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


def split_sources(names: list[str], seed: int) -> dict[str, str]:
    """8:1:1 train/val/test assignment of photo names (seeded permutation, see the module docstring)."""
    p = len(names)
    n_eval = round(p / 10) if p >= 10 else (1 if p >= 3 else 0)
    n_test = n_eval if p >= 10 else (1 if p >= 2 else 0)
    order = rng_for(seed, 2).permutation(p)
    return {names[idx]: "test" if rank < n_test else ("val" if rank < n_test + n_eval else "train")
            for rank, idx in enumerate(order)}


def photo_slots(names: list[str], split_of: dict[str, str], seed: int) -> list[str]:
    """The photo visiting order: a seeded permutation within each split, the splits interleaved in proportion
    (the ``j``-th of ``k`` photos of a split sits at ``j / k``; ties go test, val, train), so every prefix of the
    order spreads over the splits 8:1:1 and the first three slots hold one photo of each."""
    perm = rng_for(seed, 3).permutation(len(names))
    per_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for idx in perm:
        per_split[split_of[names[idx]]].append(names[idx])
    rank = {"test": 0, "val": 1, "train": 2}
    keyed = [(j / len(members), rank[s], name) for s, members in per_split.items() for j, name in enumerate(members)]
    return [name for _, _, name in sorted(keyed)]


def parse_shard(text: str, environ: dict | None = None) -> tuple[int, int]:
    """``"K/N"`` (0 <= K < N) -> ``(K, N)``; ``"auto"`` reads torchrun's ``RANK``/``WORLD_SIZE`` or a Slurm job
    array's ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` (minus ``SLURM_ARRAY_TASK_MIN``)."""
    env = os.environ if environ is None else environ
    if text == "auto":
        if "RANK" in env and "WORLD_SIZE" in env:
            k, n = env["RANK"], env["WORLD_SIZE"]
        elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            k = str(int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")))
            n = env["SLURM_ARRAY_TASK_COUNT"]
        else:
            raise UserError("shard auto: neither RANK/WORLD_SIZE (torchrun) nor SLURM_ARRAY_TASK_ID/"
                            "SLURM_ARRAY_TASK_COUNT (Slurm job array) is set; give the shard as K/N", option="shard")
        text = f"{k}/{n}"
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not 0 <= int(k) < int(n):
        raise UserError(f"shard {text!r}: expected K/N with 0 <= K < N (e.g. 0/4), or auto", option="shard")
    return int(k), int(n)


def save_image(out: Path, rel_stem: str, image: np.ndarray, jpeg_quality: int | None) -> str:
    """Write ``image`` atomically as ``rel_stem.png`` (lossless) or ``.jpg``; return the relative path."""
    if jpeg_quality is None:
        write_png(out / f"{rel_stem}.png", image)
        return f"{rel_stem}.png"
    atomic_write_bytes(out / f"{rel_stem}.jpg", encode_image(image, "JPEG", quality=int(jpeg_quality)))
    return f"{rel_stem}.jpg"


# --------------------------------------------------------------------------------------------- the run


def validate_options(opts: GenerateOptions) -> GenerateOptions:
    """Check the paths, counts, regions and area bins; raise one-line UserErrors."""
    photos, out = Path(opts.photos).resolve(), Path(opts.out).resolve()
    if not photos.is_dir():
        raise UserError(f"photos folder {opts.photos}: not a folder")
    if out.is_relative_to(photos):
        raise UserError(f"output folder {opts.out}: must not be the photos folder or inside it ({opts.photos})")
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {opts.out}: exists and is not a folder")
    if opts.n < 1:
        raise UserError(f"number of forgeries must be at least 1, got {opts.n}", option="n")
    if opts.retries < 0:
        raise UserError(f"retries must be at least 0, got {opts.retries}", option="retries")
    if opts.max_side < 32:
        raise UserError(f"largest photo side must be at least 32 pixels, got {opts.max_side}", option="max_side")
    if opts.jpeg_quality is not None and not 1 <= opts.jpeg_quality <= 100:
        raise UserError(f"JPEG quality must be in 1..100, got {opts.jpeg_quality}", option="jpeg_quality")
    if opts.workers < 1:
        raise UserError(f"worker processes must be at least 1, got {opts.workers}", option="workers")
    if opts.shard is not None and not 0 <= opts.shard[0] < opts.shard[1]:
        raise UserError(f"shard {opts.shard[0]}/{opts.shard[1]}: expected K/N with 0 <= K < N", option="shard")
    if not opts.regions or not set(opts.regions) <= set(REGION_TYPES):
        raise UserError(f"region types: choose from {', '.join(REGION_TYPES)}, got {', '.join(opts.regions) or 'none'}",
                        option="regions")
    if not opts.area_bins or not set(opts.area_bins) <= set(AREA_BINS):
        raise UserError(f"area bins: choose from {', '.join(AREA_BINS)}, got {', '.join(opts.area_bins) or 'none'}",
                        option="area_bins")
    if opts.area_policy not in AREA_POLICIES:
        raise UserError(f"area policy: choose from {', '.join(AREA_POLICIES)}, got {opts.area_policy!r}",
                        option="area_policy")
    return GenerateOptions(**{**opts.__dict__, "photos": photos, "out": out,
                              "model_dirs": {k: str(Path(v).resolve()) for k, v in opts.model_dirs.items()},
                              "regions": tuple(dict.fromkeys(opts.regions)),
                              "area_bins": tuple(b for b in AREA_BINS if b in opts.area_bins)})


def check_area_policy(opts: GenerateOptions, regions_backend) -> None:
    """Built-in regions must be able to reach a requested bin; detected regions decide their own area."""
    if regions_backend.decides_area:
        return
    for region in opts.regions:
        allowed = compatible_bins(region, opts.area_policy)
        if not set(allowed) & set(opts.area_bins):
            raise UserError(f"region type {region} cannot produce masks in the area bins {','.join(opts.area_bins)} "
                            f"under the area policy {opts.area_policy}; it covers {','.join(allowed)}")


def region_bins(kind: str, opts: GenerateOptions, decides_area: bool) -> list[str]:
    """The area bins a region of ``kind`` may land in: the requested bins, limited by the area policy unless the
    region back end detects regions (then only an explicit ``--area-bins`` subset filters)."""
    if decides_area:
        return list(opts.area_bins)
    return [b for b in opts.area_bins if b in compatible_bins(kind, opts.area_policy)]


def resolve_methods(opts: GenerateOptions, available: tuple[str, ...], defaults: tuple[str, ...]) -> GenerateOptions:
    """Fill the default method list of the back end and reject unknown or unavailable methods."""
    methods = tuple(dict.fromkeys(opts.methods)) if opts.methods else defaults
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise UserError(f"methods: unknown or unavailable {', '.join(unknown)} for the {opts.backend} back end; "
                        f"available: {', '.join(available)}", option="methods")
    return GenerateOptions(**{**opts.__dict__, "methods": methods})


def _plan_record(opts: GenerateOptions) -> dict:
    """The :data:`_PLAN_KEYS` of the options as JSON values (in that order)."""
    return {k: getattr(opts, k) for k in _PLAN_KEYS} | {
        "photos": str(opts.photos), "methods": list(opts.methods), "regions": list(opts.regions),
        "area_bins": list(opts.area_bins), "model_dirs": {k: str(v) for k, v in sorted(opts.model_dirs.items())},
        "thresholds": opts.thresholds.to_dict()}


def _options_from_plan(out: Path, plan: dict, progress: bool) -> GenerateOptions:
    """The options a state file was made with (for ``--merge``, which is given only ``--out``)."""
    return GenerateOptions(**{k: plan[k] for k in _PLAN_KEYS} | {
        "photos": Path(plan["photos"]), "methods": tuple(plan["methods"]), "regions": tuple(plan["regions"]),
        "area_bins": tuple(plan["area_bins"]), "model_dirs": dict(plan["model_dirs"]),
        "thresholds": QualityThresholds(**plan["thresholds"])}, out=out, progress=progress)


def _scan_photos(opts: GenerateOptions) -> dict:
    """Read every photo once: usable sources, bad files, and the naturalness calibration."""
    rels = find_photos(opts.photos)
    if not rels:
        raise UserError(f"photos folder {opts.photos}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
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
            alphas.append(naturalness_alpha(fit_within(image, opts.max_side)))
    if not sources:
        raise UserError(f"photos folder {opts.photos}: none of the {len(rels)} image files could be read")
    return {"sources": sources, "bad_photos": bad, "calibration_alphas": [round(a, 6) for a in alphas]}


def _read_state(run_file: Path) -> dict:
    state = json.loads(run_file.read_text())
    if state.get("format") != FORMAT:
        raise UserError(f"{run_file}: not a tamperscope generate state file")
    if state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"output folder {run_file.parent.parent}: generated by another version of the pipeline "
                        f"(format {state.get('format_version')}, now {FORMAT_VERSION}); finish it with that version "
                        "or choose another folder")
    return state


def _load_or_create_state(opts: GenerateOptions, backend_info: dict) -> dict:
    """The run's state file: read back (options must match) or created. Shards of one run may start together:
    each writes the same bytes atomically, and a folder holding only ``.brgen`` counts as empty."""
    state_dir = opts.out / STATE_DIR
    run_file = state_dir / RUN_FILE
    plan = _plan_record(opts)
    if run_file.is_file():
        state = _read_state(run_file)
        diffs = [k for k in _PLAN_KEYS if state["plan"].get(k) != plan[k]]
        if diffs:
            k = diffs[0]
            raise UserError(f"output folder {opts.out}: generated with other options ({k}: {state['plan'].get(k)!r} "
                            f"there, {plan[k]!r} now); use the same options to resume or choose another folder")
        return state
    if opts.out.is_dir() and any(p.name != STATE_DIR for p in opts.out.iterdir()):
        raise UserError(f"output folder {opts.out}: not empty and holds no tamperscope generate run")
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "plan": plan, "backend_info": backend_info,
             **_scan_photos(opts)}
    (state_dir / "records").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(state, indent=1) + "\n")
    return state


class _Plan:
    """What a run makes, from the options and the state alone (no models): sources and their splits, the photo
    slots, the groups and the naturalness range. Shared by the generating shards and the merge."""

    def __init__(self, opts: GenerateOptions, state: dict):
        self.opts, self.state = opts, state
        self.sources = {s["name"]: Source(s["name"], s["relpath"]) for s in state["sources"]}
        self.names = [s["name"] for s in state["sources"]]
        for name, split in split_sources(self.names, opts.seed).items():
            self.sources[name].split = split
        self.by_split: dict[str, list[str]] = {}
        for name in self.names:
            self.by_split.setdefault(self.sources[name].split, []).append(name)
        self.slots = photo_slots(self.names, {n: s.split for n, s in self.sources.items()}, opts.seed)
        self.naturalness = NaturalnessRange.calibrate(
            state["calibration_alphas"], opts.thresholds.naturalness_margin, opts.thresholds.naturalness_min_pad)
        self.backend_info = state["backend_info"]
        self.n_methods, self.n_regions = len(opts.methods), len(opts.regions)
        self.per_photo = self.n_methods * self.n_regions

    def sample(self, i: int) -> tuple[int, int, str, str, str]:
        """Sample ``i`` -> (photo slot, group, source name, region type, method)."""
        group, m = divmod(i, self.n_methods)
        slot, r = divmod(group, self.n_regions)
        return slot, group, self.slots[slot % len(self.slots)], self.opts.regions[r], self.opts.methods[m]

    def ids_of_shard(self, shard: tuple[int, int] | None) -> list[int]:
        """The sample ids a shard makes: every id of the photo slots ``s`` with ``s mod N == K``."""
        ids = range(self.opts.n)
        if shard is None:
            return list(ids)
        k, n = shard
        return [i for i in ids if (i // self.per_photo) % n == k]

    def warnings(self) -> list[str]:
        """Plan warnings: a partly forged last photo, splits that get no forgery."""
        n, per = self.opts.n, self.per_photo
        out = []
        n_slots = -(-n // per)
        if n % per:
            _, _, name, _, _ = self.sample(n - 1)
            out.append(f"the number of forgeries, {n}, is not a multiple of {per} ({self.n_regions} region type(s) "
                       f"x {self.n_methods} method(s) per photo): photo {name} gets {n % per} of its {per} forgeries")
        covered = {self.sources[self.slots[s % len(self.slots)]].split for s in range(n_slots)}
        empty = [s for s in SPLITS if s not in covered]
        if empty:
            missing_photos = [s for s in empty if not self.by_split.get(s)]
            if missing_photos:
                out.append(f"the {' and '.join(missing_photos)} split(s) will be empty: only {len(self.names)} "
                           f"usable photo(s) (3 give every split one)")
            rest = [s for s in empty if s not in missing_photos]
            if rest:
                need = max(min(k for k, name in enumerate(self.slots) if self.sources[name].split == s)
                           for s in rest) + 1
                out.append(f"the {' and '.join(rest)} split(s) will be empty: {n} forgeries cover {n_slots} "
                           f"photo(s) ({per} each); make {need * per} or more for a photo in every split")
        return out


class _Run:
    """Making samples of a plan with the stage back ends."""

    def __init__(self, plan: _Plan, regions_backend, creators: dict[str, Creator], aligner):
        self.plan, self.opts = plan, plan.opts
        self.regions_backend, self.creators, self.aligner = regions_backend, creators, aligner
        self.decides_area = bool(regions_backend.decides_area)
        # a source's downscaled photo, read lazily with a small LRU cache
        self.photo = lru_cache(maxsize=_CACHE_SIZE)(
            lambda name: fit_within(read_image(self.opts.photos / plan.sources[name].relpath), self.opts.max_side))
        self.records_dir = self.opts.out / STATE_DIR / "records"
        self._group_cache: tuple[int, dict] | None = None

    def _donor_fn(self, source: str):
        split_names = [n for n in self.plan.by_split[self.plan.sources[source].split] if n != source]

        def donor(rng: np.random.Generator) -> Donor:
            if not split_names:  # a split holding a single photo: lend its mirror image
                return Donor(np.ascontiguousarray(self.photo(source)[:, ::-1]), f"{source}(mirrored)")
            name = split_names[int(rng.integers(len(split_names)))]
            return Donor(self.photo(name), name)
        return donor

    def group(self, g: int, source: str, region_kind: str) -> dict:
        """Group ``g``'s region (one mask for every method) and caption, drawn from its own seeded stream;
        cached for the consecutive samples of the group."""
        if self._group_cache is not None and self._group_cache[0] == g:
            return self._group_cache[1]
        opts = self.opts
        rng = rng_for(opts.seed, 5, g)
        bins = region_bins(region_kind, opts, self.decides_area)
        area_bin = bins[int(rng.integers(len(bins)))]
        image = self.photo(source)
        rejections: list[list[str]] = []
        region = None
        for _ in range(opts.retries + 1):
            target = draw_target_area(area_bin, rng)
            proposal = self.regions_backend.propose(image, region_kind, target, rng)
            area = proposal.area
            if area == 0 or area == 1:
                rejections.append(["empty_mask" if area == 0 else "full_mask"])
            elif area_bin_of(area) not in bins:
                rejections.append(["area_out_of_bin"])
            else:
                region = proposal
                break
        prompt, prompt_info = make_prompt(region_kind, region.category, rng) if region is not None else (None, None)
        result = {"region": region, "area_bin": area_bin, "rejections": rejections, "prompt": prompt,
                  "prompt_info": prompt_info}
        self._group_cache = (g, result)
        return result

    def make_sample(self, i: int) -> dict:
        """Forge, evaluate and (when accepted) write sample ``i`` on its group's mask; return its record."""
        opts = self.opts
        slot, g, source, region_kind, method = self.plan.sample(i)
        grp = self.group(g, source, region_kind)
        region, creator = grp["region"], self.creators[method]
        base = {"id": i, "group": g, "source": source, "method": method, "region": REGION_LABELS[region_kind],
                "mask_rejections": grp["rejections"]}
        if region is None:
            return {**base, "status": "failed", "area_bin": grp["area_bin"], "attempts": 0, "rejections": [],
                    "last_quality": None}
        image = self.photo(source)
        rng = rng_for(opts.seed, 1, i)
        prompt, prompt_info = (grp["prompt"], grp["prompt_info"]) if creator.needs_prompt else (None, None)
        donor = self._donor_fn(source)
        rejections: list[list[str]] = []
        scores: dict = {}
        for attempt in range(opts.retries + 1):
            try:
                forged, params = creator.create(image, region.mask, rng, donor, prompt)
            except cv2.error as exc:
                rejections.append([f"creation_error: {str(exc).strip().splitlines()[-1][:120]}"])
                continue
            scores, reasons = evaluate_forgery(image, forged, region.mask, self.plan.naturalness, opts.thresholds)
            if self.aligner is not None and creator.needs_prompt:  # paper §3.2.3 (c): prompted methods only
                clip = self.aligner.score(forged, region.mask, prompt)
                scores["clip_score"] = round(clip, 5)
                if clip < self.aligner.min_score:
                    reasons.append("alignment")
            else:
                scores["clip_score"] = None
            if reasons:
                rejections.append(reasons)
                continue
            return self._write_sample(base, source, method, region, image, forged, params, scores, prompt,
                                      prompt_info, attempt, rejections)
        return {**base, "status": "failed", "area_bin": area_bin_of(region.area), "attempts": opts.retries + 1,
                "rejections": rejections, "last_quality": scores or None}

    def _write_sample(self, base, source, method, region, image, forged, params, scores, prompt, prompt_info,
                      attempt, rejections) -> dict:
        opts, i = self.opts, base["id"]
        stem = f"{method}_{REGION_LABELS[region.kind]}_{source}_{i:06d}"
        tp = save_image(opts.out, f"Tp/{stem}", forged, opts.jpeg_quality)
        gt = f"Gt/{stem}_mask.png"
        write_png(opts.out / gt, region.mask.astype(np.uint8) * 255)
        au = f"Au/{source}" + Path(tp).suffix
        if not (opts.out / au).is_file():
            save_image(opts.out, f"Au/{source}", image, opts.jpeg_quality)
        h, w = image.shape[:2]
        area = region.area
        return {
            **base, "status": "done", "image": Path(tp).name, "mask": Path(gt).name, "authentic": Path(au).name,
            "tp_path": tp, "gt_path": gt, "au_path": au, "split": self.plan.sources[source].split,
            "source_photo": self.plan.sources[source].relpath, "width": w, "height": h,
            "region_shape": region.shape, "region_params": region.params,
            "family": self.creators[method].family, "method_params": params,
            "mask_area": round(area, 6), "area_bin": area_bin_of(area), "prompt": prompt,
            "prompt_info": prompt_info, "quality": scores, "attempts": attempt + 1, "rejections": rejections,
            "backend": {"regions": self.plan.backend_info["regions"], "creation": self.creators[method].backend,
                        "alignment": self.plan.backend_info["alignment"]},
            "seed": opts.seed, "sample_seed": [opts.seed, 1, i], "group_seed": [opts.seed, 5, base["group"]],
            "jpeg_quality": opts.jpeg_quality,
        }

    def run(self, ids: list[int], label: str = "") -> list[dict]:
        """Make the given ids in order; ids with a record on disk are read back, not regenerated."""
        existing = {int(p.stem) for p in self.records_dir.glob("*.json")}
        done_before = len(existing & set(ids))
        if done_before and self.opts.progress:
            tqdm.write(f"resuming {self.opts.out}{label}: {done_before} sample ids already done")
        records: list[dict] = []
        failed = 0
        bar = tqdm(total=len(ids), desc=f"generating{label}", unit="sample", disable=not self.opts.progress)
        for i in ids:
            path = self.records_dir / f"{i:06d}.json"
            if i in existing:
                record = json.loads(path.read_text())
            else:
                record = self.make_sample(i)
                atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            records.append(record)
            failed += record["status"] == "failed"
            bar.update(1)
            bar.set_postfix_str(f"{record['method']}/{record['region']} {record['status']}, {failed} failed")
        bar.close()
        return records


# --------------------------------------------------------------------------------------------- outputs

# Split A (paper §5.2: GAN vs Diffusion) of each creation family; see the module docstring
_GENERATOR_FAMILIES = {"classical-inpainting": "classical", "exemplar": "classical",
                       "latent-resynthesis": "Diffusion-like", "diffusion-inpainting": "Diffusion",
                       "gan-inpainting": "GAN"}


def generator_family(family: str) -> str:
    """Split A's side of a creation family: ``GAN`` / ``Diffusion`` for real generators, ``Diffusion-like`` for
    latent re-synthesis stand-ins, ``classical`` for non-learned inpainting, ``other`` for splice and copy-move."""
    return _GENERATOR_FAMILIES.get(family, "other")


def _metadata_line(rec: dict) -> dict:
    keys = ("image", "mask", "authentic", "split", "source", "source_photo", "width", "height", "region",
            "region_shape", "method", "family", "group", "mask_area", "area_bin", "quality", "attempts", "prompt",
            "backend", "seed", "sample_seed", "group_seed", "id", "method_params", "region_params", "prompt_info",
            "jpeg_quality")
    return {k: rec[k] for k in keys} | {"generator_family": generator_family(rec["family"])}


def _result_warnings(plan: _Plan, records: list[dict]) -> list[str]:
    """Warnings known only after the run: a split whose every planned forgery failed."""
    planned = {plan.sources[r["source"]].split for r in records}
    done = {r["split"] for r in records if r["status"] == "done"}
    return [f"the {s} split holds no forgery: all its samples failed their filters after "
            f"{plan.opts.retries} retries" for s in SPLITS if s in planned and s not in done]


def _write_outputs(plan: _Plan, records: list[dict]) -> dict:
    opts = plan.opts
    done = [r for r in records if r["status"] == "done"]
    lines = "".join(json.dumps(_metadata_line(r)) + "\n" for r in done)
    atomic_write_text(opts.out / "metadata.jsonl", lines)
    for split in SPLITS:
        items = [[r["tp_path"], r["gt_path"]] for r in done if r["split"] == split]
        authentic = sorted({r["au_path"] for r in done if r["split"] == split})
        fakes, reals = items, [[a, "Negative"] for a in authentic]
        for name, part in ((split, fakes + reals), (f"{split}_tp", fakes), (f"{split}_au", reals)):
            # {split}_tp / {split}_au: balanced real/fake epochs with mix:{split}_tp.json,{split}_au.json@N
            atomic_write_text(opts.out / f"{name}.json", "[\n" + ",\n".join(json.dumps(it) for it in part) + "\n]\n")
    summary = build_summary(opts, plan.state, plan, records, plan.warnings() + _result_warnings(plan, records))
    atomic_write_text(opts.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(opts.out / "summary.md", summary_markdown(summary))
    if done:
        write_png(opts.out / "contact_sheet.png", contact_sheet(opts.out, done))
    return summary


def _warn(text: str) -> None:
    tqdm.write(f"warning: {text}", file=sys.stderr)


def merge(out: Path, progress: bool = True) -> dict:
    """Write the dataset files of a sharded run from its records (every id must be done); returns the summary."""
    out = Path(out).resolve()
    run_file = out / STATE_DIR / RUN_FILE
    if not run_file.is_file():
        raise UserError(f"{out}: holds no tamperscope generate run to merge ({STATE_DIR}/{RUN_FILE} missing)")
    state = _read_state(run_file)
    opts = _options_from_plan(out, state["plan"], progress)
    plan = _Plan(opts, state)
    records_dir = out / STATE_DIR / "records"
    missing = [i for i in range(opts.n) if not (records_dir / f"{i:06d}.json").is_file()]
    if missing:
        raise UserError(f"{out}: cannot merge an incomplete run: {len(missing)} of {opts.n} sample ids have no "
                        f"record (first {missing[0]:06d}); finish every shard (same options) first")
    records = [json.loads((records_dir / f"{i:06d}.json").read_text()) for i in range(opts.n)]
    return _write_outputs(plan, records)


def _worker(opts: GenerateOptions) -> int:
    """One ``--workers`` process: generate a shard, return its failed count."""
    return generate(opts)["failed"]


def generate(opts: GenerateOptions) -> dict:
    """Run (or resume) the pipeline. Without ``shard`` it writes the dataset and returns the summary (also in
    ``summary.json``); with ``shard`` it makes that shard's samples only and returns a short shard report."""
    opts = validate_options(opts)
    if opts.workers > 1:
        return _generate_with_workers(opts)
    backends, opts, state = _prepare(opts)
    creators = {m: backends.creators[m] for m in opts.methods}
    plan = _Plan(opts, state)
    shard_label = "" if opts.shard is None else f" shard {opts.shard[0]}/{opts.shard[1]}"
    if opts.shard is None or opts.shard[0] == 0:
        for text in plan.warnings():
            _warn(text)
    run = _Run(plan, backends.regions, creators, backends.aligner)
    ids = plan.ids_of_shard(opts.shard)
    records = run.run(ids, shard_label)
    if opts.shard is not None:
        return {"shard": list(opts.shard), "ids": len(ids), "produced": sum(r["status"] == "done" for r in records),
                "failed": sum(r["status"] == "failed" for r in records)}
    summary = _write_outputs(plan, records)
    for text in _result_warnings(plan, records):
        _warn(text)
    return summary


def _prepare(opts: GenerateOptions):
    """``(back ends, options with their methods resolved, the run's state read or created)``."""
    from .backends import build_backends  # looked up at each call: tests replace it

    backends = build_backends(opts.backend, opts.model_dirs, opts.device, opts.inpaint_steps, opts.clip_min_score)
    opts = resolve_methods(opts, tuple(backends.creators), backends.default_methods)
    check_area_policy(opts, backends.regions)
    opts.out.mkdir(parents=True, exist_ok=True)
    return backends, opts, _load_or_create_state(opts, backends.info)


def _generate_with_workers(opts: GenerateOptions) -> dict:
    """``--workers W``: prepare the state once, run ``W`` sub-shards as processes, merge (unless sharded)."""
    k, n = opts.shard or (0, 1)
    # the state (photo scan) once, before the workers start; the back ends' report is all that is needed here
    if opts.backend == "builtin":
        _prepare(opts)
    jobs = [GenerateOptions(**{**opts.__dict__, "workers": 1, "shard": (k + n * w, n * opts.workers),
                               "progress": opts.progress and w == 0}) for w in range(opts.workers)]
    with mp.get_context("spawn").Pool(opts.workers) as pool:
        pool.map(_worker, jobs)
    if opts.shard is not None:
        return {"shard": list(opts.shard), "workers": opts.workers}
    return merge(opts.out, opts.progress)


__all__ = ["GenerateOptions", "generate", "merge", "find_photos", "split_sources", "photo_slots", "parse_shard",
           "source_name", "rng_for"]
