"""DiffIML (paper 002 §3, official code): schedule, error prior, ensemble-in-one-batch, determinism, stages."""
import pytest
import torch
from safetensors.torch import save_file

from tamperscope.backbones.lightvae import SD_LATENT_SCALE, mask_to_pm1
from tamperscope.checkpoint import save_state_dict
from tamperscope.errors import UserError
from tamperscope.registry import create_model, get_entry


# tiny MiT-b0 condition encoder, 32-channel UNet, 2 members × 2 DDIM steps: seconds on a CPU
TINY = dict(encoder_variant="b0", condition_channels=32, unet_channels=32, ensemble_size=2, num_inference_steps=2,
            flip_tta=False, drop_path_rate=0.0)


def tiny(**overrides):
    return create_model("diffiml", **(TINY | overrides))


def synthetic_batch(size=64, batch=1):
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, size // 4: size // 2, size // 4: 3 * size // 4] = 1
    edge = torch.zeros_like(mask)
    edge[:, :, size // 4 - 2: size // 4 + 2, size // 4: 3 * size // 4] = 1
    image = torch.randn(batch, 3, size, size) * 0.3 + 2.0 * mask - 0.5
    return {"image": image, "mask": mask, "edge": edge, "label": torch.ones(batch)}


def test_ddim_schedule_eight_steps():
    model = tiny(num_inference_steps=8)
    timesteps, prev_alpha = model.sampling_timesteps()
    assert timesteps == [875, 750, 625, 500, 375, 250, 125, 0]
    assert prev_alpha[-1] == 1.0
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    assert prev_alpha[0] == pytest.approx(float(alphas_cumprod[750]), rel=1e-5)


def test_error_prior_matches_eq15():
    model = tiny()
    g = torch.Generator().manual_seed(3)
    z0, eps, xi = (torch.randn(3, 8, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([0, 500, 999])
    a = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t].float().view(-1, 1, 1, 1)
    expected = a.sqrt() * (z0 + 0.1 * xi) + (1 - a).sqrt() * eps
    torch.testing.assert_close(model.error_prior_noising(z0, t, eps, xi), expected, atol=1e-5, rtol=1e-5)
    assert model.prior_rate == 0.1 and get_entry("diffiml").default_config["prior_rate"] == 0.1


def test_same_seed_same_mask_independent_of_global_rng():
    model = tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    a = model(x)["mask_logits"]
    torch.manual_seed(2)
    b = model(x)["mask_logits"]
    assert torch.equal(a, b)
    single = model(x[1:])["mask_logits"]  # noise is shared over the batch: same mask whatever the batch
    torch.testing.assert_close(single, a[1:], atol=1e-4, rtol=1e-4)
    model.sample_seed = 7
    assert not torch.allclose(model(x)["mask_logits"], a)


def test_ensemble_in_one_batch_equals_sequential_runs():
    model = tiny(ensemble_size=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cond = model.condition(x)
        noise = model.initial_noise(2, (8, 8), x.device)
        assert noise.shape == (10, 8, 8, 8)
        calls = []
        hook = model.denoiser.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
        batched = model.sample(cond, noise)
        hook.remove()
        assert calls == [10] * model.num_inference_steps  # N·B latents per UNet call, one call per step
        sequential = torch.stack([model.sample(cond, member) for member in noise.split(2)]).mean(0)
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=1e-5)


def test_sampling_ends_on_the_latent_training_regresses():
    """Alg. 1 trains x̂₀ = z₀ by MSE on unclipped LightVAE latents, which exceed ±1 without the SD-VAE teacher. A
    perfect x̂₀ predictor must make DDIM end on z₀ itself; the official code's clip to ±1 (``sample_clip: 1.0``)
    ends on clip(z₀) instead, which decodes to another mask (found by benchmarks/learnability.py)."""
    target = torch.linspace(-2.5, 2.5, 8 * 8 * 8).reshape(1, 8, 8, 8)

    def oracle(sample, timesteps, condition=None, condition_term=None):
        return target.expand(sample.shape[0], -1, -1, -1)

    results = {}
    for clip in (None, 1.0):
        model = tiny(sample_clip=clip).eval()
        model.denoiser.forward = oracle
        with torch.no_grad():
            cond = torch.randn(1, model.condition_encoder.linear_c1.out_channels, 8, 8)
            results[clip] = model.sample(cond, model.initial_noise(1, (8, 8), cond.device))
    torch.testing.assert_close(results[None], target, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[1.0], target.clamp(-1, 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="sample_clip"):
        tiny(sample_clip=0.0)


def test_condition_fusion_is_one_conv_on_the_concatenation():
    """Sampling precomputes the condition's share of the 3×3 fusion conv; it must equal conv(concat(...))."""
    unet = tiny().denoiser
    z, cond = torch.randn(2, 8, 8, 8), torch.randn(2, 32, 8, 8)
    t = torch.tensor([5, 900])
    captured = {}

    def grab_input(module, args, kwargs):
        captured["h"] = kwargs["hidden_states"]

    hook = unet.unet.down_blocks[0].register_forward_pre_hook(grab_input, with_kwargs=True)
    out = unet(z, t, cond)
    hook.remove()
    expected = unet.condition_fuse(torch.cat([unet.unet.conv_in(z), cond], dim=1))
    torch.testing.assert_close(captured["h"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unet(z, t, condition_term=unet.project_condition(cond)), out)


def test_forward_shapes_and_flip_tta_is_max_fusion():
    model = tiny().eval()
    x = torch.randn(1, 3, 64, 96)
    out = model(x)
    assert out["mask_logits"].shape == (1, 1, 64, 96) and out["edge_logits"].shape == (1, 1, 64, 96)
    assert out["image_logit"].shape == (1,)
    assert torch.equal(out["image_logit"], out["mask_logits"].flatten(1).amax(1))
    assert model.condition(x).shape == (1, 32, 8, 12)
    model.flip_tta = True
    fused = model(x)["mask_logits"]
    model.flip_tta = False
    flipped = model(x.flip(-1))["mask_logits"].flip(-1)
    torch.testing.assert_close(fused, torch.maximum(out["mask_logits"], flipped), atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="multiples of 8"):
        model(torch.zeros(1, 3, 60, 64))


def test_full_size_parameter_count():
    model = create_model("diffiml")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 48.5e6) < 1.5e6, n  # paper Table 4: 48.51 M
    assert sum(p.numel() for p in model.lightvae.parameters()) < 0.21e6
    unet = model.denoiser.unet
    assert len(unet.down_blocks) == 1 and unet.down_blocks[0].downsamplers is None
    assert len(unet.up_blocks[0].resnets) == 3 and unet.up_blocks[0].upsamplers is None
    assert unet.mid_block.attentions[0].heads == 16
    assert model.condition_encoder.linear_fuse[0].weight.shape == (128, 512, 3, 3)
    assert model.ensemble_size == 5 and model.num_inference_steps == 8 and model.seg_weight == 0.2


def _fixed_seed_loss(model, batch, seed=11):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.training_step(batch)["total"].item()


def test_denoiser_training_drives_loss_down():
    model = tiny()
    model.train()
    assert not model.lightvae.training  # frozen LightVAE stays in eval
    assert not any(p.requires_grad for p in model.lightvae.parameters())
    batch = synthetic_batch(size=32)
    vae_before = {k: v.clone() for k, v in model.lightvae.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    before = _fixed_seed_loss(model, batch)
    for step in range(25):
        torch.manual_seed(100 + step)
        loss = model.training_step(batch)
        assert set(loss) == {"total", "seg_mse", "edge_mse"}
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
    after = _fixed_seed_loss(model, batch)
    assert after < 0.5 * before, (before, after)
    for k, v in model.lightvae.state_dict().items():
        assert torch.equal(v, vae_before[k]), k


def test_lightvae_stage_from_scratch_and_validation():
    model = tiny(stage="lightvae")
    model.train()
    assert not any(p.requires_grad for p in model.condition_encoder.parameters())
    assert not any(p.requires_grad for p in model.denoiser.parameters())
    assert model.selection_metric() == ("recon_f1", "max")
    batch = synthetic_batch(batch=2)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(40):
        loss = model.training_step(batch)
        assert set(loss) == {"total", "recon_l1"}
        first = first if first is not None else loss["total"].item()
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
    model.eval()
    assert model.training_step(batch)["total"].item() < 0.5 * first
    metrics = model.stage_validation_step(batch)
    assert 0.0 <= metrics["recon_f1"] <= 1.0 and metrics["recon_f1"] > 0.8
    assert model.stage_validation_step(batch | {"mask": torch.zeros(2, 1, 64, 64)}) == {}


def test_lightvae_stage_with_sd_vae_teacher(tmp_path):
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4).save_pretrained(tmp_path / "sd-vae")
    model = tiny(stage="lightvae", teacher_vae=str(tmp_path / "sd-vae"))
    batch = synthetic_batch(size=32, batch=2)
    loss = model.training_step(batch)
    assert set(loss) == {"total", "recon_l1", "latent_mse"}
    teacher = model._teacher_cache[0]
    y = torch.cat([mask_to_pm1(batch["mask"]), mask_to_pm1(batch["edge"])])
    z_t = SD_LATENT_SCALE * teacher.encode(y.repeat(1, 3, 1, 1)).latent_dist.mean
    _, z_s = model.lightvae(y)
    torch.testing.assert_close(loss["latent_mse"], torch.mean((z_s - z_t) ** 2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss["total"], loss["recon_l1"] + 0.01 * loss["latent_mse"])
    assert not any(k.startswith("_teacher") for k in model.state_dict())  # the teacher is never saved
    first = loss["total"].item()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(15):
        loss = model.training_step(batch)
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
    model.eval()
    assert model.training_step(batch)["total"].item() < 0.7 * first
    with pytest.raises(UserError, match="no config.json"):
        tiny(stage="lightvae", teacher_vae=str(tmp_path / "missing")).training_step(batch)


def test_lightvae_weights_and_pretrained_stage(tmp_path, capsys):
    stage_a = tiny(stage="lightvae")
    with torch.no_grad():
        for p in stage_a.lightvae.parameters():
            p.add_(0.5)
    (tmp_path / "run").mkdir()
    save_state_dict(stage_a, tmp_path / "run" / "model.safetensors")  # as a run writes it (channels-last made contiguous)
    b = tiny(lightvae_weights=str(tmp_path / "run"))
    for k, v in stage_a.lightvae.state_dict().items():
        assert torch.equal(b.lightvae.state_dict()[k], v), k
    save_file({k: v.contiguous() for k, v in stage_a.lightvae.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    tiny(lightvae_weights=str(tmp_path / "vae.safetensors"))  # standalone LightVAE layout
    official = {"model": {"vae." + k: v for k, v in stage_a.lightvae.state_dict().items()}, "epoch": 3}
    torch.save(official, tmp_path / "diffiml_official.pth")  # official DiffIML checkpoint layout
    d = tiny(lightvae_weights=str(tmp_path / "diffiml_official.pth"))
    assert torch.equal(d.lightvae.encoder[9].weight, stage_a.lightvae.encoder[9].weight)

    c = tiny()
    encoder_before = {k: v.clone() for k, v in c.condition_encoder.state_dict().items()}
    missing, unexpected, left_out = c.load_pretrained_stage(stage_a.state_dict())
    assert missing == [] and unexpected == []
    assert left_out and all(not k.startswith("lightvae.") for k in left_out)
    assert torch.equal(c.lightvae.decoder[0].weight, stage_a.lightvae.decoder[0].weight)
    for k, v in c.condition_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k  # the untrained encoder of stage A is not taken
    with pytest.raises(UserError, match="no LightVAE weights"):
        c.load_pretrained_stage({"denoiser.x": torch.zeros(1)})
    # what `train --stage denoiser --pretrained RUN` prints: the left-out tensors are not called unexpected
    from tamperscope.engine.train import load_pretrained_stage

    capsys.readouterr()
    load_pretrained_stage(tiny(), str(tmp_path / "run"))
    printed = capsys.readouterr().out
    assert "all keys matched" in printed and f"left out {len(left_out)} of modules" in printed
    assert "unexpected" not in printed
    with pytest.raises(UserError, match="do not fit"):
        tiny(lightvae_base_channels=16, lightvae_weights=str(tmp_path / "vae.safetensors"))


def test_data_requirements_presets_and_errors():
    assert tiny().data_requirements() == {"edge": "band", "edge_width": 7}
    assert tiny(edge_gt="canny", edge_width=5).data_requirements() == {"edge": "canny", "edge_width": 5}
    entry = get_entry("diffiml")
    assert entry.stages == ("lightvae", "denoiser")
    assert list(entry.train_presets)[0] == "code"
    assert entry.train_presets["code"]["epochs"] == 60 and entry.train_presets["paper"]["epochs"] == 200
    with pytest.raises(UserError, match="edge_gt"):
        tiny(edge_gt="sobel")
    with pytest.raises(UserError, match="'edge'"):
        tiny().training_step({"image": torch.zeros(1, 3, 64, 64), "mask": torch.zeros(1, 1, 64, 64)})


def test_profile_reports_ensemble_latencies_and_both_flop_counts():
    from tamperscope.engine.profile import profile_model

    r = profile_model("diffiml", image_size=64, iters=1, encoder_variant="b0")
    for key in ("latency_ms_N1", "latency_ms_N5", "latency_ratio_N5_over_N1", "gmacs_denoiser_call",
                "gmacs_full_8step_N1", "gmacs_full_8step_N5"):
        assert r[key] > 0, key
    # full sampling = condition + 8 denoiser calls per member + decodes: N = 5 costs more than N = 1
    assert r["gmacs_full_8step_N5"] > r["gmacs_full_8step_N1"] > 8 * r["gmacs_denoiser_call"]
