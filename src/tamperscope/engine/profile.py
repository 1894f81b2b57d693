"""Complexity and speed profiling of a registered model: parameters, GMACs, latency, throughput, peak memory (the
measurements themselves: :mod:`tamperscope.complexity`)."""
from __future__ import annotations

import resource
import warnings

import torch

from ..complexity import count_gmacs, count_gmacs_split, count_parameters, time_forward
from ..registry import create_model, get_entry
from ..sizes import DEFAULT_IMAGE_SIZE, check_image_size
from .distributed import resolve_device

#: numbers the papers report, shown beside our measurements (FRD-Net Table 2, DiffIML Table 4)
PAPER_COMPLEXITY = {
    "frdnet": {"params_m": 39.0, "gmacs": 25.6, "source": "FRD-Net Table 2"},
    "diffiml": {"params_m": 48.51, "gmacs": 53.01, "fps": 69.48, "source": "DiffIML Table 4 (RTX 3090, N=1)"},
    "SparseViT": {"params_m": 50.3, "gmacs": 41.5, "source": "FRD-Net Table 2"},
    "Mesorch": {"params_m": 82.7, "gmacs": 145.9, "source": "FRD-Net Table 2"},
    "TruFor": {"params_m": 68.7, "gmacs": 221.8, "source": "FRD-Net Table 2"},
    "MVSS-Net": {"params_m": 142.7, "gmacs": 163.5, "source": "FRD-Net Table 2"},
}


def meta_complexity(name: str, image_size: int = DEFAULT_IMAGE_SIZE, with_gmacs: bool = True, **overrides) -> dict:
    """Parameters and GMACs computed on the meta device (no weights materialised, no arithmetic). Construction
    warnings (e.g. about weights not given) are not shown: nothing here trains or predicts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                model = create_model(name, **overrides).eval()
        except Exception:  # a constructor that reads tensor values: build on the CPU, count params only
            model = create_model(name, **overrides).eval()
            with_gmacs = False
    total, trainable = count_parameters(model)
    out = {"params_m": total / 1e6, "trainable_params_m": trainable / 1e6, "gmacs": None}
    try:
        if with_gmacs:
            out["gmacs"] = count_gmacs(model, image_size, device="meta")
    except Exception as exc:  # an op without a meta kernel: GMACs need `profile` on a real device
        out["gmacs_error"] = f"{type(exc).__name__}: run `tamperscope profile {name}` on a real device"
    return out


def profile_model(name: str, image_size: int = DEFAULT_IMAGE_SIZE, batch_size: int = 1, device: str = "cpu",
                  warmup: int = 1, iters: int = 3, best_batch: bool = False, autocast: bool = True, model=None,
                  on_stage=None, **overrides) -> dict:
    """Profile a registered model (or a given instance). Returns flat keys: ``params_m``,
    ``trainable_params_m``, ``gmacs``, ``latency_ms`` (batch 1), ``images_per_s`` (at ``batch_size``, or the
    best of 1, 2, 4, … when ``best_batch``), ``best_batch_size``, ``peak_mem_mb``, plus model extras.
    ``on_stage(text, done, total)``, when given, is called before each stage (progress for the command)."""
    check_image_size(image_size)
    dev = resolve_device(device)
    sizes = [batch_size]
    if best_batch:
        sizes = [1, 2, 4, 8, 16, 32] if dev.type == "cuda" else [1, 2, 4]
    total_stages = 4 + len(sizes)
    stage = iter(range(total_stages))

    def report(text: str) -> None:
        if on_stage is not None:
            on_stage(text, next(stage), total_stages)

    report("building the model")
    entry = get_entry(name) if model is None else None
    if model is None:
        model = create_model(name, **overrides)
    model = model.to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(dev)
    total, trainable = count_parameters(model)
    report("counting GMACs")
    gmacs, attention_gmacs = count_gmacs_split(model, image_size, dev)
    report("timing batch 1")
    latency = time_forward(model, 1, image_size, dev, warmup, iters, autocast)
    result = {"model": name, "device": str(dev), "image_size": image_size, "params_m": total / 1e6,
              "trainable_params_m": trainable / 1e6, "gmacs": gmacs,
              "gmacs_excl_attention": gmacs - attention_gmacs, "latency_ms": latency * 1e3}
    best = (1 / latency, 1)
    for bs in sizes:
        report(f"throughput at batch {bs}")
        try:
            t = time_forward(model, bs, image_size, dev, warmup, iters, autocast)
        except torch.OutOfMemoryError:
            break
        best = max(best, (bs / t, bs))
    result["images_per_s"], result["best_batch_size"] = best
    if dev.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:  # process-wide peak resident set size (Linux reports KiB)
        result["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report("model extras")
    result.update(model.profile_extras(image_size=image_size, device=dev))
    if entry is not None and name in PAPER_COMPLEXITY:
        result.update({f"paper_{k}": v for k, v in PAPER_COMPLEXITY[name].items()})
    return result
