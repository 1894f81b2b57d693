"""Unit tests of the BR-Gen pipeline stages: regions, forgers, quality filters, prompts, splits (paper 001 §3)."""
import cv2
import numpy as np
import pytest
from scipy.stats import gennorm

from tamperscope.data.brgen.creation import BUILTIN_METHODS, Donor, builtin_creators, noise_sigma
from tamperscope.data.brgen.pipeline import photo_slots, rng_for, source_name, split_sources
from tamperscope.data.brgen.prompts import make_prompt
from tamperscope.data.brgen.quality import (PSNR_CAP, NaturalnessRange, QualityThresholds, colour_chi2,
                                            evaluate_forgery, ggd_shape, psnr_outside, seam_ratio)
from tamperscope.data.brgen.regions import (AREA_BINS, AREA_POLICIES, BuiltinRegions, area_bin_of, bin_range,
                                            draw_target_area, threshold_field)


def scene(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([120 + 80 * yy / h, 140 + 60 * xx / w, 200 - 100 * yy / h], -1)
    base[yy > h * 0.55] = rng.uniform(40, 160, 3)
    base += cv2.GaussianBlur(rng.normal(0, 20, (h, w)).astype(np.float32), (0, 0), 1.0)[..., None]
    base += rng.normal(0, 2, base.shape)
    return np.clip(base, 0, 255).round().astype(np.uint8)


def test_area_bins():
    assert [bin_range(b) for b in AREA_BINS] == [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]
    assert [area_bin_of(a) for a in (0.01, 0.2, 0.39, 0.6, 0.99)] == ["<20", "<40", "<40", "<80", "<100"]
    with pytest.raises(ValueError):
        bin_range("<30")
    rng = np.random.default_rng(0)
    for b in AREA_BINS:
        t = draw_target_area(b, rng)
        assert area_bin_of(t) == b


def test_threshold_field_hits_target_exactly():
    field = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    mask = threshold_field(field, (60, 90), 0.37)
    assert abs(mask.mean() - 0.37) < 0.002


def test_paper_area_policy_includes_the_small_stuff_bin():
    """Stuff reaches <20 % (paper 001 Table 7 reports that bin; BR-Gen's small regions are Stuff), thing 2–20 %,
    background = the inverse of a thing (80–98 %)."""
    paper = AREA_POLICIES["paper"]
    assert (paper["thing"], paper["stuff"], paper["background"]) == (("<20",), ("<20", "<40", "<60", "<80"),
                                                                      ("<100",))
    for kind in ("thing", "stuff", "background"):  # table7 reaches further, never less
        assert set(paper[kind]) <= set(AREA_POLICIES["table7"][kind])
    image = scene(5)
    for k in range(4):
        rng = np.random.default_rng([7, k])
        region = BuiltinRegions().propose(image, "stuff", draw_target_area("<20", rng), rng)
        assert 0.03 <= region.area < 0.2, (region.shape, region.area)


def test_generator_family_of_each_stand_in():
    """Split A (GAN vs Diffusion): no built-in stand-in is called GAN; classical inpainting is 'classical'."""
    from tamperscope.data.brgen.pipeline import generator_family

    creators = builtin_creators()
    families = {m: generator_family(creators[m].family) for m in BUILTIN_METHODS}
    assert families == {"cvTelea": "classical", "cvNS": "classical", "exemplar": "classical", "splice": "other",
                        "copymove": "other", "pseudoLDM": "Diffusion-like"}
    assert generator_family("diffusion-inpainting") == "Diffusion"


def test_photo_slots_interleave_the_splits():
    names = [f"p{k}" for k in range(20)]
    split = split_sources(names, seed=1)
    slots = photo_slots(names, split, seed=1)
    assert sorted(slots) == sorted(names) and slots == photo_slots(list(names), split, seed=1)
    assert [split[n] for n in slots[:3]] == ["test", "val", "train"]
    assert {split[n] for n in slots[10:13]} == {"test", "val", "train"}  # the second of each comes mid-way


@pytest.mark.parametrize("kind", ["thing", "stuff", "background"])
def test_regions_land_in_their_bins(kind):
    image = scene(3)
    regions = BuiltinRegions()
    shapes = set()
    for k, b in enumerate(AREA_POLICIES["table7"][kind] * 2):
        rng = np.random.default_rng([kind == "stuff", k])
        region = regions.propose(image, kind, draw_target_area(b, rng), rng)
        assert region.mask.shape == image.shape[:2] and region.mask.dtype == bool
        assert area_bin_of(region.area) == b, (kind, b, region.shape, region.area)
        assert region.kind == kind
        shapes.add(region.shape)
    assert len(shapes) >= 2  # more than one strategy is exercised


def test_background_is_inverse_of_a_thing():
    image = scene(4)
    a = BuiltinRegions().propose(image, "background", 0.7, np.random.default_rng(9))
    b = BuiltinRegions().propose(image, "thing", 0.3, np.random.default_rng(9))
    np.testing.assert_array_equal(a.mask, ~b.mask)


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_forgers_change_only_the_mask(method):
    image, other = scene(5), scene(6)
    mask = np.zeros(image.shape[:2], bool)
    mask[20:70, 30:100] = True
    donor = lambda rng: Donor(other, "other")  # noqa: E731
    forged, params = builtin_creators()[method].create(image, mask, np.random.default_rng(0), donor)
    assert forged.dtype == np.uint8 and forged.shape == image.shape
    np.testing.assert_array_equal(forged[~mask], image[~mask])
    assert np.abs(forged[mask].astype(int) - image[mask]).mean() > 2.0
    assert isinstance(params, dict)
    again, _ = builtin_creators()[method].create(image, mask, np.random.default_rng(0), donor)
    np.testing.assert_array_equal(forged, again)


def test_pseudoldm_has_8x8_block_periodicity():
    flat = np.full((128, 128, 3), 120, np.uint8)
    mask = np.ones((128, 128), bool)
    mask[0, 0] = False
    forged, params = builtin_creators()["pseudoLDM"].create(flat, mask, np.random.default_rng(2),
                                                          lambda rng: Donor(flat, "flat"))
    residual = forged.astype(np.float32) - cv2.GaussianBlur(forged.astype(np.float32), (0, 0), 4)
    phase_means = residual.reshape(16, 8, 16, 8, 3).mean(axis=(0, 2))  # mean per (y mod 8, x mod 8)
    assert phase_means.std() > 0.3 * params["block_amplitude"]
    shifted = residual[4:-4, 4:-4].reshape(15, 8, 15, 8, 3).mean(axis=(0, 2))
    assert np.corrcoef(shifted.ravel(), np.roll(phase_means, (-4, -4), (0, 1)).ravel())[0, 1] > 0.8


def test_classical_inpainting_grain_matches_surroundings():
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 4, (96, 96, 3)), 0, 255).astype(np.uint8)
    assert abs(noise_sigma(noisy, np.ones((96, 96), bool)) - 4) < 1.0
    mask = np.zeros((96, 96), bool)
    mask[30:60, 30:60] = True
    forged, params = builtin_creators()["cvTelea"].create(noisy, mask, np.random.default_rng(1), None)
    assert 3 < params["grain_sigma"] < 5 and 3 <= params["radius"] <= 9
    assert abs(noise_sigma(forged, mask) - noise_sigma(noisy, ~mask)) < 1.5


@pytest.mark.parametrize("alpha", [0.8, 1.0, 2.0, 3.0])
def test_ggd_shape_moment_matching(alpha):
    x = gennorm.rvs(alpha, size=200_000, random_state=np.random.default_rng(0))
    assert abs(ggd_shape(x) - alpha) < 0.08 * alpha


def test_quality_filters():
    image = scene(7)
    mask = np.zeros(image.shape[:2], bool)
    mask[30:60, 40:90] = True
    nat = NaturalnessRange.calibrate([1.5, 2.5], 0.1, 0.2)
    assert (nat.low, nat.high) == (1.2, 2.8) and nat.accepts(2.0) and not nat.accepts(0.9)
    th = QualityThresholds()
    # unchanged -> no visible change; PSNR capped
    scores, reasons = evaluate_forgery(image, image.copy(), mask, None, th)
    assert reasons == ["no_visible_change"] and scores["psnr_outside"] == PSNR_CAP
    # a change leaking outside the mask is caught
    leaked = image.copy()
    leaked[mask] = 255 - leaked[mask]
    leaked[:, :10] = 0
    assert "outside_changed" in evaluate_forgery(image, leaked, mask, None, th)[1]
    assert psnr_outside(image, leaked, mask) < 40
    # a hard bright patch on a smooth image has a seam; naturalness range rejects an out-of-range alpha
    smooth = np.full_like(image, 100)
    patched = smooth.copy()
    patched[mask] = 200
    assert seam_ratio(patched, mask) > 3 and seam_ratio(smooth, mask) == pytest.approx(0, abs=1e-3)
    scores, reasons = evaluate_forgery(smooth, patched, mask, NaturalnessRange(5.0, 6.0, 5.0, 6.0, 2), th)
    assert "seam" in reasons and "naturalness" in reasons and "change_too_large" in reasons
    assert colour_chi2(image[mask], image[mask]) == 0.0 and colour_chi2(smooth[mask], patched[mask]) == 1.0


def test_prompts_are_seeded_and_perturbed_half_the_time():
    a = [make_prompt("stuff", None, np.random.default_rng(k)) for k in range(200)]
    b = [make_prompt("stuff", None, np.random.default_rng(k)) for k in range(200)]
    assert a == b
    rate = np.mean([info["perturbed"] for _, info in a])
    assert 0.35 < rate < 0.65
    text, info = make_prompt("background", "dog", np.random.default_rng(0))
    assert text.startswith("a photo of dog in a ")


def test_splits_8_1_1_by_photo():
    names = [f"p{k}" for k in range(24)]
    split = split_sources(names, seed=1)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 20, "val": 2, "test": 2}
    assert split == split_sources(list(names), seed=1) and split != split_sources(names, seed=2)
    small = split_sources(["a", "b", "c", "d", "e"], seed=0)
    assert sorted(small.values()) == ["test", "train", "train", "train", "val"]


def test_names_and_seeds():
    assert source_name("sub dir/IMG_001.jpeg") == "sub-dir-IMG-001"
    assert rng_for(1, 1, 5).random() == rng_for(1, 1, 5).random() != rng_for(1, 1, 6).random()
