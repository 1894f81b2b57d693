"""Add the aligned double-JPEG evidence expert to a fused checkpoint, keeping its other experts (docs/MODELS.md,
"Default model"): ``--weight`` and ``--offset`` are the expert's config in the fused default, chosen on validation
data (the table in MODELS.md).

    python benchmarks/default_model/attach_doublejpeg.py --checkpoint CKPT.safetensors --weight 2 --offset 0.5 \
        --out FUSED.safetensors
"""
from __future__ import annotations

import argparse

from tamperscope.checkpoint import read_checkpoint_config
from tamperscope.engine.experts import EXPERTS_KEY, attach_experts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--weight", type=float, required=True, help="scale of the block log-likelihood ratio")
    ap.add_argument("--offset", type=float, default=0.0, help="log-odds added where the photo shows double JPEG")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    experts = dict(read_checkpoint_config(args.checkpoint).get(EXPERTS_KEY) or {})
    experts["doublejpeg"] = {"config": {"weight": args.weight, "offset": args.offset}}
    attach_experts(args.checkpoint, args.out, experts)
    print(f"{args.out}: experts {', '.join(experts)}")


if __name__ == "__main__":
    main()
