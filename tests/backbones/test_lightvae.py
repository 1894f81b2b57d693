"""LightVAE (DiffIML §3.2, official code) and the SD-VAE teacher helpers."""
import pytest
import torch

from tamperscope.backbones.lightvae import SD_LATENT_SCALE, LightVAE, load_sd_vae_teacher, mask_to_pm1, pooled_f1, \
    sd_vae_mask_latent
from tamperscope.errors import UserError



def tiny_sd_vae():
    from diffusers import AutoencoderKL

    # four levels = ×8 down like KL-f8, but 32 channels and one resnet per level
    return AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def test_shapes_scale_and_parameter_count():
    vae = LightVAE().eval()
    n = sum(p.numel() for p in vae.parameters())
    assert 0.19e6 < n < 0.21e6, n  # ≈0.2 M with b = 32
    mask = mask_to_pm1((torch.rand(2, 1, 64, 96) > 0.5).float())
    logits, latent = vae(mask)
    assert latent.shape == (2, 4, 8, 12) and logits.shape == (2, 1, 64, 96)
    torch.testing.assert_close(latent, vae.encoder(mask) * SD_LATENT_SCALE)
    torch.testing.assert_close(vae.decode(latent), vae.decoder(vae.encoder(mask)))
    with pytest.raises(UserError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 1, 60, 64))


def test_official_key_layout():
    """Module order follows the official LightVAE, so its state dict loads without renaming."""
    keys = set(LightVAE().state_dict())
    for k in ("encoder.0.weight", "encoder.1.running_mean", "encoder.9.weight", "encoder.9.bias",
              "decoder.0.weight", "decoder.3.weight", "decoder.9.weight", "decoder.10.weight", "decoder.12.bias"):
        assert k in keys, k
    assert LightVAE().state_dict()["decoder.3.weight"].shape == (128, 64, 3, 3)  # ConvTranspose 4b→2b


def test_mask_to_pm1_and_pooled_f1():
    m = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    assert mask_to_pm1(m).tolist() == [[[[-1.0, 1.0], [1.0, -1.0]]]]
    logits = torch.tensor([[[[-3.0, 2.0], [-1.0, 0.5]]]])  # tp=1, fn=1, fp=1
    assert pooled_f1(logits, m) == pytest.approx(0.5)
    assert pooled_f1(mask_to_pm1(m), m) == 1.0
    assert pooled_f1(-torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)) == 1.0


def test_teacher_latent_is_scaled_posterior_mean(tmp_path):
    tiny_sd_vae().save_pretrained(tmp_path / "vae")
    teacher = load_sd_vae_teacher(tmp_path / "vae")
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    y = mask_to_pm1((torch.rand(2, 1, 32, 32) > 0.5).float())
    z = sd_vae_mask_latent(teacher, y)
    assert z.shape == (2, 4, 4, 4)
    moments = teacher.quant_conv(teacher.encoder(torch.cat([y, y, y], dim=1)))
    torch.testing.assert_close(z, SD_LATENT_SCALE * moments[:, :4], atol=1e-5, rtol=1e-5)


def test_teacher_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_sd_vae_teacher(tmp_path)
