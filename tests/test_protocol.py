"""benchmarks/protocol.py: the printed commands of the CPU budget (dry run) and one tiny real run of the whole
protocol (segformer-b0 for two steps through the real CLI) writing RESULTS.md, then continuing without rework;
the weight-free ela step."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from engine import synthetic

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "protocol.py"


def make_dataset(root: Path, n_tampered: int, n_authentic: int, seed: int, size=(48, 48)) -> Path:
    """The engine tests' synthetic forgeries; returns their IMDL-BenCo ``list.json``."""
    return synthetic.make_dataset(root, n_tampered, n_authentic, size, seed) / "list.json"


@pytest.fixture(scope="module")
def protocol():
    spec = importlib.util.spec_from_file_location("tamperscope_protocol", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_dry_run_cpu_budget(protocol, capsys):
    assert protocol.main(["--budget", "cpu", "--models", "segformer-b0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(("tamperscope", "python"))]
    assert len(lines) == 2
    train, evaluate = lines
    assert train.startswith("tamperscope train segformer-b0 --train mix:../shared/data/casia1/train.json@400")
    for part in ("--image-size 128", "--batch-size 4", "--max-steps 300", "--epochs 3", "--device cpu",
                 "--val runs/protocol-cpu/val_subset.json", "--config runs/protocol-cpu/protocol_train.yaml"):
        assert part in train
    assert evaluate.startswith("tamperscope evaluate --checkpoint runs/protocol-cpu/runs/segformer-b0 "
                               "--data ../shared/data/casia1/test.json")
    assert "warmup_epochs: 0.15" in out  # 5 % of 300 steps at 100 steps per epoch


def test_plans_of_multi_stage_models(protocol, capsys, tmp_path):
    diffiml = protocol.model_plan("diffiml", "cpu", 300, 128)
    assert [(s.stage, s.steps, s.pretrained) for s in diffiml.stages] == [
        ("lightvae", 100, None), ("denoiser", 200, "diffiml-lightvae")]
    ifanet = protocol.model_plan("ifanet", "cpu", 300, 128)
    assert [s.train for s in ifanet.stages] == ["photos", "casia"]
    assert all("mae_variant=small" in s.sets for s in ifanet.stages)
    assert protocol.model_plan("ifanet", "gpu", 4000, 512).stages[0].sets == []
    diffforensics = protocol.model_plan("diffforensics", "gpu", 4000, 512)
    assert [s.stage for s in diffforensics.stages] == ["pretrain", "finetune"]
    assert sum(s.steps for s in diffforensics.stages) == 4000
    assert protocol.model_plan("ela", "cpu", 300, 128).stages == []
    assert protocol.main(["--budget", "cpu", "--models", "diffiml,ela,ifanet", "--dry-run", "--generated", "/gen"]) == 0
    out = capsys.readouterr().out
    assert "--stage lightvae --preset lightvae-code" in out
    assert "--batch-size 4 --accum 1 " in out  # one budget for every method, whatever its recipe's global batch
    assert "--pretrained runs/protocol-cpu/runs/diffiml-lightvae" in out
    assert "mix:../shared/data/casia1/train.json,/gen@200" in out  # two sources share the epoch
    # the pre-text stage on photos has the same epoch length (so the same number of validations) as the rest
    assert "--train mix:../shared/data/authentic/bsds500/train@400" in out and "--stage realness-prior" in out
    assert protocol.main(["--budget", "cpu", "--models", "nosuchmodel", "--dry-run"]) == 2
    assert "nosuchmodel" in capsys.readouterr().err

    # the weight-free ela step writes a checkpoint that evaluates at the budget's image size
    args = protocol.parse_args(["--budget", "cpu", "--models", "ela", "--out", str(tmp_path / "p")])
    ela = protocol.build_commands(args, protocol.BUDGETS["cpu"], ["ela"], tmp_path / "p")[0]
    assert ela["kind"] == "ela" and ela["argv"][:2] == ["python", "-c"]
    exec(ela["argv"][2], {})
    from tamperscope.checkpoint import read_checkpoint_config
    from tamperscope.engine.loading import trained_image_size

    assert trained_image_size(read_checkpoint_config(tmp_path / "p" / "runs" / "ela")) == 128
    assert protocol.step_done(ela, tmp_path / "p")


@pytest.mark.slow
def test_tiny_real_run(protocol, tmp_path, capsys):
    train = make_dataset(tmp_path / "train", 3, 1, seed=0)
    val = make_dataset(tmp_path / "val", 2, 1, seed=1)
    test = make_dataset(tmp_path / "test", 2, 2, seed=2)
    out, results = tmp_path / "out", tmp_path / "RESULTS.md"
    args = ["--budget", "cpu", "--models", "segformer-b0", "--steps", "2", "--image-size", "64",
            "--batch-size", "2", "--epoch-samples", "4", "--val-subset", "0", "--train-data", str(train),
            "--val-data", str(val), "--test-data", str(test), "--out", str(out), "--results", str(results)]
    assert protocol.main(args) == 0, capsys.readouterr().out
    state = json.loads((out / "runs" / "segformer-b0" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["finished"] and state["best"] is not None
    metrics = json.loads((out / "metrics" / "segformer-b0.json").read_text())
    assert metrics["n_images"] == 4 and metrics["n_tampered"] == 2 and 0.0 <= metrics["pixel_f1"] <= 1.0
    text = results.read_text()
    assert "| test/list | segformer-b0 |" in text and "| segformer-b0 | train 2 | train: pixel_f1" in text
    assert f"tamperscope train segformer-b0 --train mix:{train}@4" in text
    assert "warmup_epochs" in text and "Total wall time" in text and "Machine:" in text
    capsys.readouterr()
    assert protocol.main(args) == 0  # everything is done: nothing runs again
    assert capsys.readouterr().out.count("done already") == 2


def test_every_stage_and_preset_in_the_plans_exists(protocol):
    from tamperscope.registry import get_entry, list_models

    for budget in ("cpu", "gpu"):
        for name in list_models():
            for stage in protocol.model_plan(name, budget, 120, 128).stages:
                entry = get_entry(name)
                if stage.preset:
                    assert stage.preset in entry.train_presets, (name, stage.preset)
                if stage.stage:
                    assert stage.stage in entry.stages, (name, stage.stage)
