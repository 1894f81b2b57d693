"""SegFormer baseline: output contract, image score, loss terms (BCE, batch or per-image Dice), config errors.
Equivalence with transformers' SegFormer and checkpoint loading are in tests/backbones/test_mit.py."""
import pytest
import torch
import torch.nn.functional as F

import tamperscope


def _batch():
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 8:40, 8:40] = 1  # a large region in the first image, a small one in the second
    mask[1, :, 50:54, 50:54] = 1
    return {"mask": mask}


def test_contract_and_image_score_is_max_logit():
    torch.manual_seed(0)
    model = tamperscope.create_model("segformer-b0").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out["mask_logits"].shape == (2, 1, 64, 96)
    assert torch.allclose(out["image_logit"], out["mask_logits"].flatten(1).amax(1))


def test_bce_only_by_default():
    model = tamperscope.create_model("segformer-b0")
    logits = torch.randn(2, 1, 64, 64)
    terms = model.loss({"mask_logits": logits}, _batch())
    assert set(terms) == {"total", "bce"}
    assert torch.allclose(terms["total"], F.binary_cross_entropy_with_logits(logits, _batch()["mask"]))


@pytest.mark.parametrize("form", ["batch", "image"])
def test_dice_forms(form):
    model = tamperscope.create_model("segformer-b0", dice_weight=0.5, dice_form=form)
    batch = _batch()
    logits = torch.randn(2, 1, 64, 64)
    terms = model.loss({"mask_logits": logits}, batch)
    p, g = torch.sigmoid(logits), batch["mask"]
    if form == "batch":
        dice = 1 - (2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1)
    else:
        dice = torch.stack([1 - (2 * (p[i] * g[i]).sum() + 1) / (p[i].sum() + g[i].sum() + 1) for i in range(2)]).mean()
    assert torch.allclose(terms["dice"], dice, atol=1e-6)
    assert torch.allclose(terms["total"], terms["bce"] + 0.5 * dice, atol=1e-6)


def test_per_image_dice_weighs_the_small_region_as_much_as_the_large_one():
    batch = _batch()
    only_large = batch["mask"].clone()
    only_large[1] = 0  # a prediction that finds the large region and misses the small one
    logits = (only_large * 2 - 1) * 20
    batch_dice = tamperscope.create_model("segformer-b0", dice_weight=1, dice_form="batch").loss(
        {"mask_logits": logits}, batch)["dice"]
    image_dice = tamperscope.create_model("segformer-b0", dice_weight=1, dice_form="image").loss(
        {"mask_logits": logits}, batch)["dice"]
    assert batch_dice < 0.02 and image_dice > 0.45


def test_unknown_dice_form_is_a_clear_error():
    with pytest.raises(ValueError, match="dice_form"):
        tamperscope.create_model("segformer-b0", dice_form="pixel")
