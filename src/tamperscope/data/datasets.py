"""Dataset records, the balanced mixture and the training/evaluation dataset (ARCHITECTURE.md "Data";
IMDL-BenCo's GT handling and BalancedDataset, CAT-Net protocol; batch keys of docs/DEVELOPING.md).

Accepted forms (:func:`load_dataset_spec`):
- an IMDL-BenCo JSON list ``[[image, mask | "Negative"], ...]``; relative paths resolve against the JSON's
  folder, and a ``metadata.jsonl`` in that folder fills ``Record.meta`` (:func:`records_from_json`);
- a folder with ``Tp/`` + ``Gt/`` paired by file stem (mask stem = image stem, or with ``_gt`` / ``_mask``),
  an optional ``Au/`` of authentic images and an optional ``metadata.jsonl`` (:func:`records_from_folder`);
  a folder without ``Tp/``, ``Gt/`` and ``Au/`` is a plain photo collection, read (recursively) as all
  authentic;
- a mixture ``"mix:SRC1,SRC2,...[@N]"``: each source is any of the above and each epoch draws N (default 1840,
  the CAT-Net protocol) items per source (:class:`BalancedMixture`); ``"mix:SRC1@N1,SRC2@N2"`` gives each
  source its own count (a count on the last source alone is the shared N above). Paths inside a mix may not contain commas.
  IMDL-BenCo's own balanced-settings JSON ``[["ManiDataset" | "JsonDataset", path], ...]`` is read as a
  mixture too.

:class:`ForensicsDataset` pipeline per item: read image and mask (EXIF orientation applied; when the mask only
matches the image's stored, un-rotated pixel grid, the image is read without rotation) -> optional
robustness perturbation -> optional augmentation -> edge ground truth at that resolution (IMDLBenCo computes
it before the final resize) -> resize to S (image bilinear, mask and edge nearest) -> ImageNet normalisation.
``resolution="crop"`` (training of native-resolution models) replaces the
final resize by a random S×S window on the JPEG block grid (:func:`~tamperscope.data.transforms.augment_native`;
the augmentation then skips rescaling and moves flips/rotation after the crop); ``resolution="native"`` keeps
the photo's own size, padded at the bottom/right to a multiple of 32 (image replicated, mask and edge zero), so
such items only batch together when their sizes agree. ``label`` is 1 iff the final mask has a positive pixel. ``mask_full`` is the ground truth before the final
resize: the file's mask for evaluation (predictions are upsampled to it, the GT is never downsampled), or the
augmented mask when augmentation is on. ``mask_path`` is ``""`` for authentic images. ``meta`` carries the
record's metadata (region, method, area_bin, ... from ``metadata.jsonl``) for grouped metrics.

Determinism: augmentation and noise draw from ``numpy.random.default_rng([seed, epoch, index])``, so an item
is the same in any DataLoader worker and after resuming. Call :meth:`ForensicsDataset.set_epoch` before each
epoch and do not use ``persistent_workers`` (workers keep the copy made when their iterator started).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ImageReadError, UserError
from ..io import DEFAULT_MAX_PIXELS, probe_image, read_image, read_mask
from ..nn.norm import imagenet_normalize
from ..sizes import DEFAULT_IMAGE_SIZE
from .edges import canny_edge, edge_band
from .transforms import AugmentConfig, augment as augment_pair, parse_perturb, perturb as perturb_image
from .transforms import (JPEG_GRID, augment_native, pad_to_multiple, photometric_config, resize_mask,
                         resize_pair)

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jfif", ".ppm", ".pgm")
MASK_STEM_SUFFIXES = ("_gt", "_mask")
DEFAULT_PER_SOURCE = 1840
_MAX_LISTED = 10


@dataclass
class Record:
    """One sample: the image file, its mask file (None = authentic) and free metadata (region, method, ...)."""
    image: Path
    mask: Path | None
    meta: dict = field(default_factory=dict)


def _listing(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


# --------------------------------------------------------------------------------------------- loaders


def records_from_json(path: PathLike) -> list[Record]:
    """IMDL-BenCo list ``[[image, mask | "Negative"], ...]``; every missing file is reported in one error."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: dataset list not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON dataset list ({exc})") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of [image, mask] pairs, got {type(entries).__name__}")
    base = path.parent
    records, missing = [], []
    for i, entry in enumerate(entries):
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2
                or not all(isinstance(x, str) and x for x in entry)):
            raise UserError(f"{path}: entry {i} is not an [image, mask] pair of strings: {entry!r}")
        image = base / entry[0]
        mask = None if entry[1].strip().lower() == "negative" else base / entry[1]
        missing += [str(p) for p in (image, mask) if p is not None and not p.is_file()]
        records.append(Record(image, mask))
    if missing:
        raise UserError(f"{path}: {len(missing)} listed file(s) missing: {_listing(missing)}")
    if not records:
        raise UserError(f"{path}: the dataset list is empty")
    _attach_metadata(records, base / "metadata.jsonl")
    return records


def _subdir(folder: Path, name: str) -> Path | None:
    return next((c for c in folder.iterdir() if c.is_dir() and c.name.lower() == name.lower()), None)


def _mask_key(stem: str) -> str:
    return next((stem[:-len(s)] for s in MASK_STEM_SUFFIXES if stem.lower().endswith(s)), stem)


def _read_metadata(path: Path) -> dict[str, dict]:
    """``metadata.jsonl``: one object per line with ``image`` (file name) and free keys (region, method, ...)."""
    table: dict[str, dict] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {lineno} is not JSON ({exc.msg})") from None
        name = row.get("image") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name:
            raise UserError(f"{path}: line {lineno} has no \"image\" file name")
        table[Path(name).name] = {k: v for k, v in row.items() if k != "image"}
    return table


def _attach_metadata(records: list[Record], meta_file: Path) -> None:
    """Fill ``Record.meta`` from an optional ``metadata.jsonl`` (matched by image file name)."""
    if meta_file.is_file():
        table = _read_metadata(meta_file)
        for rec in records:
            rec.meta = dict(table.get(rec.image.name, {}))


def records_from_folder(path: PathLike) -> list[Record]:
    """``Tp/`` + ``Gt/`` (+ optional ``Au/``, ``metadata.jsonl``) paired by stem, or a plain photo folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder}: dataset folder not found")
    tp, gt, au = _subdir(folder, "Tp"), _subdir(folder, "Gt"), _subdir(folder, "Au")
    if tp is None and gt is None and au is None:
        photos = sorted(p for p in folder.rglob("*") if _is_image_file(p))
        if not photos:
            raise UserError(f"{folder}: no image files found")
        return [Record(p, None) for p in photos]
    if (tp is None) != (gt is None):
        raise UserError(f"{folder}: has {'Tp/' if tp else 'Gt/'} but no {'Gt/' if tp else 'Tp/'} folder")
    records: list[Record] = []
    if tp is not None:
        masks: dict[str, Path] = {}
        for m in sorted(p for p in gt.iterdir() if _is_image_file(p)):
            key = _mask_key(m.stem)
            if key in masks:
                raise UserError(f"{gt}: two masks for image stem '{key}': {masks[key].name}, {m.name}")
            masks[key] = m
        images = sorted(p for p in tp.iterdir() if _is_image_file(p))
        stems = {}
        for im in images:
            if im.stem in stems:
                raise UserError(f"{tp}: two images with stem '{im.stem}': {stems[im.stem].name}, {im.name}")
            stems[im.stem] = im
        unpaired_tp = [im.name for im in images if im.stem not in masks]
        unpaired_gt = [m.name for k, m in masks.items() if k not in stems]
        parts = [f"{len(names)} {what}: {_listing(names)}" for names, what in (
            (unpaired_tp, "image(s) in Tp/ without a mask"), (unpaired_gt, "mask(s) in Gt/ without an image")) if names]
        if parts:
            raise UserError(f"{folder}: " + "; ".join(parts))
        records += [Record(im, masks[im.stem]) for im in images]
    if au is not None:
        records += [Record(p, None) for p in sorted(p for p in au.iterdir() if _is_image_file(p))]
    if not records:
        raise UserError(f"{folder}: no image files in Tp/ or Au/")
    _attach_metadata(records, folder / "metadata.jsonl")
    return records


def load_records(spec: PathLike) -> list[Record]:
    """A JSON list file or a dataset folder -> records."""
    path = Path(spec)
    if path.is_dir():
        return records_from_folder(path)
    if path.suffix.lower() == ".json":
        return records_from_json(path)
    if not path.exists():
        raise UserError(f"{path}: dataset not found (expected a .json list or a folder)")
    raise UserError(f"{path}: not a dataset (expected a .json list or a folder with Tp/ Gt/ Au/ or photos)")


# --------------------------------------------------------------------------------------------- mixture


class BalancedMixture(Sequence):
    """CAT-Net / IMDL-BenCo balanced protocol: each epoch draws ``per_source`` items from every source
    (one count for all, or one per source).

    Items come source after source: the first ``per_source[0]`` from source 0, and so on. Draws are seeded by
    ``(seed, epoch)``. IMDL-BenCo draws with replacement on every access; here the default
    (``replacement=False``) draws a random subset when a source is larger than its count and whole shuffled
    passes (plus a random remainder) when it is smaller, so no item repeats before all have been seen. ``replacement=True`` gives IMDL-BenCo's sampling.
    """

    def __init__(self, sources: list[list[Record]], per_source: int | Sequence[int] = DEFAULT_PER_SOURCE,
                 seed: int = 0, replacement: bool = False):
        if not sources:
            raise UserError("a balanced mixture needs at least one source")
        counts = [int(per_source)] * len(sources) if isinstance(per_source, (int, np.integer)) else list(per_source)
        if len(counts) != len(sources):
            raise UserError(f"a balanced mixture of {len(sources)} sources needs as many counts, got {len(counts)}")
        if min(counts) < 1:
            raise UserError(f"a balanced mixture needs per_source >= 1, got {min(counts)}")
        for k, src in enumerate(sources):
            if len(src) == 0:
                raise UserError(f"balanced mixture: source {k} is empty")
        self.sources = [list(s) for s in sources]
        self.per_source = counts
        self._starts = np.cumsum([0] + counts)
        self.seed = int(seed)
        self.replacement = bool(replacement)
        self.epoch = 0
        self._draws = self._draw(0)

    def _draw(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        draws = []
        for src, count in zip(self.sources, self.per_source):
            n = len(src)
            if self.replacement:
                draws.append(rng.integers(0, n, count))
                continue
            passes = [rng.permutation(n) for _ in range(count // n)]
            passes.append(rng.permutation(n)[: count % n])
            draws.append(np.concatenate(passes))
        return draws

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._draws = self._draw(self.epoch)

    def filtered(self, keep: Callable[[Record], bool]) -> "BalancedMixture":
        out = BalancedMixture([[r for r in s if keep(r)] for s in self.sources], self.per_source, self.seed,
                              self.replacement)
        out.set_epoch(self.epoch)
        return out

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> Record:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.sources[k][int(self._draws[k][index - self._starts[k]])]


def _benco_balanced_settings(path: Path) -> list[str] | None:
    """Paths of an IMDL-BenCo balanced-settings JSON, or None when the file is a plain pair list."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (isinstance(entries, list) and entries
            and all(isinstance(e, list) and len(e) == 2 and e[0] in ("ManiDataset", "JsonDataset") for e in entries)):
        return [str(path.parent / e[1]) for e in entries]
    return None


def load_evaluation_records(spec: PathLike) -> list[Record]:
    """Every record of a dataset argument exactly once: a mixture (``mix:…`` or an IMDL-BenCo balanced JSON)
    is the union of its sources, not a sample of them (scoring counts each image once)."""
    records = load_dataset_spec(spec)
    if isinstance(records, BalancedMixture):
        return [rec for source in records.sources for rec in source]
    return records


def parse_mix_spec(text: str) -> list[tuple[str, int | None]]:
    """``mix:SRC1,SRC2@N,...`` as ``[(source, count or None), ...]`` (the ``mix:`` prefix already removed)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        path, at, count = part.rpartition("@") if "@" in part else (part, "", "")
        try:
            out.append((path.strip(), int(count) if at else None))
        except ValueError:
            raise UserError(f"mix:{text}: the count after '@' must be an integer, got '{count}'") from None
    if not out:
        raise UserError(f"mix:{text}: a mix needs at least one source, e.g. mix:a.json,b_folder@1840")
    return out


def load_dataset_spec(spec: PathLike, seed: int = 0) -> list[Record] | BalancedMixture:
    """A dataset argument: a JSON list, a folder, or ``mix:SRC1,SRC2[@N]`` (module docstring)."""
    text = os.fspath(spec)
    if text.startswith("mix:"):
        sources = parse_mix_spec(text[4:])
        counts = [c for _, c in sources]
        if counts[-1] is not None and all(c is None for c in counts[:-1]):
            counts = [counts[-1]] * len(sources)  # "mix:a,b@N": one count for every source
        per_source = [DEFAULT_PER_SOURCE if c is None else c for c in counts]
        return BalancedMixture([load_records(p) for p, _ in sources], per_source, seed)
    path = Path(text)
    if path.suffix.lower() == ".json" and path.is_file():
        settings = _benco_balanced_settings(path)
        if settings is not None:
            return BalancedMixture([load_records(p) for p in settings], DEFAULT_PER_SOURCE, seed)
    return load_records(path)


# --------------------------------------------------------------------------------------------- dataset


_ON_MISMATCH = ("error", "resize", "skip")
RESOLUTIONS = ("resize", "crop", "native")
_EDGES = (None, "band", "canny")


def _fmt_hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}×{hw[1]}"


class ForensicsDataset(Dataset):
    """Image + mask samples as the batch dict of docs/DEVELOPING.md (plus ``mask_full``); see module docstring.

    ``resolution``: ``"resize"`` (to S×S), ``"crop"`` or ``"native"`` (module docstring).
    ``on_mismatch``: what to do when a mask's size differs from its image's: ``"error"`` (one error listing
    them), ``"skip"`` (drop those records at construction with one warning), ``"resize"`` (nearest-resize the
    mask to the image). Sizes are checked from file headers at construction. ``perturb``: ``"kind:level"`` or
    ``(kind, level)``, applied before augmentation. ``forgery_ops=False`` drops copy-move and inpainting from
    the augmentation. ``canny_dilate`` is the dilation of the ``"canny"`` edge variant.
    """

    def __init__(self, records: Sequence[Record] | BalancedMixture, image_size: int = DEFAULT_IMAGE_SIZE,
                 augment: bool = False, edge: str | None = None, edge_width: int = 7, on_mismatch: str = "error",
                 perturb: str | tuple[str, float] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 seed: int = 0, forgery_ops: bool = True, augment_config: AugmentConfig | None = None,
                 canny_dilate: int = 5, resolution: str = "resize"):
        if resolution not in RESOLUTIONS:
            raise UserError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got '{resolution}'")
        if resolution == "crop" and image_size % JPEG_GRID:
            raise UserError(f"a native-resolution crop must be a multiple of {JPEG_GRID} pixels, got {image_size}")
        if on_mismatch not in _ON_MISMATCH:
            raise UserError(f"on_mismatch must be one of {', '.join(_ON_MISMATCH)}, got '{on_mismatch}'")
        if edge not in _EDGES:
            raise UserError(f"edge must be None, 'band' or 'canny', got '{edge}'")
        if image_size < 1:
            raise UserError(f"image_size must be positive, got {image_size}")
        if edge == "band" and (edge_width < 1 or edge_width % 2 == 0):
            raise UserError(f"edge_width must be a positive odd number, got {edge_width}")
        if perturb is not None:
            perturb = parse_perturb(perturb if isinstance(perturb, str) else f"{perturb[0]}:{perturb[1]}")
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.edge = edge
        self.edge_width = int(edge_width)
        self.on_mismatch = on_mismatch
        self.perturb = perturb
        self.max_pixels = max_pixels
        self.seed = int(seed)
        self.forgery_ops = bool(forgery_ops)
        self.augment_config = augment_config or AugmentConfig()
        self.canny_dilate = int(canny_dilate)
        self.resolution = resolution
        self.epoch = 0
        self._stored_grid: set[Path] = set()  # images whose mask matches the un-rotated pixel grid
        self.records = self._check_sizes(records)

    # ---- construction-time size check (headers only)
    def _check_sizes(self, records):
        sources = records.sources if isinstance(records, BalancedMixture) else [records]
        pairs = dict.fromkeys((rec.image, rec.mask) for src in sources for rec in src if rec.mask is not None)
        bad: dict[tuple[Path, Path], str] = {}
        for img_path, mask_path in pairs:
            img = probe_image(img_path, self.max_pixels)
            msk = probe_image(mask_path, self.max_pixels)
            if msk.oriented_hw == img.oriented_hw:
                continue
            if msk.oriented_hw == img.stored_hw:
                self._stored_grid.add(img_path)
                continue
            bad[(img_path, mask_path)] = (f"{img_path} is {_fmt_hw(img.oriented_hw)} but its mask {mask_path} "
                                          f"is {_fmt_hw(msk.oriented_hw)} (H×W)")
        if not bad or self.on_mismatch == "resize":
            return records
        lines = list(bad.values())
        if self.on_mismatch == "error":
            raise UserError(f"{len(lines)} mask(s) do not match their image size (skip such images or resize "
                            f"their masks): {_listing(lines)}", option="on_mismatch")
        warnings.warn(f"skipping {len(lines)} record(s) whose mask size differs from the image: "
                      f"{_listing(lines)}", UserWarning, stacklevel=3)

        def keep(rec: Record) -> bool:
            return rec.mask is None or (rec.image, rec.mask) not in bad

        if isinstance(records, BalancedMixture):
            return records.filtered(keep)
        return [r for r in records if keep(r)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation draws (and the mixture's samples)."""
        self.epoch = int(epoch)
        if isinstance(self.records, BalancedMixture):
            self.records.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, rec: Record) -> tuple[np.ndarray, np.ndarray]:
        apply_exif = rec.image not in self._stored_grid
        image = read_image(rec.image, self.max_pixels, apply_exif=apply_exif)
        if rec.mask is None:
            return image, np.zeros(image.shape[:2], dtype=bool)
        mask = read_mask(rec.mask, max_pixels=self.max_pixels)
        if mask.shape != image.shape[:2]:
            if self.on_mismatch != "resize":
                raise ImageReadError(f"{rec.image} is {_fmt_hw(image.shape[:2])} but its mask {rec.mask} is "
                                     f"{_fmt_hw(mask.shape)} (H×W)")
            mask = resize_mask(mask, *image.shape[:2])
        return image, mask

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        image, mask = self._read(rec)
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if self.perturb is not None:
            image = perturb_image(image, self.perturb[0], self.perturb[1], rng=rng)
        native = self.resolution != "resize"
        if self.augment:
            cfg = photometric_config(self.augment_config) if native else self.augment_config
            image, mask = augment_pair(image, mask, rng, forgery_ops=self.forgery_ops, config=cfg)
        edge = None
        if self.edge == "band":
            edge = edge_band(mask, self.edge_width)
        elif self.edge == "canny":
            edge = canny_edge(mask, self.canny_dilate)
        input_size = (int(image.shape[0]), int(image.shape[1]))  # after a resize perturbation, before padding
        s = self.image_size
        if self.resolution == "crop":
            image_s, mask_s, *cut = augment_native(image, mask, rng, s, config=self.augment_config if self.augment
                                                   else None, extra=() if edge is None else (edge,))
            edge = cut[0] if cut else None
        elif self.resolution == "native":
            image_s, mask_s = pad_to_multiple(image, replicate=True), pad_to_multiple(mask, replicate=False)
            edge = None if edge is None else pad_to_multiple(edge, replicate=False)
        else:
            image_s, mask_s = resize_pair(image, mask, s)
        x = torch.from_numpy(np.ascontiguousarray(image_s)).permute(2, 0, 1).float().div_(255.0)
        out = {
            "image": imagenet_normalize(x[None])[0].contiguous(),
            "mask": torch.from_numpy(mask_s.astype(np.float32))[None],
            "label": torch.tensor(float(mask_s.any()), dtype=torch.float32),
            "index": torch.tensor(int(index), dtype=torch.long),
            "path": str(rec.image),
            "mask_path": "" if rec.mask is None else str(rec.mask),
            "orig_size": orig_size,
            "input_size": input_size,
            "mask_full": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)),
            "meta": dict(rec.meta),
        }
        if edge is not None:
            edge = edge if native else resize_mask(edge, s, s)
            out["edge"] = torch.from_numpy(np.ascontiguousarray(edge, dtype=np.float32))[None]
        return out


_STACKED = ("image", "mask", "label", "edge", "index")


def collate(batch_list: list[dict]) -> dict:
    """Stack fixed-size tensors; keep lists for paths, ``orig_size``, ``input_size``, ``mask_full``, ``meta`` and any
    other key."""
    if not batch_list:
        raise UserError("collate needs at least one sample")
    out = {}
    for key in batch_list[0]:
        values = [b[key] for b in batch_list]
        out[key] = torch.stack(values) if key in _STACKED else values
    return out
