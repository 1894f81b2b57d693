"""NFA-ViT (paper 001 §4, clpbc/BR-Gen): masks, Fix-Sparse groups, NAA on the SDPA path, noise→image coupling,
BR-Gen compat quirks, weights, presets, parameter count, training signal."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from tamperscope import create_model
from tamperscope.backbones.dncnn import DnCNN
from tamperscope.backbones.mit import MixVisionTransformer, tokens_to_map
from tamperscope.nn.sparse_attention import fix_sparse_mask, noise_guided_mask, topk_count
from tamperscope.registry import get_entry

TINY = dict(noise_extractor="residual", image_variant="b0", decoder_dim=32, drop_path_rate=0.0)
# models without noise_mit_weights announce their trained noise branch; its own test checks that warning
pytestmark = pytest.mark.filterwarnings("ignore:nfavit. no noise_mit_weights")



@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return create_model("nfavit").eval()


def _tiny(**kw):
    return create_model("nfavit", **(TINY | kw)).eval()


# ----------------------------------------------------------------------------------------- masks
def test_topk_count():
    assert topk_count(256, 0.25) == 64 and topk_count(16, 0.25) == 4
    assert topk_count(4, 0.25) == 1 and topk_count(3, 0.1) == 1
    with pytest.raises(ValueError):
        topk_count(16, 0.0)


def test_noise_guided_mask_keeps_k_least_attended_keys():
    probs = torch.softmax(torch.randn(2, 3, 10, 16), dim=-1)
    mask = noise_guided_mask(probs, 0.25)
    assert mask.dtype == torch.bool and mask.shape == probs.shape
    assert (mask.sum(-1) == 4).all()
    kth = probs.sort(dim=-1).values[..., 3:4]                       # 4th smallest probability per query
    assert torch.equal(mask, probs <= kth)
    assert not noise_guided_mask(probs.requires_grad_(), 0.25).requires_grad


def test_fix_sparse_groups_on_tiny_grid():
    H, W, sr, s = 8, 6, 2, 2
    Hk, Wk = H // sr, W // sr
    mask = fix_sparse_mask((H, W), (Hk, Wk), sr, s)
    assert mask.shape == (H * W, Hk * Wk) and mask.dtype == torch.bool
    for r in range(H):
        for c in range(W):
            allowed = {(kr, kc) for kr in range(Hk) for kc in range(Wk) if mask[r * W + c, kr * Wk + kc]}
            expected = {(kr, kc) for kr in range(Hk) for kc in range(Wk)
                        if kr % s == (r // sr) % s and kc % s == (c // sr) % s}
            assert allowed == expected and (r // sr, c // sr) in allowed


@pytest.mark.parametrize("grid,sr", [(128, 8), (64, 4), (32, 2), (16, 1)])
def test_fix_sparse_at_512_keeps_64_of_256(grid, sr):
    mask = fix_sparse_mask((grid, grid), (grid // sr, grid // sr), sr, 2)
    assert mask.shape == (grid * grid, 256) and (mask.sum(-1) == 64).all()


def test_masked_keys_get_exactly_zero_weight_on_sdpa_path(full_model):
    """SDPA with V = identity returns the attention weights themselves: masked keys must get exactly 0,
    and the weights/outputs must match an explicit masked softmax."""
    blk = full_model.image_encoder.block2[-1]
    H = W = 16
    x = torch.randn(2, H * W, 128)
    q, k, v = blk.attn.qkv(blk.norm1(x), H, W)
    n_kv = k.shape[-2]
    mask = noise_guided_mask(torch.softmax(torch.randn(2, 2, H * W, n_kv), -1), 0.25)
    eye = torch.eye(n_kv).expand(2, 2, n_kv, n_kv)
    weights = F.scaled_dot_product_attention(q, k, eye, attn_mask=mask)
    ref = torch.softmax((q @ k.transpose(-2, -1) * blk.attn.scale).masked_fill(~mask, float("-inf")), -1)
    assert (weights[~mask] == 0).all() and (ref[~mask] == 0).all()
    torch.testing.assert_close(weights, ref, atol=1e-6, rtol=1e-5)
    out = blk.attn(blk.norm1(x), H, W, attn_mask=mask)
    ref_out = blk.attn.proj((ref @ v).transpose(1, 2).reshape(2, H * W, 128))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)


def test_mask_shapes_full_config_at_512(full_model):
    """All four noise-stage masks at 512² (k = 64 of 256 keys) and image stage 1 run with its mask."""
    x = torch.randn(1, 1, 512, 512)
    expected = [(1, 1, 16384, 256), (1, 2, 4096, 256), (1, 5, 1024, 256), (1, 8, 256, 256)]
    with torch.no_grad():
        stage1_mask = None
        for i, shape in enumerate(expected):
            x, mask = full_model._noise_stage(i, x, need_output=i < 3)
            assert tuple(mask.shape) == shape and mask.dtype == torch.bool
            assert (mask.sum(-1) == 64).all()
            stage1_mask = mask if i == 0 else stage1_mask
        feat = full_model._image_stage(0, torch.randn(1, 3, 512, 512), stage1_mask)
    assert feat.shape == (1, 64, 128, 128)
    assert x is None                                               # stage 4's noise output is never built


def test_all_stages_full_config_at_128(full_model):
    image, noise = torch.randn(1, 3, 128, 128), torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        outs = list(full_model.encoder_stages(image, noise))
    heads, grids, dims = (1, 2, 5, 8), (32, 16, 8, 4), (64, 128, 320, 512)
    for o, h, g, c in zip(outs, heads, grids, dims):
        assert o.noise_mask.shape == (1, h, g * g, 16) and (o.noise_mask.sum(-1) == 16 // 4).all()
        assert o.feature.shape == (1, c, g, g)


# ------------------------------------------------------------------------------ noise → image coupling
def test_image_branch_output_changes_with_noise_mask():
    m = _tiny()
    image = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a = list(m.encoder_stages(image, torch.randn(1, 1, 128, 128)))
        a_again = list(m.encoder_stages(image, torch.randn(1, 1, 128, 128)))
        stage1_map = torch.randn(1, 32, 32, 32)                  # input of stage 2 (16×16 queries, 4×4 keys)
        f_masked = m._image_stage(1, stage1_map, a[1].noise_mask)
        f_all_keys = m._image_stage(1, stage1_map, torch.ones(1, 2, 256, 16, dtype=torch.bool))
    assert not torch.equal(a[0].noise_mask, a_again[0].noise_mask)
    assert not torch.allclose(a[-1].feature, a_again[-1].feature)
    assert not torch.allclose(f_masked, f_all_keys)


def test_default_noise_stage_equals_plain_mit_stage():
    """The explicit-probability path of the last noise block is the standard pre-norm MiT block."""
    m = _tiny()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ours, _ = m._noise_stage(0, x, need_output=True)
        plain = m.noise_encoder.forward_stage(0, x)
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-4)


def test_brgen_compat_noise_block_quirk():
    m = _tiny(brgen_compat=True)
    x = torch.randn(1, 1, 64, 64)
    embed, blocks, norm = m.noise_encoder.stage(0)
    with torch.no_grad():
        tokens, H, W = embed(x)
        for blk in blocks:                            # out = attn(x) + attn(x), then the MLP residual
            probs = blk.attn.attention_probs(tokens, H, W)
            a = blk.attn(tokens, H, W)
            tokens = a + a
            tokens = tokens + blk.mlp(blk.norm2(tokens), H, W)
        ref_map = tokens_to_map(norm(tokens), H, W)
        ours, mask = m._noise_stage(0, x, need_output=True)
    torch.testing.assert_close(ours, ref_map, atol=1e-5, rtol=1e-4)
    assert torch.equal(mask, noise_guided_mask(probs, 0.25))


# -------------------------------------------------------------------------------- model-level contract
def test_forward_outputs_and_warning_without_noiseprint_weights():
    m = create_model("nfavit", image_variant="b0", decoder_dim=32)
    with pytest.warns(UserWarning, match="Noiseprint\\+\\+ runs with random weights"):
        out = m.eval()(torch.randn(2, 3, 64, 96))
    assert out["mask_logits"].shape == (2, 1, 64, 96)
    assert out["image_logit"].shape == (2,)
    assert out["noiseprint"].shape == (2, 1, 64, 96)
    assert torch.isfinite(out["mask_logits"]).all() and torch.isfinite(out["image_logit"]).all()


def test_weighted_decoder_gamma_init_and_head():
    m = _tiny()
    assert len(m.decoder.gamma) == 4 and all(torch.all(g == 1e-6) and g.shape == (32,) for g in m.decoder.gamma)
    assert m.decoder.norm.eps == 1e-6 and m.classifier.in_features == 256
    feats = [torch.randn(1, c, s, s) for c, s in zip((32, 64, 160, 256), (16, 8, 4, 2))]
    assert m.decoder(feats).shape == (1, 1, 16, 16)


def _train_batch(size=64):
    return {"image": torch.randn(2, 3, size, size), "mask": (torch.rand(2, 1, size, size) > 0.7).float(),
            "label": torch.tensor([1.0, 0.0])}


def test_loss_weights_and_no_gradient_into_a_frozen_noise_branch():
    m = _tiny(cls_weight=0.5, train_noise_branch=False).train()
    losses = m.training_step(_train_batch())
    torch.testing.assert_close(losses["total"], losses["seg_bce"] + 0.5 * losses["cls_bce"])
    losses["total"].backward()
    assert all(p.grad is None for p in m.noise_encoder.parameters())
    assert all(p.grad is None for p in m.noise_extractor.parameters())
    assert m.image_encoder.patch_embed1.proj.weight.grad is not None
    assert all(g.grad is not None for g in m.decoder.gamma) and m.classifier.weight.grad is not None


def _b0_file(tmp_path):
    torch.save(MixVisionTransformer("b0", in_chans=3).state_dict(), tmp_path / "mit_b0.pth")
    return str(tmp_path / "mit_b0.pth")


def test_noise_branch_is_frozen_with_weights_and_trained_without(tmp_path):
    """A random noise branch frozen for the whole run would give arbitrary top-k masks: without noise_mit_weights it
    trains (and the model says so); with them it stays frozen, as in the paper and the official code."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ImageNet weights given: no warning
        frozen = _tiny(noise_mit_weights=_b0_file(tmp_path)).train()
    assert not frozen.train_noise_branch and frozen.config["train_noise_branch"] is False
    assert not any(p.requires_grad for p in frozen.noise_encoder.parameters())
    with pytest.warns(UserWarning, match="noise branch .* starts random and is trained"):
        trained = create_model("nfavit", **TINY).train()
    assert trained.train_noise_branch and trained.config["train_noise_branch"] is True
    assert all(p.requires_grad for p in trained.noise_encoder.parameters())
    assert not any(p.requires_grad for p in trained.noise_extractor.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice: no warning
        assert not _tiny(train_noise_branch=False).train_noise_branch
        assert _tiny(noise_mit_weights=_b0_file(tmp_path), train_noise_branch=True).train_noise_branch
    # the straight-through masks reach the noise branch; the forward pass is the hard top-k one
    torch.manual_seed(0)
    batch = _train_batch(size=128)  # ≥ 8 keys per stage: with k = 1 kept key the softmax has no gradient
    trained.training_step(batch)["total"].backward()
    grads = [p.grad for n, p in trained.noise_encoder.named_parameters() if "block1.1.attn.q." in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert trained.noise_encoder.patch_embed1.proj.weight.grad.abs().sum() > 0
    torch.manual_seed(1)
    with torch.no_grad():
        hard = trained(batch["image"])["mask_logits"]
    torch.manual_seed(1)
    torch.testing.assert_close(trained(batch["image"])["mask_logits"], hard, atol=1e-5, rtol=1e-4)
    # a checkpoint keeps the resolved choice without the weight file
    from tamperscope.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(frozen, tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_checkpoint(tmp_path / "run")
    assert not back.train_noise_branch and not any(p.requires_grad for p in back.noise_encoder.parameters())


def test_straight_through_mask_equals_the_bool_mask_forward():
    logits = torch.randn(2, 3, 10, 16, requires_grad=True)
    mask = noise_guided_mask(torch.softmax(logits, -1), 0.25)
    bias = type(_tiny(train_noise_branch=False)).straight_through_mask(mask, logits)
    assert torch.equal(bias == 0, mask) and torch.isinf(bias[~mask]).all()
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 16, 8), torch.randn(2, 3, 16, 8)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)
    F.scaled_dot_product_attention(q, k, v, attn_mask=bias).sum().backward()
    assert (logits.grad[~mask] == 0).all() and logits.grad[mask].abs().sum() > 0


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    m = _tiny().train()
    image = torch.randn(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 8:40] = 1
    batch = {"image": image, "mask": mask, "label": torch.ones(1)}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(8):
        loss = m.training_step(batch)["total"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = m.eval().training_step(batch)["total"].item()
    assert final < 0.8 * first


def test_weights_load_from_files(tmp_path):
    torch.manual_seed(1)
    b0 = MixVisionTransformer("b0", in_chans=3).state_dict() | {"head.weight": torch.zeros(1000, 256)}
    torch.save(b0, tmp_path / "mit_b0.pth")
    np_sd = DnCNN().state_dict()
    torch.save({"network": np_sd, "global_step": 1}, tmp_path / "np.th")
    m = create_model("nfavit", image_variant="b0", decoder_dim=32, noiseprint_weights=str(tmp_path / "np.th"),
                     noise_mit_weights=str(tmp_path / "mit_b0.pth"), image_mit_weights=str(tmp_path / "mit_b0.pth"))
    stem = b0["patch_embed1.proj.weight"]
    torch.testing.assert_close(m.noise_encoder.patch_embed1.proj.weight, stem.mean(dim=1, keepdim=True))
    torch.testing.assert_close(m.image_encoder.patch_embed1.proj.weight, stem)
    torch.testing.assert_close(m.noise_extractor.net[0].weight, np_sd["0.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # real weights: no warning
        m.eval()(torch.randn(1, 3, 64, 64))


def test_checkpoint_roundtrip_keeps_noiseprint(tmp_path):
    from tamperscope.checkpoint import load_checkpoint, save_checkpoint

    torch.save({"network": DnCNN().state_dict()}, tmp_path / "np.th")
    m = create_model("nfavit", image_variant="b0", decoder_dim=32, noiseprint_weights=str(tmp_path / "np.th")).eval()
    save_checkpoint(m, tmp_path / "run")
    (tmp_path / "np.th").unlink()                        # the checkpoint must not need the external file
    back = load_checkpoint(tmp_path / "run").eval()
    assert bool(back.noise_extractor.weights_loaded)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x)["mask_logits"], m(x)["mask_logits"])


def test_full_config_parameter_count_and_presets(full_model):
    total = sum(p.numel() for p in full_model.parameters())
    assert abs(total - 28.6e6) < 1.5e6
    assert sum(p.numel() for p in full_model.noise_extractor.parameters()) == 557_249
    assert all(not p.requires_grad for p in full_model.noise_extractor.parameters())
    assert full_model.image_encoder.depths == (3, 4, 6, 3) and full_model.noise_encoder.in_chans == 1
    entry = get_entry("nfavit")
    assert list(entry.train_presets) == ["default", "official", "paper"]
    dft, off, pap = (entry.train_presets[k] for k in ("default", "official", "paper"))
    assert (dft["optimizer"], dft["lr"], dft["weight_decay"], dft["epochs"], dft["warmup_epochs"]) == \
        ("adamw", 2e-4, 0.05, 30, 2)
    assert "model" not in dft  # the default keeps the paper's cls_weight 1.0
    assert (off["epochs"], off["warmup_epochs"], off["model"]) == (200, 4, {"cls_weight": 0.5})
    assert all((p["batch_size"], p["global_batch"]) == (16, 64) for p in (dft, off, pap))  # 16/GPU × 4 GPUs
    assert (pap["optimizer"], pap["lr"], pap["weight_decay"], pap["epochs"]) == ("adam", 5e-3, 1e-6, 30)
    assert entry.default_config["cls_weight"] == 1.0 and entry.default_config["topk_ratio"] == 0.25


def test_bad_config_values():
    with pytest.raises(ValueError, match="topk_ratio"):
        create_model("nfavit", **TINY, topk_ratio=1.5)
    with pytest.raises(ValueError, match="unknown noise extractor"):
        create_model("nfavit", **(TINY | {"noise_extractor": "bogus"}))
