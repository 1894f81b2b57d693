"""Split the authentic photos of ``../shared/data`` for the default model (docs/MODELS.md, "Data").

No photo and no camera model is in two of train / val / test:
- BSDS500 keeps its own train / val / test folders;
- Kodak24, McMaster18 and LIVE1 are split by photo (seeded, 50 / 25 / 25 %);
- the straight-from-camera JPEGs of ``exif_samples`` are split by camera model (EXIF Make + Model; files without
  a camera in their EXIF are one group per folder), the cameras with photos of 2 MP or more split apart from the
  rest so that each split has large camera photos; an edited copy of a photo (``Canon_40D_photoshop_import``)
  goes with the camera of the original. Files the toolkit cannot read are left out and listed.

Writes ``configs/default-model/{train,val,test}_photos.json``: IMDL-BenCo lists of the untouched photos as
negatives, paths relative to that folder. They are the photos ``tamperscope synthesize`` edits and the authentic
photos the default model is trained, calibrated and tested on. Paths only: the photos stay in ``../shared/data``.

    python benchmarks/default_model/splits.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from tamperscope.errors import ImageReadError
from tamperscope.io import read_image

OUT = Path(__file__).resolve().parents[2] / "configs" / "default-model"
SPLITS = ("train", "val", "test")
LARGE_PIXELS = 2_000_000
SEED = 16


def by_fraction(items: list, rng: np.random.Generator) -> dict[str, list]:
    """50 / 25 / 25 % of a seeded permutation (at least one item in val and test when there are three)."""
    order = [items[i] for i in rng.permutation(len(items))]
    n_val = max(1, round(0.25 * len(order))) if len(order) >= 3 else 0
    n_test = max(1, round(0.25 * len(order))) if len(order) >= 3 else 0
    n_train = len(order) - n_val - n_test
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def camera_of(path: Path, root: Path) -> str:
    exif = Image.open(path).getexif()
    make = " ".join(str(exif.get(271, "")).replace("\x00", " ").split())
    model = " ".join(str(exif.get(272, "")).replace("\x00", " ").split())
    name = f"{make} {model}".strip()
    return name if name else f"unknown:{path.parent.relative_to(root)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    args = ap.parse_args()
    data = Path(args.data).resolve()
    rng = np.random.default_rng(SEED)
    split: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        split[s] += sorted((data / "authentic" / "bsds500" / s).glob("*.jpg"))
    for name in ("kodak24", "mcmaster18", "live1"):
        files = sorted(p for p in (data / "authentic" / name).iterdir() if p.is_file())
        for s, part in by_fraction(files, rng).items():
            split[s] += part
    root = data / "authentic" / "exif_samples" / "jpg"
    groups: dict[str, list[Path]] = defaultdict(list)
    size: dict[str, int] = defaultdict(int)
    unreadable = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        try:
            h, w = read_image(p).shape[:2]
        except ImageReadError as err:
            unreadable.append(f"{p.relative_to(root)}: {err}")
            continue
        cam = camera_of(p, root)
        if cam.startswith("unknown:"):  # an edited copy of a camera's photo goes with that photo
            cam = next((c for c, ps in groups.items() for q in ps
                        if q.parent == p.parent and p.stem.startswith(q.stem + "_")), cam)
        groups[cam].append(p)
        size[cam] = max(size[cam], h * w)
    for large in (True, False):
        names = sorted(c for c in groups if (size[c] >= LARGE_PIXELS) == large)
        for s, part in by_fraction(names, rng).items():
            split[s] += [p for c in part for p in groups[c]]
            print(f"{s:5s} {'large' if large else 'small'} cameras: {', '.join(part)}")
    OUT.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        rel = [os.path.relpath(p, OUT) for p in split[s]]
        (OUT / f"{s}_photos.json").write_text(json.dumps([[r, "Negative"] for r in rel], indent=0) + "\n")
        print(f"{s}: {len(rel)} photos")
    for line in unreadable:
        print(f"left out (unreadable): {line}")


if __name__ == "__main__":
    main()
