"""Noiseprint++ DnCNN (TruFor §3.1 and code): key layout, loader errors, TruFor vs BR-Gen semantics, fallback,
and the real TruFor weights on kodim01 when the shared data is present."""
import copy

import pytest
import torch

from tamperscope.backbones.dncnn import (NOISEPRINT_PARAMS, DnCNN, NoiseprintExtractor,
                                         build_noise_extractor, load_noiseprint_weights)
from tamperscope.errors import UserError
from tamperscope.nn.norm import imagenet_normalize



def _random_sd(seed=1):
    torch.manual_seed(seed)
    net = DnCNN()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.1)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_layout_matches_trufor_keys_and_param_count():
    sd = DnCNN().state_dict()
    assert sd["0.weight"].shape == (64, 3, 3, 3) and sd["0.bias"].shape == (64,)
    for k in range(15):
        assert sd[f"{2 + 3 * k}.weight"].shape == (64, 64, 3, 3)
        assert f"{2 + 3 * k}.bias" not in sd
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert f"{3 + 3 * k}.{name}" in sd
    assert sd["47.weight"].shape == (1, 64, 3, 3) and sd["47.bias"].shape == (1,)
    assert len(sd) == 2 + 15 * 6 + 2
    assert sum(p.numel() for p in DnCNN().parameters()) == NOISEPRINT_PARAMS == 557_249
    bns = [m for m in DnCNN().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 15 and all(m.momentum == 0.1 for m in bns)


def test_receptive_field_is_35():
    net = DnCNN().eval()
    x = torch.rand(1, 3, 49, 49, requires_grad=True)
    net(x)[0, 0, 24, 24].backward()
    support = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    assert (support.max(0).values - support.min(0).values + 1).tolist() == [35, 35]


def test_loads_wrapped_and_bare_files(tmp_path):
    sd = _random_sd()
    wrapped, bare = tmp_path / "np.th", tmp_path / "bare.th"
    torch.save({"network": sd, "global_step": 7}, wrapped)
    torch.save(sd, bare)
    for path in (wrapped, bare):
        loaded = load_noiseprint_weights(path)
        assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    ext = NoiseprintExtractor(str(wrapped))
    assert bool(ext.weights_loaded)
    assert torch.equal(ext.net.state_dict()["3.running_var"], sd["3.running_var"])
    assert not bool(NoiseprintExtractor(None).weights_loaded)


def test_bad_weight_files_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_noiseprint_weights(tmp_path / "missing.th")
    text = tmp_path / "notes.th"
    text.write_text("hello")
    with pytest.raises(UserError, match="notes.th: not a readable Noiseprint\\+\\+ weight file"):
        load_noiseprint_weights(text)
    other = tmp_path / "other.th"
    torch.save({"network": {"conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(UserError, match="other.th: not a Noiseprint\\+\\+ DnCNN state dict"):
        load_noiseprint_weights(other)
    sd = _random_sd()
    sd["47.weight"] = torch.zeros(3, 64, 3, 3)
    with pytest.raises(UserError, match="shapes differ"):
        load_noiseprint_weights(sd)


def test_trufor_semantics_frozen_eval_and_unnormalised():
    sd = _random_sd()
    ext = NoiseprintExtractor(sd).train()          # a parent's .train() must not switch BN to batch stats
    assert not ext.net.training and all(not p.requires_grad for p in ext.parameters())
    ref = DnCNN()
    ref.load_state_dict(sd)
    ref.eval()
    x01 = torch.rand(2, 3, 40, 48)
    out = ext(imagenet_normalize(x01))
    assert out.shape == (2, 1, 40, 48)
    torch.testing.assert_close(out, ref(x01), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ext.forward_rgb01(x01), ref(x01))


def test_brgen_compat_reproduces_three_quirks():
    sd = _random_sd()
    ext = NoiseprintExtractor(sd, brgen_compat=True).train()
    assert ext.net.training
    ref = DnCNN()
    ref.load_state_dict(sd)
    ref.train()
    xn = imagenet_normalize(torch.rand(2, 3, 32, 32))
    before = ext.net[3].running_mean.clone()
    with torch.no_grad():
        expected = ref(xn) + xn[:, :1]             # normalised input, BN batch stats, residual first channel
    torch.testing.assert_close(ext(xn), expected)
    assert not torch.equal(before, ext.net[3].running_mean)  # BN statistics move, as in the official code
    ext.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ext(xn), ref(xn) + xn[:, :1])


def test_residual_fallback_unit_std_and_high_pass():
    ext = build_noise_extractor("residual")
    x = imagenet_normalize(torch.rand(3, 3, 48, 40))
    out = ext(x)
    assert out.shape == (3, 1, 48, 40)
    torch.testing.assert_close(out.flatten(1).std(dim=1), torch.ones(3), atol=1e-4, rtol=0)
    flat = imagenet_normalize(torch.full((1, 3, 16, 16), 0.4))
    assert ext(flat).abs().max() < 1e-5              # SRM kernel sums to zero: no response to flat areas
    assert sum(p.numel() for p in ext.parameters()) == 0
    with pytest.raises(UserError):
        build_noise_extractor("residual", weights="x.th")
    with pytest.raises(ValueError, match="unknown noise extractor"):
        build_noise_extractor("srm9")


def test_real_noiseprint_on_kodim01(shared_data):
    """TruFor's own network on kodim01 (the shared copy is 500×500) read as uint8/256: mean −0.09436,
    std 0.11267 (±1e-4), no crop or resize."""
    from tamperscope.io import read_image

    weights = shared_data / "weights" / "noiseprint++" / "noiseprint++.th"
    image = shared_data / "authentic" / "kodak24" / "kodim01.png"
    if not weights.is_file() or not image.is_file():
        pytest.skip("Noiseprint++ weights or kodim01 absent")
    rgb = read_image(image)
    assert rgb.shape == (500, 500, 3)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 256.0
    ext = NoiseprintExtractor(str(weights))
    out = ext.forward_rgb01(x)
    assert out.shape == (1, 1, 500, 500)
    assert abs(out.mean().item() - (-0.09436)) < 1e-4
    assert abs(out.std().item() - 0.11267) < 1e-4
    # the model-facing call on the normalised image gives the same map (to float rounding of the normalisation
    # round trip through 17 layers: ≤ 1.5e-4 on 2 of 250,000 pixels with the channels-last convolutions)
    torch.testing.assert_close(ext(imagenet_normalize(x)), out, atol=3e-4, rtol=1e-4)


@pytest.mark.parametrize("train", [False, True])
def test_forward_equals_the_layers_in_order(train):
    """DnCNN.forward folds each eval-mode BN into its convolution and runs channels-last; the result and the
    gradients equal running the layers one after another (nn.Sequential's forward) to float64 rounding; in
    training mode the BN layers use batch statistics and nothing is folded."""
    torch.manual_seed(0)
    net = DnCNN(depth=5, features=8).double().train(train)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 19, 23, dtype=torch.float64)
    literal_net = copy.deepcopy(net)
    ours = net(x)
    literal = torch.nn.Sequential.forward(literal_net, x)
    torch.testing.assert_close(ours, literal, rtol=1e-10, atol=1e-10)
    ours.square().sum().backward()
    literal.square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), literal_net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=name)
    for a, b in zip(net.buffers(), literal_net.buffers()):  # running statistics updated alike (train) or not
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
