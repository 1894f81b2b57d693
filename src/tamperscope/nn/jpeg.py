"""JPEG pieces shared across the package: the round trip used by the error-level inputs
(:mod:`tamperscope.nn.error_level`), IFA-Net's low-pass branch and the data layer's JPEG augmentation and
perturbation (:mod:`tamperscope.data.transforms`); the 8×8 block DCT read by the JPEG-trace experts
(:mod:`tamperscope.models.doublejpeg`, :mod:`tamperscope.models.jpeglattice`)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import UserError


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB uint8 image as JPEG at ``quality`` and decode it again (OpenCV/libjpeg, 4:2:0)."""
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise UserError(f"JPEG encoding failed at quality {quality}")
    return cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


BLOCK = 8
#: JPEG's JFIF luminance weights
LUMA = np.array([0.299, 0.587, 0.114])
#: fewest coefficients (or blocks) a statistic of one DCT frequency is read from by the JPEG-trace experts
MIN_SAMPLES = 30


def jfif_luma(rgb: np.ndarray) -> np.ndarray:
    """The float luminance ``Y − 128`` of a uint8 RGB image, as JPEG's JFIF transform and level shift compute it."""
    return rgb.astype(np.float64) @ LUMA - 128.0


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal ``n``-point DCT-II matrix (JPEG's FDCT scaling for ``n`` = 8)."""
    u, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    scale = np.where(u == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return scale * np.cos((2 * x + 1) * u * np.pi / (2 * n))


def zigzag(n: int = BLOCK) -> list[tuple[int, int]]:
    """``(row, column)`` frequencies of an ``n``×``n`` block in JPEG's zig-zag order."""
    return sorted(((i, j) for i in range(n) for j in range(n)),
                  key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 == 0 else p[0]))


def block_dct(luma: np.ndarray) -> np.ndarray:
    """``bh×bw×8×8`` DCT coefficients of the complete 8×8 blocks of a float luminance image."""
    bh, bw = luma.shape[0] // BLOCK, luma.shape[1] // BLOCK
    blocks = luma[:bh * BLOCK, :bw * BLOCK].reshape(bh, BLOCK, bw, BLOCK).transpose(0, 2, 1, 3)
    c = dct_matrix()
    return np.einsum("ux,abxy,vy->abuv", c, blocks, c, optimize=True)


def paint_blocks(out: np.ndarray, values: np.ndarray, top: int = 0, left: int = 0) -> np.ndarray:
    """``out`` with each of the ``bh×bw`` block ``values`` set on every pixel of its 8×8 block, the block grid
    starting at (``top``, ``left``); pixels outside complete blocks keep their value."""
    bh, bw = values.shape
    out[top:top + bh * BLOCK, left:left + bw * BLOCK] = np.repeat(np.repeat(values, BLOCK, 0), BLOCK, 1)
    return out
