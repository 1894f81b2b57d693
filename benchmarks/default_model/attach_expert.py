"""Fuse a weight-free deciding expert (the dense-field copy-move expert, the JPEG-lattice expert) into a checkpoint,
with its validation scores (docs/MODELS.md, "Default model"): the scores give the false-alarm and miss rates that
`predict` reports when the expert decides a verdict. The checkpoint's other experts, and the expert's own config if
it has one (e.g. the default's copy-move `scale_window: false`), are kept.

    python benchmarks/default_model/attach_expert.py copymove --checkpoint CKPT.safetensors \
        --authentic configs/default-model/val_photos.json --every 7 --forged CM_VAL/list.json --out FUSED.safetensors
    python benchmarks/default_model/attach_expert.py jpeglattice --checkpoint CKPT.safetensors \
        --authentic configs/default-model/val_photos.json --authentic ../shared/data/casia1/val.json \
        --authentic SYN_VAL/list.json --forged ../shared/data/casia1/val.json --forged SYN_VAL/list.json \
        --out FUSED.safetensors

CM_VAL: `python benchmarks/copymove/make_set.py configs/default-model/val_photos.json CM_VAL --seed 2 --n 40`.
A list gives its authentic entries to ``--authentic`` and its forgeries to ``--forged``.
"""
from __future__ import annotations

import argparse

from tamperscope.checkpoint import read_checkpoint_config
from tamperscope.data.datasets import load_evaluation_records
from tamperscope.engine.experts import EXPERTS_KEY, attach_experts, build_experts, expert_maps
from tamperscope.io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("expert", help="registered name of a weight-free expert that decides (not an evidence expert)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--authentic", action="append", required=True,
                    help="validation photos, never used for training or testing (repeatable)")
    ap.add_argument("--forged", action="append", required=True, help="validation forgeries (repeatable)")
    ap.add_argument("--every", type=int, default=1, help="use every k-th authentic photo (CPU time)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    kept = dict(read_checkpoint_config(args.checkpoint).get(EXPERTS_KEY) or {})
    config = dict((kept.get(args.expert) or {}).get("config") or {})
    experts = build_experts({args.expert: {"config": config}}, args.expert)
    if experts[args.expert][0].evidence:
        raise SystemExit(f"{args.expert} is an evidence expert: it never decides, so it has no scores to attach")
    scores = {}
    for key, specs, step, authentic in (("authentic_scores", args.authentic, args.every, True),
                                        ("tampered_scores", args.forged, 1, False)):
        records = [r for spec in specs for r in load_evaluation_records(spec) if (r.mask is None) == authentic][::step]
        values = []
        for i, rec in enumerate(records):
            values.append(round(expert_maps(experts, read_image(rec.image), "cpu")[args.expert][1], 5))
            print(f"{key} {i + 1}/{len(records)} {values[-1]:.3f}", flush=True)
        scores[key] = sorted(values)
    attach_experts(args.checkpoint, args.out, kept | {args.expert: {"config": config, "image": scores}})
    n_au = len(scores["authentic_scores"])
    print(f"{args.out}: {args.expert} attached; {sum(s > 0.5 for s in scores['authentic_scores'])}/{n_au} authentic "
          f"and {sum(s > 0.5 for s in scores['tampered_scores'])}/{len(scores['tampered_scores'])} forged val photos "
          "fire")


if __name__ == "__main__":
    main()
