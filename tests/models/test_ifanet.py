"""IFA-Net: shapes, TAPI/FiLM identity at init, gradient routing, stages, ablations, parameter counts."""
import pytest
import torch

from tamperscope.errors import UserError
from tamperscope.nn.film import FiLM, PromptEncoder
from tamperscope.registry import create_model, get_entry

TINY = dict(mae_variant="tiny", mae_input_size=None, mit_variant="b0", mit_embed_dims=[16, 32, 80, 128],
            mit_depths=[1, 1, 1, 1], decoder_dim=32, prompt_channels=[4, 8, 8, 16], prompt_dim=16,
            drop_path_rate=0.0, head_dropout=0.0)



def _tiny(**kw):
    return create_model("ifanet", **(TINY | kw))


def _batch(size=64, batch=2):
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, size // 4: size // 2, size // 4: 3 * size // 4] = 1
    image = torch.randn(batch, 3, size, size, generator=g) * 0.5 + mask  # the forged area is brighter
    return {"image": image, "mask": mask, "label": torch.ones(batch)}


def test_film_is_identity_at_init_and_broadcasts_over_passes():
    film = FiLM(prompt_dim=16, feature_dim=24)
    tokens, prompts = torch.randn(3 * 2, 5, 24), torch.randn(2, 7, 16)
    assert torch.equal(film(tokens, prompts), tokens)
    with torch.no_grad():
        film.beta[-1].bias.fill_(1.0)
    assert torch.allclose(film(tokens, prompts), tokens + 1)
    with pytest.raises(ValueError):
        film(torch.randn(5, 5, 24), prompts)


def test_prompt_encoder_tokens():
    enc = PromptEncoder(1, (32, 64, 128, 256), 256)
    assert enc(torch.rand(1, 1, 128, 128)).shape == (1, 64, 256)  # factor 16 → 1024 tokens at 512


def test_forward_shapes_and_eval_determinism():
    model = _tiny().eval()
    image = _batch()["image"]
    with torch.no_grad():
        out, again = model(image), model(image)
    assert out["mask_logits"].shape == out["coarse_logits"].shape == (2, 1, 64, 64)
    assert out["image_logit"].shape == (2,)
    for key in ("residual1", "residual2", "reconstruction1", "reconstruction2"):
        assert out[key].shape == (2, 3, 64, 64)
    assert 0 <= out["residual1"].min() and out["residual1"].max() <= 1
    assert torch.equal(out["mask_logits"], again["mask_logits"])  # eval partition is seeded
    # at init the Adaptive Decoder equals D₀ and FiLM is the identity: Stage II repeats Stage I
    assert torch.allclose(out["residual2"], out["residual1"], atol=1e-6)
    assert torch.allclose(out["mask_logits"], out["coarse_logits"], atol=1e-5)
    res = model.reconstruction_residual(image)
    assert res.shape == (2, 1, 64, 64) and torch.allclose(res, out["residual1"].mean(1, keepdim=True))


def test_complementary_passes_mask_every_patch_three_times():
    model = _tiny().eval()
    enc = model._encode(_batch()["image"])
    assert enc.tokens.shape[0] == 8 and enc.tokens.shape[1] == 1 + 4  # 4 passes × B=2, 16/4 visible + CLS
    assert torch.equal(enc.mask.view(4, 2, 16).sum(0), torch.full((2, 16), 3.0))
    model.train()
    assert not torch.equal(model._encode(_batch()["image"]).mask, model._encode(_batch()["image"]).mask)


def test_gradients_reach_prompt_encoder_and_adaptive_decoder_never_the_frozen_mae():
    model = _tiny().train()
    with torch.no_grad():  # leave the zero-init FiLM output layers so gradients can pass them
        for mlp in (model.film.gamma, model.film.beta):
            mlp[-1].weight.normal_(0, 0.02)
    batch = _batch()
    model.training_step(batch)["total"].backward()
    grad_norm = lambda m: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)
    assert grad_norm(model.prompt_encoder) > 0 and grad_norm(model.film) > 0
    assert grad_norm(model.adaptive_decoder) > 0
    assert grad_norm(model.dssn.artifact) > 0 and grad_norm(model.dssn.fusion) > 0
    assert all(p.grad is None and not p.requires_grad for p in model.mae.parameters())


def test_detach_coarse_cuts_stage_two_gradient_to_the_coarse_mask():
    for detach, expect_grad in ((False, True), (True, False)):
        model = _tiny(detach_coarse=detach).train()
        with torch.no_grad():
            model.film.gamma[-1].weight.normal_(0, 0.02)
        out = model(_batch()["image"])
        grad = torch.autograd.grad(out["mask_logits"].sum(), out["coarse_logits"], allow_unused=True)[0]
        assert (grad is not None and float(grad.abs().sum()) > 0) == expect_grad


def test_a_few_steps_drive_the_loss_down():
    torch.manual_seed(0)
    model = _tiny().train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    batch = _batch(batch=1)
    losses = []
    for _ in range(8):
        loss = model.training_step(batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_ablations_of_table_2():
    image = _batch()["image"]
    single = _tiny(dual_stream=False).eval()
    assert not hasattr(single.dssn, "artifact") and single.dssn.content.patch_embed1.proj.in_channels == 6
    one_stage = _tiny(use_tapi=False, adaptive_decoder=False).eval()
    frozen_d = _tiny(adaptive_decoder=False).eval()
    assert one_stage.adaptive_decoder is None and frozen_d.adaptive_decoder is None
    with torch.no_grad():
        assert single(image)["mask_logits"].shape == (2, 1, 64, 64)
        out = one_stage(image)
        assert "residual2" not in out and torch.equal(out["mask_logits"], out["coarse_logits"])
        assert frozen_d(image)["residual2"].shape == (2, 3, 64, 64)
    loss = one_stage.loss(out, _batch())
    assert set(loss) == {"total", "coarse_bce", "coarse_dice"}
    full = _tiny().eval()
    with torch.no_grad():
        terms = full.loss(full(image), _batch())
    expected = terms["refined_bce"] + terms["refined_dice"] + 0.5 * (terms["coarse_bce"] + terms["coarse_dice"])
    assert torch.allclose(terms["total"], expected)


def test_mask_mode_none_and_the_224_mae_path():
    image = _batch(size=96, batch=1)["image"]
    plain = _tiny(mask_mode="none").eval()
    assert plain._encode(image).tokens.shape == (1, 1 + 36, 32)
    cheap = _tiny(mae_input_size=224).eval()
    enc = cheap._encode(cheap._mae_input(image))
    assert enc.grid == (14, 14) and enc.tokens.shape == (4, 1 + 49, 32)  # 196 tokens, 49 visible per pass
    with torch.no_grad():
        out = cheap(image)
    assert out["reconstruction1"].shape == (1, 3, 224, 224)
    assert out["residual1"].shape == out["residual2"].shape == (1, 3, 96, 96)
    assert out["mask_logits"].shape == (1, 1, 96, 96)
    with pytest.raises(UserError):
        cheap(torch.randn(1, 3, 70, 70))
    with pytest.raises(UserError):
        _tiny(mask_mode="random")


@pytest.mark.parametrize("prior", ["blur", "jpeg"])
def test_low_pass_realness_prior_needs_no_mae(prior, tmp_path):
    """§3.1–3.2's residual |x − x̂₁| with a fixed low-pass x̂₁ (blur / JPEG round trip) instead of the MAE's."""
    from tamperscope.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    cheap = _tiny(realness_prior=prior).eval()
    assert cheap.mae is None and cheap.adaptive_decoder is None and not hasattr(cheap, "film")
    assert not cheap.two_stage and all(p.requires_grad for p in cheap.parameters())
    assert not any(k.startswith("mae.") for k in cheap.state_dict())
    batch = _batch(size=64, batch=2)
    with torch.no_grad():
        out = cheap(batch["image"])
        mae_out = _tiny().eval()(batch["image"])
    assert out["mask_logits"].shape == out["coarse_logits"].shape == (2, 1, 64, 64)
    assert out["residual1"].shape == out["reconstruction1"].shape == (2, 3, 64, 64)
    assert torch.equal(out["mask_logits"], out["coarse_logits"]) and "residual2" not in out
    assert 0 <= out["residual1"].min() and out["residual1"].max() <= 1 and out["residual1"].mean() > 1e-3
    assert not torch.allclose(out["residual1"], mae_out["residual1"], atol=1e-2)  # not the MAE's residual
    x01 = (batch["image"] * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
           + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(out["residual1"], (x01 - cheap.lowpass_reconstruction(x01)).abs())
    torch.testing.assert_close(cheap.reconstruction_residual(batch["image"]), out["residual1"].mean(1, keepdim=True))
    flat = torch.full((1, 3, 64, 64), 0.5)  # a flat image is reconstructed exactly: nothing is "unreal"
    assert (cheap.lowpass_reconstruction(flat) - flat).abs().max() < 2 / 255
    losses = cheap.train().training_step(batch)
    assert set(losses) == {"total", "coarse_bce", "coarse_dice"}
    losses["total"].backward()
    assert cheap.dssn.artifact.patch_embed1.proj.weight.grad is not None
    save_checkpoint(cheap.eval(), tmp_path / "run")  # the checkpoint rebuilds without any weight file
    back = load_checkpoint(tmp_path / "run").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(batch["image"])["mask_logits"], cheap(batch["image"])["mask_logits"])
    with torch.device("meta"):
        full = create_model("ifanet", realness_prior=prior)
    assert sum(p.numel() for p in full.parameters()) < 60e6  # DSSN only (≈54 M), no ViT-L MAE


def test_low_pass_prior_refuses_what_needs_an_mae(tmp_path):
    with pytest.raises(UserError, match="no MAE is built"):
        _tiny(realness_prior="blur", mae_weights=str(tmp_path / "mae.pth"))
    with pytest.raises(UserError, match="no realness-prior stage"):
        _tiny(realness_prior="blur", stage="realness-prior")
    with pytest.raises(UserError, match="realness_prior must be one of"):
        _tiny(realness_prior="gauss")
    with pytest.raises(UserError, match="low-pass prior"):
        _tiny(realness_prior="jpeg").load_pretrained_stage(_tiny(stage="realness-prior").state_dict())
    assert get_entry("ifanet").default_config["realness_prior"] == "mae"


def test_realness_prior_stage_trains_only_the_mae_and_feeds_the_main_stage(tmp_path):
    prior = _tiny(stage="realness-prior").train()
    assert prior.selection_metric() == ("val_loss", "min")
    assert all(p.requires_grad for p in prior.mae.parameters())
    assert not any(p.requires_grad for n, p in prior.named_parameters() if not n.startswith("mae."))
    batch = _batch()
    out = prior.training_step(batch)
    out["total"].backward()
    assert prior.mae.decoder.pred.weight.grad is not None and prior.mae.encoder.blocks[0].attn.qkv.weight.grad is not None
    prior.eval()
    v1, v2 = prior.stage_validation_step(batch), prior.stage_validation_step(batch)
    assert v1 == v2 and v1["val_loss"] > 0
    with torch.no_grad():  # pretend training changed the MAE
        for p in prior.mae.parameters():
            p.add_(0.01)
    main = _tiny()
    assert main.stage == "main" and main.selection_metric() == ("pixel_iou", "max")
    assert main.data_requirements()["augment"] == "no_forgery"
    dssn_before = {k: v.clone() for k, v in main.dssn.state_dict().items()}
    missing, unexpected, left_out = main.load_pretrained_stage(prior.state_dict())
    assert not missing and not unexpected and any(k.startswith("dssn.") for k in left_out)
    assert not any(k.startswith("mae.") for k in left_out)
    for k, v in prior.mae.state_dict().items():
        assert torch.equal(main.mae.state_dict()[k], v)
    for k, v in prior.mae.decoder.state_dict().items():
        assert torch.equal(main.adaptive_decoder.state_dict()[k], v)
    assert all(torch.equal(main.dssn.state_dict()[k], v) for k, v in dssn_before.items())
    # a main-stage run loads completely (fine-tuning from a pre-trained IFA-Net)
    other = _tiny()
    missing, unexpected, left_out = other.load_pretrained_stage(main.state_dict())
    assert not missing and not unexpected and not left_out
    assert torch.equal(other.dssn.head.linear_pred.weight, main.dssn.head.linear_pred.weight)


def test_registry_entry_and_presets():
    entry = get_entry("ifanet")
    assert entry.stages == ("realness-prior", "main")
    assert entry.default_config["mae_input_size"] == 512 and entry.default_config["coarse_weight"] == 0.5
    assert entry.default_config["mask_mode"] == "complementary-4"
    assert list(entry.train_presets)[0] == "paper" and entry.train_presets["paper"]["lr"] == 2e-5
    assert entry.train_presets["paper"]["global_batch"] == 32  # §4: effective batch 32 over 8 GPUs


def test_full_config_parameter_counts():
    with torch.device("meta"):
        model = create_model("ifanet")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert abs(total / 1e6 - 412) < 41.2, total
    assert abs(trainable / 1e6 - 83) < 8.3, trainable
    frozen = sum(p.numel() for p in model.mae.parameters())
    assert total - trainable == frozen


def test_weights_config_keys_load_mae_and_ade_mit(tmp_path):
    """``mae_weights`` (FAIR layout) fills the MAE and the Adaptive Decoder copy; ``mit_weights`` (ADE layout,
    ``backbone.`` + ``decode_head.``) fills both streams and the head's linear_c / linear_fuse."""
    from tamperscope.backbones.mae import MaskedAutoencoder

    src = _tiny()
    mae = MaskedAutoencoder("tiny")
    fair = {"cls_token": mae.encoder.cls_token, "patch_embed.proj.weight": mae.encoder.patch_embed.proj.weight,
            "patch_embed.proj.bias": mae.encoder.patch_embed.proj.bias, "mask_token": mae.decoder.mask_token}
    for ours, theirs in (("encoder.norm", "norm"), ("decoder.embed", "decoder_embed"),
                         ("decoder.norm", "decoder_norm"), ("decoder.pred", "decoder_pred")):
        for part in ("weight", "bias"):
            fair[f"{theirs}.{part}"] = mae.state_dict()[f"{ours}.{part}"]
    for k, v in mae.state_dict().items():
        if k.startswith("encoder.blocks."):
            fair[k[len("encoder."):]] = v
        elif k.startswith("decoder.blocks."):
            fair["decoder_blocks." + k[len("decoder.blocks."):]] = v
    torch.save({"model": fair}, tmp_path / "mae.pth")
    ade = {f"backbone.{k}": v for k, v in src.dssn.content.state_dict().items()}
    ade |= {f"decode_head.{k}": v for k, v in src.dssn.head.state_dict().items() if not k.startswith("linear_pred")}
    ade["decode_head.linear_pred.weight"] = torch.zeros(150, 32, 1, 1)  # ADE's 150 classes: not taken
    torch.save({"state_dict": ade, "meta": {}}, tmp_path / "ade.pth")
    model = _tiny(mae_weights=str(tmp_path / "mae.pth"), mit_weights=str(tmp_path / "ade.pth"))
    for k, v in mae.state_dict().items():
        assert torch.equal(model.mae.state_dict()[k], v), k
    for k, v in mae.decoder.state_dict().items():
        assert torch.equal(model.adaptive_decoder.state_dict()[k], v), k
    for stream in (model.dssn.content, model.dssn.artifact):
        for k, v in src.dssn.content.state_dict().items():
            assert torch.equal(stream.state_dict()[k], v), k
    assert torch.equal(model.dssn.head.linear_c1.proj.weight, src.dssn.head.linear_c1.proj.weight)
    assert model.dssn.head.linear_pred.weight.shape == (1, 32, 1, 1)
    with pytest.raises(UserError, match="missing"):
        _tiny(mae_weights=str(tmp_path / "ade.pth"))


def test_bad_mit_weights_error_names_the_file_and_stays_short(tmp_path):
    src = _tiny()
    ade = {f"backbone.{k}": v for k, v in src.dssn.content.state_dict().items() if "block4" not in k}  # incomplete
    torch.save({"state_dict": ade}, tmp_path / "cut.pth")
    with pytest.raises(UserError) as err:
        _tiny(mit_weights=str(tmp_path / "cut.pth"))
    message = str(err.value)
    assert "cut.pth" in message and "block4" in message and len(message) < 2000
