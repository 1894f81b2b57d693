"""Evaluation plumbing: maps of native-resolution models line up with the ground truth under every perturbation,
and evaluate / robustness / compare score a model on the same dataset."""
import json

import cv2
import numpy as np
import pytest
import torch

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
    assert evaluation_dataset(torch.nn.Identity(), records, 64).resolution == "resize"


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
