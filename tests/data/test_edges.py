"""tamperscope.data.edges: IMDLBenCo edge band and the Canny variant."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tamperscope.data.edges import canny_edge, edge_band
from tamperscope.errors import UserError


def _benco_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Independent reference: IMDLBenCo's formulation with a zero-padded cross convolution."""
    k = torch.zeros(1, 1, width, width)
    k[0, 0, width // 2, :] = 1
    k[0, 0, :, width // 2] = 1
    x = torch.from_numpy(mask.astype(np.float32))[None, None]

    def dilate(t):
        return (F.conv2d(t, k, padding=width // 2) > 0).float()

    dilated, eroded = dilate(x), 1 - dilate(1 - x)
    return (dilated != eroded)[0, 0].numpy()


@pytest.mark.parametrize("width", [3, 7, 11])
def test_band_matches_reference(width):
    rng = np.random.default_rng(width)
    mask = np.zeros((40, 52), bool)
    mask[5:20, 8:30] = True
    mask[25:40, 40:52] = True  # touches the bottom-right border
    mask |= rng.random(mask.shape) > 0.97
    assert np.array_equal(edge_band(mask, width), _benco_band(mask, width))


def test_band_geometry():
    mask = np.zeros((20, 30), bool)
    mask[:, 15:] = True  # vertical boundary between columns 14 and 15, region touches three borders
    band = edge_band(mask, 7)
    cols = np.flatnonzero(band.any(axis=0))
    assert cols.tolist() == list(range(12, 18))  # 6 px: 3 on each side
    assert band[:, 12:18].all() and not band[:, 25:].any()  # no band along the image border
    assert not edge_band(np.zeros((8, 8), bool)).any() and not edge_band(np.ones((8, 8), bool)).any()


def test_canny_edge():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    thin = canny_edge(mask, dilate=0)
    thick = canny_edge(mask)
    assert thin.any() and (thick & ~thin).any() and (thin <= thick).all()
    ys, xs = np.nonzero(thick)
    dist = np.minimum.reduce([np.abs(ys - 9.5), np.abs(ys - 29.5), np.abs(xs - 9.5), np.abs(xs - 29.5)])
    assert dist.max() <= 4  # stays on the boundary
    assert not canny_edge(np.zeros((16, 16), bool)).any()


def test_bad_arguments():
    with pytest.raises(UserError):
        edge_band(np.zeros((8, 8), bool), 4)
    with pytest.raises(UserError):
        edge_band(np.zeros((2, 8, 8), bool))
