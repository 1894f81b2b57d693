"""Measuring a model: parameters, GMACs of one forward pass and median latency (used by ``tamperscope profile``
and by models that report extra figures, e.g. DiffIML's denoiser cost).

GMACs are multiply-accumulates: ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs (2 per MAC) of
matmuls, convolutions and SDPA; we divide by 2. PyTorch's counter has no formula for the CPU flash-attention
kernel, so on the CPU it silently leaves attention out (the GPU kernels are counted); we register the standard
SDPA formula for it so the count is the same on every device. ``gmacs_excl_attention`` reports the count
without the attention matmuls (what a bare CPU FlopCounterMode run prints, and what some papers quote).
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .inference import autocast_for


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def _cpu_flash_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


_ATTENTION_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")


def count_gmacs_split(model: torch.nn.Module, image_size: int, device: str | torch.device = "cpu",
                      forward=None) -> tuple[float, float]:
    """(GMACs of one forward pass on a ``1×3×S×S`` input, the part spent in attention matmuls)."""
    x = torch.randn(1, 3, image_size, image_size, device=device)
    mapping = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_sdpa_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.no_grad(), counter:
        (forward or model)(x)
    counts = counter.get_flop_counts().get("Global", {})
    total = sum(counts.values())
    attention = sum(v for k, v in counts.items() if any(op in str(k) for op in _ATTENTION_OPS))
    if device == "meta" or getattr(device, "type", None) == "meta":  # meta decomposes SDPA into bmm
        attention += counts.get(torch.ops.aten.bmm, 0)
    return total / 2e9, attention / 2e9


def count_gmacs(model: torch.nn.Module, image_size: int, device: str | torch.device = "cpu") -> float:
    """GMACs of one forward pass on a ``1×3×S×S`` input (attention included)."""
    return count_gmacs_split(model, image_size, device)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model, batch_size: int, image_size: int, device: torch.device, warmup: int, iters: int,
                 autocast: bool) -> float:
    """Median seconds per forward call."""
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = autocast_for(device) if autocast else nullcontext()
    times = []
    with torch.inference_mode(), ctx:
        for i in range(warmup + iters):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
