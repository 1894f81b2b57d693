"""Attention masks of NFA-ViT (Cai, Wang et al., BR-Gen/NFA-ViT, paper 001 §4;
official code clpbc/BR-Gen ``Fix_Sparse_Attention``, after SparseViT in IMDL-BenCo).

All masks are boolean with ``True`` = "this query may attend to this key", the convention of
``F.scaled_dot_product_attention``, so the masked attention stays on the fused SDPA path.

* :func:`fix_sparse_mask` — the BR-Gen variant of SparseViT's Fix-Sparse attention on an efficient
  (spatially reduced) SegFormer attention: a query at grid cell (r, c) belongs to group
  ``(⌊r/sr⌋ mod s)·s + (⌊c/sr⌋ mod s)``, a key at reduced cell (kr, kc) to ``(kr mod s)·s + (kc mod s)``;
  attention across groups is removed. Generalised from the official square-only code to H ≠ W; a query
  window index beyond the reduced grid (inputs that are not multiples of 32) is clamped to the last
  key row/column so that every query keeps at least its own window's key.
* :func:`noise_guided_mask` — NAA's mask: for each query keep the ``k = max(1, ⌊N_kv·ratio⌋)`` keys with
  the *lowest* noise-branch attention probability (Top-k of −A), detached.
"""
from __future__ import annotations

import torch


def topk_count(n_kv: int, ratio: float) -> int:
    """Number of keys NAA keeps per query: ``max(1, ⌊n_kv·ratio⌋)`` (official ``int(n·ratio)``)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"top-k ratio must be in (0, 1], got {ratio}")
    return max(1, int(n_kv * ratio))


def _axis_groups(n: int, window: int, n_keys: int, sparse_rate: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis group index of the ``n`` query positions and of the ``n_keys`` key positions."""
    q_window = torch.div(torch.arange(n, device=device), window, rounding_mode="floor").clamp_max(n_keys - 1)
    return q_window % sparse_rate, torch.arange(n_keys, device=device) % sparse_rate


def fix_sparse_mask(q_grid: tuple[int, int], kv_grid: tuple[int, int], sr_ratio: int, sparse_rate: int,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Fix-Sparse mask ``N_q×N_kv`` (bool, row-major token order) for an ``H×W`` query grid and its
    ``H_k×W_k`` reduced key grid (``sr_ratio`` = spatial-reduction stride of the attention)."""
    (H, W), (Hk, Wk) = q_grid, kv_grid
    if sparse_rate < 1:
        raise ValueError(f"sparse rate must be >= 1, got {sparse_rate}")
    qr, kr = _axis_groups(H, sr_ratio, Hk, sparse_rate, device)
    qc, kc = _axis_groups(W, sr_ratio, Wk, sparse_rate, device)
    q_group = (qr[:, None] * sparse_rate + qc[None, :]).flatten()
    k_group = (kr[:, None] * sparse_rate + kc[None, :]).flatten()
    return q_group[:, None] == k_group[None, :]


@torch.no_grad()
def noise_guided_mask(attn_probs: torch.Tensor, ratio: float) -> torch.Tensor:
    """NAA mask from noise attention probabilities ``B×h×N_q×N_kv``: True on the k least-attended keys."""
    k = topk_count(attn_probs.shape[-1], ratio)
    idx = torch.topk(attn_probs.detach(), k, dim=-1, largest=False, sorted=False).indices
    mask = torch.zeros(attn_probs.shape, dtype=torch.bool, device=attn_probs.device)
    return mask.scatter_(-1, idx, True)
