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
