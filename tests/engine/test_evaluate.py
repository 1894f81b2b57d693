"""Evaluation plumbing: maps of native-resolution models line up with the ground truth under every perturbation,
and evaluate / robustness / compare score a model on the same dataset."""
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tamperscope.cli import main
from tamperscope.data.datasets import load_dataset_spec
from tamperscope.engine.evaluate import evaluation_dataset
from tamperscope.engine.robustness import run_robustness
from tamperscope.engine.runs import evaluate_source
from tamperscope.models.base import TamperModel


class BrightIsTampered(TamperModel):
    """An oracle for the data below: bright pixels are the tampered ones. Runs at the photo's own size."""

    native_resolution = True

    def forward(self, image):
        logits = torch.where(image.mean(1, keepdim=True) > 0, 20.0, -20.0)
        return {"mask_logits": logits, "image_logit": logits.flatten(1).amax(1)}


@pytest.fixture(scope="module")
def bright_data(tmp_path_factory):
    """Dark photos (100×130, not multiples of 32) with a bright rectangle = the mask; one authentic photo."""
    root = tmp_path_factory.mktemp("bright")
    items = []
    for i, (y, x, h, w) in enumerate([(10, 20, 40, 60), (50, 70, 30, 50), (0, 0, 100, 30)]):
        img = np.full((100, 130, 3), 20, np.uint8)
        mask = np.zeros((100, 130), np.uint8)
        img[y:y + h, x:x + w], mask[y:y + h, x:x + w] = 235, 255
        cv2.imwrite(str(root / f"t{i}.png"), img)
        cv2.imwrite(str(root / f"t{i}_gt.png"), mask)
        items.append([f"t{i}.png", f"t{i}_gt.png"])
    cv2.imwrite(str(root / "a.png"), np.full((100, 130, 3), 20, np.uint8))
    items.append(["a.png", "Negative"])
    (root / "list.json").write_text(json.dumps(items))
    return root / "list.json"


@pytest.mark.parametrize("perturb", [None, "resize:0.5", "resize:0.75", "resize:2", "jpeg:80"])
def test_native_maps_line_up_with_the_ground_truth_under_perturbations(bright_data, perturb):
    metrics, _ = evaluate_source(model=BrightIsTampered(), data=str(bright_data), perturb=perturb, device="cpu",
                                 workers=0, progress=False)
    assert metrics["n_tampered"] == 3 and metrics["n_authentic"] == 1
    assert metrics["pixel_f1"] > 0.97 and metrics["pixel_iou"] > 0.94


def test_evaluation_dataset_follows_the_model(bright_data):
    records = load_dataset_spec(str(bright_data))
    assert evaluation_dataset(BrightIsTampered(), records, 64).resolution == "native"
    assert evaluation_dataset(TamperModel(), records, 64).resolution == "resize"


def test_robustness_clean_row_equals_evaluate_for_a_native_model(bright_data, tmp_path):
    """The sweep scores ELA at the photo's own size, as `evaluate` does (resampling erases its cue)."""
    plan = [("resize", 1.0), ("resize", 0.5)]
    result = run_robustness(["ela"], str(bright_data), plan, device="cpu", progress=False)
    rows = result["results"]["ela"]
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", "ela", "--data", str(bright_data), "--device", "cpu", "--workers", "0",
                 "--no-progress", "--out", str(out)]) == 0
    clean = json.loads(out.read_text())
    assert rows["resize"][0]["identity"]
    assert rows["resize"][0]["pixel_f1"] == pytest.approx(clean["pixel_f1"], abs=1e-9)
    assert rows["resize"][0]["pixel_auc"] == pytest.approx(clean["pixel_auc"], abs=1e-9)
    metrics, _ = evaluate_source(checkpoint="ela", data=str(bright_data), perturb="resize:0.5", device="cpu",
                                 workers=0, progress=False)
    assert rows["resize"][1]["pixel_f1"] == pytest.approx(metrics["pixel_f1"], abs=1e-9)


def _write_maps(folder, data_json, transform=lambda m: m):
    """Saved prediction maps (PNG 0–255) equal to each image's mask (a perfect tool), plus scores.json."""
    folder.mkdir()
    scores = {}
    for image, mask in json.loads(data_json.read_text()):
        stem = image.rsplit(".", 1)[0]
        gt = np.zeros((100, 130), np.uint8) if mask == "Negative" else cv2.imread(str(data_json.parent / mask), 0)
        cv2.imwrite(str(folder / f"{stem}.png"), transform(gt))
        scores[stem] = 0.9 if mask != "Negative" else 0.2
    (folder / "scores.json").write_text(json.dumps(scores))


def test_saved_predictions_are_scored_with_the_same_metrics(bright_data, tmp_path):
    maps = tmp_path / "maps"
    _write_maps(maps, bright_data)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--predictions", str(maps), "--data", str(bright_data), "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads(out.read_text())
    assert (m["n_tampered"], m["n_authentic"]) == (3, 1)
    assert m["pixel_f1"] == pytest.approx(1.0) and m["image_auc"] == 1.0 and m["image_acc"] == 1.0
    (maps / "t1.png").unlink()
    assert main(["evaluate", "--predictions", str(maps), "--data", str(bright_data)]) == 2  # names the missing map


def test_saved_predictions_follow_on_mismatch(bright_data, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    items = json.loads(bright_data.read_text())
    for image, mask in items:
        (data / image).write_bytes((bright_data.parent / image).read_bytes())
        if mask != "Negative":
            gt = cv2.imread(str(bright_data.parent / mask), 0)
            small = gt if mask != "t0_gt.png" else cv2.resize(gt, (65, 50), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(data / mask), small)
    (data / "list.json").write_text(json.dumps(items))
    maps = tmp_path / "maps"
    _write_maps(maps, bright_data)
    args = ["evaluate", "--predictions", str(maps), "--data", str(data / "list.json"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "t0_gt.png" in err and err.endswith("skip such images or resize their masks (--on-mismatch)\n")
    out = tmp_path / "m.json"
    with pytest.warns(UserWarning, match="skipped 1 image"):
        assert main(args + ["--on-mismatch", "skip", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_tampered"] == 2
    assert main(args + ["--on-mismatch", "resize", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n_tampered"] == 3 and m["pixel_f1"] > 0.97


def test_mask_on_the_stored_grid_of_a_rotated_photo(tmp_path):
    """EXIF orientation 6 (displayed turned 90° clockwise): the mask drawn on the stored pixels is turned too."""
    from PIL import Image

    from tamperscope.data.datasets import Record
    from tamperscope.engine.evaluate import scoring_mask

    stored = np.zeros((40, 60), bool)
    stored[5:15, 40:58] = True  # top-right of the stored grid
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    cv2.imwrite(str(tmp_path / "p_gt.png"), stored.astype(np.uint8) * 255)
    gt = scoring_mask(Record(tmp_path / "p.jpg", tmp_path / "p_gt.png"))
    displayed = np.asarray(Image.fromarray(stored.astype(np.uint8)).transpose(Image.Transpose.ROTATE_270)) > 0
    assert gt.shape == (60, 40) and np.array_equal(gt, displayed) and np.array_equal(gt, np.rot90(stored, -1))


def test_bad_image_in_a_data_loader_worker_is_one_line(bright_data, tmp_path, capsys):
    """PyTorch re-raises a worker's error with the worker's traceback; the CLI still prints one line."""
    data = tmp_path / "data"
    data.mkdir()
    for f in bright_data.parent.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    png = (data / "t1.png").read_bytes()
    (data / "t1.png").write_bytes(png[:len(png) // 2])  # truncated: its header still reads
    assert main(["evaluate", "--checkpoint", "ela", "--data", str(data / "list.json"), "--device", "cpu",
                 "--workers", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t1.png" in err and "Traceback" not in err


def test_evaluate_out_never_replaces_an_input(bright_data, tmp_path, capsys):
    before = bright_data.read_bytes()
    assert main(["evaluate", "--checkpoint", "ela", "--data", str(bright_data), "--out", str(bright_data),
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 2
    assert bright_data.read_bytes() == before and "refusing to overwrite" in capsys.readouterr().err


def test_saved_predictions_refuse_ambiguous_stems_and_bad_scores(bright_data, tmp_path, capsys):
    maps = tmp_path / "maps"
    _write_maps(maps, bright_data)
    data = tmp_path / "data"
    (data / "Au").mkdir(parents=True)
    for f in bright_data.parent.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    (data / "Au" / "t0.png").write_bytes((bright_data.parent / "a.png").read_bytes())  # same stem as t0.png
    items = json.loads(bright_data.read_text()) + [["Au/t0.png", "Negative"]]
    (data / "list.json").write_text(json.dumps(items))
    args = ["evaluate", "--predictions", str(maps), "--no-progress"]
    assert main([*args, "--data", str(data / "list.json")]) == 2
    assert "'t0'" in capsys.readouterr().err
    for bad in ([0.5], {"t0": 2.0}, {"t0": "high"}):
        (maps / "scores.json").write_text(json.dumps(bad))
        assert main([*args, "--data", str(bright_data)]) == 2
        err = capsys.readouterr().err
        assert "scores.json: expected" in err and len(err.strip().splitlines()) == 1


def test_a_mixture_is_scored_whole_not_sampled(bright_data):
    metrics, _ = evaluate_source(checkpoint="ela", data=f"mix:{bright_data},{bright_data}@1", device="cpu",
                                 workers=0, progress=False)
    assert metrics["n_images"] == 8 and metrics["n_tampered"] == 6  # both sources, every image (not 1 + 1)


def test_a_map_turned_90_degrees_is_an_error_not_a_stretch(bright_data, tmp_path, capsys):
    maps = tmp_path / "maps"
    _write_maps(maps, bright_data, transform=lambda m: np.ascontiguousarray(m.T))  # 130×100 instead of 100×130
    assert main(["evaluate", "--predictions", str(maps), "--data", str(bright_data), "--no-progress"]) == 2
    assert "turned 90°" in capsys.readouterr().err


def test_false_alarm_threshold_is_the_tightest_within_the_rate():
    """Against a brute-force oracle on random score lists with ties: at most the rate of authentic scores lie
    strictly above the threshold, and no lower threshold keeps that."""
    from tamperscope.inference import false_alarm_threshold

    rng = np.random.default_rng(0)
    for _ in range(500):
        scores = np.round(rng.random(int(rng.integers(1, 40))), int(rng.integers(1, 4)))  # few decimals: ties
        rate = float(rng.choice([0.0, 0.05, 0.1, 0.25, 0.5, 0.99, rng.random()]))
        t = false_alarm_threshold(scores.tolist(), rate)

        def alarms(x):
            return np.count_nonzero(scores > x) / scores.size

        oracle = min(c for c in np.unique(np.append(scores, 0.0)) if alarms(c) <= rate)
        assert alarms(t) <= rate and t == oracle
        if t > 0:
            assert alarms(np.nextafter(t, -1.0)) > rate
    assert false_alarm_threshold([0.3, 0.3, 0.3], 0.1) == 0.3  # ties never push the rate over
    assert false_alarm_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.1) == 0.9


def test_calibrated_scores_and_maps():
    """The image score is shifted like the map (p > t becomes > 0.5), the inverse gives the raw score back, and
    a pixel-only calibration (no image block) leaves the score alone."""
    from tamperscope.inference import calibrate_map, calibrate_score, model_probabilities, uncalibrate_score

    raw = torch.tensor([0.0, 0.1, 0.3, 0.30000001, 0.7, 1.0], dtype=torch.float64)
    cal = {"mode": "absolute", "threshold": 0.4, "image": {"threshold": 0.3, "inconclusive_from": 0.1}}
    shifted = calibrate_score(raw, cal)
    assert shifted.tolist()[1:5] == pytest.approx([0.2058824, 0.5, 0.5, 0.8448276], abs=1e-6)
    assert torch.equal(shifted > 0.5, raw > 0.3)
    for r, s in zip(raw.tolist()[1:-1], shifted.tolist()[1:-1]):
        assert uncalibrate_score(s, cal) == pytest.approx(r, abs=1e-9)
    assert torch.equal(calibrate_score(raw, {"mode": "absolute", "threshold": 0.4}), raw)
    assert uncalibrate_score(0.25, None) == 0.25

    class Fixed(TamperModel):
        def forward(self, image):
            return {"mask_logits": torch.logit(torch.full((1, 1, 4, 4), 0.45)), "image_logit": torch.logit(raw[4:5])}

    model = Fixed()
    model.calibration = cal
    probs, scores = model_probabilities(model, torch.zeros(1, 3, 4, 4))
    assert torch.equal(probs, calibrate_map(torch.full((1, 1, 4, 4), 0.45), cal)) and bool((probs > 0.5).all())
    assert float(scores[0]) == pytest.approx(float(shifted[4]), abs=1e-7)


def test_checkpoint_default_names_the_bundled_model_in_every_command(tmp_path, monkeypatch, capsys):
    """`--checkpoint default` is the bundled model for evaluate and robustness as for predict (a file or folder
    named `default` in the working directory still wins); without the bundled file it is a one-line error."""
    from pathlib import Path

    from tamperscope.engine import loading as loading_mod
    from tamperscope.engine.loading import resolve_checkpoint

    from .synthetic import make_dataset

    data = make_dataset(tmp_path / "data", n_tampered=2, n_authentic=1) / "list.json"
    bundled = str(loading_mod.default_weights_ref())
    assert resolve_checkpoint("default") == bundled and resolve_checkpoint("runs/x") == "runs/x"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["evaluate", "--checkpoint", "default", "--data", str(data), "--out", str(a), "--workers", "0",
                 "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", bundled, "--data", str(data), "--out", str(b), "--workers", "0",
                 "--no-progress"]) == 0
    strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k not in ("model", "checkpoint")}  # noqa: E731
    assert strip(a) == strip(b)
    assert main(["robustness", "--checkpoint", "default", "--data", str(data), "--kinds", "jpeg", "--levels", "jpeg:90",
                 "--out", str(tmp_path / "rob"), "--workers", "0", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    assert resolve_checkpoint("default") == "default"  # the user's own folder
    monkeypatch.chdir(Path(bundled).parent.parent)
    monkeypatch.setattr(loading_mod, "default_weights_ref", lambda: tmp_path / "missing.safetensors")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "default", "--data", str(data), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no default model installed" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------ issue 18: no lost files, outputs that re-score


def test_evaluate_out_never_replaces_an_image_or_mask_of_the_data(bright_data, capsys):
    for victim in ("t0.png", "t1_gt.png"):
        path = bright_data.parent / victim
        before = path.read_bytes()
        assert main(["evaluate", "--checkpoint", "ela", "--data", str(bright_data), "--out", str(path),
                     "--device", "cpu", "--workers", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert path.read_bytes() == before and "refusing to overwrite an input file" in err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["mkstemp", "fsync"])
def test_evaluate_prints_its_metrics_when_they_cannot_be_saved(bright_data, tmp_path, monkeypatch, capsys, where):
    """A read-only folder (no temp file) or a full disk (the write fails): one line naming the file, and the
    computed metrics on stdout as JSON."""
    import errno
    import os
    import tempfile

    def fail(*args, **kwargs):
        code = errno.EROFS if where == "mkstemp" else errno.ENOSPC
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, fail)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--predictions", str(_maps_for(bright_data, tmp_path)), "--data", str(bright_data),
                 "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "Traceback" not in err
    assert ("Read-only file system" if where == "mkstemp" else "No space left on device") in err
    printed = json.loads(captured.out[captured.out.index("{"):])
    assert printed["n_tampered"] == 3 and printed["pixel_f1"] == pytest.approx(1.0)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _maps_for(data_json, tmp_path):
    maps = tmp_path / "maps"
    _write_maps(maps, data_json)
    return maps


def test_evaluate_out_in_a_missing_or_unwritable_place_is_one_line(bright_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["evaluate", "--predictions", str(_maps_for(bright_data, tmp_path)), "--data", str(bright_data),
                 "--out", str(blocker / "m.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker / "m.json") in err and "Traceback" not in err


def test_non_finite_outputs_are_an_error(bright_data, tmp_path, capsys):
    import tamperscope
    from tamperscope.checkpoint import save_checkpoint

    model = tamperscope.create_model("segformer-b0")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    ckpt = save_checkpoint(model, tmp_path / "nan.safetensors", extra={"train": {"image_size": 64}})
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(bright_data), "--out", str(tmp_path / "m.json"),
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "non-finite outputs" in err and not (tmp_path / "m.json").exists()
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), str(bright_data.parent / "t0.png"), "--out", str(out),
                 "--no-progress"]) == 1
    assert "non-finite outputs" in capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())  # valid JSON: no bare NaN
    assert rows[0]["status"] == "error" and "NaN" not in (out / "results.json").read_text().replace("NaN or", "")


def test_evaluate_scores_predicts_own_output(bright_data, tmp_path, capsys):
    """`predict` writes 16-bit probability maps and scores.json, which `evaluate --predictions` reads as they are;
    the metrics equal those of `evaluate --checkpoint` on the same model."""
    images = [bright_data.parent / name for name in ("t0.png", "t1.png", "t2.png", "a.png")]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", "ela", *map(str, images), "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert Image.open(out / "t0.probability.png").mode.startswith("I;16")
    saved = tmp_path / "saved.json"
    direct = tmp_path / "direct.json"
    assert main(["evaluate", "--predictions", str(out), "--data", str(bright_data), "--out", str(saved),
                 "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", "ela", "--data", str(bright_data), "--out", str(direct), "--device",
                 "cpu", "--workers", "0", "--no-progress"]) == 0
    a, b = json.loads(saved.read_text()), json.loads(direct.read_text())
    for key in ("n_tampered", "n_authentic", "pixel_f1", "pixel_iou", "pixel_auc", "image_auc", "image_acc"):
        assert a[key] == pytest.approx(b[key], abs=2e-3), key


def test_robustness_and_compare_never_replace_an_input(bright_data, tmp_path, capsys):
    """A data list named like an output (compare.json, robustness.json) in the --out folder is refused up front."""
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(bright_data.parent, folder)
    for name, command in (("compare.json", ["compare", "ela"]), ("robustness.json", ["robustness", "ela"])):
        data = folder / name
        shutil.copy(folder / "list.json", data)
        before = data.read_bytes()
        assert main([*command, "--data", str(data), "--out", str(folder), "--device", "cpu", "--workers", "0",
                     "--no-progress"] + (["--kinds", "jpeg", "--levels", "jpeg:90"] if "robustness" in command
                                         else [])) == 2
        err = capsys.readouterr().err.strip()
        assert data.read_bytes() == before and "refusing to overwrite an input file" in err
        assert len(err.splitlines()) == 1
