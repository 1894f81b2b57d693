"""The aligned double-JPEG expert (models/doublejpeg.py): its parts against brute force, and its map on a splice."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from tamperscope.errors import UserError
from tamperscope.models.doublejpeg import bins_per_value, estimate_step, first_step
from tamperscope.nn.jpeg import block_dct, zigzag
from tamperscope.nn.norm import imagenet_normalize
from tamperscope.registry import create_model


def test_bins_per_value_counts_the_first_quantisation_bins():
    k = np.arange(-30, 31)
    for q1, q2 in ((7, 4), (3, 5), (10, 6), (2, 3)):
        v = np.arange(-200, 201)  # round half up, as the bins are [k − ½, k + ½)
        brute = np.bincount(np.floor(v * q1 / q2 + 0.5).astype(int) + 1000, minlength=2001)[k + 1000]
        np.testing.assert_array_equal(bins_per_value(k.astype(float), q1, q2), brute)


def test_step_estimates_read_the_last_quantisation_table(double_jpeg):
    buf = io.BytesIO()
    Image.fromarray(double_jpeg.photo_like(3)).save(buf, "JPEG", quality=75)
    saved = Image.open(buf)
    table = np.array(saved.quantization[0]).reshape(8, 8)  # natural order
    image = np.array(saved.convert("RGB"))
    coefficients = block_dct(image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) - 128)
    for i, j in zigzag()[1:6]:
        assert estimate_step(coefficients[:, :, i, j].ravel(), 40, 0.8) == table[i, j]


def test_first_step_finds_the_earlier_quality_and_nothing_in_a_single_compression():
    rng = np.random.default_rng(0)
    x = rng.laplace(0, 20, 20000)
    twice = np.round(np.round(x / 7) * 7 / 4)
    once = np.round(x / 4)
    for k, expected in ((twice, 7), (once, None)):
        values, counts = np.unique(k[k != 0], return_counts=True)
        assert first_step(values, counts, 4, 0.9, 0.02) == expected


def test_the_map_is_the_block_ratio_averaged_over_3x3_blocks(double_jpeg):
    model = create_model("doublejpeg")
    image, _ = double_jpeg.spliced()
    ratio, used = model.block_evidence(image)
    bh, bw = ratio.shape
    padded = np.pad(ratio, 1, mode="edge")
    direct = np.mean([padded[i:i + bh, j:j + bw] for i in range(3) for j in range(3)], axis=0)
    assert used and ratio.shape == (32, 32)
    np.testing.assert_allclose(model.evidence_map(image)[::8, ::8], direct, atol=1e-5)


def test_the_pasted_region_stands_out_and_nothing_stands_out_without_a_splice(double_jpeg):
    model = create_model("doublejpeg")
    image, mask = double_jpeg.spliced()
    logits = model.evidence_map(image)
    assert roc_auc_score(mask.ravel(), logits.ravel()) > 0.85
    assert logits[mask].mean() > 0 > logits[~mask].mean()
    for quality in (75, 90):  # quantised once: no block looks pasted (histogram quirks may look double, never single)
        assert model.evidence_map(double_jpeg.jpeg(double_jpeg.photo_like(4), quality)).max() < 0.1 * logits[mask].mean()
    assert not model.evidence_map(double_jpeg.photo_like(4)).any()  # never compressed: no lattice, no evidence either way


def test_contract_weight_offset_and_errors(double_jpeg):
    model = create_model("doublejpeg", weight=2.0, offset=0.5)
    image, _ = double_jpeg.spliced()
    x = imagenet_normalize(torch.from_numpy(image[None, :250, :250].copy()).permute(0, 3, 1, 2).float() / 255)
    out = model(x)
    assert out["mask_logits"].shape == (1, 1, 250, 250) and out["image_logit"].shape == (1,)
    assert out["image_logit"][0] == out["mask_logits"].max()
    plain = create_model("doublejpeg").evidence_map(image[:250, :250])
    np.testing.assert_allclose(out["mask_logits"][0, 0].numpy()[:248, :248], 2 * plain[:248, :248] + 0.5, atol=1e-5)
    assert not out["mask_logits"][0, 0, 248:].any()  # incomplete border blocks: no evidence
    assert model.native_resolution and model.evidence and not any(True for _ in model.parameters())
    for bad in ({"smoothing": 2}, {"alpha": 1.0}, {"frequencies": 0}, {"max_step": 1}):
        with pytest.raises(UserError, match="doublejpeg"):
            create_model("doublejpeg", **bad)
    with pytest.raises(UserError, match="not trainable"):
        model.param_groups(0.0)
