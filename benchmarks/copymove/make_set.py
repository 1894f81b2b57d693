"""A copy-move test set from held-out photos, as issue 17 specifies it (docs/MODELS.md, "Copy-move expert").

Each forgery copies an object-like region (1-10 % of the photo; ``BuiltinRegions`` "thing" shapes) to another
place of the same photo, with one of four transforms drawn evenly: a plain translation, a rotation of 5-25 degrees
either way, a scaling by 0.75-1.25, or both; the copy never overlaps its source. The ground truth marks **both**
the source and the pasted copy, as copy-move benchmarks do. Then the photo is saved as JPEG at quality 75-95.
Photos are first shrunk to at most ``--max-side`` pixels (1024, the size of the paper's test images).

    python benchmarks/copymove/make_set.py configs/default-model/test_photos.json OUT --seed 3

writes OUT/Tp, OUT/Gt, OUT/list.json (IMDL-BenCo pairs, relative paths) and OUT/metadata.jsonl (the transform of
each sample as its "method", for `evaluate --group-by method`); sample i draws from
numpy.random.default_rng([seed, i]).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from tamperscope.data.brgen.regions import BuiltinRegions
from tamperscope.data.synthetic import photo_paths
from tamperscope.io import atomic_write_text, read_image, write_png

TRANSFORMS = ("translation", "rotation", "scale", "rotation+scale")


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def copy_move(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """One copy-move forgery of ``image`` (module docstring), or None when no placement was found."""
    h, w = image.shape[:2]
    area = float(rng.uniform(0.01, 0.10))
    source = BuiltinRegions().propose(image, "thing", area, rng).mask
    ys, xs = np.nonzero(source)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    kind = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
    angle = float(rng.uniform(5, 25) * rng.choice([-1, 1])) if "rotation" in kind else 0.0
    scale = float(rng.uniform(0.75, 1.25)) if "scale" in kind else 1.0
    centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    for _ in range(50):
        M = cv2.getRotationMatrix2D(centre, angle, scale)
        tx, ty = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        M[:, 2] += (tx - centre[0], ty - centre[1])
        target = cv2.warpAffine(source.astype(np.uint8), M, (w, h), flags=cv2.INTER_NEAREST) > 0
        if target.sum() < 0.8 * source.sum() * scale * scale or (target & source).any():
            continue
        if cv2.dilate(target.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)[source].any():
            continue  # keep the copy clear of its source
        moved = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = image.copy()
        out[target] = moved[target]
        return out, source | target, {"transform": kind, "angle": round(angle, 2), "scale": round(scale, 3),
                                      "area": round(float(source.mean()), 4)}
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", help="a list or folder of authentic photos (held out from training)")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--n", type=int, default=0, help="at most this many photos (0: all)")
    args = ap.parse_args()
    out = Path(args.out)
    for sub in ("Tp", "Gt"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    paths = photo_paths(args.photos)[: args.n or None]
    entries, meta = [], []
    for i, path in enumerate(paths):
        rng = np.random.default_rng([args.seed, i])
        made = copy_move(shrink(read_image(path), args.max_side), rng)
        if made is None:
            continue
        image, mask, info = made
        quality = int(rng.integers(75, 96))
        name, gt = f"Tp/cm_{i:04d}.jpg", f"Gt/cm_{i:04d}_gt.png"
        write_png(out / gt, mask.astype(np.uint8) * 255)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        (out / name).write_bytes(data.tobytes())
        entries.append([name, gt])
        meta.append(dict(info, image=name, method=info["transform"], source=str(path), quality=quality))
    atomic_write_text(out / "list.json", json.dumps(entries, indent=0) + "\n")
    atomic_write_text(out / "metadata.jsonl", "".join(json.dumps(m) + "\n" for m in meta))
    print(f"{len(entries)} forgeries in {out / 'list.json'}")


if __name__ == "__main__":
    main()
