"""Pooled statistics of the default model's frozen network on whole photos, for refitting its detection head
(docs/MODELS.md, "Image score"): one forward pass per photo at its own size, exactly as `predict` and
`evaluate` run it, and the statistics every candidate head could pool, saved to one ``.npz``.

    python benchmarks/default_model/head_features.py --checkpoint src/tamperscope/weights/default.safetensors \
        --data SPEC [--data SPEC ...] --out FEATURES.npz

Saved per photo: ``label`` (1 tampered), ``pixels`` (the photo's area), ``source`` (the SPEC it came from), the
bottleneck's per-channel ``b_mean``, ``b_max``, ``b_top`` (mean of its top 1 % positions) and ``b_std``, and the
half-resolution mask logits' ``l_max``, ``l_top01`` / ``l_top1`` / ``l_top5`` (means of the top 0.1 / 1 / 5 %),
``l_mean``, ``l_std``, ``l_pos`` (share above 0), and ``score`` (the shipped head's raw logit, a check).
Resumable: photos already in ``OUT.partial.npz`` are skipped.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from tamperscope.checkpoint import load_checkpoint
from tamperscope.data.datasets import load_evaluation_records
from tamperscope.data.transforms import pad_to_multiple
from tamperscope.io import read_image
from tamperscope.models.elaunet import top_mean, with_context
from tamperscope.nn.norm import imagenet_normalize


@torch.inference_mode()
def photo_statistics(model, image: np.ndarray) -> dict:
    grabbed = {}
    hooks = [model.down[-1].register_forward_hook(lambda m, i, o: grabbed.__setitem__("bottom", o)),
             model.out.register_forward_hook(lambda m, i, o: grabbed.__setitem__("half", o))]
    try:
        x = torch.from_numpy(pad_to_multiple(image, replicate=True)).permute(2, 0, 1)[None].float().div_(255.0)
        out = model(imagenet_normalize(x))
    finally:
        for h in hooks:
            h.remove()
    bottom = grabbed["bottom"]
    if model.global_context:
        bottom = with_context(bottom)
    b = bottom.flatten(2)[0].float()  # C × N
    lg = grabbed["half"].flatten(1)[0].float()
    # the shares the model's own head pools (elaunet.top_mean: 1 / divisor of the values)
    return {"b_mean": b.mean(1), "b_max": b.amax(1), "b_top": top_mean(b, 100), "b_std": b.std(1),
            "l_max": lg.max(), "l_top01": top_mean(lg, 1000), "l_top1": top_mean(lg, 100),
            "l_top5": top_mean(lg, 20), "l_mean": lg.mean(), "l_std": lg.std(), "l_pos": (lg > 0).float().mean(),
            "score": out["image_logit"][0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", action="append", required=True, help="dataset spec (repeat)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).eval()
    records = [(spec, rec) for spec in args.data for rec in load_evaluation_records(spec)]
    partial = Path(args.out + ".partial.npz")
    rows: dict[str, list] = {}
    if partial.is_file():
        rows = {k: list(v) for k, v in np.load(partial, allow_pickle=False).items()}
    done = len(rows.get("label", []))
    start = time.time()
    for i, (spec, rec) in enumerate(records[done:], start=done):
        image = read_image(rec.image)
        stats = {k: v.numpy() for k, v in photo_statistics(model, image).items()}
        stats.update(label=int(rec.mask is not None), pixels=image.shape[0] * image.shape[1], source=spec,
                     path=str(rec.image))
        for k, v in stats.items():
            rows.setdefault(k, []).append(v)
        if (i + 1) % 200 == 0 or i + 1 == len(records):
            np.savez(partial, **{k: np.asarray(v) for k, v in rows.items()})
            print(f"{i + 1}/{len(records)} {time.time() - start:.0f} s", flush=True)
    np.savez(args.out, **{k: np.asarray(v) for k, v in rows.items()})
    partial.unlink(missing_ok=True)
    print(f"wrote {args.out}: {len(rows['label'])} photos")


if __name__ == "__main__":
    main()
