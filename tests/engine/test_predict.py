"""`tamperscope predict` and the `tamperscope.predict` API: outputs per image, bad files reported and skipped,
inputs never overwritten, tiling, any image size and EXIF rotation, a verdict that never contradicts its drawn
regions and says how sure it is, the bundled default model."""
import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import tamperscope
from tamperscope.checkpoint import save_checkpoint
from tamperscope.cli import main
from tamperscope.engine import loading as loading_mod
from tamperscope.engine import predict as predict_mod
from tamperscope.engine.predict import (Prediction, collect_inputs, load_predictor, output_stems, tile_starts,
                                        tile_windows)
from tamperscope.errors import UserError

REPO = Path(__file__).resolve().parents[2]

EXIF_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "authentic" / "exif_samples" / "jpg"
VERDICTS = ("tampered", "inconclusive", "authentic")


def assert_consistent(pred: Prediction) -> None:
    """The verdict never contradicts the drawn regions (engine.predict module docstring)."""
    flagged = pred.probability > pred.threshold
    band = pred.inconclusive_from
    if pred.score > pred.image_threshold:
        assert pred.verdict == ("tampered" if flagged.any() else "inconclusive")
    elif band is not None and pred.score > band:
        assert pred.verdict == "inconclusive"
    else:
        assert pred.verdict == "authentic"
    if pred.verdict == "authentic" and not pred.raw_map:
        assert not pred.mask.any() and pred.tampered_area_pct == 0.0
    else:
        np.testing.assert_array_equal(pred.mask, flagged)
    if pred.verdict == "tampered":
        assert pred.mask.any() and pred.tampered_area_pct > 0
    assert pred.tampered_area_pct == pytest.approx(100.0 * pred.mask.mean())
    row = pred.to_dict()
    assert row["verdict"] == pred.verdict and row["tampered_area_pct"] == round(pred.tampered_area_pct, 4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny random SegFormer-b0 checkpoint trained (nominally) at 64 px."""
    torch.manual_seed(0)
    model = tamperscope.create_model("segformer-b0")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "run", extra={"train": {"image_size": 64}})


def _photo(path: Path, h: int, w: int, seed: int = 0, **save_kwargs) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, **save_kwargs)
    return rgb


def _portrait_jpeg(path: Path) -> None:
    """Stored 64 wide × 40 high with EXIF orientation 6 (rotate 90° CW): shown 40 wide × 64 high."""
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(40, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, format="JPEG", quality=90, exif=exif.tobytes())


def _make_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """A folder of good and broken images; returns (good, bad)."""
    root.mkdir()
    good = [root / "odd.png", root / "portrait.jpg", root / "sub" / "wide.png"]
    _photo(good[0], 33, 47)
    _portrait_jpeg(good[1])
    good[2].parent.mkdir()
    _photo(good[2], 40, 130, seed=2)
    bad = [root / "text.png", root / "empty.jpg", root / "cut.png"]
    bad[0].write_text("this is not an image\n")
    bad[1].write_bytes(b"")
    data = (root / "odd.png").read_bytes()
    bad[2].write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image suffix: ignored in folder scans\n")
    if EXIF_SAMPLES.is_dir():  # the shared data's odd files: a corrupt JPEG and a 49×500 strip
        shutil.copy(EXIF_SAMPLES / "corrupted.jpg", root / "corrupted.jpg")
        bad.append(root / "corrupted.jpg")
        shutil.copy(EXIF_SAMPLES / "invalid" / "image01713.jpg", root / "strip.jpg")
        good.append(root / "strip.jpg")
    return good, bad


def test_folder_with_bad_files(tmp_path, run_dir, capsys):
    good, bad = _make_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint", str(run_dir), str(tmp_path / "in"), "--out", str(out), "--quiet"])
    assert rc == 1  # some inputs failed
    err = capsys.readouterr().err
    failed_lines = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed_lines) == len(bad)
    for path in bad:
        assert sum(str(path) in line for line in failed_lines) == 1
    for path in good:
        shown = np.asarray(tamperscope_read(path))
        for kind in ("heatmap", "mask", "overlay"):
            img = Image.open(out / f"{path.stem}.{kind}.png")
            assert img.size == (shown.shape[1], shown.shape[0])
    assert Image.open(out / "portrait.mask.png").size == (40, 64)  # EXIF rotation applied
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(good) + len(bad)
    status = {Path(r["input"]).name: r["status"] for r in rows}
    assert all(status[p.name] == "ok" for p in good) and all(status[p.name] == "error" for p in bad)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["verdict"] in VERDICTS and 0 <= float(r["score"]) <= 1 for r in ok)
    assert all(float(r["tampered_area_pct"]) == 0 for r in ok if r["verdict"] == "authentic")
    assert all(r["confidence"] == "no validation scores stored with this model" and r["false_alarm_rate"] == ""
               for r in ok)  # an uncalibrated checkpoint has no validation scores
    assert all(float(r["threshold"]) == 0.5 and r["model"].startswith("segformer-b0") for r in ok)
    results = json.loads((out / "results.json").read_text())
    assert len(results) == len(rows)
    odd = next(r for r in results if r["input"].endswith("odd.png"))
    assert (odd["width"], odd["height"]) == (47, 33)
    mask = np.asarray(Image.open(out / "odd.mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    assert odd["tampered_area_pct"] == pytest.approx(100.0 * (mask == 255).mean(), abs=1e-3)


def tamperscope_read(path):
    from tamperscope.io import read_image

    return read_image(path)


def test_all_good_exits_zero_and_globs(tmp_path, run_dir, capsys):
    (tmp_path / "a").mkdir()
    _photo(tmp_path / "a" / "x.png", 48, 40)
    _photo(tmp_path / "a" / "y.png", 20, 90, seed=3)
    rc = main(["predict", "--checkpoint", str(run_dir), str(tmp_path / "a" / "*.png"), "--out", str(tmp_path / "o"),
               "--quiet"])
    assert rc == 0
    assert (tmp_path / "o" / "y.overlay.png").is_file()
    printed = capsys.readouterr().out
    assert "2 image(s) done, 0 failed" in printed
    lines = [line for line in printed.splitlines() if line.startswith(str(tmp_path / "a"))]
    assert len(lines) == 2 and all(re.search(r": (tampered|inconclusive|authentic) \(score [01]\.\d{3}; no validation "
                                             r"scores stored with this model; [\d.e+-]+ % of pixels flagged\)$", line)
                                   for line in lines)


def test_missing_input_and_no_match(tmp_path, run_dir, capsys):
    _photo(tmp_path / "ok.png", 32, 32)
    rc = main(["predict", "--checkpoint", str(run_dir), str(tmp_path / "ok.png"), str(tmp_path / "nope.jpg"),
               str(tmp_path / "*.tif"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nope.jpg: file not found" in err and "no files match" in err
    assert len(list(csv.DictReader((tmp_path / "o" / "results.csv").open()))) == 3


def test_outputs_never_overwrite_inputs(tmp_path, run_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "x.png", 40, 40)
    _photo(folder / "x.heatmap.png", 40, 40, seed=5)  # an input named like an output of x.png
    before = (folder / "x.heatmap.png").read_bytes()
    rc = main(["predict", "--checkpoint", str(run_dir), str(folder / "x.png"), str(folder / "x.heatmap.png"),
               "--out", str(folder), "--quiet"])
    assert rc == 1
    assert (folder / "x.heatmap.png").read_bytes() == before
    assert "refusing to overwrite an input file" in capsys.readouterr().err
    # writing beside the inputs is fine, and a second run does not take the outputs for inputs
    for f in folder.iterdir():
        if f.name != "x.png":
            f.unlink()
    for _ in range(2):
        assert main(["predict", "--checkpoint", str(run_dir), str(folder), "--out", str(folder), "--quiet"]) == 0
        rows = list(csv.DictReader((folder / "results.csv").open()))
        assert [Path(r["input"]).name for r in rows] == ["x.png"]


def test_files_of_the_user_in_the_output_folder_are_kept(tmp_path, run_dir, capsys):
    """A ground truth named like our mask output, and the user's own results.csv, are never overwritten."""
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "photo.png", 40, 40)
    _photo(folder / "photo.mask.png", 40, 40, seed=3)  # collect_inputs skips it as an output name
    (folder / "results.csv").write_text("the user's own table\n")
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    args = ["predict", "--checkpoint", str(run_dir), str(folder), "--out", str(folder), "--quiet"]
    assert main(args) == 2
    assert "results.csv that tamperscope predict did not write" in capsys.readouterr().err
    (folder / "results.csv").unlink()
    assert main(args) == 1  # photo.png fails: its mask output would replace the user's photo.mask.png
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (folder / "photo.mask.png").read_bytes() == before["photo.mask.png"]


def test_same_stems_get_distinct_outputs(tmp_path):
    assert output_stems([Path("a/x.png"), Path("b/x.jpg"), Path("x-2.png"), Path("c/x.tif")]) == \
        ["x", "x-2", "x-2-2", "x-3"]


def test_collect_inputs_skips_hidden_and_outputs(tmp_path):
    (tmp_path / ".hidden").mkdir()
    _photo(tmp_path / ".hidden" / "h.png", 8, 8)
    _photo(tmp_path / "a.png", 8, 8)
    _photo(tmp_path / "a.overlay.png", 8, 8)
    files, problems = collect_inputs([tmp_path, tmp_path / "a.png"])
    assert files == [tmp_path / "a.png"] and problems == []


def test_tiles_single_window_equals_untiled(run_dir):
    predictor = load_predictor(str(run_dir))
    rgb = np.random.default_rng(4).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    plain = predictor.predict_array(rgb)
    tiled = predictor.predict_array(rgb, tiles=True, tile_size=96)
    assert tiled.tiles == 1
    np.testing.assert_array_equal(tiled.probability, plain.probability)
    assert tiled.score == plain.score


def test_tiles_stitch_to_full_size(run_dir):
    predictor = load_predictor(str(run_dir))
    rgb = np.random.default_rng(5).integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
    pred = predictor.predict_array(rgb, tiles=True, tile_size=64, tile_overlap=0.25)
    assert pred.probability.shape == (150, 200)
    assert pred.tiles == len(tile_starts(150, 64, 0.25)) * len(tile_starts(200, 64, 0.25)) > 1
    assert np.isfinite(pred.probability).all() and 0 <= pred.probability.min() <= pred.probability.max() <= 1
    # the top-left corner is covered by the first window only: it equals that window's own map
    first = predictor.maps([rgb[:64, :64]])[0][0]
    np.testing.assert_allclose(pred.probability[:40, :40], first[:40, :40], atol=1e-6)
    # the image score is the highest window score
    assert pred.score >= predictor.maps([rgb[:64, :64]])[0][1] - 1e-6


@pytest.mark.parametrize("length,tile,overlap", [(150, 64, 0.25), (64, 64, 0.5), (1000, 96, 0.0), (65, 64, 0.9)])
def test_tile_starts_cover_the_axis(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(0, length - tile)
    assert all(b - a <= max(1, round(tile * (1 - overlap))) for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length,tile,overlap", [(150, 64, 0.25), (1000, 96, 0.0), (65, 64, 0.9), (40, 64, 0.25)])
def test_grid_aligned_tiles_cover_the_axis(length, tile, overlap):
    windows = tile_windows(length, tile, overlap, grid=16)
    assert all(start % 16 == 0 for start, _ in windows) and windows[0][0] == 0
    assert windows[-1][0] + windows[-1][1] == length  # the last window reaches the border
    assert all(size <= tile + 15 for _, size in windows)
    covered = np.zeros(length, bool)
    for start, size in windows:
        covered[start:start + size] = True
    assert covered.all()
    assert tile_windows(length, tile, overlap) == [(s, min(tile, length - s)) for s in tile_starts(length, tile, overlap)]


def test_native_model_tiles_on_the_jpeg_grid():
    """A native-resolution model's tiles start on the 16-pixel JPEG grid, and outside the overlap each tile's
    map is exactly the model's map of that window alone."""
    from tamperscope.data.transforms import jpeg_roundtrip

    predictor = load_predictor("ela")
    rgb = jpeg_roundtrip(np.random.default_rng(0).integers(0, 255, (96, 200, 3), dtype=np.uint8), 90)
    assert tile_windows(200, 100, 0.0, 16) == [(0, 100), (96, 104)]
    tiled = predictor.predict_array(rgb, tiles=True, tile_size=100, tile_overlap=0.0)
    assert tiled.tiles == 2
    left = predictor.predict_array(np.ascontiguousarray(rgb[:, :100])).probability
    right = predictor.predict_array(np.ascontiguousarray(rgb[:, 96:])).probability
    np.testing.assert_allclose(tiled.probability[:, :96], left[:, :96], atol=1e-6)
    np.testing.assert_allclose(tiled.probability[:, 100:], right[:, 4:], atol=1e-6)


def test_bad_tile_options(run_dir):
    predictor = load_predictor(str(run_dir))
    rgb = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(UserError, match="tile size must be at least 32 pixels, got 8"):
        predictor.predict_array(rgb, tiles=True, tile_size=8)
    with pytest.raises(UserError, match=r"tile overlap must be in \[0, 1\), got 1.0"):
        predictor.predict_array(rgb, tiles=True, tile_overlap=1.0)


def test_python_api(tmp_path, run_dir):
    path = tmp_path / "p.jpg"
    _portrait_jpeg(path)
    pred = tamperscope.predict(path, checkpoint=run_dir)
    assert isinstance(pred, tamperscope.Prediction)
    assert pred.probability.shape == (64, 40) and pred.probability.dtype == np.float32
    assert_consistent(pred)
    assert pred.mask.shape == (64, 40) and pred.overlay().shape == (64, 40, 3)
    assert pred.heatmap().dtype == np.uint8 and pred.path == str(path)
    same = tamperscope.predict(path.read_bytes(), checkpoint=run_dir)
    np.testing.assert_allclose(same.probability, pred.probability)
    arr = tamperscope.predict(np.zeros((30, 31), np.uint8), checkpoint=run_dir, threshold=0.9)
    assert arr.probability.shape == (30, 31) and arr.threshold == 0.9
    forced = tamperscope.predict(path, checkpoint=run_dir, threshold=0.0, image_threshold=0.0)
    assert forced.verdict == "tampered" and forced.mask.all() and forced.image_threshold == 0.0
    quiet = tamperscope.predict(path, checkpoint=run_dir, threshold=0.0, image_threshold=1.0)
    assert quiet.verdict == "authentic" and not quiet.mask.any()
    raw = tamperscope.predict(path, checkpoint=run_dir, threshold=0.0, image_threshold=1.0, raw_map=True)
    assert raw.verdict == "authentic" and raw.mask.all() and raw.tampered_area_pct == 100.0
    with pytest.raises(UserError, match="image threshold must be in"):
        tamperscope.predict(path, checkpoint=run_dir, image_threshold=1.5)
    with pytest.raises(UserError, match="expected"):
        tamperscope.predict(np.zeros((4, 4, 3), np.int64), checkpoint=run_dir)


def test_default_model_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loading_mod, "default_weights_ref", lambda: tmp_path / "absent.safetensors")
    _photo(tmp_path / "a.png", 16, 16)
    with pytest.raises(UserError, match="no default model installed.*run folder"):
        load_predictor(None)
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "default.safetensors" in err and err.endswith("(--checkpoint)")


def test_default_model_is_loaded_from_the_package_path(tmp_path, monkeypatch, run_dir):
    model = tamperscope.load_checkpoint(run_dir)
    single = save_checkpoint(model, tmp_path / "weights" / "default.safetensors", extra={"train": {"image_size": 64}})
    monkeypatch.setattr(loading_mod, "default_weights_ref", lambda: single)
    predictor = load_predictor(None)
    assert predictor.name == "default (segformer-b0)" and predictor.image_size == 64


def test_packaged_default_path_is_inside_the_package():
    ref = loading_mod.default_weights_ref()
    assert str(ref).endswith(str(Path("tamperscope") / "weights" / "default.safetensors"))


def test_builtin_and_unknown_checkpoints(tmp_path):
    assert load_predictor("ela").native_resolution
    with pytest.raises(UserError, match="needs trained weights"):
        load_predictor("segformer-b0")
    with pytest.raises(UserError, match="no such run folder"):
        load_predictor(str(tmp_path / "missing-run"))
    with pytest.raises(UserError, match="multiple of 32"):
        load_predictor("ela", image_size=100)


def test_native_resolution_model_keeps_size():
    predictor = load_predictor("ela")
    rgb = np.random.default_rng(6).integers(0, 256, size=(45, 77, 3), dtype=np.uint8)
    pred = predictor.predict_array(rgb)
    assert pred.probability.shape == (45, 77)
    tiled = predictor.predict_array(rgb, tiles=True, tile_size=96)
    np.testing.assert_array_equal(tiled.probability, pred.probability)


def test_visualisations():
    from tamperscope.report.visualize import fit_within, heatmap, mask_image, overlay

    prob = np.array([[0.0, 1.0], [0.5, np.nan]], np.float32)
    heat = heatmap(prob)
    assert heat.shape == (2, 2, 3) and heat.dtype == np.uint8
    assert heat[0, 0].sum() < 30 and heat[0, 1].sum() > 500  # inferno: black → pale yellow
    np.testing.assert_array_equal(heat[1, 1], heat[0, 0])  # NaN drawn as 0
    photo = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True
    out = overlay(photo, mask)
    assert (out[30, 40] != photo[30, 40]).any() and out[30, 40, 0] > out[30, 40, 1]  # tinted red inside
    assert (out[20, 40] == (255, 32, 32)).all()  # opaque outline on the border
    assert (out[5, 5] == photo[5, 5]).all()  # untouched far outside
    assert set(np.unique(mask_image(mask))) == {0, 255}
    assert fit_within(photo, 40).shape == (30, 40, 3) and fit_within(photo, 100) is photo
    with pytest.raises(UserError, match="does not match"):
        overlay(photo, mask[:10])


def test_the_shipped_default_model(tmp_path):
    """The bundled weights: ela-unet fused with the copy-move expert, under 25 MB, with its training size, recipe
    and validation calibration; `predict` without --checkpoint uses it at the photo's own resolution."""
    from tamperscope.checkpoint import read_checkpoint_config

    ref = loading_mod.default_weights_ref()
    assert ref.is_file() and ref.stat().st_size <= 25 * 2**20
    cfg = read_checkpoint_config(ref)
    assert cfg["model"] == "ela-unet" and cfg["extra"]["train"]["image_size"] == 256
    assert "val" in cfg["calibration"]["data"] and "test" not in cfg["calibration"]["data"]  # chosen on val only
    assert cfg["config"]["global_context"] and cfg["config"]["detection_head"]
    recipe = yaml.safe_load((REPO / "configs" / "default-model-continue.yaml").read_text())  # the recipe it states
    assert {k: cfg["config"][k] for k in recipe["model"]} == recipe["model"]
    assert {k: cfg["extra"]["train"][k] for k in recipe["train"]} == recipe["train"]
    assert cfg["calibration"]["mode"] == "absolute" and cfg["calibration"]["image"]["authentic_scores"]
    expert = cfg["experts"]["copymove"]  # fused with the copy-move expert and its validation scores
    assert expert["image"]["authentic_scores"] == sorted(expert["image"]["authentic_scores"])
    assert expert["image"]["tampered_scores"]
    assert expert["config"] == {"scale_window": False}  # the window choice made for the fused default on val
    assert cfg["experts"]["doublejpeg"] == {"config": {"weight": 2.0, "offset": 0.5}}  # chosen on val as well
    lattice = cfg["experts"]["jpeglattice"]  # its own defaults; none of the 658 authentic val images fires it
    assert lattice["config"] == {} and len(lattice["image"]["authentic_scores"]) == 658
    assert max(lattice["image"]["authentic_scores"]) < 0.5 < max(lattice["image"]["tampered_scores"])
    predictor = load_predictor(None)
    assert predictor.experts["copymove"][0].scale_window is False
    assert predictor.experts["doublejpeg"][0].weight == 2.0 and predictor.experts["doublejpeg"][0].evidence
    assert not predictor.experts["jpeglattice"][0].evidence  # it decides, like the copy-move expert
    assert predictor.name == "default (ela-unet+copymove+doublejpeg+jpeglattice)" and predictor.native_resolution
    assert list(predictor.experts) == ["copymove", "doublejpeg", "jpeglattice"]
    assert load_predictor(None, experts=False).experts == {}
    _photo(tmp_path / "a.png", 70, 90)
    pred = tamperscope.predict(str(tmp_path / "a.png"))
    assert pred.probability.shape == (70, 90) and 0.0 <= pred.score <= 1.0
    assert set(pred.experts) == {"ela-unet", "copymove", "jpeglattice"} and pred.score == max(pred.experts.values())


def _map(hot: float, seed: int = 0) -> np.ndarray:
    """A 24×32 map of low probabilities with one 6×8 patch at ``hot``."""
    prob = np.random.default_rng(seed).uniform(0.0, 0.2, (24, 32)).astype(np.float32)
    prob[4:10, 8:16] = hot
    return prob


@pytest.mark.parametrize("band", [None, 0.3])
@pytest.mark.parametrize("raw_map", [False, True])
def test_the_verdict_never_contradicts_the_regions(band, raw_map):
    """Every verdict on synthetic maps: authentic ⇒ nothing drawn (unless raw_map), tampered ⇒ at least one pixel
    drawn, inconclusive in the band or above the image threshold without a flagged pixel; boundaries exact."""
    seen = set()
    for hot in (0.1, 0.5, 0.50001, 0.9):
        for score in (0.0, 0.3, 0.30001, 0.4, 0.5, 0.50001, 0.99):
            pred = Prediction(_map(hot), score, 0.5, "synthetic", inconclusive_from=band, raw_map=raw_map)
            assert_consistent(pred)
            seen.add(pred.verdict)
    assert seen == ({"tampered", "inconclusive", "authentic"})
    # the boundaries: both thresholds are strict, as the metrics
    at = {s: Prediction(_map(0.9), s, 0.5, "b", inconclusive_from=band).verdict for s in (0.3, 0.30001, 0.5, 0.50001)}
    assert at[0.50001] == "tampered"
    assert at[0.5] == at[0.30001] == ("inconclusive" if band is not None else "authentic") and at[0.3] == "authentic"
    # a high score without a single pixel above the pixel threshold is not called tampered
    assert Prediction(_map(0.5), 0.99, 0.5, "b", inconclusive_from=band).verdict == "inconclusive"
    assert Prediction(_map(0.5), 0.99, 0.49, "b", inconclusive_from=band).verdict == "tampered"


def test_confidence_from_the_stored_validation_scores():
    reference = {"authentic_scores": [0.1, 0.2, 0.2, 0.4, 0.6], "tampered_scores": [0.3, 0.7, 0.8, 0.9]}
    sure = Prediction(_map(0.9), 0.95, 0.5, "m", raw_score=0.6, reference=reference)
    assert sure.verdict == "tampered" and sure.false_alarm_rate == 0.2 and sure.miss_rate == 0.25
    assert sure.confidence == "20 % of authentic validation photos score this high"
    clean = Prediction(_map(0.9), 0.1, 0.5, "m", inconclusive_from=0.3, raw_score=0.2, reference=reference)
    assert clean.verdict == "authentic" and clean.false_alarm_rate == 0.8 and clean.miss_rate == 0.0
    assert clean.confidence == "0 % of tampered validation photos score this low"
    row = clean.to_dict()
    assert (row["false_alarm_rate"], row["miss_rate"], row["confidence"]) == (0.8, 0.0, clean.confidence)
    assert row["tampered_area_pct"] == 0.0 and row["inconclusive_from"] == 0.3 and row["image_threshold"] == 0.5
    bare = Prediction(_map(0.9), 0.95, 0.5, "m").to_dict()
    assert bare["false_alarm_rate"] is None and bare["miss_rate"] is None and bare["inconclusive_from"] is None
    assert bare["confidence"] == "no validation scores stored with this model"


def _calibration(threshold: float, image_threshold: float, inconclusive_from: float) -> dict:
    return {"mode": "absolute", "threshold": threshold,
            "image": {"threshold": image_threshold, "inconclusive_from": inconclusive_from, "max_false_alarm": 0.1,
                      "authentic_scores": [0.1, 0.2, 0.3, 0.4], "tampered_scores": [0.5, 0.6, 0.7]}}


def test_a_calibrated_model_predicts_with_its_operating_points(run_dir):
    """The score is the calibrated one, the band its calibrated bound, the rates read from the raw score; tiling
    keeps the image score the maximum of the windows."""
    from tamperscope.inference import calibrate_score

    plain = load_predictor(str(run_dir))
    rgb = np.random.default_rng(7).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    raw, raw_tiled = plain.predict_array(rgb), plain.predict_array(rgb, tiles=True, tile_size=32)
    calibrated = load_predictor(str(run_dir))
    t_pix = float(np.quantile(raw.probability, 0.9))
    far = np.abs(raw.probability - t_pix) > 1e-6  # pixels a float32 rounding cannot move across the threshold
    for t_img in (raw.score - 0.01, raw.score + 0.01):
        cal = _calibration(t_pix, t_img, t_img - 0.02)
        calibrated.model.calibration = cal
        pred = calibrated.predict_array(rgb)
        assert (pred.score > 0.5) == (raw.score > t_img) and pred.raw_score == pytest.approx(raw.score, abs=1e-9)
        band = calibrate_score(torch.tensor(t_img - 0.02, dtype=torch.float64), cal)
        assert pred.inconclusive_from == pytest.approx(float(band), abs=1e-12)
        assert pred.verdict == ("tampered" if raw.score > t_img else "inconclusive")
        np.testing.assert_array_equal(pred.flagged[far], (raw.probability > t_pix)[far])
        assert pred.false_alarm_rate == np.mean(np.array([0.1, 0.2, 0.3, 0.4]) >= round(raw.score, 5))
        assert_consistent(pred)
        tiled = calibrated.predict_array(rgb, tiles=True, tile_size=32)
        assert tiled.tiles > 1 and tiled.raw_score == pytest.approx(raw_tiled.score, abs=1e-9)  # max of windows
        assert_consistent(tiled)


def test_cli_raw_map_and_image_threshold(tmp_path, run_dir, capsys):
    _photo(tmp_path / "x.png", 40, 48)
    args = ["predict", "--checkpoint", str(run_dir), str(tmp_path / "x.png"), "--threshold", "0", "--quiet"]
    assert main([*args, "--image-threshold", "1", "--out", str(tmp_path / "plain")]) == 0
    assert "x.png: authentic (score " in capsys.readouterr().out
    assert not np.asarray(Image.open(tmp_path / "plain" / "x.mask.png")).any()
    assert main([*args, "--image-threshold", "1", "--raw-map", "--out", str(tmp_path / "raw")]) == 0
    row = json.loads((tmp_path / "raw" / "results.json").read_text())[0]
    assert row["verdict"] == "authentic" and row["raw_map"] is True and row["tampered_area_pct"] == 100.0
    assert np.asarray(Image.open(tmp_path / "raw" / "x.mask.png")).all()
    assert main([*args, "--image-threshold", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "--image-threshold must be in [0, 1]" in capsys.readouterr().err


def test_the_rule_holds_on_real_photos(shared_data):
    """ELA over authentic (Kodak) and spliced (CASIA v1) photos, uncalibrated and with hand-made calibrations that
    put its scores (about 0.9999: ELA's map is normalised per photo) above, inside and below the band, and its
    pixels above or below the pixel threshold: every verdict agrees with its drawn regions."""
    photos = sorted((shared_data / "authentic" / "kodak24").glob("*.png"))[:2] + \
        sorted((shared_data / "casia1" / "Sp").glob("*.jpg"))[:3]
    if len(photos) < 5:
        pytest.skip("the Kodak and CASIA v1 photos are not in ../shared/data")
    from tamperscope.io import read_image

    predictor = load_predictor("ela")
    seen = set()
    for calibration in (None, _calibration(0.5, 0.5, 0.2), _calibration(0.99995, 0.5, 0.2),
                        _calibration(0.5, 0.99999, 0.5), _calibration(0.5, 0.999999, 0.99999)):
        predictor.model.calibration = calibration
        for path in photos:
            pred = predictor.predict_array(read_image(path), path=str(path))
            assert_consistent(pred)
            assert_consistent(dataclasses.replace(pred, raw_map=True))
            seen.add(pred.verdict)
    assert seen == set(VERDICTS)


# ------------------------------------------------------------------ issue 18: a manifest of what predict wrote


def test_a_rerun_after_an_interrupted_run_replaces_exactly_its_own_outputs(tmp_path, run_dir, monkeypatch, capsys):
    """A run killed after writing some outputs (before results.json) recorded them in predict-manifest.json, so
    the next run replaces them; a recorded file the user changed since is kept."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        _photo(folder / f"p{i}.png", 40, 40, seed=i)
    real = predict_mod.write_prediction_images
    calls = []

    def interrupted(pred, out_dir, stem, protect=(), manifest=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(stem)
        return real(pred, out_dir, stem, protect, manifest)

    monkeypatch.setattr(predict_mod, "write_prediction_images", interrupted)
    args = ["predict", "--checkpoint", str(run_dir), str(folder), "--out", str(folder), "--no-progress"]
    assert main(args) == 130
    monkeypatch.undo()
    assert (folder / "p0.heatmap.png").is_file() and not (folder / "results.json").exists()
    manifest = json.loads((folder / "predict-manifest.json").read_text())
    assert {"p0.heatmap.png", "p1.overlay.png", "p1.probability.png"} <= set(manifest["files"])
    assert main(args) == 0  # its own earlier outputs are not "input files"
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [r["status"] for r in rows] == ["ok"] * 3
    # the user edits one output: it is no longer ours, and is kept
    _photo(folder / "p2.mask.png", 40, 40, seed=9)
    edited = (folder / "p2.mask.png").read_bytes()
    assert main(args) == 1
    assert (folder / "p2.mask.png").read_bytes() == edited and "refusing to overwrite" in capsys.readouterr().err


def test_results_carry_each_inputs_sha256(tmp_path, run_dir):
    import hashlib

    _photo(tmp_path / "a.png", 40, 48)
    assert main(["predict", "--checkpoint", str(run_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    row = next(csv.DictReader((tmp_path / "o" / "results.csv").open()))
    assert row["sha256"] == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    assert json.loads((tmp_path / "o" / "results.json").read_text())[0]["sha256"] == row["sha256"]
    prob = np.asarray(Image.open(row["probability"]))
    assert prob.dtype == np.uint16 and prob.shape == (40, 48)


def test_unwritable_out_is_one_line(tmp_path, run_dir, monkeypatch, capsys):
    import errno
    import os
    import tempfile

    _photo(tmp_path / "a.png", 40, 40)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["predict", "--checkpoint", str(run_dir), str(tmp_path / "a.png"), "--out", str(blocker / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker / "o") in err and "Traceback" not in err

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkstemp", full)  # a full disk: not even a temp file
    rc = main(["predict", "--checkpoint", str(run_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith("tamperscope predict: error: ") and str(tmp_path / "o") in err


@pytest.mark.parametrize("config", ["[1, 2, 3]", '"just a string"', '{"format": "tamperscope-checkpoint"}'])
def test_a_malformed_run_config_is_one_line(tmp_path, config, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(config)
    _photo(tmp_path / "a.png", 40, 40)
    assert main(["predict", "--checkpoint", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run / "config.json") in err and "Traceback" not in err
