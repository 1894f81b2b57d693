"""Fuse the dense-field copy-move expert into a checkpoint, with its validation scores (docs/MODELS.md,
"Copy-move expert"): the scores give the false-alarm and miss rates that `predict` reports when the expert
decides a verdict. The checkpoint's other experts, and the copy-move expert's config if it has one, are kept.

    python benchmarks/default_model/attach_copymove.py --checkpoint CKPT.safetensors \
        --authentic configs/default-model/val_photos.json --forged CM_VAL/list.json --out FUSED.safetensors

CM_VAL: `python benchmarks/copymove/make_set.py configs/default-model/val_photos.json CM_VAL --seed 2 --n 40`.
"""
from __future__ import annotations

import argparse

from tamperscope.checkpoint import read_checkpoint_config
from tamperscope.data.datasets import load_evaluation_records
from tamperscope.engine.experts import EXPERTS_KEY, attach_experts, build_experts, expert_maps
from tamperscope.io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--authentic", required=True, help="validation photos (never used for training or testing)")
    ap.add_argument("--forged", required=True, help="copy-move forgeries made from the validation photos")
    ap.add_argument("--every", type=int, default=1, help="use every k-th authentic photo (CPU time)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    kept = dict(read_checkpoint_config(args.checkpoint).get(EXPERTS_KEY) or {})
    config = dict((kept.get("copymove") or {}).get("config") or {})  # e.g. the default's scale_window: false
    experts = build_experts({"copymove": {"config": config}}, "copymove")
    scores = {}
    for key, spec, step in (("authentic_scores", args.authentic, args.every), ("tampered_scores", args.forged, 1)):
        records = load_evaluation_records(spec)[::step]
        values = []
        for i, rec in enumerate(records):
            values.append(round(expert_maps(experts, read_image(rec.image), "cpu")["copymove"][1], 5))
            print(f"{key} {i + 1}/{len(records)} {values[-1]:.3f}", flush=True)
        scores[key] = sorted(values)
    attach_experts(args.checkpoint, args.out, kept | {"copymove": {"config": config, "image": scores}})
    n_au = len(scores["authentic_scores"])
    print(f"{args.out}: copymove attached; {sum(s > 0.5 for s in scores['authentic_scores'])}/{n_au} authentic and "
          f"{sum(s > 0.5 for s in scores['tampered_scores'])}/{len(scores['tampered_scores'])} forged val photos fire")


if __name__ == "__main__":
    main()
