"""Mix Transformer (MiT) encoders b0–b5, the SegFormer backbone (Xie et al., NeurIPS 2021; NVlabs code).

Own implementation with NVlabs attribute names (``patch_embed{i}``, ``block{i}``, ``norm{i}``), so
``mit_b*.pth`` state dicts load as they are; :func:`load_mit_weights` also reads the HF layout.

Attention runs through ``F.scaled_dot_product_attention``. Inputs may be any size; the stage grids are ceil(H/4),
then halved (rounding up) per stage, exactly as the strided convolutions produce.

Official layouts (:func:`load_mit_weights`, :func:`load_all_mlp_head_weights`): NVlabs/old-mmseg MiT
(``mit_b*.pth``; ADE ``segformer.b*.512x512.ade.160k.pth`` with ``backbone.`` / ``decode_head.`` prefixes) and HF
(``nvidia/mit-b*``, ``nvidia/segformer-b*-finetuned-ade-512-512``, split key/value).
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..checkpoint import format_key_report, read_state_dict, source_name
from ..errors import UserError
from ..nn.attention import DropPath, EfficientSelfAttention, MixFFN

MIT_CONFIGS: dict[str, dict] = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}
#: All-MLP decode-head width used with each variant (NVlabs SegFormer configs)
MIT_HEAD_DIMS = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


class OverlapPatchEmbed(nn.Module):
    """Strided conv (kernel 7/3, stride 4/2, padding k//2) then LayerNorm; returns tokens and grid size."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, ln_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=ln_eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class MiTBlock(nn.Module):
    """Pre-norm block: ``x + DropPath(Attn(LN x))`` then ``x + DropPath(MixFFN(LN x))``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 ln_eps: float = 1e-6, sr_ln_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, sr_ln_eps=sr_ln_eps)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W, attn_mask=attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class MixVisionTransformer(nn.Module):
    """Four-stage MiT encoder returning the feature pyramid at strides 4, 8, 16, 32.

    ``ln_eps`` is the block/stage LayerNorm epsilon: 1e-6 in NVlabs (default); the patch-embed and
    spatial-reduction norms use PyTorch's 1e-5 as in NVlabs. transformers' Segformer uses 1e-5 everywhere.
    """

    def __init__(self, variant: str = "b2", in_chans: int = 3, drop_path_rate: float = 0.1, ln_eps: float = 1e-6,
                 embed_dims: tuple[int, ...] | None = None, depths: tuple[int, ...] | None = None,
                 num_heads: tuple[int, ...] = (1, 2, 5, 8), sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
                 mlp_ratio: float = 4.0, patch_ln_eps: float = 1e-5):
        super().__init__()
        if variant not in MIT_CONFIGS:
            raise ValueError(f"unknown MiT variant '{variant}' (known: {', '.join(MIT_CONFIGS)})")
        if in_chans not in (1, 3):
            raise ValueError(f"MiT in_chans must be 1 or 3, got {in_chans}")
        cfg = MIT_CONFIGS[variant]
        self.variant = variant
        self.in_chans = in_chans
        self.embed_dims = tuple(embed_dims or cfg["embed_dims"])
        self.depths = tuple(depths or cfg["depths"])
        self.num_heads = tuple(num_heads)
        self.sr_ratios = tuple(sr_ratios)
        n_blocks = sum(self.depths)
        rates = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        kernels, strides = (7, 3, 3, 3), (4, 2, 2, 2)
        start = 0
        for i in range(4):
            prev = in_chans if i == 0 else self.embed_dims[i - 1]
            setattr(self, f"patch_embed{i + 1}",
                    OverlapPatchEmbed(prev, self.embed_dims[i], kernels[i], strides[i], ln_eps=patch_ln_eps))
            setattr(self, f"block{i + 1}", nn.ModuleList([
                MiTBlock(self.embed_dims[i], self.num_heads[i], self.sr_ratios[i], mlp_ratio,
                         rates[start + j], ln_eps=ln_eps, sr_ln_eps=patch_ln_eps)
                for j in range(self.depths[i])]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(self.embed_dims[i], eps=ln_eps))
            start += self.depths[i]
        self.apply(_init_weights)
        # Convolution weights channels-last: the token grid B×N×C seen as B×C×H×W is a channels-last view, so the
        # patch embeddings, spatial reductions and depth-wise convolutions read and write tokens without copies
        # (oneDNN picks the layout from the weight too; MixFFN at stage 1 of b2 at 512²: 1.8× faster, same maths).
        self.to(memory_format=torch.channels_last)

    def stage(self, i: int) -> tuple[OverlapPatchEmbed, nn.ModuleList, nn.LayerNorm]:
        """The modules of stage ``i`` (0-based): patch embedding, blocks, closing norm."""
        return getattr(self, f"patch_embed{i + 1}"), getattr(self, f"block{i + 1}"), getattr(self, f"norm{i + 1}")

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``i`` on the image (``i = 0``) or the previous stage's ``B×C×H×W`` map."""
        embed, blocks, norm = self.stage(i)
        tokens, H, W = embed(x)
        for blk in blocks:
            tokens = blk(tokens, H, W)
        return tokens_to_map(norm(tokens), H, W)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i in range(4):
            x = self.forward_stage(i, x)
            feats.append(x)
        return feats


def tokens_to_map(tokens: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``B×N×C`` tokens to a ``B×C×H×W`` map."""
    B, _, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, H, W)


def _init_weights(m: nn.Module) -> None:
    """NVlabs initialisation: trunc-normal(0.02) linears, LN (1, 0), fan-out normal convs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------
# official SegFormer / MiT layouts

_HF_BLOCK_RENAMES = (
    ("layer_norm_1.", "norm1."), ("layer_norm_2.", "norm2."),
    ("attention.self.query.", "attn.q."), ("attention.self.sr.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."), ("attention.output.dense.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."), ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."), ("mlp.dense2.", "mlp.fc2."),
)


def is_hf_segformer(sd: dict) -> bool:
    return any(".encoder.patch_embeddings." in k or k.startswith("encoder.patch_embeddings.") for k in sd)


def convert_hf_segformer(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF SegFormer keys → NVlabs keys (encoder keys unprefixed, head keys under ``decode_head.``).

    The split ``key``/``value`` projections are concatenated back into ``kv`` (key rows first)."""
    out: dict[str, torch.Tensor] = {}
    pending_kv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        k = re.sub(r"^(segformer\.)?encoder\.", "", key)
        if k.startswith("decode_head."):
            k = re.sub(r"^decode_head\.linear_c\.(\d+)\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}.", k)
            k = k.replace("decode_head.linear_fuse.", "decode_head.linear_fuse.conv.")
            k = k.replace("decode_head.batch_norm.", "decode_head.linear_fuse.bn.")
            k = k.replace("decode_head.classifier.", "decode_head.linear_pred.")
            out[k] = value
            continue
        if k.startswith("classifier."):
            out[k.replace("classifier.", "head.")] = value
            continue
        m = re.match(r"patch_embeddings\.(\d+)\.(.*)", k)
        if m:
            rest = m[2].replace("layer_norm.", "norm.")
            out[f"patch_embed{int(m[1]) + 1}.{rest}"] = value
            continue
        m = re.match(r"layer_norm\.(\d+)\.(.*)", k)
        if m:
            out[f"norm{int(m[1]) + 1}.{m[2]}"] = value
            continue
        m = re.match(r"block\.(\d+)\.(\d+)\.(.*)", k)
        if m:
            prefix, rest = f"block{int(m[1]) + 1}.{m[2]}.", m[3]
            kv = re.match(r"attention\.self\.(key|value)\.(weight|bias)", rest)
            if kv:
                pending_kv.setdefault(f"{prefix}attn.kv.{kv[2]}", {})[kv[1]] = value
                continue
            for old, new in _HF_BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            out[prefix + rest] = value
            continue
        out[key] = value  # unknown keys are kept so they are reported as unexpected
    for key, parts in pending_kv.items():
        if set(parts) != {"key", "value"}:
            raise UserError(f"HF SegFormer weights: {key} has only {', '.join(parts)}")
        out[key] = torch.cat([parts["key"], parts["value"]], dim=0)
    return out


def to_nvlabs_segformer(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported SegFormer layout → NVlabs names with the encoder under ``backbone.``."""
    if is_hf_segformer(sd):
        sd = convert_hf_segformer(sd)
        return {(k if k.startswith("decode_head.") or k.startswith("head.") else f"backbone.{k}"): v
                for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):
        return dict(sd)
    if any(k.startswith("block1.") or k.startswith("patch_embed1.") for k in sd):
        return {(k if k.startswith("head.") else f"backbone.{k}"): v for k, v in sd.items()}
    raise UserError("weights are neither NVlabs/mmseg nor HF SegFormer layout "
                    "(no patch_embed1.*, backbone.*, or segformer.encoder.* keys); convert mmseg ≥1.0 files offline")


def load_mit_weights(encoder: torch.nn.Module, source: Any, prefix: str | None = None,
                     name: str | None = None) -> dict:
    """Load MiT encoder weights (NVlabs, ADE ``backbone.``, or HF layout) into our ``MixVisionTransformer``.

    A 3-channel stem is averaged over input channels for a 1-channel encoder (clpbc/BR-Gen). Classifier
    and decode-head keys are ignored; any missing encoder key raises one readable error.
    Returns ``{"loaded": n, "ignored": [...], "adapted": [...]}``.
    """
    sd = read_state_dict(source)
    source = source_name(source, name)
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise UserError(f"{source}: no keys start with '{prefix}'")
    sd = to_nvlabs_segformer(sd)
    enc_sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    ignored = [k for k in sd if not k.startswith("backbone.")]
    adapted = []
    stem = "patch_embed1.proj.weight"
    own = encoder.state_dict()
    if stem in enc_sd and stem in own and enc_sd[stem].shape[1] != own[stem].shape[1]:
        if own[stem].shape[1] == 1 and enc_sd[stem].shape[1] == 3:
            enc_sd[stem] = enc_sd[stem].mean(dim=1, keepdim=True)
            adapted.append(f"{stem}: 3-channel stem averaged to 1 channel")
        else:
            raise UserError(f"{source}: stem has {enc_sd[stem].shape[1]} input channels, encoder expects "
                            f"{own[stem].shape[1]}")
    missing = [k for k in own if k not in enc_sd]
    unexpected = [k for k in enc_sd if k not in own]
    shape_bad = [f"{k} {tuple(enc_sd[k].shape)} vs {tuple(own[k].shape)}"
                 for k in own if k in enc_sd and enc_sd[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        msg = format_key_report(f"{source}: MiT weights do not fit a MiT-{getattr(encoder, 'variant', '?')} encoder",
                                missing, unexpected)
        if shape_bad:
            msg += f"; {len(shape_bad)} shape mismatch(es): " + ", ".join(shape_bad[:4])
        raise UserError(msg)
    encoder.load_state_dict(enc_sd, strict=True)
    return {"loaded": len(enc_sd), "ignored": ignored, "adapted": adapted}


def load_all_mlp_head_weights(head: torch.nn.Module, source: Any, keep_classifier: bool = False,
                              name: str | None = None) -> dict:
    """Load an ADE SegFormer decode head (NVlabs or HF layout) into :class:`~tamperscope.nn.heads.AllMLPHead`.

    ``linear_c*`` and ``linear_fuse`` are kept; the 150-class ``linear_pred`` is skipped unless
    ``keep_classifier`` and the shapes fit."""
    sd = to_nvlabs_segformer(read_state_dict(source))
    source = source_name(source, name)
    head_sd = {k[len("decode_head."):]: v for k, v in sd.items() if k.startswith("decode_head.")}
    head_sd.pop("conv_seg.weight", None), head_sd.pop("conv_seg.bias", None)
    own = head.state_dict()
    if not keep_classifier:
        head_sd = {k: v for k, v in head_sd.items() if not k.startswith("linear_pred.")}
    missing = [k for k in own if k not in head_sd and not k.startswith("linear_pred.")]
    if missing:
        raise UserError(format_key_report(f"{source}: decode head weights incomplete", missing, []))
    bad = [k for k, v in head_sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise UserError(f"{source}: decode head shape mismatch for {', '.join(bad[:4])} (wrong SegFormer variant?)")
    head.load_state_dict(head_sd, strict=False)
    return {"loaded": len(head_sd)}
