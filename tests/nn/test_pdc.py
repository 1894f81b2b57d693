"""Pixel-difference convolutions (PiDiNet, CDC): hand-computed values, difference form == single kernel."""
import pytest
import torch

from tamperscope.nn.pdc import PDCBlock, PixelDifferenceConv2d, reparameterize_pdc, reparameterized_kernel

# x = 1, 2, 4 / 8, 16, 32 / 64, 128, 256 (powers of two: every difference is distinct)
X = (2.0 ** torch.arange(9.0)).view(1, 1, 3, 3)
# weights on taps 0, 2, 4 (centre), 8
W = torch.tensor([1.0, 0, 2, 0, 5, 0, 0, 0, 3]).view(1, 1, 3, 3)


def _layer(op, theta=1.0):
    layer = PixelDifferenceConv2d(1, 1, op=op, theta=theta)
    with torch.no_grad():
        layer.weight.copy_(W)
    return layer


def _all_forms(layer, x):
    with torch.no_grad():
        return layer(x), layer.difference_form(x), layer.to_conv2d()(x)


@pytest.mark.parametrize("op,theta,centre,corner", [
    # CPDC: 1(1−16) + 2(4−16) + 5(16−16) + 3(256−16) = 681
    # corner (0,0), zero padded: taps 0, 2 → 0, tap 4 → 1, tap 8 → 16: 1(0−1) + 2(0−1) + 3(16−1) = 42
    ("central", 1.0, 681.0, 42.0),
    # CDC θ=0.7: Σw·x − θ·x_c·Σw = (1 + 8 + 80 + 768) − 0.7·16·11 = 733.8; corner: 5 + 48 − 0.7·1·11 = 45.3
    ("central", 0.7, 733.8, 45.3),
    # APDC: 1(x0−x1) + 2(x2−x5) + 3(x8−x7) = −1 − 56 + 384 = 327 (centre weight unused)
    # corner: tap 0 and cw(0)=1 are padding (0); tap 2 is padding, cw(2)=5 → x=2: 2(0−2) = −4;
    # tap 8 → 16, cw(8)=7 → 8: 3(16−8) = 24; total 20
    ("angular", 1.0, 327.0, 20.0),
])
def test_hand_computed_values(op, theta, centre, corner):
    for y in _all_forms(_layer(op, theta), X):
        assert y.shape == (1, 1, 3, 3)
        assert y[0, 0, 1, 1].item() == pytest.approx(centre, abs=1e-4)
        assert y[0, 0, 0, 0].item() == pytest.approx(corner, abs=1e-4)


def test_reparameterized_kernels_by_hand():
    cpdc = reparameterized_kernel(W, "central").flatten()
    assert cpdc.tolist() == [1.0, 0, 2, 0, 5 - 11, 0, 0, 0, 3]
    apdc = reparameterized_kernel(W, "angular").flatten()
    # W′_j = W_j − W_π(j), π = [3,0,1,6,4,2,7,8,5]
    assert apdc.tolist() == [1 - 0, 0 - 1, 2 - 0, 0 - 0, 0, 0 - 2, 0 - 0, 0 - 3, 3 - 0]


@pytest.mark.parametrize("op,theta", [("central", 1.0), ("central", 0.7), ("angular", 1.0)])
@pytest.mark.parametrize("cin,cout,groups,stride,dilation,bias", [
    (6, 6, 6, 1, 1, False),   # depth-wise, as in FRD-Net
    (4, 8, 2, 2, 1, True),
    (3, 5, 1, 1, 2, False),
    (4, 4, 4, 2, 2, True),
])
def test_difference_form_equals_single_kernel(op, theta, cin, cout, groups, stride, dilation, bias):
    layer = PixelDifferenceConv2d(cin, cout, op=op, theta=theta, stride=stride, dilation=dilation,
                                  groups=groups, bias=bias).double()
    x = torch.randn(2, cin, 11, 9, dtype=torch.float64)
    y_kernel, y_diff, y_conv = _all_forms(layer, x)
    assert y_kernel.shape == y_diff.shape == y_conv.shape
    torch.testing.assert_close(y_diff, y_kernel, atol=1e-5, rtol=0)
    torch.testing.assert_close(y_conv, y_kernel, atol=1e-5, rtol=0)
    layer32 = layer.float()
    with torch.no_grad():
        torch.testing.assert_close(layer32(x.float()), layer32.difference_form(x.float()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("op", ["central", "angular"])
def test_gradients_match_difference_form(op):
    layer = PixelDifferenceConv2d(3, 3, op=op, groups=3).double()
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    target = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    grads = []
    for fn in (layer.forward, layer.difference_form):
        layer.zero_grad()
        ((fn(x) - target) ** 2).sum().backward()
        grads.append(layer.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-8, rtol=1e-8)


def test_angular_ignores_centre_and_flat_input():
    layer = PixelDifferenceConv2d(2, 2, op="angular", groups=2)
    assert torch.all(layer.kernel()[..., 1, 1] == 0)
    flat = torch.full((1, 2, 5, 5), 3.0)
    with torch.no_grad():
        inner = layer(flat)[..., 1:-1, 1:-1]  # away from the zero padding every difference is 0
    assert inner.abs().max() < 1e-5


def test_pdc_block_structure_and_init():
    block = PDCBlock(16, op="angular")
    assert block.depthwise.groups == 16 and block.depthwise.bias is None
    assert block.pointwise.kernel_size == (1, 1) and block.pointwise.bias is None
    # Kaiming-uniform a=√5 on a depth-wise 3×3: bound = 1/√9
    assert block.depthwise.weight.abs().max() <= 1 / 3 + 1e-6
    assert block.depthwise.weight.abs().max() > 0.25
    # no residual: a zero point-wise conv gives zero output
    with torch.no_grad():
        block.pointwise.weight.zero_()
    assert torch.count_nonzero(block(torch.randn(1, 16, 6, 6))) == 0


def test_pdc_block_reparameterize():
    model = torch.nn.Sequential(PDCBlock(8, op="angular"), PDCBlock(8, 4, op="central"))
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        before = model(x)
        reparameterize_pdc(model)
        after = model(x)
    assert all(b.is_reparameterized for b in model)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    keys = set(model.state_dict())
    assert "0.depthwise_fused.weight" in keys and "0.depthwise.weight" not in keys
    assert after.shape == (2, 4, 10, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown pixel-difference op"):
        PixelDifferenceConv2d(2, 2, op="radial")
    with pytest.raises(ValueError, match="divisible"):
        PixelDifferenceConv2d(3, 2, groups=2)
    with pytest.raises(ValueError, match="theta"):
        PixelDifferenceConv2d(2, 2, op="angular", theta=0.5)
