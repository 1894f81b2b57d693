"""tamperscope.data.transforms: MVSS-style augmentation and robustness perturbations."""
import numpy as np
import pytest

from tamperscope.data.transforms import (AugmentConfig, augment, parse_perturb, perturb, random_copy_move,
                                         random_inpaint, resize_pair)
from tamperscope.errors import UserError


def _scene(h=64, w=80, seed=0):
    """Textured grey image with one red rectangle; the mask is the rectangle."""
    rng = np.random.default_rng(seed)
    img = np.clip(100 + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:30, 12:40] = True
    img[mask] = (230, 20, 20)
    return img, mask


def _redness(img):
    return img[..., 0].astype(np.float32) - img[..., 1].astype(np.float32)


def test_flips_and_rotation_keep_alignment():
    img, mask = _scene()
    always = AugmentConfig(hflip_p=1.0, vflip_p=1.0, rot90_p=1.0, jpeg_p=1.0, blur_p=1.0,
                           copy_move_p=0.0, inpaint_p=0.0)
    for seed in range(12):
        for cfg in (always, AugmentConfig(copy_move_p=0.0, inpaint_p=0.0)):
            out, m = augment(img, mask, np.random.default_rng(seed), config=cfg)
            assert out.shape[:2] == m.shape and m.dtype == bool and out.dtype == np.uint8
            red = _redness(out)
            assert red[m].mean() > 120 and red[~m].mean() < 30, seed
            # the mask covers the red pixels (up to the blurred rim)
            assert ((red > 150) & ~m).mean() < 0.01
    scale = [augment(img, mask, np.random.default_rng(s))[1].shape for s in range(20)]
    assert len(set(scale)) > 3 and all(51 <= min(s) and max(s) <= 97 for s in scale)  # ×[0.8, 1.2], maybe rotated


def test_copy_move_and_inpaint_change_only_the_mask():
    img, _ = _scene()
    empty = np.zeros(img.shape[:2], bool)
    for seed in range(10):
        for op in (random_copy_move, random_inpaint):
            out, m = op(img, empty, np.random.default_rng(seed))
            assert m.any() and not empty.any()
            changed = (out != img).any(axis=2)
            assert not (changed & ~m).any(), op.__name__
            if op is random_inpaint:
                assert changed[m].mean() > 0.3


def test_forgery_ops_switch_and_label_turning_fake():
    img, _ = _scene()
    empty = np.zeros(img.shape[:2], bool)
    cfg = AugmentConfig(copy_move_p=1.0, inpaint_p=1.0)
    _, m = augment(img, empty, np.random.default_rng(0), config=cfg)
    assert m.any()  # an authentic sample can become fake
    _, m = augment(img, empty, np.random.default_rng(0), forgery_ops=False, config=cfg)
    assert not m.any()


def test_augment_deterministic_for_a_seed():
    img, mask = _scene()
    a = augment(img, mask, np.random.default_rng(7))
    b = augment(img, mask, np.random.default_rng(7))
    c = augment(img, mask, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_resize_pair_nearest_mask():
    img, mask = _scene()
    out, m = resize_pair(img, mask, 32)
    assert out.shape == (32, 32, 3) and m.shape == (32, 32) and m.dtype == bool
    assert set(np.unique(m)) == {False, True}


def test_perturbations():
    img, _ = _scene()
    for kind, level in (("blur", 0), ("noise", 0), ("gamma", 1), ("resize", 1)):
        assert np.array_equal(perturb(img, kind, level), img), kind
    j50 = perturb(img, "jpeg", 50)
    assert j50.shape == img.shape and np.abs(j50.astype(int) - img).mean() > 1
    assert np.abs(perturb(img, "jpeg", 95).astype(int) - img).mean() < np.abs(j50.astype(int) - img).mean()
    blurred = perturb(img, "blur", 7)
    assert blurred.std() < img.std()
    n1, n2 = perturb(img, "noise", 5, rng=3), perturb(img, "noise", 5, rng=3)
    assert np.array_equal(n1, n2) and not np.array_equal(n1, perturb(img, "noise", 5, rng=4))
    assert abs((n1.astype(float) - img).std() - 5) < 1
    assert perturb(img, "gamma", 2.0).mean() < img.mean()
    assert perturb(img, "resize", 0.5).shape == (32, 40, 3)


def test_parse_perturb():
    assert parse_perturb("jpeg:70") == ("jpeg", 70.0)
    assert parse_perturb(" Blur:5 ") == ("blur", 5.0)
    assert parse_perturb("resize:0.5") == ("resize", 0.5)
    for bad, text in (("sharpen:3", "unknown perturbation"), ("jpeg", "KIND:LEVEL"), ("jpeg:abc", "not a number"),
                      ("jpeg:0", "1–100"), ("jpeg:70.5", "1–100"), ("blur:4", "odd"), ("noise:-1", ">= 0"),
                      ("gamma:0", "> 0")):
        with pytest.raises(UserError, match=text):
            parse_perturb(bad)
