"""SegFormer building blocks (Xie et al., NeurIPS 2021; NVlabs code): efficient self-attention with spatial
reduction through ``F.scaled_dot_product_attention``, Mix-FFN and stochastic depth. Attribute names follow the
NVlabs code, so official state dicts load without renaming."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or when ``p == 0``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EfficientSelfAttention(nn.Module):
    """Queries from all N tokens; keys/values from a map reduced by a stride-``sr`` conv + LayerNorm.

    ``attn_mask`` (bool, True = may attend, or additive float) broadcastable to ``B×heads×N_q×N_kv``
    is passed straight to SDPA, so masked variants (NFA-ViT) stay on the fused kernel.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 sr_ln_eps: float = 1e-5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_ln_eps)

    def kv_grid(self, H: int, W: int) -> tuple[int, int]:
        """Size of the reduced key/value grid for an ``H×W`` token grid."""
        if self.sr_ratio > 1:
            return H // self.sr_ratio, W // self.sr_ratio
        return H, W

    def qkv(self, x: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head-split ``q`` (B×h×N×d), ``k`` and ``v`` (B×h×N_kv×d)."""
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(B, C, H, W)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]

    def forward(self, x: torch.Tensor, H: int, W: int, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x, H, W)
        if attn_mask is not None and attn_mask.is_floating_point() and attn_mask.dtype != q.dtype:
            attn_mask = attn_mask.to(q.dtype)  # an additive mask built in float32 under autocast
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))

    def attention_probs(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Explicit ``softmax(QKᵀ/√d)`` (B×h×N_q×N_kv), for methods that read the attention map."""
        q, k, _ = self.qkv(x, H, W)
        return torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)


class DWConv(nn.Module):
    """Depth-wise 3×3 conv on the token grid (key ``dwconv.dwconv`` as in NVlabs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear C→rC, depth-wise 3×3 conv, GELU, Linear rC→C."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))
