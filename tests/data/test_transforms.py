"""tamperscope.data.transforms: MVSS-style augmentation and robustness perturbations."""
import numpy as np
import pytest

from tamperscope.data.transforms import (FLIPS_ONLY, JPEG_GRID, AugmentConfig, augment, augment_native,
                                         augment_policy, crop_pad, jpeg_roundtrip, pad_to_multiple, parse_perturb, perturb, photometric_config,
                                         random_copy_move, random_inpaint, resize_pair)
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


def test_augment_policies():
    assert augment_policy("full") == (AugmentConfig(), True)
    assert augment_policy("no_forgery") == (AugmentConfig(), False)
    assert augment_policy("flips") == (FLIPS_ONLY, False)
    with pytest.raises(UserError, match="augmentation policy"):
        augment_policy("mild")
    img, mask = _scene()
    flips = [(img, mask), (img[:, ::-1], mask[:, ::-1]), (img[::-1], mask[::-1]), (img[::-1, ::-1], mask[::-1, ::-1])]
    seen = set()
    for seed in range(12):  # flips only: every output is one of the four flips of the input, pixel for pixel
        out, m = augment(img, mask, np.random.default_rng(seed), forgery_ops=False, config=FLIPS_ONLY)
        k = [i for i, (fi, fm) in enumerate(flips) if np.array_equal(out, fi) and np.array_equal(m, fm)]
        assert len(k) == 1
        seen.add(k[0])
    assert len(seen) >= 3


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


def test_native_crop_is_a_grid_aligned_window():
    img, mask = _scene(100, 150)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        out, m = augment_native(img, mask, rng, 48)
        # locate the window: it must be the photo's own pixels at a corner on the 16-pixel grid
        hits = [(t, l) for t in range(0, 100 - 47) for l in range(0, 150 - 47)
                if np.array_equal(img[t:t + 48, l:l + 48], out)]
        assert hits and all(t % JPEG_GRID == 0 and l % JPEG_GRID == 0 for t, l in hits[:1])
        t, l = hits[0]
        assert np.array_equal(m, mask[t:t + 48, l:l + 48])
    with pytest.raises(UserError, match="multiple of 16"):
        augment_native(img, mask, np.random.default_rng(0), 40)


def test_native_crop_keeps_the_jpeg_grid():
    """A grid-aligned window of a JPEG photo re-compresses almost losslessly at the photo's quality (the
    error level that native-resolution models read); a window off the grid does not."""
    rng = np.random.default_rng(0)
    photo = jpeg_roundtrip(np.clip(120 + rng.normal(0, 25, (96, 128, 3)), 0, 255).astype(np.uint8), 80)

    def ela(x):
        return np.abs(x.astype(np.int16) - jpeg_roundtrip(x, 80).astype(np.int16)).mean()

    aligned = ela(photo[16:80, 32:96])
    shifted = ela(photo[19:83, 37:101])
    assert aligned < 0.5 * shifted


def test_native_crop_pads_and_flips_with_the_mask():
    img, mask = _scene(40, 30)
    cfg = AugmentConfig(hflip_p=1.0, vflip_p=1.0, rot90_p=0.0)
    edge = mask.astype(np.float32)
    out, m, e = augment_native(img, mask, np.random.default_rng(0), 48, config=cfg, extra=(edge,))
    assert out.shape == (48, 48, 3) and m.shape == e.shape == (48, 48)
    plain = crop_pad(img, 0, 0, 48, True)
    assert np.array_equal(out, plain[::-1, ::-1])
    assert np.array_equal(m, crop_pad(mask, 0, 0, 48, False)[::-1, ::-1]) and np.array_equal(e, m.astype(np.float32))
    assert np.array_equal(plain[40:, :30], np.repeat(img[-1:], 8, axis=0))  # replicated rows below the photo
    assert not crop_pad(mask, 0, 0, 48, False)[40:].any()  # padding is never tampered


def test_pad_to_multiple_and_photometric_config():
    img, mask = _scene(70, 50)
    assert pad_to_multiple(img, True).shape == (96, 64, 3) and pad_to_multiple(mask, False).shape == (96, 64)
    assert pad_to_multiple(img[:64, :32], True).shape == (64, 32, 3)
    cfg = photometric_config(AugmentConfig(jpeg_p=0.7))
    assert cfg.scale_range == (1.0, 1.0) and cfg.hflip_p == cfg.vflip_p == cfg.rot90_p == 0 and cfg.jpeg_p == 0.7
    out, m = augment(img, mask, np.random.default_rng(3), config=cfg)
    assert out.shape == img.shape and np.array_equal(m, mask)  # no rescale, no geometry
