"""The JPEG helpers shared across the package (nn/jpeg.py): the 8x8 block DCT and the zig-zag order against their
definitions."""
import numpy as np

from tamperscope.nn.jpeg import block_dct, dct_matrix, jfif_luma, paint_blocks, zigzag


def test_dct_is_orthonormal_and_zigzag_starts_like_jpeg():
    c = dct_matrix()
    np.testing.assert_allclose(c @ c.T, np.eye(8), atol=1e-12)
    assert zigzag()[:6] == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2)] and len(set(zigzag())) == 64
    block = np.random.default_rng(0).normal(size=(8, 8))
    np.testing.assert_allclose(block_dct(np.tile(block, (2, 3)))[1, 2], c @ block @ c.T, atol=1e-12)


def test_jfif_luma_is_the_level_shifted_weighted_sum():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]]], np.uint8)
    np.testing.assert_allclose(jfif_luma(rgb)[0], [0.299 * 255 - 128, 0.587 * 255 - 128, 0.114 * 255 - 128, 0.0], atol=1e-9)


def test_paint_blocks_sets_each_block_on_its_pixels_from_the_grid_origin():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = paint_blocks(np.full((20, 30), -1.0, np.float32), values, top=3, left=5)
    assert (out[3:11, 5:13] == 0).all() and (out[11:19, 21:29] == 5).all() and (out[11:19, 13:21] == 4).all()
    assert (out[:3] == -1).all() and (out[:, :5] == -1).all() and (out[19:] == -1).all() and (out[:, 29:] == -1).all()
