"""DiffForensics (paper 003 §3) with a tiny MiT-b0 encoder at 64 px; the full b2 config is built once for its
parameter count."""
import math

import pytest
import torch
import torch.nn.functional as F

from tamperscope.errors import UserError
from tamperscope.nn.losses import dice_sq
from tamperscope.registry import create_model, get_entry

TINY = dict(encoder_variant="b0")



def _batch(size=64, n=2):
    torch.manual_seed(1)
    image = torch.randn(n, 3, size, size)
    mask = torch.zeros(n, 1, size, size)
    mask[0, :, size // 4: size // 2, size // 4: size // 2 + 8] = 1
    dil = F.max_pool2d(mask, 7, 1, 3)
    ero = -F.max_pool2d(-mask, 7, 1, 3)
    return {"image": image, "mask": mask, "edge": (dil - ero), "label": mask.flatten(1).amax(1),
            "index": torch.arange(n)}


def test_full_config_parameter_count_and_widths():
    model = create_model("diffforensics")
    total = sum(p.numel() for p in model.parameters())
    assert total == 30_850_184
    assert sum(p.numel() for p in model.encoder.parameters()) == 24_196_288  # MiT-b2
    assert model.det_head.in_features == 320  # GAP(d1) 64 + GAP(d3) 256
    assert model.decoder.up1.res1.norm1.num_channels == 576  # 256 + c3 320
    assert model.stage == "finetune"


@pytest.mark.parametrize("size", [64, 96])
def test_forward_shapes_tiny(size):
    model = create_model("diffforensics", **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out["mask_logits"].shape == (2, 1, size, size)
    assert out["image_logit"].shape == (2,)
    for k in (1, 2, 3):
        p = out[f"edge_prob_{k}"]
        assert p.shape == (2, 1, size, size) and (p >= 0).all() and (p <= 1).all()
    # decoder widths follow the b0 stage channels: (C1, C2, C4/2) = (32, 64, 128)
    assert model.det_head.in_features == 32 + 128
    eps = model.predict_noise(torch.randn(1, 3, size, size), torch.tensor([10]))
    assert eps.shape == (1, 3, size, size)


def test_pretrain_updates_only_decoder():
    model = create_model("diffforensics", stage="pretrain", **TINY)
    model.train()
    assert not model.encoder.training and model.decoder.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.", "noise_head.")) for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model.training_step(_batch())
    assert set(loss) >= {"total"} and loss["total"].ndim == 0
    loss["total"].backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("noise_head.") for k in changed)
    assert all(k.startswith(("decoder.", "noise_head.")) for k in changed), changed
    assert model.selection_metric() == ("val_loss", "min")
    assert model.data_requirements()["edge"] is None


def test_finetune_loads_pretrain_state_dict_without_missing_keys():
    pre = create_model("diffforensics", stage="pretrain", **TINY)
    fine = create_model("diffforensics", stage="finetune", **TINY)
    result = fine.load_state_dict(pre.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in pre.state_dict().items():
        assert torch.equal(fine.state_dict()[k], v)
    # fine-tuning trains the encoder and the new heads, not the unused noise head
    trainable = {n.split(".")[0] for n, p in fine.named_parameters() if p.requires_grad}
    assert trainable == {"encoder", "decoder", "loc_head", "ecem", "det_head"}
    assert fine.data_requirements() == {"edge": "band", "edge_width": 7, "augment": "flips"}
    assert fine.config["stage"] == "finetune"
    fine.set_stage("pretrain")
    assert fine.config["stage"] == "pretrain"


def test_finetune_input_reaches_encoder_as_the_imagenet_normalised_image():
    model = create_model("diffforensics", **TINY).eval()
    seen = {}
    model.encoder.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(image)
    assert torch.allclose(seen["x"], image, atol=1e-5)
    raw = create_model("diffforensics", encoder_input="raw", **TINY).eval()
    raw.encoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("raw", args[0]))
    with torch.no_grad():
        raw(image)
    from tamperscope.nn.norm import imagenet_denormalize
    assert torch.allclose(seen["raw"], imagenet_denormalize(image) * 2 - 1, atol=1e-5)


def test_loss_matches_paper_equations():
    model = create_model("diffforensics", **TINY)
    n, s = 2, 8
    mask = torch.zeros(n, 1, s, s)
    mask[0, :, :4] = 1
    edge = torch.zeros(n, 1, s, s)
    edge[0, :, 3:5] = 1
    batch = {"mask": mask, "edge": edge, "label": torch.tensor([1.0, 0.0])}
    outputs = {"mask_logits": torch.zeros(n, 1, s, s), "image_logit": torch.zeros(n),
               **{f"edge_prob_{k}": torch.full((n, 1, s, s), 0.5) for k in (1, 2, 3)}}
    terms = model.loss(outputs, batch)
    N = mask.numel()
    wbce = (2.0 * mask.sum() + 0.5 * (N - mask.sum())) * math.log(2) / N
    seg = 0.1 * wbce + 0.9 * dice_sq(torch.full_like(mask, 0.5), mask)
    edg = (1 + 0.5 + 0.25) * dice_sq(torch.full_like(edge, 0.5), edge)
    clf = (0.7 + 0.3) * math.log(2) / 2
    assert torch.allclose(terms["seg"], seg) and torch.allclose(terms["edge"], edg)
    assert torch.allclose(terms["clf"], torch.tensor(clf))
    assert torch.allclose(terms["total"], 0.8 * (seg + edg) + 0.1 * clf)
    with pytest.raises(UserError):
        model.loss(outputs, {"mask": mask, "label": batch["label"]})


def test_finetune_steps_reduce_loss():
    model = create_model("diffforensics", encoder_drop_path=0.0, **TINY)
    model.train()
    batch = _batch(64, n=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    losses = []
    for _ in range(6):
        loss = model.training_step(batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_pretrain_validation_is_deterministic_and_noise_types():
    batch = _batch()
    for noise_type in ("simplex", "gaussian"):
        model = create_model("diffforensics", stage="pretrain", noise_type=noise_type, **TINY).eval()
        a = model.stage_validation_step(batch)
        b = model.stage_validation_step(batch)
        assert set(a) == {"val_loss"} and a == b and a["val_loss"] > 0
    fine = create_model("diffforensics", **TINY)
    assert fine.stage_validation_step(batch) is None


def test_ecem_feed_and_added_noise_change_the_forward_path():
    torch.manual_seed(0)
    side = create_model("diffforensics", **TINY).eval()
    feed = create_model("diffforensics", ecem_feed=True, **TINY).eval()
    feed.load_state_dict(side.state_dict())
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = side(image), feed(image)
    assert torch.allclose(a["edge_prob_3"], b["edge_prob_3"])  # first ECEM sees the same d3
    assert not torch.allclose(a["mask_logits"], b["mask_logits"])
    noisy = create_model("diffforensics", finetune_add_noise=True, **TINY).eval()
    noisy.load_state_dict(side.state_dict())
    with torch.no_grad():
        c = noisy(image)
    assert not torch.equal(a["mask_logits"], c["mask_logits"])
    assert (a["mask_logits"] - c["mask_logits"]).abs().max() < 1.0  # ᾱ_5 ≈ 0.9995: a small perturbation


def test_encoder_weights_from_ade_checkpoint(tmp_path):
    donor = create_model("diffforensics", **TINY)
    sd = {f"backbone.{k}": v for k, v in donor.encoder.state_dict().items()}
    sd["decode_head.linear_pred.weight"] = torch.zeros(150, 256, 1, 1)
    path = tmp_path / "segformer.b0.ade.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    model = create_model("diffforensics", encoder_weights=str(path), **TINY)
    for k, v in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v)


def test_registry_entry_and_bad_config():
    entry = get_entry("diffforensics")
    assert entry.stages == ("pretrain", "finetune")
    assert entry.default_config["stage"] == "finetune" and entry.default_config["encoder_variant"] == "b2"
    assert list(entry.train_presets)[0] == "paper"
    # §4.1: batch 32 (fine-tuning) and 16 (pre-training) in total over 4 GPUs
    assert entry.train_presets["paper"]["global_batch"] == 32 and entry.train_presets["paper"]["epochs"] == 50
    assert entry.train_presets["pretrain"]["global_batch"] == 16 and entry.train_presets["pretrain"]["epochs"] == 100
    assert entry.train_presets["paper"]["batch_size"] == 8 and entry.train_presets["pretrain"]["batch_size"] == 4
    assert entry.train_presets["pretrain"]["model"] == {"stage": "pretrain"}
    for bad in ({"noise_type": "uniform"}, {"encoder_input": "zero-one"}, {"encoder_variant": "b9"}):
        with pytest.raises(UserError):
            create_model("diffforensics", **{**TINY, **bad})
    with pytest.raises(ValueError):
        create_model("diffforensics", stage="warmup", **TINY)


def test_time_embedding_is_the_ddpm_sinusoid():
    from tamperscope.nn.time_embedding import sinusoidal_embedding
    diffusers = pytest.importorskip("diffusers")
    t = torch.tensor([0, 5, 999])
    ours = sinusoidal_embedding(t, 128)
    ref = diffusers.models.embeddings.get_timestep_embedding(t, 128, flip_sin_to_cos=False, downscale_freq_shift=1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_pretrain_steps_reduce_noise_prediction_error():
    model = create_model("diffforensics", stage="pretrain", **TINY)
    model.train()
    image = _batch(64, n=1)["image"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(5):  # same t and ε every step (fixed generator seed)
        loss = model.diffusion_loss(image, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
