"""DiffIML: score-based latent diffusion over masks for image manipulation localisation (paper 002,
§3). Official code: scu-zjz/DiffIML (IMDL-BenCo + diffusers), read to understand only.

Pipeline (paper Fig. 3, Alg. 1–2):

* **LightVAE** (§3.2, Eq. 6; :mod:`tamperscope.backbones.lightvae`): a ≈0.2 M-parameter ×8 mask autoencoder
  distilled from the SD VAE, frozen in the denoiser stage. Masks and edge bands enter in ±1.
* **Condition encoder** (§3.2 / [C]): MiT-b3 → per-stage 1×1 conv to 128 → bilinear to the latent grid
  (H/8×W/8; 64×64 at 512) → concat c4, c3, c2, c1 → 3×3 conv 512→128 (no bias), BN, ReLU. Run once per image.
* **Light UNet** (§4.1 "simplified U-Net with channel depth 128"): diffusers ``UNet2DModel`` with 8 latent
  channels (mask + edge), block_out_channels [128], one DownBlock2D / UpBlock2D (a single level, no
  resampling), layers_per_block 2, mid block with self-attention. The condition is concatenated after
  ``conv_in`` and fused by a 3×3 conv 256→128 without bias. It predicts the clean latent ẑ₀.
* **Training** (Alg. 1): x₀-prediction with the error prior of Eq. 15,
  ẑ_t = √ᾱ_t (z₀ + λξ) + √(1−ᾱ_t) ε, λ = 0.1; loss α·MSE(mask latent) + (1−α)·MSE(edge latent), α = 0.2.
* **Inference** (Alg. 2): DDIM, 8 steps, σ = 0, "leading" timesteps [875, 750, …, 0], x₀ not clipped (item 9),
  final previous ᾱ = 1; an ensemble of N = 5 chains run as ONE batch of N·B latents that share the condition
  features computed once; the N final latents are averaged and the mask latent decoded by the LightVAE
  into ``mask_logits``; the edge latent is decoded into the auxiliary ``edge_logits``.

Resolved ambiguities (paper 002 vs official code), each also a config key:

1. The "score" wording of Eq. 3–5 vs the code: the network predicts x₀ (``prediction_type="sample"``) and
   the loss is a latent MSE, as in Alg. 1 and the code.
2. UNet size and 3. condition injection: exactly the single-level diffusers UNet with one concat-and-conv
   after ``conv_in`` (no cross-attention, no per-block injection).
4. Masks in ±1 before encoding; the LightVAE output is a logit.
5. Edge GT: ``edge_gt="band"`` (IMDL-BenCo edge band, width ``edge_width`` = 7; code) by default,
   ``"canny"`` = dilate(Canny(y)) (paper Eq. 7; the data layer dilates with a ``edge_width``×``edge_width``
   kernel; [R] 5, to be set with the ``paper`` recipe).
6. λ_lat = 0.01 and b = 32 (official script). 7. Epochs: ``code`` preset 60 + 2 warm-up (default),
   ``paper`` preset 200. 8. Flip-TTA fusion: element-wise max (``flip_tta``, on by default as in the official
   test code and the paper's main tables; Table 4 efficiency numbers are without it).
9. DDIM: diffusers ``DDIMScheduler`` (set_alpha_to_one, leading spacing, η = 0) **without** clipping x̂₀
   (``sample_clip`` None). The official code keeps diffusers' default clip of x̂₀ to ±1, which fits only
   LightVAE latents that stay within ±1; training regresses the unclipped latents (Alg. 1), and a LightVAE
   trained without the SD-VAE teacher has latents beyond ±1 (up to ±2.5 on CASIA masks), so the clipped
   sampler ends on latents that decode to other masks than the ones training fits. Overfitting 16 CASIA images
   at 64 px (docs/BENCHMARKS.md, "Learnability"): the LightVAE reconstructs their masks to a mean F1 of 0.860
   (0.784 from latents clipped to ±1); the trained denoiser's sampled masks reach 0.857 unclipped, 0.783 clipped.
   ``sample_clip: 1.0`` reproduces the official sampler.
10. Teacher: a local diffusers ``AutoencoderKL`` folder (``teacher_vae``; sd-vae-ft-mse in the paper); without
    it the LightVAE trains from scratch with the L1 term only (resolved choice: no teacher).

Further choices of this implementation (not in the paper):

* The initial noise of every ensemble member is drawn from a ``torch.Generator`` on the input's device seeded
  with ``sample_seed`` and is shared by all images of a batch, so a mask depends neither on the global RNG nor
  on the batch it was run in (``sample_seed=None`` draws from the global RNG instead).
* The frozen LightVAE stays in eval mode while the denoiser trains (its BatchNorm statistics are not updated;
  the official code leaves it in train mode).
* ``load_pretrained_stage`` in the denoiser stage takes only the ``lightvae.*`` weights of the earlier run: the
  rest of a LightVAE-stage run is untrained and must not replace ``encoder_weights``.
* ``image_logit`` is the maximum mask logit (the method has no detection head).
"""
from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from ..backbones.lightvae import SD_LATENT_SCALE, LightVAE, load_sd_vae_teacher, mask_to_pm1, pooled_f1, \
    sd_vae_mask_latent
from ..backbones.mit import MixVisionTransformer, load_mit_weights
from ..checkpoint import format_key_report, read_state_dict
from ..errors import UserError
from ..registry import register_model
from .base import TamperModel, max_pool_image_logit

PAPER = ("DiffIML: score-based latent diffusion with a lightweight mask VAE, edge supervision and error prior "
         "for image manipulation localization (paper 002; code scu-zjz/DiffIML)")

TRAIN_PRESETS = {
    # official script (runs/demo_train_diffiml.sh): 60 epochs, 2 warm-up, 16/GPU × 8 GPUs; edge_gt="band"
    "code": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05, "epochs": 60, "warmup_epochs": 2,
             "schedule": "cosine", "min_lr": 0.0, "batch_size": 16, "global_batch": 128},
    # paper §4.1: 200 epochs, cosine 1e-4 → 0, total batch 128 (16 × 8); the paper's edges are
    # dilate(Canny(y)) (Eq. 7): use it with the config keys edge_gt="canny", edge_width=5
    "paper": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05, "epochs": 200, "warmup_epochs": 0,
              "schedule": "cosine", "min_lr": 0.0, "batch_size": 16, "global_batch": 128,
              "model": {"edge_gt": "canny", "edge_width": 5}},  # paper: e = dilate(Canny(y)), 5×5 [R]
    # stage "lightvae" (runs/demo_train_light_vae.sh): Adam 1e-4, constant, 40 epochs, 8/GPU × 8 GPUs
    "lightvae-code": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "epochs": 40, "warmup_epochs": 0,
                      "schedule": "constant", "min_lr": 1e-4, "batch_size": 8, "global_batch": 64},
}


class ConditionEncoder(nn.Module):
    """MiT → per-stage 1×1 conv (with bias) to ``out_channels`` → bilinear to the latent grid → concat
    (c4, c3, c2, c1) → 3×3 conv (no bias), BN, ReLU (official code)."""

    def __init__(self, variant: str, out_channels: int, drop_path_rate: float, weights: str | None):
        super().__init__()
        self.backbone = MixVisionTransformer(variant, drop_path_rate=drop_path_rate)
        if weights:
            load_mit_weights(self.backbone, weights)
        dims = self.backbone.embed_dims
        self.linear_c1 = nn.Conv2d(dims[0], out_channels, 1)
        self.linear_c2 = nn.Conv2d(dims[1], out_channels, 1)
        self.linear_c3 = nn.Conv2d(dims[2], out_channels, 1)
        self.linear_c4 = nn.Conv2d(dims[3], out_channels, 1)
        self.linear_fuse = nn.Sequential(nn.Conv2d(4 * out_channels, out_channels, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        c1, c2, c3, c4 = self.backbone(image)
        projected = [F.interpolate(proj(c), size=size, mode="bilinear", align_corners=False)
                     for proj, c in ((self.linear_c4, c4), (self.linear_c3, c3), (self.linear_c2, c2),
                                     (self.linear_c1, c1))]
        return self.linear_fuse(torch.cat(projected, dim=1))


class LightUNet(nn.Module):
    """Single-level diffusers ``UNet2DModel`` with the condition fused after ``conv_in`` (official code).

    The fusion is one 3×3 conv (no bias) on ``concat(conv_in(z), f)``. Being linear, it splits into a term of
    ``conv_in(z)`` and a term of ``f``; :meth:`project_condition` computes the second once so that sampling does
    not recompute it for every step and ensemble member (the result is the same convolution).
    """

    def __init__(self, latent_channels: int, channels: int, condition_channels: int, layers_per_block: int,
                 attention_head_dim: int):
        super().__init__()
        self.channels = channels
        self.unet = UNet2DModel(in_channels=latent_channels, out_channels=latent_channels,
                                block_out_channels=(channels,), down_block_types=("DownBlock2D",),
                                up_block_types=("UpBlock2D",), layers_per_block=layers_per_block,
                                attention_head_dim=attention_head_dim)
        self.condition_fuse = nn.Conv2d(channels + condition_channels, channels, 3, padding=1, bias=False)

    def project_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """The condition's share of the fusion conv, ``B×channels×h×w``."""
        return F.conv2d(condition, self.condition_fuse.weight[:, self.channels:], padding=1)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor | None = None,
                condition_term: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted clean latent (same shape as ``sample``); give ``condition`` or its ``project_condition``."""
        unet = self.unet
        if condition_term is None:
            condition_term = self.project_condition(condition)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(sample.dtype))
        hidden = F.conv2d(unet.conv_in(sample), self.condition_fuse.weight[:, :self.channels], padding=1)
        hidden = hidden + condition_term
        skips: tuple[torch.Tensor, ...] = (hidden,)
        for block in unet.down_blocks:
            hidden, block_skips = block(hidden_states=hidden, temb=emb)
            skips += block_skips
        hidden = unet.mid_block(hidden, emb)
        for block in unet.up_blocks:
            n = len(block.resnets)
            hidden = block(hidden, skips[-n:], emb)
            skips = skips[:-n]
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))


@register_model("diffiml", paper=PAPER, train_presets=TRAIN_PRESETS,
                description="DiffIML: LightVAE + MiT-b3 condition + light UNet, DDIM 8 steps, ensemble of 5",
                tiny_config={"encoder_variant": "b0", "condition_channels": 32, "unet_channels": 32,
                             "ensemble_size": 2, "num_inference_steps": 2, "flip_tta": False})
class DiffIML(TamperModel):
    """DiffIML with stages ``lightvae`` (distil/train the mask autoencoder) and ``denoiser`` (default)."""

    stages = ("lightvae", "denoiser")
    #: labelled GMAC counts that ``tamperscope models`` shows: the default config (N = 5 members, flip TTA, as the
    #: official test code and the paper's main tables) and without flip TTA (as Table 4's efficiency numbers)
    complexity_variants = MappingProxyType({"flip TTA, default": {}, "no TTA": {"flip_tta": False}})

    def __init__(self, stage: str = "denoiser",
                 # condition encoder (MiT + fusion head)
                 encoder_variant: str = "b3", encoder_weights: str | None = None, drop_path_rate: float = 0.1,
                 condition_channels: int = 128,
                 # light UNet
                 unet_channels: int = 128, unet_layers_per_block: int = 2, unet_attention_head_dim: int = 8,
                 # LightVAE
                 lightvae_base_channels: int = 32, latent_channels: int = 4, latent_scale: float = SD_LATENT_SCALE,
                 lightvae_weights: str | None = None, teacher_vae: str | None = None, latent_loss_weight: float = 0.01,
                 # diffusion; sample_clip None: x̂₀ unclipped in DDIM (item 9), 1.0: the official code's clip to ±1
                 num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 prior_rate: float = 0.1, seg_weight: float = 0.2, num_inference_steps: int = 8,
                 ensemble_size: int = 5, flip_tta: bool = True, sample_seed: int | None = 0,
                 sample_clip: float | None = None,
                 # edge ground truth asked from the data layer
                 edge_gt: str = "band", edge_width: int = 7):
        super().__init__()
        if edge_gt not in ("band", "canny"):
            raise UserError(f"diffiml: edge_gt must be 'band' or 'canny', got {edge_gt!r}")
        if ensemble_size < 1:
            raise UserError(f"diffiml: ensemble_size must be ≥ 1, got {ensemble_size}")
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise UserError(f"diffiml: num_inference_steps must be in 1..{num_train_timesteps}, "
                            f"got {num_inference_steps}")
        if sample_clip is not None and not sample_clip > 0:
            raise UserError(f"diffiml: sample_clip must be > 0 or None (no clipping), got {sample_clip}")
        if not 0.0 <= seg_weight <= 1.0:
            raise UserError(f"diffiml: seg_weight must be in [0, 1], got {seg_weight}")
        self.latent_channels = latent_channels
        self.latent_loss_weight = latent_loss_weight
        self.prior_rate = prior_rate
        self.seg_weight = seg_weight
        self.num_inference_steps = num_inference_steps
        self.ensemble_size = ensemble_size
        self.flip_tta = flip_tta
        self.sample_seed = sample_seed
        self.edge_gt = edge_gt
        self.edge_width = edge_width
        self.teacher_vae_path = teacher_vae
        #: the SD-VAE teacher is kept outside the module tree: it is neither saved, counted nor moved by .to()
        self._teacher_cache: list = []

        self.condition_encoder = ConditionEncoder(encoder_variant, condition_channels, drop_path_rate,
                                                  encoder_weights)
        self.denoiser = LightUNet(2 * latent_channels, unet_channels, condition_channels, unet_layers_per_block,
                                  unet_attention_head_dim)
        self.lightvae = LightVAE(lightvae_base_channels, latent_channels, latent_scale)
        if lightvae_weights:
            self.load_lightvae_weights(lightvae_weights)
        # convolution weights channels-last (the MiT's already are): oneDNN's convolutions of the UNet and the
        # LightVAE run faster in that layout on the CPU, the same maths (inference at 512²: 7.97 → 6.88 s, 2 threads)
        self.to(memory_format=torch.channels_last)

        schedule = dict(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=beta_start,
                        beta_end=beta_end, prediction_type="sample", clip_sample=True)
        self.train_scheduler = DDPMScheduler(**schedule)
        clip = {"clip_sample": sample_clip is not None, "clip_sample_range": float(sample_clip or 1.0)}
        self.sample_scheduler = DDIMScheduler(**(schedule | clip), set_alpha_to_one=True, steps_offset=0,
                                              timestep_spacing="leading")
        self.set_stage(stage)

    # ------------------------------------------------------------------------------------------
    # stages, weights

    def set_stage(self, stage: str | None) -> None:
        """``lightvae``: only the LightVAE trains; ``denoiser``: the LightVAE is frozen (and kept in eval)."""
        stage = stage or "denoiser"
        super().set_stage(stage)
        self.lightvae.requires_grad_(stage == "lightvae")
        self.condition_encoder.requires_grad_(stage == "denoiser")
        self.denoiser.requires_grad_(stage == "denoiser")
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.stage == "denoiser":
            self.lightvae.eval()
        elif self.stage == "lightvae":
            self.condition_encoder.eval()
            self.denoiser.eval()
        return self

    @staticmethod
    def _lightvae_keys(sd: dict, source) -> tuple[str, dict]:
        """``(prefix, LightVAE tensors)`` of a state dict: ours (``lightvae.``), the official DiffIML model
        (``vae.``) or a standalone LightVAE file (``encoder.*`` / ``decoder.*``)."""
        for prefix in ("lightvae.", "vae.", ""):
            sub = {k[len(prefix):]: v for k, v in sd.items()
                   if k.startswith(prefix + "encoder.") or k.startswith(prefix + "decoder.")}
            if sub:
                return prefix, sub
        raise UserError(f"{source}: holds no LightVAE weights (keys lightvae.encoder.* / lightvae.decoder.*)")

    def _load_lightvae_state(self, sub: dict, source):
        shapes = {k: v.shape for k, v in self.lightvae.state_dict().items()}
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(shapes[k])}" for k, v in sub.items()
                 if k in shapes and v.shape != shapes[k]]
        if wrong:
            raise UserError(f"{source}: LightVAE weights do not fit (base_channels={self.lightvae.base_channels}): "
                            f"{len(wrong)} tensor(s) of another shape, e.g. {wrong[0]}")
        return self.lightvae.load_state_dict(sub, strict=False)

    def load_lightvae_weights(self, source) -> None:
        """Load the LightVAE from a run folder, a ``.safetensors`` / ``.pth`` file or a state dict."""
        _, sub = self._lightvae_keys(read_state_dict(source), source)
        result = self._load_lightvae_state(sub, source)
        if result.missing_keys or result.unexpected_keys:
            raise UserError(format_key_report(f"{source}: LightVAE weights do not fit",
                                              result.missing_keys, result.unexpected_keys))

    def load_pretrained_stage(self, state_dict: dict, where: str = "pretrained weights"
                              ) -> tuple[list[str], list[str], list[str]]:
        """Start a stage from an earlier run. Denoiser stage: only the LightVAE weights are taken; the other
        keys of the earlier run are returned as left out. Returns (missing, unexpected, left out)."""
        if self.stage != "denoiser":
            return super().load_pretrained_stage(state_dict, where)
        prefix, sub = self._lightvae_keys(state_dict, where)
        result = self._load_lightvae_state(sub, where)
        taken = {prefix + k for k in sub}
        ignored = sorted(k for k in state_dict if k not in taken)
        return (["lightvae." + k for k in result.missing_keys], [prefix + k for k in result.unexpected_keys],
                ignored)

    def data_requirements(self) -> dict:
        return {"edge": self.edge_gt, "edge_width": self.edge_width}

    def selection_metric(self) -> tuple[str, str]:
        return ("recon_f1", "max") if self.stage == "lightvae" else ("pixel_f1", "max")

    # ------------------------------------------------------------------------------------------
    # building blocks

    def latent_size(self, image: torch.Tensor) -> tuple[int, int]:
        H, W = image.shape[-2:]
        if image.ndim != 4 or image.shape[1] != 3 or H % 8 or W % 8:
            raise UserError(f"diffiml: expected a B×3×H×W image with H, W multiples of 8, "
                            f"got shape {tuple(image.shape)}")
        return H // 8, W // 8

    def condition(self, image: torch.Tensor) -> torch.Tensor:
        """Condition features ``B×128×H/8×W/8`` (computed once per image)."""
        return self.condition_encoder(image, self.latent_size(image))

    def error_prior_noising(self, z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                            xi: torch.Tensor) -> torch.Tensor:
        """Eq. 15: ẑ_t = √ᾱ_t (z₀ + λξ) + √(1−ᾱ_t) ε."""
        return self.train_scheduler.add_noise(z0 + self.prior_rate * xi, eps, t)

    def sampling_timesteps(self) -> tuple[list[int], list[float]]:
        """DDIM timesteps and the ᾱ of each step's previous timestep (1 for the last step)."""
        sched = self.sample_scheduler
        sched.set_timesteps(self.num_inference_steps)
        ratio = sched.config.num_train_timesteps // self.num_inference_steps
        timesteps = [int(t) for t in sched.timesteps]
        prev = [float(sched.alphas_cumprod[t - ratio]) if t - ratio >= 0 else float(sched.final_alpha_cumprod)
                for t in timesteps]
        return timesteps, prev

    def initial_noise(self, batch: int, latent_hw: tuple[int, int], device, dtype=torch.float32) -> torch.Tensor:
        """z_T of the N ensemble members, ``N·B×8×h×w`` (member-major); shared by the images of a batch when
        ``sample_seed`` is set, drawn from a generator on ``device``."""
        shape = (self.ensemble_size, 1, 2 * self.latent_channels, *latent_hw)
        if self.sample_seed is None:
            noise = torch.randn(self.ensemble_size, batch, *shape[2:], device=device, dtype=dtype)
        elif torch.device(device).type == "meta":  # shape-only tracing (profile on the meta device)
            noise = torch.empty(shape, device=device, dtype=dtype).expand(-1, batch, -1, -1, -1)
        else:
            generator = torch.Generator(device=device).manual_seed(int(self.sample_seed))
            noise = torch.randn(shape, generator=generator, device=device, dtype=dtype).expand(-1, batch, -1, -1, -1)
        return noise.reshape(-1, *shape[2:])

    def sample(self, condition: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDIM sampling of ``noise`` (``N·B×8×h×w``) given ``condition`` (``B×C×h×w``), all members in one
        batch; returns the ensemble-averaged clean latent ``B×8×h×w``."""
        B = condition.shape[0]
        if noise.shape[0] % B:
            raise ValueError(f"noise batch {noise.shape[0]} is not a multiple of the condition batch {B}")
        members = noise.shape[0] // B
        condition_term = self.denoiser.project_condition(condition).repeat(members, 1, 1, 1)
        sched = self.sample_scheduler
        sched.set_timesteps(self.num_inference_steps)
        z = noise
        for t in sched.timesteps:
            t_batch = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
            z = sched.step(self.denoiser(z, t_batch, condition_term=condition_term), t, z, eta=0.0).prev_sample
        return z.reshape(members, B, *z.shape[1:]).mean(dim=0)

    def profile_extras(self, image_size: int, device) -> dict:
        """For ``tamperscope profile`` (paper 002 Table 4): GMACs of one denoiser call and of the
        full 8-step sampling for N = 1 and N = 5, and the latency of N = 1 and N = 5 measured alternately in
        one run (flip TTA off, as in Table 4)."""
        from ..complexity import count_gmacs_split, time_forward

        saved = (self.ensemble_size, self.flip_tta)
        h = image_size // 8
        dev = torch.device(device)
        z = torch.randn(1, 2 * self.latent_channels, h, h, device=dev)
        t = torch.zeros(1, dtype=torch.long, device=dev)
        cond = torch.randn(1, self.condition_encoder.linear_c1.out_channels, h, h, device=dev)
        out = {}
        total, attention = count_gmacs_split(self, image_size, dev, forward=lambda x: self.denoiser(z, t, cond))
        out["gmacs_denoiser_call"], out["gmacs_denoiser_call_excl_attention"] = total, total - attention
        try:
            self.flip_tta = False
            times = {1: [], 5: []}
            for members in (1, 5, 1, 5):
                self.ensemble_size = members
                times[members].append(time_forward(self, 1, image_size, dev, 0, 1, True))
            for members in (1, 5):
                self.ensemble_size = members
                out[f"gmacs_full_8step_N{members}"] = count_gmacs_split(self, image_size, dev)[0]
                out[f"latency_ms_N{members}"] = min(times[members]) * 1e3
            out["latency_ratio_N5_over_N1"] = out["latency_ms_N5"] / out["latency_ms_N1"]
        finally:
            self.ensemble_size, self.flip_tta = saved
        return out

    # ------------------------------------------------------------------------------------------
    # inference

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> dict:
        """Alg. 2 (+ optional flip TTA): ``mask_logits`` / ``edge_logits`` ``B×1×H×W``, ``image_logit`` ``B``."""
        B = image.shape[0]
        hw = self.latent_size(image)
        x = torch.cat([image, image.flip(-1)]) if self.flip_tta else image
        condition = self.condition_encoder(x, hw)
        noise = self.initial_noise(x.shape[0], hw, image.device, condition.dtype)
        z = self.sample(condition, noise)
        c = self.latent_channels
        mask_logits = self.lightvae.decode(z[:, :c])
        edge_logits = self.lightvae.decode(z[:, c:])
        if self.flip_tta:
            mask_logits = torch.maximum(mask_logits[:B], mask_logits[B:].flip(-1))
            edge_logits = torch.maximum(edge_logits[:B], edge_logits[B:].flip(-1))
        return {"mask_logits": mask_logits, "image_logit": max_pool_image_logit(mask_logits),
                "edge_logits": edge_logits}

    # ------------------------------------------------------------------------------------------
    # training

    def _targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "edge" not in batch:
            raise UserError("diffiml: the batch has no 'edge' target; build it as data_requirements() asks")
        return mask_to_pm1(batch["mask"]), mask_to_pm1(batch["edge"])

    def _teacher(self, device: torch.device):
        if not self._teacher_cache:
            self._teacher_cache.append(load_sd_vae_teacher(self.teacher_vae_path))
        teacher = self._teacher_cache[0]
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        return teacher

    def lightvae_step(self, batch: dict) -> dict:
        """Eq. 6: L1(D_S(E_S(y)), y) + λ_lat·MSE(z_S, z_T) on masks and edge bands stacked along the batch."""
        mask, edge = self._targets(batch)
        y = torch.cat([mask, edge])
        recon, latent = self.lightvae(y)
        recon_l1 = F.l1_loss(recon.float(), y)
        out = {"recon_l1": recon_l1}
        total = recon_l1
        if self.teacher_vae_path:
            target = sd_vae_mask_latent(self._teacher(y.device), y, self.lightvae.scaling_factor)
            latent_mse = F.mse_loss(latent.float(), target.float())
            out["latent_mse"] = latent_mse
            total = total + self.latent_loss_weight * latent_mse
        return {"total": total, **out}

    def denoiser_step(self, batch: dict) -> dict:
        """Alg. 1 with the error prior (Eq. 15) and the weighted mask/edge latent MSE (Eq. 8–10)."""
        mask, edge = self._targets(batch)
        image = batch["image"]
        with torch.no_grad():
            z_mask = self.lightvae.encode(mask)
            z_edge = self.lightvae.encode(edge)
        z0 = torch.cat([z_mask, z_edge], dim=1)
        condition = self.condition(image)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (z0.shape[0],), device=z0.device)
        z_t = self.error_prior_noising(z0, t, torch.randn_like(z0), torch.randn_like(z0))
        pred = self.denoiser(z_t, t, condition).float()
        c = self.latent_channels
        seg = F.mse_loss(pred[:, :c], z_mask)
        edg = F.mse_loss(pred[:, c:], z_edge)
        return {"total": self.seg_weight * seg + (1 - self.seg_weight) * edg, "seg_mse": seg, "edge_mse": edg}

    def training_step(self, batch: dict) -> dict:
        return self.lightvae_step(batch) if self.stage == "lightvae" else self.denoiser_step(batch)

    @torch.no_grad()
    def stage_validation_step(self, batch: dict) -> dict | None:
        """LightVAE stage: ``recon_f1`` = F1 at 0.5 of decode(encode(mask)) vs mask, pooled over the tampered
        masks of the batch (a batch without one gives no value). Denoiser stage: ``None`` (pixel metrics)."""
        if self.stage != "lightvae":
            return None
        mask = batch["mask"]
        tampered = mask.flatten(1).amax(dim=1) > 0.5
        if not bool(tampered.any()):
            return {}
        recon, _ = self.lightvae(mask_to_pm1(mask[tampered]))
        return {"recon_f1": pooled_f1(recon, mask[tampered])}
