"""ECEM (DiffForensics §3.2, Eq. 2–3): row-then-column absolute differences with replicate
padding, then conv3×3 → sigmoid → upsample."""
import torch

from tamperscope.nn.edges import EdgeCueEnhancement, col_abs_diff, ecem_edge_cues, row_abs_diff

D = torch.tensor([[1.0, 2.0, 4.0],
                  [0.0, 5.0, 3.0],
                  [7.0, 1.0, 1.0]])


def test_row_then_column_differences_on_hand_made_tensor():
    # rows: |d[i] - d[i+1]|, last row replicate-padded -> 0
    assert torch.equal(row_abs_diff(D), torch.tensor([[1.0, 3.0, 1.0], [7.0, 4.0, 2.0], [0.0, 0.0, 0.0]]))
    # then columns of that: |h[:, j] - h[:, j+1]|, last column -> 0
    expected = torch.tensor([[2.0, 2.0, 0.0], [3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.equal(ecem_edge_cues(D), expected)
    # the order matters: columns first would give a different map
    assert not torch.equal(row_abs_diff(col_abs_diff(D)), expected)


def test_operator_acts_per_map_over_batch_and_channels():
    x = torch.randn(2, 3, 5, 7)
    g = ecem_edge_cues(x)
    assert g.shape == x.shape
    for b in range(2):
        for c in range(3):
            assert torch.allclose(g[b, c], ecem_edge_cues(x[b, c]))
    assert (g[..., -1, :] == 0).all() and (g[..., :, -1] == 0).all()
    # a constant map has no edge cues
    assert (ecem_edge_cues(torch.full((1, 2, 4, 4), 3.0)) == 0).all()


def test_module_applies_conv_sigmoid_upsample_to_d_minus_g():
    torch.manual_seed(0)
    module = EdgeCueEnhancement(2)
    with torch.no_grad():  # conv = identity on channel 0
        module.conv.weight.zero_()
        module.conv.weight[0, 0, 1, 1] = 1.0
        module.conv.bias.zero_()
    d = torch.randn(1, 2, 6, 6)
    prob, enhanced = module(d, (6, 6))
    assert torch.allclose(enhanced, d - ecem_edge_cues(d))
    assert torch.allclose(prob[0, 0], torch.sigmoid(enhanced[0, 0]))
    up, _ = module(d, (24, 24))
    assert up.shape == (1, 1, 24, 24)
    assert torch.allclose(up, torch.nn.functional.interpolate(prob, size=(24, 24), mode="bilinear",
                                                              align_corners=False))
    assert (up > 0).all() and (up < 1).all()
