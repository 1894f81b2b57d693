"""The `ela` baseline: contract shapes, no parameters, not trainable, and it finds a JPEG splice."""
import cv2
import numpy as np
import pytest
import torch

import tamperscope
from tamperscope.data.transforms import jpeg_roundtrip
from tamperscope.errors import UserError
from tamperscope.metrics import pixel_stats
from tamperscope.nn.norm import imagenet_normalize

SIZE, TOP, LEFT, SIDE = 128, 37, 45, 48


def _texture(rng, h, w, sigma):
    x = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), sigma)
    return ((x - x.min()) / (x.max() - x.min()) * 200 + 25).astype(np.uint8)


def _splice(noisy_patch: bool = False):
    """A JPEG-compressed (q 90) background with a never-compressed patch of the same texture pasted in."""
    rng = np.random.default_rng(0)
    image = jpeg_roundtrip(_texture(rng, SIZE, SIZE, 1.5), 90)
    donor = _texture(rng, SIZE, SIZE, 1.5).astype(np.float32)
    if noisy_patch:
        donor += rng.normal(0, 8, donor.shape)
    image[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = np.clip(donor, 0, 255).astype(np.uint8)[TOP:TOP + SIDE, LEFT:LEFT + SIDE]
    gt = np.zeros((SIZE, SIZE), bool)
    gt[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = True
    return image, gt


def _probability(model, rgb):
    x = imagenet_normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)
    out = model(x)
    return torch.sigmoid(out["mask_logits"])[0, 0].numpy(), out


def test_contract_and_no_parameters():
    model = tamperscope.create_model("ela")
    assert "ela" in tamperscope.list_models()
    assert sum(p.numel() for p in model.parameters()) == 0
    x = imagenet_normalize(torch.rand(2, 3, 64, 96))
    out = model(x)
    assert out["mask_logits"].shape == (2, 1, 64, 96) and out["image_logit"].shape == (2,)
    assert out["level_map"].min() >= 0 and out["level_map"].max() <= 1
    torch.testing.assert_close(out["image_logit"], out["mask_logits"].flatten(1).amax(1))
    assert torch.isfinite(out["mask_logits"]).all()


def test_not_trainable():
    model = tamperscope.create_model("ela")
    batch = {"image": imagenet_normalize(torch.rand(1, 3, 32, 32)), "mask": torch.zeros(1, 1, 32, 32)}
    with pytest.raises(UserError, match="ela is not trainable"):
        model.training_step(batch)
    with pytest.raises(UserError, match="ela is not trainable"):
        model.param_groups(0.05)


def test_bad_config():
    with pytest.raises(UserError, match="quality"):
        tamperscope.create_model("ela", quality=0)
    with pytest.raises(UserError, match="method"):
        tamperscope.create_model("ela", method="wavelet")


def test_localises_a_jpeg_splice():
    image, gt = _splice()
    model = tamperscope.create_model("ela")
    prob, _ = _probability(model, image)
    stats = pixel_stats(prob, gt)
    chance_f1 = 2 * gt.mean() / (1 + gt.mean())  # F1 of flagging every pixel
    assert stats["auc"] > 0.9
    assert stats["f1"] > chance_f1 + 0.3
    # the same picture compressed once more as a whole: the compression histories match, so the signal drops
    control, _ = _probability(model, jpeg_roundtrip(image, 90))
    assert pixel_stats(control, gt)["auc"] < stats["auc"] - 0.15


def test_quality_is_configurable():
    image, gt = _splice()
    q90, _ = _probability(tamperscope.create_model("ela", quality=90), image)
    q60, _ = _probability(tamperscope.create_model("ela", quality=60), image)
    assert not np.allclose(q90, q60)
    assert pixel_stats(q90, gt)["auc"] > pixel_stats(q60, gt)["auc"]  # matching the background's quality helps


def test_noise_variance_variant_finds_a_noisier_patch():
    image, gt = _splice(noisy_patch=True)
    prob, _ = _probability(tamperscope.create_model("ela", method="noise"), image)
    assert pixel_stats(prob, gt)["auc"] > 0.9


def test_flat_image_gives_zero_map():
    model = tamperscope.create_model("ela", smoothing_sigma=0.0)
    flat = np.full((64, 64, 3), 128, np.uint8)
    _, out = _probability(model, flat)
    assert float(out["level_map"].max()) == 0.0


def test_native_evaluation_crops_the_padding_back(tmp_path):
    """evaluate runs a native-resolution model on the photo padded to a multiple of 32 and scores the map
    cropped back to the photo: the same numbers as running the model by hand."""
    from PIL import Image

    from tamperscope.data.transforms import pad_to_multiple
    from tamperscope.engine.runs import evaluate_source

    image, gt = _splice()
    image, gt = np.ascontiguousarray(image[:110, :100]), gt[:110, :100]
    for sub in ("Tp", "Gt"):
        (tmp_path / sub).mkdir()
    Image.fromarray(image).save(tmp_path / "Tp" / "x.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "Gt" / "x_gt.png")
    metrics, _ = evaluate_source(checkpoint="ela", data=str(tmp_path), device="cpu", workers=0, progress=False)
    prob, _ = _probability(tamperscope.create_model("ela"), pad_to_multiple(image, replicate=True))
    expected = pixel_stats(prob[:110, :100], gt)
    assert metrics["n_images"] == 1
    assert metrics["pixel_f1"] == pytest.approx(expected["f1"], abs=1e-6)
    assert metrics["pixel_auc"] == pytest.approx(expected["auc"], abs=1e-6)
