"""A short version of benchmarks/learnability.py's overfit check (issue 21, point 1a): a model that cannot fit 8
CASIA v1 training images has a bug. The configurations are the benchmark's CPU sizes (MiT-b0, 64 px); the step
budgets are where these models pass with margin (docs/BENCHMARKS.md, "Learnability")."""
import functools
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "learnability.py"


@functools.lru_cache(maxsize=1)
def _benchmark():
    spec = importlib.util.spec_from_file_location("learnability", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["learnability"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name, steps", [("segformer-b0", 80), ("frdnet", 40)])
def test_overfits_eight_training_images(shared_data, name, steps):
    learn = _benchmark()
    records = learn.overfit_records(8)
    result = learn.run_overfit(name, learn.SPECS[name], records, size=64, steps=steps, eval_every=steps,
                               n_images=8, log=lambda _: None)
    assert result["images"] == 8
    assert result["curve"][0]["step"] == 0 and result["curve"][0]["pixel_f1"] < 0.6  # the untrained model
    print(f"{name}: pixel F1 {result['pixel_f1']:.3f} on its 8 training images after {steps} steps")
    assert result["pixel_f1"] >= 0.9, result["curve"]


def test_all_one_floor_is_scored_by_the_protocol(tmp_path):
    """The budget check's floor (every pixel tampered) runs through the toolkit's evaluation like a trained model;
    its per-image F1 is 2a / (1 + a) for a region covering the share a of the photo."""
    import json

    import numpy as np
    from PIL import Image

    from tamperscope.data.datasets import load_evaluation_records

    learn = _benchmark()
    rng = np.random.default_rng(0)
    entries, shares = [], []
    for i, rows in enumerate((8, 24, 40)):  # regions of 8, 24 and 40 of 64 rows, full width
        mask = np.zeros((64, 96), np.uint8)
        mask[:rows] = 255
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / f"{i}_gt.png")
        entries.append([f"{i}.png", f"{i}_gt.png"])
        shares.append(rows / 64)
    (tmp_path / "list.json").write_text(json.dumps(entries))
    metrics = learn.evaluate_on(learn.all_tampered_model(), load_evaluation_records(tmp_path / "list.json"), 64)
    assert metrics["pixel_f1"] == pytest.approx(np.mean([2 * a / (1 + a) for a in shares]), abs=1e-6)
