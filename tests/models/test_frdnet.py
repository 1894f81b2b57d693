"""FRD-Net (paper 004, official code): size, shapes at 512 and 384, ICM by hand, losses, ablations, training."""
import math

import pytest
import torch
from torch import nn

from tamperscope.errors import UserError
from tamperscope.models.frdnet import ClusterLevel, FRDNet
from tamperscope.registry import create_model, get_entry

TINY = dict(encoder_variant="b0", drop_path_rate=0.0, num_blocks=2, decoder_channels=[64, 32, 16, 16])


class StageFourStub(nn.Module):
    """Stands in for MiT-b2 at 512 (seconds of CPU): any B×3×H×W → [B×512×H/32×W/32] (stage 4 only)."""

    def __init__(self, dim=512):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 1)

    def forward(self, x):
        return [self.proj(nn.functional.avg_pool2d(x, 32))]



@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return create_model("frdnet").eval()


def test_registry_defaults_and_presets():
    entry = get_entry("frdnet")
    cfg = entry.default_config
    assert cfg["encoder_variant"] == "b2" and cfg["num_blocks"] == 4 and cfg["icm_centres"] == [64, 16, 2]
    assert cfg["loss_dice"] == "squared" and cfg["edge_loss_weight"] == 1.0
    assert list(entry.train_presets) == ["official", "paper"]
    off, pap = entry.train_presets["official"], entry.train_presets["paper"]
    assert (off["optimizer"], off["lr"], off["weight_decay"], off["min_lr"], off["warmup_epochs"], off["epochs"]) == \
        ("adamw", 5e-5, 0.05, 5e-7, 2, 100)
    assert (pap["optimizer"], pap["lr"], pap["batch_size"]) == ("adam", 5e-4, 16)


def test_full_config_parameter_count(full_model):
    total = sum(p.numel() for p in full_model.parameters())
    assert abs(total - 39e6) <= 2e6, total  # paper Table 2: 39 M
    assert sum(p.numel() for p in full_model.encoder.parameters()) == pytest.approx(24.2e6, rel=0.01)
    assert full_model.data_requirements() == {"edge": "band", "edge_width": 7}


def test_full_config_structure_and_init(full_model):
    assert len(full_model.blocks) == 4 and len(full_model.block_norms) == 4
    block = full_model.blocks[0]
    assert block.norm1.num_groups == 1 and full_model.block_norms[0].num_groups == 1
    assert (block.mlp.fc1.in_features, block.mlp.fc1.out_features) == (512, 2048)
    assert torch.all(block.layer_scale_1 == 1e-5) and torch.all(block.layer_scale_2 == 1e-5)
    mixer = block.token_mixer
    assert mixer.projcd.in_channels == 512 and mixer.half == 256 and mixer.projlast.in_channels == 512
    assert [lvl.centres for lvl in mixer.icm.levels] == [64, 16, 2]
    assert [lvl.grid for lvl in mixer.icm.levels] == [True, True, False]
    assert isinstance(mixer.icm.levels[2].key, nn.Linear)
    lvl = mixer.icm.levels[0]
    assert lvl.alpha.item() == 1.0 and lvl.beta.item() == 0.0
    assert mixer.dpm.angular.depthwise.op == "angular" and mixer.dpm.central.depthwise.op == "central"
    # §6.2 init: Conv2d N(0, √(2/fan_out)) (fan_out 512 → 0.0625), Linear trunc-normal 0.02
    assert mixer.projcd.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert block.mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(mixer.projcd.bias == 0)
    convt = [m for m in full_model.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convt] == [(1024, 256), (256, 128), (128, 64), (64, 32), (32, 1)]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.output_padding == (1, 1) for c in convt)


@pytest.mark.parametrize("size,grid", [(512, 16), (384, 12)])
def test_shapes_full_width(full_model, size, grid):
    encoder, full_model.encoder = full_model.encoder, StageFourStub()
    image = torch.randn(1, 3, size, size)
    try:
        with torch.no_grad():
            feats, decoder_input = full_model.forward_features(image)
            out = {"mask_logits": full_model.decoder(decoder_input)}
            rounds = full_model.blocks[0].token_mixer.icm.forward_clusters(torch.randn(1, 256, grid, grid))
    finally:
        full_model.encoder = encoder
    assert feats.shape == (1, 512, grid, grid)
    assert decoder_input.shape == (1, 1024, grid, grid)
    assert out["mask_logits"].shape == (1, 1, size, size)
    # centre counts 64 / 16 / 2 (adaptive pooling keeps them at any input size); S is O×N per level
    assert [tuple(r.shape[1:]) for r, _ in rounds] == [(64, 256), (16, 256), (2, 256)]
    assert [tuple(s.shape[1:]) for _, s in rounds] == [(64, grid * grid), (16, 64), (2, 16)]


def test_icm_assignment_is_one_hot_per_pixel():
    torch.manual_seed(1)
    icm = create_model("frdnet", **TINY).blocks[0].token_mixer.icm
    with torch.no_grad():
        rounds = icm.forward_clusters(torch.randn(2, icm.proj.in_channels, 6, 6))
    for _, assign in rounds:
        nonzero = (assign > 0).sum(dim=1)
        assert torch.all(nonzero == 1)  # every token keeps exactly one centre
        assert torch.all(assign.max(dim=1).values > 0) and torch.all(assign <= 1)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_centre_update_matches_hand_computation():
    level = ClusterLevel(dim=2, centres=2, grid=False)
    with torch.no_grad():
        for lin in (level.key, level.value):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])
    with torch.no_grad():
        centres, assign = level(tokens)
    # centres by 1-D pooling: c0 = mean(x0, x1) = (.5, .5), c1 = mean(x2, x3) = (0, .5)
    # cos: x0 → c0 .7071 / c1 0; x1 → c0 .7071 / c1 1; x2 → c0 1 / c1 .7071; x3 → c0 −.7071 / c1 0
    r = 1 / math.sqrt(2)
    expected_assign = torch.tensor([[[_sigmoid(r), 0, _sigmoid(1), 0], [0, _sigmoid(1), 0, _sigmoid(0)]]])
    torch.testing.assert_close(assign, expected_assign, atol=1e-6, rtol=0)
    s0, s2 = _sigmoid(r), _sigmoid(1)
    r0 = [(0.5 + s0 * 1 + s2 * 1) / (1 + s0 + s2), (0.5 + s0 * 0 + s2 * 1) / (1 + s0 + s2)]
    s1, s3 = _sigmoid(1), 0.5
    r1 = [(0.0 + s1 * 0 - s3 * 1) / (1 + s1 + s3), (0.5 + s1 * 1 + s3 * 0) / (1 + s1 + s3)]
    torch.testing.assert_close(centres, torch.tensor([[r0, r1]]), atol=1e-6, rtol=0)


def test_backward_dispatch_is_the_transposed_chain():
    torch.manual_seed(2)
    icm = create_model("frdnet", **TINY).blocks[0].token_mixer.icm
    f1 = torch.randn(1, icm.proj.in_channels, 4, 4)
    with torch.no_grad():
        (_, s1), (_, s2), (r3, s3) = icm.forward_clusters(f1)
        per_pixel = s1[0].T @ (s2[0].T @ (s3[0].T @ r3[0]))  # U = S₁ᵀ S₂ᵀ S₃ᵀ R₃, 16 pixels × C
        expected = icm.proj(per_pixel.T.reshape(1, -1, 4, 4))
        torch.testing.assert_close(icm(f1), expected, atol=1e-5, rtol=1e-5)


def test_loss_terms():
    model = create_model("frdnet", **TINY)
    logits = torch.randn(2, 1, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.7).float()
    edge = (torch.rand(2, 1, 64, 64) > 0.8).float()
    prob = torch.sigmoid(logits)
    losses = model.loss({"mask_logits": logits}, {"mask": mask, "edge": edge})
    region = 1 - (2 * (prob * mask).sum() + 1) / ((prob ** 2).sum() + mask.sum() + 1)
    pe, me = prob * edge, mask * edge
    edge_term = 1 - (2 * (pe * me).sum() + 1) / ((pe ** 2).sum() + me.sum() + 1)
    torch.testing.assert_close(losses["region_dice"], region)
    torch.testing.assert_close(losses["edge_dice"], edge_term)
    torch.testing.assert_close(losses["total"], region + edge_term)
    linear = create_model("frdnet", loss_dice="linear", **TINY).loss({"mask_logits": logits},
                                                                       {"mask": mask, "edge": edge})
    torch.testing.assert_close(linear["region_dice"], 1 - (2 * (prob * mask).sum() + 1) / (prob.sum() + mask.sum() + 1))
    with pytest.raises(UserError, match="edge"):
        model.loss({"mask_logits": logits}, {"mask": mask})
    no_edge = create_model("frdnet", edge_loss_weight=0.0, **TINY)
    assert no_edge.data_requirements()["edge"] is None
    assert set(no_edge.loss({"mask_logits": logits}, {"mask": mask})) == {"total", "region_dice"}


@pytest.mark.parametrize("overrides,check", [
    ({"use_dpm": False}, lambda mx: mx.dpm is None and mx.icm is not None),
    ({"use_dpm": False, "icm_centres": [2]},
     lambda mx: len(mx.icm.levels) == 1 and not mx.icm.levels[0].grid and mx.icm.levels[0].centres == 2),
    ({"use_icm": False}, lambda mx: mx.icm is None and mx.dpm.angular is not None),
    ({"use_icm": False, "dpm_progressive": False}, lambda mx: mx.icm is None and mx.dpm.angular is None),
    ({"use_icm": False, "use_dpm": False}, lambda mx: mx.icm is None and mx.dpm is None),
])
def test_ablation_switches(overrides, check):
    model = create_model("frdnet", **TINY, **overrides).eval()
    assert check(model.blocks[0].token_mixer)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["mask_logits"].shape == (1, 1, 64, 64) and torch.isfinite(out["mask_logits"]).all()


def test_no_blocks_decodes_stage_four_only():
    model = create_model("frdnet", **{**TINY, "num_blocks": 0}).eval()
    with torch.no_grad():
        feats, decoder_input = model.forward_features(torch.randn(1, 3, 64, 64))
    assert decoder_input.shape == feats.shape == (1, 256, 2, 2)
    assert model.decoder[0].in_channels == 256


def test_tiny_forward_and_reparameterize():
    model = create_model("frdnet", **TINY).eval()
    image = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        before = model(image)
        _, decoder_input = model.forward_features(image)
        model.reparameterize()
        after = model(image)
    assert decoder_input.shape == (2, 512, 3, 2)  # b0: stage 4 has 256 channels
    assert before["mask_logits"].shape == (2, 1, 96, 64)
    torch.testing.assert_close(after["mask_logits"], before["mask_logits"], atol=1e-4, rtol=1e-4)
    assert any(k.endswith("depthwise_fused.weight") for k in model.state_dict())


def test_bad_inputs():
    model = create_model("frdnet", **TINY)
    with pytest.raises(UserError, match="multiples of 32"):
        model(torch.randn(1, 3, 70, 64))
    with pytest.raises(ValueError, match="square"):
        create_model("frdnet", icm_centres=[10, 2], **TINY)
    with pytest.raises(ValueError, match="unknown config key"):
        create_model("frdnet", encoder="b0")


def test_encoder_weights_are_loaded(tmp_path):
    source = FRDNet(**{**TINY, "num_blocks": 0}).encoder.state_dict()
    path = tmp_path / "mit_b0.pth"
    torch.save({k: v + 0.5 for k, v in source.items()}, path)
    model = create_model("frdnet", encoder_weights=str(path), **TINY)
    got = model.encoder.state_dict()
    torch.testing.assert_close(got["block4.0.attn.q.weight"], source["block4.0.attn.q.weight"] + 0.5)


def test_few_steps_drive_the_loss_down():
    torch.manual_seed(0)
    model = create_model("frdnet", **TINY).train()
    image = torch.randn(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 8:40] = 1
    edge = torch.zeros_like(mask)
    edge[..., 13:51, 5:43] = 1
    edge[..., 19:45, 11:37] = 0
    batch = {"image": image, "mask": mask, "edge": edge, "label": torch.ones(1)}
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=5e-3)
    losses = []
    for _ in range(8):
        loss = model.training_step(batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses
