"""Generation time of DiffForensics' fractal Simplex noise (paper 003 §3.1, AnoDDPM) for one training batch.

    .venv/bin/python benchmarks/simplex_noise.py [--batch 16] [--size 512] [--repeats 3] [--threads N]
                                                 [--device cpu|cuda|all] [--per-sample-z] [--json]

Reports the median wall time per batch (B×3×S×S, ν = 2⁻⁶, N = 6, γ = 0.8, float32) on the CPU and, when
available, on CUDA. ``--per-sample-z`` slices each sample at its own z (AnoDDPM's z = t), which costs one
geometry pass per sample instead of one per batch. Not run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from tamperscope.backbones.simplex import simplex_noise


def time_generation(device: str, batch: int, size: int, repeats: int, per_sample_z: bool) -> dict:
    generator = torch.Generator(device=device).manual_seed(0)
    z = torch.randint(1, 1001, (batch,), device=device).float() if per_sample_z else None

    def once() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        noise = simplex_noise((batch, 3, size, size), z=z, generator=generator, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        assert noise.shape == (batch, 3, size, size) and torch.isfinite(noise).all()
        return elapsed

    once()  # warm-up (allocator, CUDA context)
    times = [once() for _ in range(repeats)]
    out = {"device": device, "batch": batch, "size": size, "per_sample_z": per_sample_z,
           "median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}
    if device == "cpu":
        out["threads"] = torch.get_num_threads()
        out["load_avg_1min"] = os.getloadavg()[0]
    else:
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--per-sample-z", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("CUDA is not available")
        devices.remove("cuda")
    for device in devices:
        result = time_generation(device, args.batch, args.size, args.repeats, args.per_sample_z)
        if args.json:
            print(json.dumps(result))
        else:
            extra = (f"{result['threads']} threads, load {result['load_avg_1min']:.1f}" if device == "cpu"
                     else result["gpu"])
            print(f"{device}: {args.batch}x3x{args.size}x{args.size} simplex noise: median "
                  f"{result['median_s']:.3f} s, min {result['min_s']:.3f} s over {args.repeats} ({extra})")


if __name__ == "__main__":
    main()
