"""`tamperscope synthesize` and data.synthetic: each forgery kind changes only its region, the compression
histories are what the docstring says, samples are reproducible and independent, and the writer resumes."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tamperscope.cli import main
from tamperscope.data import synthetic
from tamperscope.data.synthetic import FORGERY_KINDS, Photo, jpeg_on_grid, make_sample, photo_paths, write_synthetic
from tamperscope.data.transforms import jpeg_roundtrip
from tamperscope.io import read_image, read_mask, write_png

from .test_brgen import make_photo


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    return [Photo(make_photo(rng, 120, 160), f"cam{i % 3}", bool(i % 2)) for i in range(6)]


def _kind_of(photos, kind, seed=0):
    for i in range(400):
        s = make_sample(photos, i, seed, True)
        if s["meta"]["kind"] == kind:
            return i, s
    raise AssertionError(f"no {kind} in 400 draws")


@pytest.mark.parametrize("kind", list(FORGERY_KINDS))
def test_each_kind_edits_its_region_only(photos, kind, monkeypatch):
    """Without the final JPEG, the pixels outside the (slightly dilated, for feathered splices) mask equal the
    sample drawn authentic-side: the edit is the only difference (a splice feathers at most 3 σ = 7.5 px out)."""
    monkeypatch.setattr(synthetic, "final_save", lambda image, rng, prob: ("png", None))
    i, s = _kind_of(photos, kind)
    mask = s["mask"]
    assert mask.dtype == bool and 0 < mask.sum() < mask.size
    # the same draws up to the edit: rebuild the window and its history with the sample's generator
    rng = np.random.default_rng([0, i])
    photo = photos[int(rng.integers(len(photos)))]
    window, resized = synthetic.photo_window(photo, rng, 640)
    base = synthetic.camera_history(window, rng, photo.lossless or resized)
    outside = ~cv2.dilate(mask.astype(np.uint8), np.ones((19, 19), np.uint8)).astype(bool)  # feather ≤ 3σ
    np.testing.assert_array_equal(s["image"][outside], base[outside])
    assert np.any(s["image"][mask] != base[mask])


def test_samples_are_reproducible_and_independent(photos):
    a = make_sample(photos, 7, 1, True)
    b = make_sample(photos, 7, 1, True)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert a["meta"] == b["meta"]
    c = make_sample(photos, 8, 1, True)
    assert c["image"].shape != a["image"].shape or np.any(c["image"] != a["image"])
    au = make_sample(photos, 9, 1, False)
    assert au["mask"] is None and "kind" not in au["meta"]


def test_compression_probabilities_make_never_compressed_samples(photos):
    """history_prob = jpeg_prob = 0: no sample is ever JPEG-compressed outside its edit (lossless sources stay
    lossless, saved as PNG); 1: every sample is finally a JPEG. The defaults draw the same bytes as before."""
    untouched = 0
    for i in range(12):
        s = make_sample(photos, i, 5, False, history_prob=0.0, jpeg_prob=0.0)
        assert s["format"] == "png" and s["quality"] is None
        rng = np.random.default_rng([5, i])  # the sample's own draws: photo, then window
        photo = photos[int(rng.integers(len(photos)))]
        window, resized = synthetic.photo_window(photo, rng, 640)
        np.testing.assert_array_equal(s["image"], window)  # no history added, stored losslessly
        untouched += photo.lossless and not resized
    assert untouched
    always = [make_sample(photos, i, 5, True, jpeg_prob=1.0)["format"] for i in range(12)]
    assert set(always) == {"jpg"}
    np.testing.assert_array_equal(make_sample(photos, 3, 5, True)["image"],
                                  make_sample(photos, 3, 5, True, history_prob=0.8, jpeg_prob=0.75)["image"])


def test_mix_of_kinds_formats_and_splice_sources(photos):
    metas = [make_sample(photos, i, 3, True)["meta"] for i in range(120)]
    kinds = {m["kind"] for m in metas}
    assert kinds == set(FORGERY_KINDS)
    formats = [m["format"] for m in metas]
    assert 0.5 < formats.count("jpg") / len(formats) < 0.95
    for m in metas:
        if m["kind"] == "splice":  # content always from another source when there is one
            assert m["params"]["donor"] != m["photo_source"]


def test_jpeg_on_grid_shifts_the_block_grid():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (0, 0), 1.0)
    np.testing.assert_array_equal(jpeg_on_grid(img, 80, 0, 0), jpeg_roundtrip(img, 80))
    shifted = jpeg_on_grid(img, 80, 3, 5)
    assert shifted.shape == img.shape
    # the shifted round trip is an aligned round trip of the padded image, cropped back
    padded = cv2.copyMakeBorder(img, 3, 0, 5, 0, cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(shifted, jpeg_roundtrip(padded, 80)[3:, 5:])


def test_window_corner_on_the_jpeg_grid(photos):
    big = Photo(make_photo(np.random.default_rng(2), 300, 400), "x", False)
    for i in range(20):
        rng = np.random.default_rng([5, i])
        window, resized = synthetic.photo_window(big, rng, 128)
        assert max(window.shape[:2]) <= 128
        if not resized:  # the window is a block-aligned crop of the photo
            hits = [(y, x) for y in range(0, 300 - window.shape[0] + 1, 8)
                    for x in range(0, 400 - window.shape[1] + 1, 8)
                    if np.array_equal(big.image[y:y + window.shape[0], x:x + window.shape[1]], window)]
            assert hits


def test_synthesize_command_writes_a_list_and_resumes(tmp_path, photos):
    src = tmp_path / "photos"
    src.mkdir()
    for i, p in enumerate(photos[:4]):
        if i % 2:
            write_png(src / f"p{i}.png", p.image)
        else:
            cv2.imwrite(str(src / f"p{i}.jpg"), cv2.cvtColor(p.image, cv2.COLOR_RGB2BGR))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    listing = tmp_path / "list.txt"
    listing.write_text("photos/p0.jpg\nphotos/p1.png\n# a comment\n\nphotos/p2.jpg\nphotos/p3.png\n")
    assert [p.name for p in photo_paths(listing)] == ["p0.jpg", "p1.png", "p2.jpg", "p3.png"]
    out = tmp_path / "syn"
    args = ["synthesize", "--photos", str(src), "--out", str(out), "--tampered", "6", "--authentic", "3",
            "--seed", "4", "--no-progress"]
    assert main(args) == 0
    entries = json.loads((out / "list.json").read_text())
    assert len(entries) == 9 and sum(m == "Negative" for _, m in entries) == 3
    for image, mask in entries:
        img = read_image(out / image)
        if mask != "Negative":
            assert read_mask(out / mask, img.shape[:2]).any()
    metas = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["image"] for m in metas] == [e[0] for e in entries]
    from tamperscope.data.datasets import load_dataset_spec
    records = load_dataset_spec(str(out / "list.json"))  # the metadata reaches the records: evaluate --group-by
    for rec, meta in zip(records, metas):
        assert rec.meta == {k: v for k, v in meta.items() if k != "image"}
        assert (rec.mask is None) == ("method" not in rec.meta) == ("area_bin" not in rec.meta)
    first = {e[0]: (out / e[0]).read_bytes() for e in entries}
    # an interrupted run: one image and one mask lost; the rerun rewrites exactly them, byte for byte
    (out / entries[0][0]).unlink()
    (out / entries[1][1]).unlink()
    assert main(args) == 0
    assert json.loads((out / "list.json").read_text()) == entries
    assert {e[0]: (out / e[0]).read_bytes() for e in entries} == first
    assert (out / entries[1][1]).is_file()


def test_synthesize_refuses_bad_arguments(tmp_path, capsys):
    assert main(["synthesize", "--photos", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder or list" in capsys.readouterr().err
    photos = tmp_path / "p"
    photos.mkdir()
    assert main(["synthesize", "--photos", str(photos), "--out", str(photos / "in"), "--tampered", "1"]) == 2
    assert "inside --photos" in capsys.readouterr().err
    assert main(["synthesize", "--photos", str(photos), "--out", str(tmp_path / "o"), "--tampered", "0",
                 "--authentic", "0"]) == 2
    capsys.readouterr()
    assert main(["synthesize", "--photos", str(photos), "--out", str(tmp_path / "o"), "--tampered", "1"]) == 2
    assert "no readable photo" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--history-prob", "--jpeg-prob"])
def test_cli_rejects_a_probability_outside_0_1(tmp_path, capsys, flag):
    write_png(tmp_path / "p.png", np.zeros((64, 64, 3), np.uint8))
    assert main(["synthesize", "--photos", str(tmp_path), "--out", str(tmp_path / "out"), flag, "1.5"]) != 0
    assert f"{flag} must be a probability" in capsys.readouterr().err
