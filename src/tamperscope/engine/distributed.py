"""Process-group helpers: the same code runs as one CPU process, or under ``torchrun`` (gloo on CPU,
NCCL on GPU) without changes."""
from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import UserError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device ``device`` names; ``None`` or ``auto``: CUDA when available, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device}: CUDA is not available on this machine")
    return dev


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return rank, world, dev


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def merge_validation_sums(sums: dict, counts: dict, flag: bool) -> tuple[dict, dict, bool]:
    """Per-key sums and image counts of every rank added up, and ``flag`` OR-ed (one object gather, so ranks
    whose shards reported different keys make the same collective calls)."""
    if not dist.is_initialized():
        return sums, counts, flag
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (sums, counts, flag))
    total_sums: dict = {}
    total_counts: dict = {}
    for s, c, _ in gathered:
        for k in s:
            total_sums[k] = total_sums.get(k, 0.0) + s[k]
            total_counts[k] = total_counts.get(k, 0) + c[k]
    return total_sums, total_counts, any(f for _, _, f in gathered)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, split across ranks (padded by repeating the first indices, as
    ``DistributedSampler`` does) and able to start mid-epoch, so a resumed run sees the same next batch."""

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world = rank, world_size
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(length / world_size) if length else 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        """``start_sample``: how many of this rank's samples of the epoch were already consumed."""
        self.epoch, self.start = epoch, start_sample

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world
        order += order[: total - len(order)]
        return order[self.rank:total:self.world]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
