"""IFA-Net, the Iterative Forgery Amplifier Network (paper 000, §3). No official code exists;
every resolution below is a resolved choice and a config key.

Pipeline (paper §3, Fig. 2):

* **Realness prior** (§3.1): a frozen ViT-MAE (:mod:`tamperscope.backbones.mae`, ViT-L/16 by default) runs at
  ``mae_input_size`` = 512 with regenerated 32×32 sin-cos tables [R]; 224 is a cheap mode (resize down,
  reconstruct, upsample the residual bilinearly); ``None`` runs at the input's own size. Stage I:
  ``x̂₁ = D₀(E(x))``, ``r₁ = |x − x̂₁|`` in [0,1] RGB (the reconstruction is clipped to [0,1]), 3 channels [R].
* **Masking** [R] ``mask_mode="complementary-4"``: the patches are split at random into 4 equal groups; 4
  passes each keep one group visible (75 % masked, MAE's training ratio) and every patch's reconstruction is
  the mean of the 3 passes in which it was masked. The 4 passes run as one encoder call of 4·B images and the
  encoder tokens are computed once and reused by both stages. The partition is drawn from ``mask_seed`` in
  eval mode (identical for every image, so results do not depend on batching) and at random in training
  mode. ``mask_mode="none"``: one pass, nothing masked, no shuffling.
* **DSSN** (§3.3): content MiT-b2 on the ImageNet-normalised image, artifact MiT-b2 on the residual (3-ch,
  [0,1], fed as is [R]). After every stage ``F̃ᶜ = Fᶜ + MHCA(Q = LN Fᶜ, K = V = LN Fᵃ)`` with MiT's heads
  (1, 2, 5, 8) and MiT's K/V spatial reduction (conv k = stride = sr (8, 4, 2, 1) + LN), C×C q/k/v/out
  projections [R]; the fused map feeds the next content stage, the artifact stream stays independent [R].
  All-MLP head (E = 768) on the fused maps, bilinear ×4. The same DSSN serves both stages [P]. Both streams
  load ``mit_weights`` (ADE20K MiT-b2, [P]/[R]); the ADE head's ``linear_c*`` and ``linear_fuse`` are kept when
  the file has them, the class layer is new.
* **TAPI** (§3.4, :mod:`tamperscope.nn.film`): prompt encoder on M₁ = σ(coarse logits) (4 × [stride-2 3×3
  conv, BN, GELU], 1→32→64→128→256, Linear 256→256 [R]); FiLM ``(1+γ)·Z + β`` from the token-mean of the
  prompts, zero-initialised output layers (identity at init), broadcast over all tokens including CLS [R].
* **Stage II**: ``x̂₂ = D(FiLM(E(x)))`` with the same masking passes, where D is the **Adaptive Decoder** — a
  trainable copy of D₀ [R: "AD" of Table 2]; ``r₂ = |x − x̂₂|``; ``M₂ = DSSN(x, r₂)``. Gradients from Stage II
  reach M₁ (joint optimisation) unless ``detach_coarse``. D gets no reconstruction loss [R].
* **Loss** (§3.5): ``L = L₂ + λ·L₁``, each BCE + dice_linear (s = 1, per batch), λ = ``coarse_weight`` = 0.5 [R].
  No detection head: ``image_logit`` is the maximum of the refined mask logits.

**Low-pass realness prior** [R] (``realness_prior="blur"`` or ``"jpeg"``; default ``"mae"``): §3.1–3.2 read
realness as "what a prior reconstructs faithfully" and feed the DSSN the residual ``r₁ = |x − x̂₁|``. Without
MAE weights a random MAE makes that residual meaningless, and training one (``realness-prior``) takes time; this
option replaces x̂₁ by a fixed low-pass reconstruction of the [0,1] image at its own size — a Gaussian blur
(``lowpass_sigma``, reflect padding) or a JPEG re-compression (``lowpass_quality``, OpenCV/libjpeg 4:2:0) — so
r₁ is the image's high-frequency content (resp. its JPEG error levels). No MAE is built and no weights are
needed: a cheap prior for tests and CPU runs, far weaker than the paper's. TAPI and the Adaptive Decoder act on
MAE tokens, so this model is single-stage (Table 2's "+DSSN" row: ``mask_logits`` = M₁, loss L₁), whatever
``use_tapi``/``adaptive_decoder`` say; there is no ``realness-prior`` stage to train.

Ablations of Table 2 (config keys): ``dual_stream=False`` — baseline single stream: one MiT on the
6-channel concatenation (image ‖ residual), the stem's residual channels start at zero so pretrained
features are unchanged at init [R]; ``use_tapi=False`` — no FiLM/prompts; ``adaptive_decoder=False`` —
Stage II decodes with the frozen D₀. With neither TAPI nor AD, Stage II would repeat Stage I, so the model is
single-stage: ``mask_logits`` = M₁ and the loss is L₁.

Stages: ``realness-prior`` trains the MAE (encoder + decoder, 75 % random masking, MSE on the removed
patches, ``norm_pix_loss`` False, at the training crop's own size) on authentic photos, for users without MAE
weights; ``main`` (default) freezes the MAE and trains the rest. ``load_pretrained_stage`` takes only the
``mae.*`` weights of a realness-prior run and copies its decoder into the Adaptive Decoder.

Outputs: ``mask_logits`` (M₂), ``image_logit``, ``coarse_logits`` (M₁), ``residual1``/``residual2``
(B×3×H×W, [0,1]) and ``reconstruction1``/``reconstruction2`` ([0,1] RGB at the MAE input size).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.mae import MaskedAutoencoder, MAEEncoderOutput, complementary_noise, load_mae_weights
from ..backbones.mit import MixVisionTransformer, load_all_mlp_head_weights, load_mit_weights, tokens_to_map
from ..checkpoint import read_state_dict
from ..errors import UserError
from ..nn.film import FiLM, PromptEncoder
from ..nn.heads import AllMLPHead
from ..nn.jpeg import jpeg_roundtrip
from ..nn.losses import bce, dice_linear
from ..nn.norm import imagenet_denormalize
from ..registry import register_model
from .base import TamperModel, max_pool_image_logit

PAPER = ("IFA-Net: Iterative Forgery Amplifier Network — a frozen MAE realness prior with task-adaptive prior "
         "injection for image manipulation localization (paper 000)")
STAGES = ("realness-prior", "main")
MASK_MODES = ("complementary-4", "none")
REALNESS_PRIORS = ("mae", "blur", "jpeg")

TRAIN_PRESETS = {
    # paper §4 (Implementation Details): AdamW 2e-5, wd 1e-5, ≤100 epochs, early stopping on val IoU (patience 10),
    # effective batch 32 on 8 GPUs (DDP): 4 per process [R], one process accumulates 8; no schedule is given →
    # constant LR [R]
    "paper": {"optimizer": "adamw", "lr": 2e-5, "weight_decay": 1e-5, "epochs": 100, "warmup_epochs": 0,
              "schedule": "constant", "min_lr": 2e-5, "batch_size": 4, "global_batch": 32, "patience": 10,
              "selection_metric": ["pixel_iou", "max"]},
    # FAIR MAE pre-training recipe (blr 1.5e-4 × batch/256, wd 0.05, 40 warm-up epochs, cosine), shortened; the
    # LR is for a total batch of 64 (16 per process, accumulated to 64)
    "realness-prior": {"optimizer": "adamw", "lr": 3.75e-5, "weight_decay": 0.05, "epochs": 400,
                       "warmup_epochs": 40, "schedule": "cosine", "min_lr": 0.0, "batch_size": 16, "global_batch": 64,
                       "betas": [0.9, 0.95], "model": {"stage": "realness-prior"}},
}


class CrossStreamAttention(nn.Module):
    """MHCA of the DSSN (§3.3.1): content queries, artifact keys/values reduced like MiT, pre-LN residual."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, ln_eps: float = 1e-6):
        super().__init__()
        self.num_heads, self.sr_ratio = num_heads, sr_ratio
        self.norm_q = nn.LayerNorm(dim, eps=ln_eps)
        self.norm_kv = nn.LayerNorm(dim, eps=ln_eps)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def forward(self, content: torch.Tensor, artifact: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` content and artifact maps → the fused content map."""
        B, C, H, W = content.shape
        tokens = content.flatten(2).transpose(1, 2)
        kv = self.norm_kv(artifact.flatten(2).transpose(1, 2))
        if self.sr_ratio > 1:
            kv = self.sr_norm(self.sr(tokens_to_map(kv, H, W)).flatten(2).transpose(1, 2))
        split = lambda t: t.reshape(B, t.shape[1], self.num_heads, C // self.num_heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(self.q(self.norm_q(tokens))), split(self.k(kv)), split(self.v(kv)))
        out = self.proj(out.transpose(1, 2).reshape(B, H * W, C))
        return tokens_to_map(tokens + out, H, W)


class DualStreamSegmentationNetwork(nn.Module):
    """DSSN (§3.3): content + artifact MiT with per-stage MHCA fusion and an All-MLP head (logits at H×W).
    ``dual_stream=False`` is the single-stream baseline on the 6-channel concatenation."""

    def __init__(self, variant: str, embed_dims, depths, decoder_dim: int, drop_path_rate: float,
                 head_dropout: float, dual_stream: bool, mit_weights: str | None):
        super().__init__()
        build = lambda: MixVisionTransformer(variant, in_chans=3, drop_path_rate=drop_path_rate,
                                             embed_dims=tuple(embed_dims) if embed_dims else None,
                                             depths=tuple(depths) if depths else None)
        self.dual_stream = dual_stream
        self.content = build()
        if dual_stream:
            self.artifact = build()
            self.fusion = nn.ModuleList(CrossStreamAttention(c, h, sr) for c, h, sr in zip(
                self.content.embed_dims, self.content.num_heads, self.content.sr_ratios))
        self.head = AllMLPHead(self.content.embed_dims, decoder_dim, 1, head_dropout)
        if mit_weights:
            sd = read_state_dict(mit_weights)
            for enc in ([self.content, self.artifact] if dual_stream else [self.content]):
                load_mit_weights(enc, sd, name=str(mit_weights))
            if any(k.startswith("decode_head.") for k in sd):
                load_all_mlp_head_weights(self.head, sd, name=str(mit_weights))
        if not dual_stream:
            self._widen_stem_for_residual()

    def _widen_stem_for_residual(self) -> None:
        """Single stream: a 6-channel stem whose residual half starts at zero (pretrained RGB half kept)."""
        old = self.content.patch_embed1.proj
        new = nn.Conv2d(6, old.out_channels, old.kernel_size, old.stride, old.padding)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, :3].copy_(old.weight)
            new.bias.copy_(old.bias)
        self.content.patch_embed1.proj = new

    def forward(self, image: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if not self.dual_stream:
            logits = self.head(self.content(torch.cat([image, residual], dim=1)))
        else:
            feats, content, artifact = [], image, residual
            for i in range(4):
                artifact = self.artifact.forward_stage(i, artifact)
                content = self.fusion[i](self.content.forward_stage(i, content), artifact)
                feats.append(content)
            logits = self.head(feats)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


@register_model("ifanet", paper=PAPER, train_presets=TRAIN_PRESETS,
                description="IFA-Net: frozen MAE realness prior + dual-stream MiT-b2 + TAPI/FiLM + adaptive decoder",
                tiny_config={"mae_variant": "tiny", "mae_input_size": None, "mit_variant": "b0",
                             "mit_embed_dims": [16, 32, 80, 128], "mit_depths": [1, 1, 1, 1], "decoder_dim": 32,
                             "prompt_channels": [4, 8, 8, 16], "prompt_dim": 16})
class IFANet(TamperModel):
    """IFA-Net (paper 000, §3). See the module docstring for every resolved ambiguity. Weights: ``mae_weights``,
    FAIR ``mae_visualize_vit_large.pth`` or an HF ``ViTMAEForPreTraining`` file or folder; ``mit_weights``, ADE20K
    MiT-b2 (NVlabs or HF layout), loaded into both streams. ``mit_embed_dims``/``mit_depths`` override the MiT's
    widths and depths (tiny test encoders)."""

    stages = STAGES

    def __init__(self, stage: str = "main", realness_prior: str = "mae", lowpass_sigma: float = 2.0,
                 lowpass_quality: int = 75, mae_variant: str = "vit-large-16", mae_weights: str | None = None,
                 mae_input_size: int | None = 512, mae_ln_eps: float = 1e-6, mask_mode: str = "complementary-4",
                 mask_seed: int = 0, mit_variant: str = "b2", mit_embed_dims: list[int] | None = None,
                 mit_depths: list[int] | None = None, mit_weights: str | None = None, drop_path_rate: float = 0.1,
                 decoder_dim: int = 768, head_dropout: float = 0.1, dual_stream: bool = True, use_tapi: bool = True,
                 adaptive_decoder: bool = True, prompt_channels: list[int] = (32, 64, 128, 256),
                 prompt_dim: int = 256, coarse_weight: float = 0.5, detach_coarse: bool = False,
                 prior_mask_ratio: float = 0.75, norm_pix_loss: bool = False):
        super().__init__()
        if mask_mode not in MASK_MODES:
            raise UserError(f"ifanet: mask_mode must be one of {', '.join(MASK_MODES)}, got '{mask_mode}'")
        if mae_input_size is not None and mae_input_size % 16:
            raise UserError(f"ifanet: mae_input_size must be a multiple of 16, got {mae_input_size}")
        if realness_prior not in REALNESS_PRIORS:
            raise UserError(f"ifanet: realness_prior must be one of {', '.join(REALNESS_PRIORS)}, got "
                            f"'{realness_prior}'")
        lowpass = realness_prior != "mae"
        if lowpass and mae_weights:
            raise UserError(f"ifanet: mae_weights is unused with realness_prior='{realness_prior}' (no MAE is built)")
        if lowpass and stage == "realness-prior":
            raise UserError(f"ifanet: the '{realness_prior}' realness prior is fixed; there is no realness-prior "
                            "stage to train (realness_prior='mae' trains the MAE)")
        if realness_prior == "blur" and lowpass_sigma <= 0:
            raise UserError(f"ifanet: lowpass_sigma must be > 0, got {lowpass_sigma}")
        if realness_prior == "jpeg" and not 1 <= lowpass_quality <= 100:
            raise UserError(f"ifanet: lowpass_quality must be in 1..100, got {lowpass_quality}")
        self.realness_prior, self.lowpass_sigma, self.lowpass_quality = realness_prior, lowpass_sigma, lowpass_quality
        self.mae_input_size, self.mask_mode, self.mask_seed = mae_input_size, mask_mode, mask_seed
        self.use_tapi, self.coarse_weight, self.detach_coarse = use_tapi and not lowpass, coarse_weight, detach_coarse
        self.prior_mask_ratio, self.norm_pix_loss = prior_mask_ratio, norm_pix_loss
        self.two_stage = not lowpass and (use_tapi or adaptive_decoder)

        self.mae = None if lowpass else MaskedAutoencoder(mae_variant, img_size=mae_input_size or 224,
                                                          ln_eps=mae_ln_eps)
        if mae_weights:
            load_mae_weights(self.mae, mae_weights)
        self.adaptive_decoder = copy.deepcopy(self.mae.decoder) if adaptive_decoder and not lowpass else None
        self.dssn = DualStreamSegmentationNetwork(mit_variant, mit_embed_dims, mit_depths, decoder_dim, drop_path_rate,
                                                  head_dropout, dual_stream, mit_weights)
        if self.use_tapi:
            self.prompt_encoder = PromptEncoder(1, tuple(prompt_channels), prompt_dim)
            self.film = FiLM(prompt_dim, self.mae.encoder.embed_dim)
        # which stage trained these weights: lets load_pretrained_stage recognise a realness-prior run
        self.register_buffer("trained_stage", torch.tensor(STAGES.index(stage)))
        self.set_stage(stage)

    # ------------------------------------------------------------------------------------------ stages

    def set_stage(self, stage: str | None) -> None:
        """``realness-prior``: only the MAE trains; ``main``: the MAE encoder and D₀ are frozen."""
        stage = stage or "main"
        super().set_stage(stage)
        prior = stage == "realness-prior"
        if prior and self.mae is None:
            raise UserError(f"ifanet: the '{self.realness_prior}' realness prior has no realness-prior stage")
        self.requires_grad_(not prior)
        if self.mae is not None:
            self.mae.requires_grad_(prior)
        self.trained_stage.fill_(STAGES.index(stage))

    def load_pretrained_stage(self, state_dict: dict, where: str = "pretrained weights"
                              ) -> tuple[list[str], list[str], list[str]]:
        """Main stage from a realness-prior run: take its ``mae.*`` weights only (the rest of that run was never
        trained: returned as left out) and copy the trained decoder into the Adaptive Decoder; otherwise load
        everything. Returns (missing, unexpected, left out)."""
        marker = state_dict.get("trained_stage")
        from_prior = marker is not None and int(marker) == STAGES.index("realness-prior")
        if from_prior and self.mae is None:
            raise UserError(f"ifanet: a realness-prior run holds MAE weights; this model uses the "
                            f"'{self.realness_prior}' low-pass prior (set realness_prior='mae' to use them)")
        if self.stage == "main" and from_prior:
            sub = {k[len("mae."):]: v for k, v in state_dict.items() if k.startswith("mae.")}
            result = self.mae.load_state_dict(sub, strict=False)
            if self.adaptive_decoder is not None:
                self.adaptive_decoder.load_state_dict(self.mae.decoder.state_dict())
            ignored = sorted(k for k in state_dict if not k.startswith("mae."))
            return ["mae." + k for k in result.missing_keys], ["mae." + k for k in result.unexpected_keys], ignored
        loaded = super().load_pretrained_stage(state_dict, where)
        self.trained_stage.fill_(STAGES.index(self.stage))
        return loaded

    def selection_metric(self) -> tuple[str, str]:
        """Paper 000 §4.1: the main stage is selected on val pixel IoU (early stopping, patience 10)."""
        return ("val_loss", "min") if self.stage == "realness-prior" else ("pixel_iou", "max")

    def data_requirements(self) -> dict:
        """Resolved choice (paper 000 states none): the shared augmentation list without the random copy-move
        and inpainting."""
        return {**super().data_requirements(), "augment": "no_forgery"}

    # ------------------------------------------------------------------------------------------ realness prior

    def _mae_input(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[-2] % 32 or image.shape[-1] % 32:
            raise UserError(f"ifanet: expected a B×3×H×W image with H, W multiples of 32, got {tuple(image.shape)}")
        size = self.mae_input_size
        if self.mae is None or size is None or tuple(image.shape[-2:]) == (size, size):
            return image
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def _encode(self, x: torch.Tensor) -> MAEEncoderOutput:
        """Encoder tokens of every masking pass, computed once (pass-major ``passes·B`` batch)."""
        if self.mask_mode == "none":
            return self.mae.encoder(x, mask_ratio=0.0)
        num = (x.shape[-2] // self.mae.patch_size) * (x.shape[-1] // self.mae.patch_size)
        if self.training:
            noise = complementary_noise(num, 4, batch=x.shape[0], device=x.device)
        else:
            gen = torch.Generator().manual_seed(self.mask_seed)
            noise = complementary_noise(num, 4, batch=1, generator=gen, device=x.device).repeat_interleave(x.shape[0], 0)
        return self.mae.encoder(x.repeat(4, 1, 1, 1), noise=noise, mask_ratio=0.75)

    def _reconstruct(self, decoder: nn.Module, tokens: torch.Tensor, enc: MAEEncoderOutput, batch: int) -> torch.Tensor:
        """Decode every pass and keep, per patch, the mean over the passes that masked it → [0,1] RGB."""
        pred = decoder(tokens, enc.ids_restore, enc.grid)
        if self.mask_mode != "none":
            weight = enc.mask.view(-1, batch, enc.mask.shape[1], 1)
            pred = (pred.view(-1, batch, *pred.shape[1:]) * weight).sum(0) / weight.sum(0)
        return imagenet_denormalize(self.mae.unpatchify(pred, enc.grid)).clamp(0, 1)

    @staticmethod
    def _residual(x01: torch.Tensor, recon01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        r = (x01 - recon01).abs()
        return r if tuple(r.shape[-2:]) == tuple(size) else F.interpolate(r, size=size, mode="bilinear",
                                                                          align_corners=False)

    @torch.no_grad()
    def lowpass_reconstruction(self, x01: torch.Tensor) -> torch.Tensor:
        """The fixed low-pass x̂₁ of a ``B×3×H×W`` [0,1] image: Gaussian blur (``lowpass_sigma``, reflect padding)
        or a JPEG round trip (``lowpass_quality``, 8-bit)."""
        if self.realness_prior == "blur":
            radius = max(1, math.ceil(3 * self.lowpass_sigma))
            t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x01.device)
            g = torch.exp(-0.5 * (t / self.lowpass_sigma) ** 2)
            g = (g / g.sum()).to(x01.dtype)
            C = x01.shape[1]
            y = F.pad(x01, (radius, radius, radius, radius), mode="reflect")
            y = F.conv2d(y, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
            return F.conv2d(y, g.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
        rgb = (x01.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        back = np.stack([jpeg_roundtrip(np.ascontiguousarray(im), self.lowpass_quality) for im in rgb])
        return torch.from_numpy(back).permute(0, 3, 1, 2).to(x01.device, x01.dtype) / 255

    @torch.no_grad()
    def reconstruction_residual(self, image: torch.Tensor) -> torch.Tensor:
        """Stage-I residual map ``B×1×H×W`` (mean over RGB of ``|x − x̂₁|``), for ``predict --residual``."""
        x = self._mae_input(image)
        if self.mae is None:
            x01 = imagenet_denormalize(x).clamp(0, 1)
            return (x01 - self.lowpass_reconstruction(x01)).abs().mean(1, keepdim=True)
        enc = self._encode(x)
        recon = self._reconstruct(self.mae.decoder, enc.tokens, enc, image.shape[0])
        return self._residual(imagenet_denormalize(x).clamp(0, 1), recon, image.shape[-2:]).mean(1, keepdim=True)

    # ------------------------------------------------------------------------------------------ forward / loss

    def forward(self, image: torch.Tensor) -> dict:
        B, size = image.shape[0], image.shape[-2:]
        x = self._mae_input(image)
        x01 = imagenet_denormalize(x).clamp(0, 1)
        if self.mae is None:  # the fixed low-pass prior: single stage
            recon1 = self.lowpass_reconstruction(x01)
            residual1 = (x01 - recon1).abs()
            coarse = self.dssn(image, residual1)
            return {"coarse_logits": coarse, "residual1": residual1, "reconstruction1": recon1,
                    "mask_logits": coarse, "image_logit": max_pool_image_logit(coarse)}
        prior_trains = any(p.requires_grad for p in self.mae.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and prior_trains):
            enc = self._encode(x)
            recon1 = self._reconstruct(self.mae.decoder, enc.tokens, enc, B)
        residual1 = self._residual(x01, recon1, size)
        coarse = self.dssn(image, residual1)
        out = {"coarse_logits": coarse, "residual1": residual1, "reconstruction1": recon1}
        if not self.two_stage:
            return out | {"mask_logits": coarse, "image_logit": max_pool_image_logit(coarse)}
        tokens = enc.tokens
        if self.use_tapi:
            prob = torch.sigmoid(coarse)
            tokens = self.film(tokens, self.prompt_encoder(prob.detach() if self.detach_coarse else prob))
        decoder = self.adaptive_decoder if self.adaptive_decoder is not None else self.mae.decoder
        recon2 = self._reconstruct(decoder, tokens, enc, B)
        residual2 = self._residual(x01, recon2, size)
        refined = self.dssn(image, residual2)
        return out | {"mask_logits": refined, "image_logit": max_pool_image_logit(refined),
                      "residual2": residual2, "reconstruction2": recon2}

    def loss(self, outputs: dict, batch: dict) -> dict:
        """``L = L₂ + λ·L₁``, each BCE + dice_linear (§3.5); single-stage ablation: ``L₁``."""
        mask = batch["mask"]
        terms = {}
        for name, key in (("refined", "mask_logits"), ("coarse", "coarse_logits")):
            terms[f"{name}_bce"] = bce(outputs[key], mask)
            terms[f"{name}_dice"] = dice_linear(torch.sigmoid(outputs[key].float()), mask)
        coarse = terms["coarse_bce"] + terms["coarse_dice"]
        if not self.two_stage:
            return {"total": coarse, "coarse_bce": terms["coarse_bce"], "coarse_dice": terms["coarse_dice"]}
        total = terms["refined_bce"] + terms["refined_dice"] + self.coarse_weight * coarse
        return {"total": total, **terms}

    def _prior_loss(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if image.shape[-2] % self.mae.patch_size or image.shape[-1] % self.mae.patch_size:
            raise UserError(f"ifanet realness-prior: image sides must be multiples of {self.mae.patch_size}, "
                            f"got {tuple(image.shape[-2:])}")
        num = (image.shape[-2] // self.mae.patch_size) * (image.shape[-1] // self.mae.patch_size)
        noise = torch.rand(image.shape[0], num, generator=generator).to(image.device)
        pred, mask, _ = self.mae(image, noise=noise, mask_ratio=self.prior_mask_ratio)
        return self.mae.reconstruction_loss(image, pred, mask, self.norm_pix_loss)

    def training_step(self, batch: dict) -> dict:
        if self.stage == "realness-prior":
            loss = self._prior_loss(batch["image"])
            return {"total": loss, "mae_mse": loss}
        return super().training_step(batch)

    @torch.no_grad()
    def stage_validation_step(self, batch: dict) -> dict | None:
        """Realness-prior stage: ``val_loss`` = MAE loss with masks drawn from ``mask_seed`` (reproducible)."""
        if self.stage != "realness-prior":
            return None
        gen = torch.Generator().manual_seed(self.mask_seed)
        return {"val_loss": float(self._prior_loss(batch["image"], gen))}
