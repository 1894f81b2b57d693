"""Masked autoencoder ViT (He et al., CVPR 2022), encoder + decoder (FAIR facebookresearch/mae and HF
``ViTMAEForPreTraining`` layouts).

Own implementation with FAIR-style block names (``blocks.{i}.attn.qkv`` …) under ``encoder.`` and
``decoder.``; :func:`load_mae_weights` reads the FAIR ``mae_visualize_vit_*.pth`` layout and the HF
``ViTMAEForPreTraining`` layout (split q/k/v). Details that matter for checkpoint compatibility:

* The 2-D sin-cos position tables are fixed, never learned: they are regenerated for whatever patch grid
  the input has (224 → 14×14, 512 → 32×32) and kept as non-persistent buffers, so a state dict holds no
  table and loads at any resolution. Layout as FAIR's ``get_2d_sincos_pos_embed`` (first half encodes the
  column index, second half the row index; CLS row zero); HF rotates its table to the same layout.
* Masking as MAE/HF: argsort a per-token noise, keep the first ``⌊N(1−ratio)⌋`` tokens, ``ids_restore`` is
  the inverse permutation; ``mask`` is 1 on removed tokens. An explicit ``noise`` (or ``ids_keep``) makes
  it deterministic.
* Per-patch pixel vectors are ordered (p, q, c): patch row, patch column, channel.
* LayerNorm eps 1e-6 (FAIR); HF's config default is 1e-12, set ``ln_eps`` to match a given HF config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import read_state_dict
from ..errors import UserError
from ..nn.mlp import Mlp

MAE_CONFIGS: dict[str, dict] = {
    "vit-large-16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                         decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    "vit-base-16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    # for tests and modest hardware (a realness prior trainable on a CPU in minutes)
    "small": dict(patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0,
                  decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    # unit tests only
    "tiny": dict(patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                 decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
}


def sincos_pos_embed_2d(grid_h: int, grid_w: int, dim: int, cls_token: bool = True,
                        device: torch.device | None = None) -> torch.Tensor:
    """FAIR MAE 2-D sin-cos table, ``(cls + grid_h·grid_w)×dim`` in row-major patch order.

    Each half of the channels is a 1-D table ``[sin(pos·ω), cos(pos·ω)]`` with ``ω_k = 10000^(−k/(dim/4))``;
    the first half uses the column index, the second the row index (FAIR's meshgrid order).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64, device=device),
                                torch.arange(grid_w, dtype=torch.float64, device=device), indexing="ij")
    by_col = cols.flatten()[:, None] * omega[None]
    by_row = rows.flatten()[:, None] * omega[None]
    table = torch.cat([by_col.sin(), by_col.cos(), by_row.sin(), by_row.cos()], dim=1)
    if cls_token:
        table = torch.cat([table.new_zeros(1, dim), table], dim=0)
    return table.float()


def masking_from_noise(noise: torch.Tensor, len_keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE random masking: ``(ids_keep B×K, mask B×N with 1 = removed, ids_restore B×N)``."""
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    mask = torch.ones_like(noise)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :len_keep], mask, ids_restore


def noise_from_keep_indices(ids_keep: torch.Tensor, num_patches: int) -> torch.Tensor:
    """A noise whose argsort lists ``ids_keep`` first (in the given order), then the rest ascending."""
    B, K = ids_keep.shape
    noise = torch.arange(num_patches, device=ids_keep.device, dtype=torch.float32).expand(B, -1) + num_patches
    noise.scatter_(1, ids_keep, torch.arange(K, device=ids_keep.device, dtype=torch.float32).expand(B, -1))
    return noise


def complementary_noise(num_patches: int, groups: int = 4, batch: int = 1,
                        generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Noise for the complementary masking of IFA-Net (paper 000 §3.2; scheme: resolved choice),
    ``(groups·batch)×N``, pass-major.

    The patches of each image are split at random into ``groups`` equal groups; pass ``g`` keeps group
    ``g`` visible, so with ratio ``1 − 1/groups`` every patch is masked in exactly ``groups − 1`` passes.
    """
    if num_patches % groups:
        raise UserError(f"complementary masking needs a patch count divisible by {groups}, got {num_patches}")
    perm = torch.argsort(torch.rand(batch, num_patches, generator=generator), dim=1)
    group_of = torch.empty_like(perm)
    group_of.scatter_(1, perm, torch.arange(num_patches).expand(batch, -1) // (num_patches // groups))
    jitter = torch.rand(batch, num_patches, generator=generator) * 0.5
    passes = [((group_of - g) % groups).float() + jitter for g in range(groups)]
    return torch.cat(passes, dim=0).to(device)


class ViTAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` linear (timm/FAIR names), through SDPA."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN x)``, then ``x + MLP(LN x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ln_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass
class MAEEncoderOutput:
    tokens: torch.Tensor       # B×(1+K)×D, CLS first, visible tokens in shuffled order, after the final norm
    mask: torch.Tensor         # B×N, 1 = removed
    ids_restore: torch.Tensor  # B×N
    grid: tuple[int, int]      # patch grid (rows, cols)


class _SinCosTable(nn.Module):
    """Holds the table for the default grid as a non-persistent buffer; tables for other grids are generated
    on first use and memoised (a few entries, never saved)."""

    def __init__(self, grid: int, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("pos_embed", sincos_pos_embed_2d(grid, grid, dim)[None], persistent=False)
        self._grid = (grid, grid)
        self._other: dict[tuple, torch.Tensor] = {}

    def table(self, grid_h: int, grid_w: int, like: torch.Tensor) -> torch.Tensor:
        if (grid_h, grid_w) == self._grid:
            return self.pos_embed.to(like.dtype)
        key = (grid_h, grid_w, like.device, like.dtype)
        if key not in self._other:
            if len(self._other) >= 8:
                self._other.clear()
            self._other[key] = sincos_pos_embed_2d(grid_h, grid_w, self.dim, device=like.device)[None].to(like.dtype)
        return self._other[key]


class MAEEncoder(nn.Module):
    """ViT encoder of MAE (FAIR facebookresearch/mae): patch embedding + sin-cos positions, masking, CLS, blocks, final LN."""

    def __init__(self, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 img_size: int = 224, in_chans: int = 3, ln_eps: float = 1e-6):
        super().__init__()
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos = _SinCosTable(img_size // patch_size, embed_dim)
        self.blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads, mlp_ratio, ln_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise UserError(f"MAE input {H}×{W} is not a multiple of the patch size {self.patch_size}")
        return H // self.patch_size, W // self.patch_size

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, mask_ratio: float = 0.75,
                ids_keep: torch.Tensor | None = None) -> MAEEncoderOutput:
        """Encode ``x`` (ImageNet-normalised). Masking from ``noise`` (B×N) with ``mask_ratio``, from explicit
        ``ids_keep`` (B×K), or — with neither and ``mask_ratio == 0`` — no masking and no shuffling;
        with neither and a positive ratio, fresh uniform noise (training)."""
        gh, gw = self.grid(x)
        num = gh * gw
        tokens = self.patch_embed(x)
        table = self.pos.table(gh, gw, tokens)
        tokens = tokens + table[:, 1:]
        B = tokens.shape[0]
        if ids_keep is not None:
            noise, len_keep = noise_from_keep_indices(ids_keep, num), ids_keep.shape[1]
        else:
            len_keep = int(num * (1 - mask_ratio))
            if noise is None and mask_ratio > 0:
                noise = torch.rand(B, num, device=x.device)
        if noise is None:
            mask = tokens.new_zeros(B, num)
            ids_restore = torch.arange(num, device=x.device).expand(B, -1)
        else:
            ids_keep, mask, ids_restore = masking_from_noise(noise.to(x.device), len_keep)
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (self.cls_token + table[:, :1]).expand(B, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return MAEEncoderOutput(self.norm(tokens), mask, ids_restore, (gh, gw))


class MAEDecoder(nn.Module):
    """MAE decoder (FAIR facebookresearch/mae): embed to the decoder width, insert mask tokens, unshuffle, add sin-cos
    positions, blocks, LN, linear to ``p²·c`` pixel values per patch (ImageNet-normalised)."""

    def __init__(self, encoder_dim: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, img_size: int = 224, out_chans: int = 3, ln_eps: float = 1e-6):
        super().__init__()
        self.patch_size, self.out_chans = patch_size, out_chans
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos = _SinCosTable(img_size // patch_size, embed_dim)
        self.blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads, mlp_ratio, ln_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.pred = nn.Linear(embed_dim, patch_size * patch_size * out_chans)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``tokens`` B×(1+K)×D from the encoder → per-patch pixels ``B×N×(p·p·c)`` (CLS removed)."""
        x = self.embed(tokens)
        B, N = ids_restore.shape
        filler = self.mask_token.expand(B, N + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], filler], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos.table(grid[0], grid[1], x)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``B×C×H×W`` → ``B×N×(p·p·C)`` in (p, q, c) order."""
    B, C, H, W = images.shape
    gh, gw = H // patch_size, W // patch_size
    x = images.reshape(B, C, gh, patch_size, gw, patch_size).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, gh * gw, patch_size * patch_size * C)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``B×N×(p·p·C)`` → ``B×C×(gh·p)×(gw·p)``."""
    B = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(B, gh, gw, patch_size, patch_size, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, gh * patch_size, gw * patch_size)


class MaskedAutoencoder(nn.Module):
    """ViT-MAE encoder + decoder; ``variant`` is a key of :data:`MAE_CONFIGS`. ``img_size`` only sets the
    grid of the cached position tables — any input whose sides are multiples of the patch size works."""

    def __init__(self, variant: str = "vit-large-16", img_size: int = 224, in_chans: int = 3, ln_eps: float = 1e-6):
        super().__init__()
        if variant not in MAE_CONFIGS:
            raise UserError(f"unknown MAE variant '{variant}' (known: {', '.join(MAE_CONFIGS)})")
        cfg = MAE_CONFIGS[variant]
        self.variant = variant
        self.patch_size = cfg["patch_size"]
        self.in_chans = in_chans
        self.encoder = MAEEncoder(cfg["patch_size"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"],
                                  cfg["mlp_ratio"], img_size, in_chans, ln_eps)
        self.decoder = MAEDecoder(cfg["embed_dim"], cfg["patch_size"], cfg["decoder_embed_dim"], cfg["decoder_depth"],
                                  cfg["decoder_num_heads"], cfg["mlp_ratio"], img_size, in_chans, ln_eps)
        self.apply(_init_weights)
        w = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, mask_ratio: float = 0.75
                ) -> tuple[torch.Tensor, torch.Tensor, MAEEncoderOutput]:
        """``(per-patch prediction B×N×(p·p·c), mask B×N, encoder output)``."""
        enc = self.encoder(x, noise=noise, mask_ratio=mask_ratio)
        return self.decoder(enc.tokens, enc.ids_restore, enc.grid), enc.mask, enc

    def reconstruction_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                            norm_pix_loss: bool = False) -> torch.Tensor:
        """MAE loss: per-patch MSE to the (optionally per-patch normalised) pixels, mean over removed patches."""
        target = patchify(x, self.patch_size)
        if norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        per_patch = ((pred.float() - target.float()) ** 2).mean(-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1)

    def unpatchify(self, pred: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return unpatchify(pred, self.patch_size, grid, self.in_chans)


def _init_weights(m: nn.Module) -> None:
    """FAIR MAE initialisation: xavier-uniform linears with zero bias, LayerNorm (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------ weight loading

_FAIR_TOP = {"cls_token": "encoder.cls_token", "patch_embed.proj.weight": "encoder.patch_embed.proj.weight",
             "patch_embed.proj.bias": "encoder.patch_embed.proj.bias", "norm.weight": "encoder.norm.weight",
             "norm.bias": "encoder.norm.bias", "mask_token": "decoder.mask_token",
             "decoder_embed.weight": "decoder.embed.weight", "decoder_embed.bias": "decoder.embed.bias",
             "decoder_norm.weight": "decoder.norm.weight", "decoder_norm.bias": "decoder.norm.bias",
             "decoder_pred.weight": "decoder.pred.weight", "decoder_pred.bias": "decoder.pred.bias"}
_FAIR_POS = {"pos_embed": "encoder", "decoder_pos_embed": "decoder"}

_HF_TOP = {"vit.embeddings.cls_token": "encoder.cls_token",
           "vit.embeddings.patch_embeddings.projection.weight": "encoder.patch_embed.proj.weight",
           "vit.embeddings.patch_embeddings.projection.bias": "encoder.patch_embed.proj.bias",
           "vit.layernorm.weight": "encoder.norm.weight", "vit.layernorm.bias": "encoder.norm.bias",
           "decoder.mask_token": "decoder.mask_token",
           "decoder.decoder_embed.weight": "decoder.embed.weight", "decoder.decoder_embed.bias": "decoder.embed.bias",
           "decoder.decoder_norm.weight": "decoder.norm.weight", "decoder.decoder_norm.bias": "decoder.norm.bias",
           "decoder.decoder_pred.weight": "decoder.pred.weight", "decoder.decoder_pred.bias": "decoder.pred.bias"}
_HF_POS = {"vit.embeddings.position_embeddings": "encoder", "decoder.decoder_pos_embed": "decoder"}
# block-internal names: the hub files' layout (transformers < 5) and the transformers >= 5 module layout
_HF_BLOCK = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.output.dense": "attn.proj",
             "attention.o_proj": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_HF_QKV = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
           ("attention.q_proj", "attention.k_proj", "attention.v_proj"))
_HF_BLOCK_PREFIXES = {"vit.encoder.layer.": "encoder.blocks.", "vit.layers.": "encoder.blocks.",
                      "decoder.decoder_layers.": "decoder.blocks."}


def _check_pos_table(value: torch.Tensor, dim: int, key: str, source: str) -> None:
    """A stored table is ignored, but only after checking it is a sin-cos table of a square grid."""
    value = value.reshape(-1, value.shape[-1]).float()
    side = math.isqrt(value.shape[0] - 1)
    if value.shape[-1] != dim or side * side != value.shape[0] - 1:
        raise UserError(f"{source}: '{key}' has shape {tuple(value.shape)}, not (1+g²)×{dim} for a square grid")
    if value.abs().max() > 0 and (value - sincos_pos_embed_2d(side, side, dim)).abs().max() > 1e-3:
        raise UserError(f"{source}: '{key}' is not the fixed 2-D sin-cos table (learned positions are unsupported)")


def convert_mae_state_dict(sd: dict[str, torch.Tensor], model: MaskedAutoencoder, source: str = "state dict"
                           ) -> dict[str, torch.Tensor]:
    """FAIR or HF MAE keys → this module's keys (position tables checked and dropped)."""
    enc_dim, dec_dim = model.encoder.embed_dim, model.decoder.embed.out_features
    dims = {"encoder": enc_dim, "decoder": dec_dim}
    out: dict[str, torch.Tensor] = {}
    if any(k.startswith("vit.") for k in sd):
        qkv_parts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
        for key, value in sd.items():
            if key in _HF_POS:
                _check_pos_table(value, dims[_HF_POS[key]], key, source)
            elif key in _HF_TOP:
                out[_HF_TOP[key]] = value
            else:
                hf_pre = next((p for p in _HF_BLOCK_PREFIXES if key.startswith(p)), None)
                if hf_pre is None:
                    continue
                idx, name = key[len(hf_pre):].split(".", 1)
                block = f"{_HF_BLOCK_PREFIXES[hf_pre]}{idx}."
                module, part = name.rsplit(".", 1)
                for names in _HF_QKV:
                    if module in names:
                        qkv_parts.setdefault((block, part), {})[names.index(module)] = value
                if module in _HF_BLOCK:
                    out[f"{block}{_HF_BLOCK[module]}.{part}"] = value
        for (block, part), pieces in qkv_parts.items():
            if len(pieces) == 3:
                out[f"{block}attn.qkv.{part}"] = torch.cat([pieces[0], pieces[1], pieces[2]], dim=0)
    else:
        for key, value in sd.items():
            if key in _FAIR_POS:
                _check_pos_table(value, dims[_FAIR_POS[key]], key, source)
            elif key in _FAIR_TOP:
                out[_FAIR_TOP[key]] = value
            elif key.startswith("blocks."):
                out["encoder." + key] = value
            elif key.startswith("decoder_blocks."):
                out["decoder.blocks." + key[len("decoder_blocks."):]] = value
    return out


def load_mae_weights(model: MaskedAutoencoder, path_or_state_dict, require_decoder: bool = True) -> None:
    """Load FAIR (``mae_visualize_vit_large.pth``) or HF (``ViTMAEForPreTraining``) weights into ``model``.

    Raises one :class:`UserError` naming the file and the first missing keys or shape mismatches; an
    encoder-only file (``mae_pretrain_vit_*.pth``) is rejected when ``require_decoder`` is set, because the
    realness prior needs the decoder.
    """
    source = "state dict" if isinstance(path_or_state_dict, dict) else str(path_or_state_dict)
    sd = read_state_dict(path_or_state_dict)
    converted = convert_mae_state_dict(sd, model, source)
    own = model.state_dict()
    expected = [k for k in own if require_decoder or k.startswith("encoder.")]
    missing = [k for k in expected if k not in converted]
    if missing:
        hint = " (an encoder-only checkpoint: use one with the decoder, e.g. mae_visualize_vit_large.pth)" \
            if all(k.startswith("decoder.") for k in missing) else ""
        raise UserError(f"{source}: {len(missing)} MAE weights missing, e.g. {', '.join(missing[:3])}{hint}")
    bad = [f"{k} {tuple(v.shape)}≠{tuple(own[k].shape)}" for k, v in converted.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise UserError(f"{source}: MAE weight shapes do not match the '{model.variant}' config: {'; '.join(bad[:3])}")
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
