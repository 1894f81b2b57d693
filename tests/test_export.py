"""`tamperscope export --calibrate`: the pixel and image operating points chosen on validation data in one pass,
stored in the file and applied at inference so that 0.5 is each of them."""
import json

import numpy as np
import pytest
import torch

import tamperscope
from tamperscope.checkpoint import read_checkpoint_config, save_checkpoint
from tamperscope.cli import main
from tamperscope.engine.calibration import image_calibration
from tamperscope.inference import false_alarm_threshold
from tamperscope.errors import UserError

from engine.synthetic import make_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tamperscope.create_model("segformer-b0"), tmp_path_factory.mktemp("run") / "run",
                           extra={"train": {"image_size": 64}})


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    """4 tampered and 10 authentic photos (enough authentic ones for a 10 % false-alarm rate to allow one)."""
    return make_dataset(tmp_path_factory.mktemp("val"), n_tampered=4, n_authentic=10, size=(40, 48)) / "list.json"


def test_calibrate_writes_both_operating_points(run_dir, val, tmp_path, capsys):
    out = tmp_path / "calibrated.safetensors"
    assert main(["export", str(run_dir), str(out), "--calibrate", str(val), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "image threshold" in printed and "false alarms" in printed and "recall" in printed
    cal = read_checkpoint_config(out)["calibration"]
    assert cal["mode"] == "absolute" and cal["data"] == str(val)
    assert cal["threshold"] == cal["thresholds"][int(np.argmax(cal["pixel_f1_by_threshold"]))]
    image = cal["image"]
    authentic, tampered = image["authentic_scores"], image["tampered_scores"]
    assert (len(authentic), len(tampered)) == (10, 4) and image["max_false_alarm"] == 0.10
    assert authentic == sorted(authentic) and tampered == sorted(tampered)
    assert all(v == round(v, 5) for v in authentic + tampered)
    assert image["threshold"] == pytest.approx(false_alarm_threshold(authentic, 0.10), abs=1e-5)
    assert image["inconclusive_from"] == pytest.approx(false_alarm_threshold(authentic, 0.25), abs=1e-5)
    assert image["inconclusive_from"] <= image["threshold"]
    assert np.mean(np.asarray(authentic) > image["threshold"] + 1e-5) <= 0.10

    # at inference the image threshold is 0.5 of the score: evaluate's image metrics read it there
    metrics = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(val), "--out", str(metrics), "--device", "cpu",
                 "--workers", "0"]) == 0
    m = json.loads(metrics.read_text())
    assert m["pixel_f1"] == pytest.approx(cal["pixel_f1"], abs=1e-4)
    assert 1.0 - m["real_recall"] <= 0.10
    model = tamperscope.load_checkpoint(out)
    assert model.calibration == cal


def test_max_false_alarm_option(run_dir, val, tmp_path):
    out = tmp_path / "loose.safetensors"
    assert main(["export", str(run_dir), str(out), "--calibrate", str(val), "--max-false-alarm", "0.3",
                 "--device", "cpu", "--no-progress"]) == 0
    image = read_checkpoint_config(out)["calibration"]["image"]
    assert image["max_false_alarm"] == 0.3
    assert image["inconclusive_from"] == pytest.approx(false_alarm_threshold(image["authentic_scores"], 0.75),
                                                       abs=1e-5)


def test_calibration_needs_both_kinds_and_a_valid_rate(run_dir, tmp_path, capsys):
    only_tampered = make_dataset(tmp_path / "tp", n_tampered=2, n_authentic=0, size=(32, 32)) / "list.json"
    args = ["export", str(run_dir), str(tmp_path / "x.safetensors"), "--device", "cpu", "--no-progress"]
    assert main([*args, "--calibrate", str(only_tampered)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(only_tampered) in err and "0 authentic, 2 tampered" in err
    assert main([*args, "--calibrate", str(only_tampered), "--max-false-alarm", "1.5"]) == 2
    assert "--max-false-alarm must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(UserError, match="at least one authentic and one tampered"):
        image_calibration(np.array([0.2, 0.3]), np.array([0, 0]), 0.1, "val.json")


def test_image_block_from_scores():
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.4, 0.8, 0.123456789, 0.7, 0.6])
    labels = np.array([1, 0, 0, 0, 0, 0, 1, 0, 1, 0])
    image = image_calibration(scores, labels, 0.2, "val.json")
    # 7 authentic scores: at most ⌊0.2·7⌋ = 1 above the threshold, at most ⌊0.5·7⌋ = 3 above the lower bound
    assert image["threshold"] == 0.4 and image["inconclusive_from"] == 0.3
    assert image["authentic_scores"] == [0.1, 0.12346, 0.2, 0.3, 0.4, 0.4, 0.6]
    assert image["tampered_scores"] == [0.7, 0.8, 0.9] and image["max_false_alarm"] == 0.2
