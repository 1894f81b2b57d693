"""benchmarks/gpu_check.py: the one-GPU check's CPU dry run at a tiny size (one model, one step, through the real
train and evaluate commands), its table, and how it reports a failing model and the time slot."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from engine import synthetic

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("tamperscope_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def casia_like(tmp_path_factory) -> Path:
    """A folder with ``train.json`` and ``test.json`` like ../shared/data/casia1."""
    root = synthetic.make_dataset(tmp_path_factory.mktemp("casia_like"), 4, 2, (48, 48), 0)
    shutil.copy(root / "list.json", root / "train.json")
    shutil.copy(root / "list.json", root / "test.json")
    return root


@pytest.mark.slow
def test_dry_run_writes_a_row_per_model(gpu_check, casia_like, tmp_path, capsys):
    out = tmp_path / "check"
    rc = gpu_check.main(["--models", "segformer-b0", "nope", "--size", "32", "--steps", "1", "--batch-size", "2",
                         "--limit", "2", "--data", str(casia_like), "--device", "cpu", "--workers", "0",
                         "--out", str(out)])
    assert rc == 1  # one model failed
    rows = json.loads((out / "results.json").read_text())["rows"]
    ok, bad = rows
    assert ok["model"] == "segformer-b0" and ok["status"] == "ok" and ok["steps"] == 1 and ok["size"] == 32
    assert ok["test_images"] == 3 and 0.0 <= ok["pixel_f1"] <= 1.0 and ok["train_images_per_s"] > 0
    assert ok["precision"] == "fp32" and ok["train_peak_mem_mb"] is None  # GPU memory only
    assert (out / "runs" / "segformer-b0" / "model.safetensors").is_file()
    assert bad["status"] == "failed" and "nope" in bad["error"]
    table = (out / "gpu_check.md").read_text()
    assert "| segformer-b0 | ok | 32 | 2 | fp32 | 1 |" in table and "- nope: " in table
    assert len(json.loads((out / "train_subset.json").read_text())) == 3  # 2 tampered + 1 authentic


def test_models_past_the_deadline_are_skipped_and_cuda_is_checked(gpu_check, casia_like, tmp_path, capsys):
    rc = gpu_check.main(["--models", "segformer-b0", "--deadline-minutes", "-1", "--data", str(casia_like),
                         "--device", "cpu", "--out", str(tmp_path / "late")])
    rows = json.loads((tmp_path / "late" / "results.json").read_text())["rows"]
    assert rc == 1 and rows[0]["status"] == "skipped" and "not started" in rows[0]["error"]
    if not gpu_check.torch.cuda.is_available():
        assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "x")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert gpu_check.main(["--device", "cpu", "--data", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
