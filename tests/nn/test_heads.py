"""The SegFormer All-MLP head (nn/heads.py) computes the paper's decoder in an equal order: checked against the
literal one (linear per stage, bilinear to stride 4, concatenation c4…c1, 1×1 fuse, BN, ReLU) with the same weights,
outputs and gradients, in training and in eval mode."""
import pytest
import torch
import torch.nn.functional as F

from tamperscope.nn.heads import AllMLPHead


def literal_fuse(head: AllMLPHead, feats: list[torch.Tensor]) -> torch.Tensor:
    size = feats[0].shape[-2:]
    ups = []
    for i in reversed(range(head.num_stages)):
        proj = getattr(head, f"linear_c{i + 1}").proj
        B, _, H, W = feats[i].shape
        y = proj(feats[i].flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, -1, H, W)
        ups.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False) if (H, W) != size else y)
    fuse = head.linear_fuse
    return fuse.act(fuse.bn(fuse.conv(torch.cat(ups, dim=1))))


def _feats(dtype, size=(24, 20)):
    g = torch.Generator().manual_seed(1)
    chans = (8, 16, 24, 32)
    return [torch.randn(2, c, size[0] // 2 ** i + i, size[1] // 2 ** i, generator=g, dtype=dtype) for i, c in
            enumerate(chans)]  # odd sizes on purpose: bilinear resizing of every stage, as in any photo


@pytest.mark.parametrize("train", [True, False])
def test_fuse_equals_the_literal_decoder_with_the_same_weights(train):
    torch.manual_seed(0)
    head = AllMLPHead((8, 16, 24, 32), 12, num_classes=1, dropout=0.0).double()
    with torch.no_grad():  # a BN that is not the identity, so eval mode is checked too
        head.linear_fuse.bn.running_mean.uniform_(-1, 1)
        head.linear_fuse.bn.running_var.uniform_(0.5, 2)
    head.train(train)
    feats = [f.requires_grad_() for f in _feats(torch.float64)]
    ours = head.fuse(feats)
    grads = torch.autograd.grad(ours.square().sum(), [*head.parameters(), *feats], allow_unused=True)
    literal = literal_fuse(head, feats)
    literal_grads = torch.autograd.grad(literal.square().sum(), [*head.parameters(), *feats], allow_unused=True)
    torch.testing.assert_close(ours, literal, rtol=1e-10, atol=1e-10)
    for name, g, ref in zip([n for n, _ in head.named_parameters()] + ["feats"] * 4, grads, literal_grads):
        if ref is None:  # linear_pred takes no part in fuse
            assert name.startswith("linear_pred") and g is None
            continue
        torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-10, msg=name)


def test_float32_outputs_agree_to_rounding():
    torch.manual_seed(0)
    head = AllMLPHead((8, 16, 24, 32), 64).eval()
    feats = _feats(torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(head.fuse(feats), literal_fuse(head, feats), rtol=1e-4, atol=1e-5)
