"""Helpers shared by the side-by-side benchmarks (``vs_transformers.py``, ``vs_official.py``): wall-clock timing
of one call, interleaved A/B rounds, medians, per-round ("paired") ratios, parameter counts and a description of
the machine with its load average.

Why paired ratios: on a shared machine the load changes from second to second. Running the implementations in
the same round, one right after the other (and in alternating order, so neither always runs first), exposes both
to nearly the same load; the median of the per-round ratios is then far steadier than the ratio of two medians.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds one call of ``fn`` takes (CUDA work is synchronised before and after)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """Median over rounds of ``ours[i] / theirs[i]`` (both timed in round i)."""
    if len(ours) != len(theirs):
        raise ValueError(f"paired_ratio needs one time per round on each side, got {len(ours)} and {len(theirs)}")
    if not ours:
        raise ValueError("paired_ratio of no rounds")
    return statistics.median(o / t for o, t in zip(ours, theirs))


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1,
                device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Times every function once per round for ``warmup + rounds`` rounds, the order reversed in every other round
    (A B, B A, A B, …); the warm-up rounds are dropped. Returns ``{name: [seconds per kept round]}``."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"interleaved needs rounds >= 1 and warmup >= 0, got {rounds} and {warmup}")
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            t = timed(fns[n], device)
            if r >= warmup:
                times[n].append(t)
    return times


def param_count(module: torch.nn.Module) -> int:
    """All parameters, trainable or frozen, each shared tensor once."""
    return sum(p.numel() for p in module.parameters())


def load_average() -> tuple[float, float, float] | None:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one, else the platform's name for it)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, logical CPUs and the threads torch uses."""
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"
