"""LightVAE: the lightweight mask-specific autoencoder of DiffIML (paper 002 §3.2 "LightVAE", Eq. 6;
official code scu-zjz/DiffIML) and the helpers to distil it from the Stable Diffusion VAE (diffusers KL-f8).

A fully convolutional ×8 autoencoder for one-channel masks in ±1: three stride-2 3×3 convolutions
(BN, ReLU) and a 1×1 projection to a 4-channel latent that is multiplied by the SD latent scale
0.18215; the decoder divides by it, projects 4→4b with a 1×1 convolution and upsamples with three
stride-2 transposed convolutions before a 3×3 output convolution. The decoder output is a logit:
``sigmoid(out) > 0.5 ⇔ out > 0``. Module order (and so the state-dict keys ``encoder.{0..9}``,
``decoder.{0..12}``) follows the official LightVAE so its weights load unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

#: SD v1 latent scaling factor (the SD v1 VAE config); DiffIML uses it for the student too.
SD_LATENT_SCALE = 0.18215


class LightVAE(nn.Module):
    """Student autoencoder (b = ``base_channels``; b = 32 gives ≈0.2 M parameters)."""

    def __init__(self, base_channels: int = 32, latent_channels: int = 4, scaling_factor: float = SD_LATENT_SCALE):
        super().__init__()
        b = base_channels
        self.base_channels = b
        self.latent_channels = latent_channels
        self.scaling_factor = scaling_factor
        self.encoder = nn.Sequential(
            nn.Conv2d(1, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
            nn.Conv2d(b, 2 * b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * b), nn.ReLU(inplace=True),
            nn.Conv2d(2 * b, 4 * b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * b), nn.ReLU(inplace=True),
            nn.Conv2d(4 * b, latent_channels, 1),
        )

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                    nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False)]

        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, 4 * b, 1),
            *up(4 * b, 2 * b), *up(2 * b, b), *up(b, b),
            nn.BatchNorm2d(b), nn.ReLU(inplace=True), nn.Conv2d(b, 1, 3, padding=1),
        )

    def encode(self, mask_pm1: torch.Tensor) -> torch.Tensor:
        """``B×1×H×W`` mask in ±1 → scaled latent ``B×4×H/8×W/8`` (already ×0.18215)."""
        if mask_pm1.ndim != 4 or mask_pm1.shape[1] != 1 or mask_pm1.shape[-2] % 8 or mask_pm1.shape[-1] % 8:
            raise UserError(f"LightVAE.encode expects a B×1×H×W mask with H, W multiples of 8, "
                            f"got shape {tuple(mask_pm1.shape)}")
        return self.encoder(mask_pm1) * self.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent ``B×4×h×w`` → mask logit ``B×1×8h×8w``."""
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise UserError(f"LightVAE.decode expects a B×{self.latent_channels}×h×w latent, "
                            f"got shape {tuple(latent.shape)}")
        return self.decoder(latent / self.scaling_factor)

    def forward(self, mask_pm1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction logit, scaled latent)``."""
        latent = self.encode(mask_pm1)
        return self.decode(latent), latent


def mask_to_pm1(mask01: torch.Tensor) -> torch.Tensor:
    """{0,1} mask (a pixel is tampered above 0.5) → ±1, the LightVAE / SD-VAE input range."""
    return torch.where(mask01 > 0.5, 1.0, -1.0)


def pooled_f1(logits: torch.Tensor, mask01: torch.Tensor) -> float:
    """F1 at probability 0.5 (logit 0) pooled over all pixels given; 1.0 when neither side has a positive."""
    pred = logits > 0
    gt = mask01 > 0.5
    tp = (pred & gt).sum().item()
    fp = (pred & ~gt).sum().item()
    fn = (~pred & gt).sum().item()
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2 * tp / denom


def load_sd_vae_teacher(folder: str | Path):
    """Load a local diffusers ``AutoencoderKL`` folder (e.g. ``sd-vae-ft-mse``) as a frozen teacher."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"teacher_vae: {folder} is not a diffusers AutoencoderKL folder (no config.json)")
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise UserError(f"teacher_vae: cannot load an AutoencoderKL from {folder}: {exc}") from exc
    if vae.config.in_channels != 3 or vae.config.latent_channels != 4:
        raise UserError(f"teacher_vae: {folder} has in_channels={vae.config.in_channels}, "
                        f"latent_channels={vae.config.latent_channels}; the SD KL-f8 VAE has 3 and 4")
    vae.requires_grad_(False)
    return vae.eval()


@torch.no_grad()
def sd_vae_mask_latent(vae, mask_pm1: torch.Tensor, scaling_factor: float = SD_LATENT_SCALE) -> torch.Tensor:
    """Teacher latent of Eq. 6: ``scaling_factor · mean(E_T([y, y, y]))`` (posterior mean, not a sample)."""
    return vae.encode(mask_pm1.repeat(1, 3, 1, 1)).latent_dist.mean * scaling_factor
