"""NFA-ViT, Noise-guided Forgery Amplification ViT (Cai, Wang et al., "Zooming In on Fakes", §4; code clpbc/BR-Gen).

Pipeline (paper 001 §4; clpbc/BR-Gen):
(a) frozen Noiseprint++ n = NP(x) (:mod:`tamperscope.backbones.dncnn`);
(b) noise branch: MiT-b0 with a 1-channel stem. In the last block of each stage its attention
    probabilities A (B×h×N_q×N_kv) give the noise-guided mask M = 1[Top-k(−A)] over keys: each query keeps
    the k = max(1, ⌊N_kv·ratio⌋) *least*-attended keys (ratio 0.25 → k = 64 of 256 at 512²), detached, bool;
(c) image branch: MiT-b2. Every non-last block of a stage uses Fix-Sparse attention (BR-Gen variant,
    s = 2, :func:`~tamperscope.nn.sparse_attention.fix_sparse_mask`); the last block uses NAA — efficient
    attention restricted to the keys that stage's M allows. Both masks go to SDPA as bool ``attn_mask``;
    noise stage i and image stage i run interleaved so only one stage's mask exists at a time;
(d) weighted decoder (Eq. 5–6, official "Multiple"): per-stage 1×1 conv C_i→512, bilinear to 1/4,
    per-channel γ_i (init 1e-6), sum, LayerNorm (eps 1e-6), 1×1 conv →1, bilinear to the input size;
(e) detection head: global average pool of F₄ + Linear 512→1.
Loss (paper 001 §4): BCE(mask) + cls_weight·BCE(label).

Resolved ambiguities (paper 001 §4 vs clpbc/BR-Gen), each a config key:
1. ``cls_weight`` 1.0 (paper "equal weights"); the official code uses 0.5.
2. Presets: ``default`` = the code's optimiser (AdamW 2e-4, wd 0.05, cosine) with the paper's 30 epochs and
   2 warm-up epochs; ``official`` = ``train.sh`` as released (200 epochs, 4 warm-up, ``cls_weight`` 0.5);
   ``paper`` = Adam 5e-3, wd 1e-6, 30 epochs (warm-up length unstated: 2 epochs). All three train with a total
   batch of 64 (paper §5.1: 64 on four GPUs; ``train.sh``: 16 per GPU × 4): 16 per process, ``global_batch`` 64.
3. Detection head: the official GAP(F₄)+Linear (the paper mentions a ResNet).
4. γ is per-channel (official), not one scalar per stage (paper).
5./6. ``brgen_compat=False``: TruFor Noiseprint++ semantics (input un-normalised to [0,1], no residual,
   BN in eval) and standard pre-norm noise blocks ("vanilla self-attention" in the paper).
   ``brgen_compat=True`` reproduces the official code: Noiseprint++ adds the first input channel, sees the
   normalised image and keeps BN in train mode while training; every noise block skips norm1 and drops
   the attention residual, ``t = a + DropPath(a)`` with ``a = attn(x)``, followed by the MLP residual.
7. Fix-Sparse in every non-last image block with s = ``sparse_rate`` = 2; NAA in the last block.
8. "Top-k most dissimilar": keep (allow) the k least-attended keys, mask all others (official).
9. The noise branch's features do not reach the decoder (official); only its masks are used, detached, so
   the official code never trains the branch: it keeps its ImageNet MiT-b0 weights. With ``noise_mit_weights``
   it is frozen here too and runs under ``torch.no_grad``. **Without** them a frozen branch would stay random and
   its top-k masks would be arbitrary for the whole run, so ``train_noise_branch`` (``None`` = auto) then trains
   it, and the model warns once at construction: the forward pass is unchanged (the same hard top-k masks),
   and a straight-through estimator gives the branch a gradient [R] — NAA gets the additive mask
   ``sg(s) − s`` on the kept keys (value 0) and −∞ elsewhere, with ``s`` the noise branch's attention logits,
   so a kept key that the loss wants attended more becomes less attended by the noise branch (more firmly
   among the "most dissimilar"). ``train_noise_branch: false`` keeps a random branch frozen anyway (the
   official behaviour); ``true`` trains a pretrained one. The Noiseprint++ extractor is always frozen.
Other choices: LayerNorm eps 1e-6 in the MiTs (NVlabs; the BR-Gen copy uses 1e-5: ``ln_eps``); exact
GELU (the BR-Gen copy uses the tanh approximation); Fix-Sparse generalised to non-square grids.
``noise_extractor="residual"`` swaps Noiseprint++ for the weight-free SRM residual (resolved choice).
With ``noise_extractor="noiseprint++"`` and no ``noiseprint_weights`` the DnCNN keeps its random
initialisation (what a checkpoint reload needs); the first forward then warns. Checkpoints of this model
contain the Noiseprint++ tensors (GRIP non-commercial licence) — do not redistribute them.
"""
from __future__ import annotations

import warnings
from types import MappingProxyType
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.dncnn import build_noise_extractor
from ..backbones.mit import MiTBlock, MixVisionTransformer, load_mit_weights, tokens_to_map
from ..nn.losses import bce
from ..nn.sparse_attention import fix_sparse_mask, noise_guided_mask
from ..registry import register_model
from .base import TamperModel

PAPER = ("Cai, Wang et al., Zooming In on Fakes: A Novel Dataset for Localized AI-Generated Image Detection with "
         "Forgery Amplification Approach (BR-Gen / NFA-ViT), §4")

# Every recipe's batch is 64 in total on 4 GPUs (paper: batch 64 on 4×4090; train.sh: 16 per GPU × 4): 16 per
# process and ``global_batch`` 64, so one process accumulates 4 batches and torchrun on 4 GPUs accumulates none.
TRAIN_PRESETS = {
    # [R] (the default): the code's optimiser with the paper's 30 epochs and 2 warm-up epochs
    "default": {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.05, "epochs": 30, "warmup_epochs": 2,
                "schedule": "cosine", "min_lr": 0.0, "batch_size": 16, "global_batch": 64},
    # train.sh as released: 200 epochs, 4 warm-up, 16 per GPU × 4 GPUs, loss weight 0.5 on the detection term
    "official": {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.05, "epochs": 200, "warmup_epochs": 4,
                 "schedule": "cosine", "min_lr": 0.0, "batch_size": 16, "global_batch": 64,
                 "model": {"cls_weight": 0.5}},
    "paper": {"optimizer": "adam", "lr": 5e-3, "weight_decay": 1e-6, "epochs": 30, "warmup_epochs": 2,
              "schedule": "cosine", "min_lr": 0.0, "batch_size": 16, "global_batch": 64},
}


class StageOutput(NamedTuple):
    """One interleaved stage: the image feature map ``B×C_i×H_i×W_i`` and the NAA mask it used."""
    index: int
    feature: torch.Tensor
    noise_mask: torch.Tensor


class WeightedDecoder(nn.Module):
    """Eq. 5–6: Σ_i γ_i ⊙ up(Conv1×1(F_i)), LayerNorm over channels, 1×1 conv to one logit map at 1/4."""

    def __init__(self, in_channels: tuple[int, ...], dim: int = 512, gamma_init: float = 1e-6):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in in_channels)
        self.gamma = nn.ParameterList(nn.Parameter(torch.full((dim,), float(gamma_init))) for _ in in_channels)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Conv2d(dim, 1, kernel_size=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        fused = None
        for proj, gamma, f in zip(self.proj, self.gamma, feats):
            y = proj(f)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            y = y * gamma.view(1, -1, 1, 1)
            fused = y if fused is None else fused + y
        fused = self.norm(fused.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.pred(fused)


@register_model("nfavit", paper=PAPER, train_presets=TRAIN_PRESETS,
                description="NFA-ViT: Noiseprint++-guided sparse MiT-b2 with NAA (BR-Gen)",
                tiny_config={"noise_extractor": "residual", "image_variant": "b0", "decoder_dim": 32})
class NFAViT(TamperModel):
    """Noiseprint++ → MiT noise branch (Top-k masks) → MiT image branch (Fix-Sparse + NAA) → weighted
    decoder + GAP/Linear detection head. See the module docstring for every resolved ambiguity."""

    #: config values of runs saved before the key existed (their noise branch was always frozen)
    legacy_config = MappingProxyType({"train_noise_branch": False})

    def __init__(self, noise_extractor: str = "noiseprint++", noiseprint_weights: str | None = None,
                 noise_variant: str = "b0", noise_mit_weights: str | None = None,
                 image_variant: str = "b2", image_mit_weights: str | None = None,
                 topk_ratio: float = 0.25, sparse_rate: int = 2, decoder_dim: int = 512, gamma_init: float = 1e-6,
                 cls_weight: float = 1.0, drop_path_rate: float = 0.1, ln_eps: float = 1e-6,
                 brgen_compat: bool = False, train_noise_branch: bool | None = None):
        super().__init__()
        if not 0.0 < topk_ratio <= 1.0:
            raise ValueError(f"nfavit: topk_ratio must be in (0, 1], got {topk_ratio}")
        if sparse_rate < 1:
            raise ValueError(f"nfavit: sparse_rate must be >= 1, got {sparse_rate}")
        self.topk_ratio = float(topk_ratio)
        self.sparse_rate = int(sparse_rate)
        self.cls_weight = float(cls_weight)
        self.brgen_compat = bool(brgen_compat)
        self.noise_extractor = build_noise_extractor(noise_extractor, noiseprint_weights, brgen_compat)
        self.noise_encoder = MixVisionTransformer(noise_variant, in_chans=1, drop_path_rate=drop_path_rate,
                                                  ln_eps=ln_eps)
        self.image_encoder = MixVisionTransformer(image_variant, in_chans=3, drop_path_rate=drop_path_rate,
                                                  ln_eps=ln_eps)
        if (self.noise_encoder.num_heads != self.image_encoder.num_heads
                or self.noise_encoder.sr_ratios != self.image_encoder.sr_ratios):
            raise ValueError("nfavit: noise and image MiTs need the same heads and sr ratios per stage")
        dims = self.image_encoder.embed_dims
        self.decoder = WeightedDecoder(dims, decoder_dim, gamma_init)
        self.classifier = nn.Linear(dims[-1], 1)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        if train_noise_branch is None:
            train_noise_branch = not noise_mit_weights
            if train_noise_branch:
                warnings.warn("nfavit: no noise_mit_weights, so the noise branch (MiT-b0) starts random and is "
                              "trained (straight-through top-k masks) instead of frozen; give noise_mit_weights "
                              "(ImageNet MiT-b0) to keep it frozen as in the paper", stacklevel=2)
        self.train_noise_branch = bool(train_noise_branch)
        self.noise_encoder.requires_grad_(self.train_noise_branch)
        if noise_mit_weights:
            load_mit_weights(self.noise_encoder, noise_mit_weights)
        if image_mit_weights:
            load_mit_weights(self.image_encoder, image_mit_weights)
        self._extractor_checked = False

    def resolved_config(self) -> dict:
        """The noise branch's resolved trainability (stored in checkpoints, so a resumed run keeps it)."""
        return {"train_noise_branch": self.train_noise_branch}

    # -- noise branch (its outputs are hard masks; a trained branch gets a straight-through gradient) --

    def _noise_block_tail(self, blk: MiTBlock, tokens: torch.Tensor, attn_out: torch.Tensor,
                          H: int, W: int) -> torch.Tensor:
        """Residuals around a computed attention output: standard pre-norm, or the BR-Gen quirk."""
        if self.brgen_compat:
            tokens = attn_out + blk.drop_path(attn_out)
        else:
            tokens = tokens + blk.drop_path(attn_out)
        return tokens + blk.drop_path(blk.mlp(blk.norm2(tokens), H, W))

    def _noise_stage(self, i: int, x: torch.Tensor, need_output: bool, with_logits: bool = False):
        """Noise stage ``i``: (next stage's input map or None, NAA mask B×h×N_q×N_kv), plus the last block's
        attention logits when ``with_logits``."""
        embed, blocks, norm = self.noise_encoder.stage(i)
        tokens, H, W = embed(x)
        for blk in blocks[:-1]:
            if self.brgen_compat:
                tokens = self._noise_block_tail(blk, tokens, blk.attn(tokens, H, W), H, W)
            else:
                tokens = blk(tokens, H, W)
        last = blocks[-1]
        attn = last.attn
        q, k, v = attn.qkv(tokens if self.brgen_compat else last.norm1(tokens), H, W)
        logits = (q @ k.transpose(-2, -1)) * attn.scale
        probs = torch.softmax(logits, dim=-1)
        mask = noise_guided_mask(probs, self.topk_ratio)
        out = None
        if need_output:
            B, N, C = tokens.shape
            attn_out = attn.proj((probs @ v).transpose(1, 2).reshape(B, N, C))
            out = tokens_to_map(norm(self._noise_block_tail(last, tokens, attn_out, H, W)), H, W)
        return (out, mask, logits) if with_logits else (out, mask)

    @staticmethod
    def straight_through_mask(mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Additive NAA mask equal to the bool ``mask`` in the forward pass (0 on kept keys, −∞ elsewhere) whose
        gradient reaches the noise logits: ``sg(s) − s`` on the kept keys (``s`` = logits; keeping the *least*
        attended keys means a larger bias asks for a smaller noise logit). Softmax ignores a shift common to a
        query's kept keys, so the signal is relative among them (and none where only k = 1 key is kept)."""
        return torch.where(mask, logits.detach() - logits, torch.full_like(logits, float("-inf")))

    # -- image branch -----------------------------------------------------------------------------
    def _image_stage(self, i: int, x: torch.Tensor, noise_mask: torch.Tensor) -> torch.Tensor:
        embed, blocks, norm = self.image_encoder.stage(i)
        tokens, H, W = embed(x)
        kv_grid = blocks[0].attn.kv_grid(H, W)
        expected = (H * W, kv_grid[0] * kv_grid[1])
        if tuple(noise_mask.shape[-2:]) != expected:
            raise RuntimeError(f"nfavit stage {i + 1}: noise mask {tuple(noise_mask.shape)} does not fit "
                               f"{expected[0]} queries × {expected[1]} keys")
        if len(blocks) > 1:
            sparse = fix_sparse_mask((H, W), kv_grid, self.image_encoder.sr_ratios[i], self.sparse_rate,
                                     device=tokens.device)
            for blk in blocks[:-1]:
                tokens = blk(tokens, H, W, attn_mask=sparse)
            del sparse
        tokens = blocks[-1](tokens, H, W, attn_mask=noise_mask)
        return tokens_to_map(norm(tokens), H, W)

    def encoder_stages(self, image: torch.Tensor, noise: torch.Tensor) -> Iterator[StageOutput]:
        """Noise stage i then image stage i, for i = 0..3; each stage's mask is dropped before the next. A trained
        noise branch (``train_noise_branch``) runs with gradients and gives NAA the straight-through mask."""
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.noise_encoder.parameters())
        x_noise, x_image = noise, image
        for i in range(4):
            with torch.set_grad_enabled(trains):
                x_noise, mask, logits = self._noise_stage(i, x_noise, need_output=i < 3, with_logits=True)
            x_image = self._image_stage(i, x_image, self.straight_through_mask(mask, logits) if trains else mask)
            yield StageOutput(i, x_image, mask)
            del mask, logits

    def _check_extractor(self) -> None:
        if self._extractor_checked:
            return
        self._extractor_checked = True
        loaded = getattr(self.noise_extractor, "weights_loaded", None)
        if loaded is not None and loaded.device.type != "meta" and not bool(loaded):
            warnings.warn("nfavit: Noiseprint++ runs with random weights — give noiseprint_weights "
                          "(noiseprint++.th) or use noise_extractor='residual'", stacklevel=2)

    def forward(self, image: torch.Tensor) -> dict:
        self._check_extractor()
        noise = self.noise_extractor(image)
        feats = [s.feature for s in self.encoder_stages(image, noise)]
        logits = self.decoder(feats)
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        image_logit = self.classifier(feats[-1].mean(dim=(2, 3))).squeeze(1)
        return {"mask_logits": logits, "image_logit": image_logit, "noiseprint": noise}

    def loss(self, outputs: dict, batch: dict) -> dict:
        seg = bce(outputs["mask_logits"], batch["mask"])
        cls = bce(outputs["image_logit"], batch["label"])
        return {"total": seg + self.cls_weight * cls, "seg_bce": seg, "cls_bce": cls}
