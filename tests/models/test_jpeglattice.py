"""The JPEG-lattice expert (models/jpeglattice.py): its parts against known answers, and its map on a photo decoded
from JPEG, edited and kept lossless."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tamperscope.errors import UserError
from tamperscope.models.jpeglattice import LIMIT, grid_offset, lattice_step
from tamperscope.nn.jpeg import jfif_luma
from tamperscope.nn.norm import imagenet_normalize
from tamperscope.registry import create_model


@pytest.mark.parametrize("q", [4, 7, 12])
def test_the_step_is_found_beside_a_third_of_coefficients_off_the_lattice(q):
    rng = np.random.default_rng(q)
    on = np.round(rng.laplace(0, 25, 4000) / q) * q + rng.normal(0, 0.3, 4000)
    off = rng.laplace(0, 25, 2000)
    step, noise = lattice_step(np.concatenate([on, off]), 40, 0.75, 0.6)
    assert step == q and 0.2 < noise < 0.4
    assert lattice_step(off, 40, 0.75, 0.6)[0] == 1  # never quantised: no lattice


def test_the_grid_is_found_on_a_cropped_jpeg(double_jpeg):
    photo = double_jpeg.jpeg(double_jpeg.photo_like(3), 75)
    assert grid_offset(jfif_luma(photo), 512) == (0, 0)
    assert grid_offset(jfif_luma(photo[3:, 5:]), 512) == (5, 3)
    assert grid_offset(jfif_luma(photo[3:, 5:]), 64) == (5, 3)  # from a central window only


def test_the_pasted_region_fires_and_is_drawn(double_jpeg):
    model = create_model("jpeglattice")
    image, mask = double_jpeg.lossless_edit()
    logits, score = model.detect(image)
    assert score > 0 and roc_auc_score(mask.ravel(), logits.ravel()) > 0.95
    drawn = logits > 0
    assert (drawn & mask).sum() / (drawn | mask).sum() > 0.7  # IoU of the drawn region
    cropped, cropped_mask = image[3:, 5:], mask[3:, 5:]  # off the top-left grid: the grid search finds it
    logits, score = model.detect(cropped)
    assert score > 0 and roc_auc_score(cropped_mask.ravel(), logits.ravel()) > 0.95


def test_silent_on_authentic_photos_and_on_a_forgery_saved_as_jpeg(double_jpeg):
    model = create_model("jpeglattice")
    for quality in (60, 75, 85):  # decoded JPEGs kept losslessly: a lattice, no block off it
        ratio, _ = model.block_evidence(double_jpeg.jpeg(double_jpeg.photo_like(4), quality))
        assert ratio is not None
        assert model.detect(double_jpeg.jpeg(double_jpeg.photo_like(4), quality))[1] < 0
    logits, score = model.detect(double_jpeg.photo_like(4))  # never compressed: no lattice, no evidence
    assert score == -LIMIT and (logits == -LIMIT).all()
    image, _ = double_jpeg.lossless_edit()
    assert model.detect(double_jpeg.jpeg(image, 75))[1] < 0  # the last save put every block on one lattice


def test_clipped_blocks_give_no_evidence(double_jpeg):
    """Clipping at 0 or 255 moves a block off its lattice without an edit: such blocks add nothing."""
    model = create_model("jpeglattice")
    image, mask = double_jpeg.lossless_edit()
    ratio, _ = model.block_evidence(image)
    assert ratio[10:19, 7:19].min() > 0  # blocks inside the pasted region are off the lattice
    image[80:152:8, 60:152:8] = 255  # one saturated pixel in each of those blocks (rows 10-18, columns 7-18)
    clipped, _ = model.block_evidence(image)
    assert (clipped[10:19, 7:19] == 0).all() and model.detect(image)[1] < model.detect(double_jpeg.lossless_edit()[0])[1]


def test_contract_and_errors(double_jpeg):
    model = create_model("jpeglattice", weight=2.0)
    image, mask = double_jpeg.lossless_edit()
    x = imagenet_normalize(torch.from_numpy(image[None].copy()).permute(0, 3, 1, 2).float() / 255)
    out = model(x)
    logits, score = create_model("jpeglattice").detect(image)
    assert out["mask_logits"].shape == (1, 1, 256, 256) and out["image_logit"].shape == (1,)
    np.testing.assert_allclose(out["image_logit"][0].item(), score, rtol=1e-5)
    inside = logits > 0  # the weight scales the logits of the kept region
    np.testing.assert_allclose(out["mask_logits"][0, 0].numpy()[inside], np.minimum(2 * logits[inside], LIMIT),
                               rtol=1e-5)
    assert model.native_resolution and not model.evidence
    for bad in ({"smoothing": 2}, {"min_step": 2}, {"tolerance": 0}, {"wide": 0.99, "outlier": 0.02}):
        with pytest.raises(UserError, match="jpeglattice"):
            create_model("jpeglattice", **bad)
    with pytest.raises(UserError, match="not trainable"):
        model.param_groups(0.0)

