"""The run folder: one layout that training writes and export, evaluation and resume read."""
import json
import random

import numpy as np
import pytest
import torch

from tamperscope.checkpoint import save_checkpoint
from tamperscope.errors import UserError
from tamperscope.registry import create_model
from tamperscope.run_folder import RunFolder, TrainState


def _stepped(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_saved_state_restores_model_optimizer_and_every_rng(tmp_path):
    run = RunFolder(tmp_path / "run")
    model, opt = _stepped(0)
    state = TrainState(epoch=2, batch_in_epoch=3, global_step=7, best={"metric": "pixel_f1", "value": 0.5,
                                                                        "epoch": 1, "step": 5})
    torch.manual_seed(11), random.seed(12), np.random.seed(13)
    run.save_state(model, opt, state, {"model": "x"}, torch.device("cpu"))
    expected = (torch.rand(3), random.random(), np.random.rand())
    assert run.exists() and json.loads(run.config_file.read_text()) == {"model": "x"}
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "state", "trainer_state.json"]

    other, other_opt = _stepped(1)
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    restored = run.load_state(other, other_opt, run.read_state(), torch.device("cpu"))
    assert restored == state
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    saved, loaded = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(saved[p][k], loaded[p][k]) for p in saved for k in saved[p])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]
    assert run.last_state_weights() == run.path / "state" / "step-000000007" / "model.safetensors"

    state.global_step = 9
    run.save_state(model, opt, state, {"model": "x"}, torch.device("cpu"))
    assert [p.name for p in (run.path / "state").iterdir()] == ["step-000000009"]  # older states removed


def test_best_val_metrics_is_the_selected_epochs_row(tmp_path):
    run = RunFolder(tmp_path)
    assert run.best_val_metrics() is None
    rows = [{"type": "train", "epoch": 1, "step": 2}, {"type": "val", "epoch": 1, "pixel_f1": 0.2},
            {"type": "val", "epoch": 2, "pixel_f1": 0.4}, {"type": "val", "epoch": 3, "pixel_f1": 0.3}]
    run.log_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run.state_file.write_text(json.dumps({"best": {"epoch": 2}, "checkpoint": "state/step-1"}))
    assert run.best_val_metrics() == rows[2]


def test_read_config_is_the_checkpoint_config(tmp_path):
    path = save_checkpoint(create_model("ela"), tmp_path / "run", extra={"train": {"image_size": 64}})
    cfg = RunFolder(path).read_config()
    assert cfg["model"] == "ela" and cfg["extra"]["train"]["image_size"] == 64


@pytest.mark.parametrize("problem, match", [
    ("no state", "no trainer_state.json"),
    ("broken state", "cannot read trainer state"),
    ("state points nowhere", "missing"),
    ("broken config", "invalid JSON"),
])
def test_damaged_run_folders_give_one_line_errors_naming_the_file(tmp_path, problem, match):
    run = RunFolder(tmp_path)
    if problem == "broken state":
        run.state_file.write_text("{")
    if problem == "state points nowhere":
        run.state_file.write_text(json.dumps({"checkpoint": "state/step-000000003"}))
    if problem == "broken config":
        run.config_file.write_text("{")
    with pytest.raises(UserError, match=match) as err:
        run.read_config() if problem == "broken config" else run.last_state_weights()
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_fused_optimizer_resumes_exactly_on_channels_last_weights(tmp_path):
    """Saving makes the Adam moments contiguous; a channels-last weight's moments must get its layout back on
    loading, or the fused kernel (which walks parameter and state memory side by side) pairs the wrong elements."""
    def model_and_opt(seed):
        torch.manual_seed(seed)
        conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        return conv, torch.optim.AdamW(conv.parameters(), lr=0.1, fused=True)

    def step(conv, opt, seed):
        conv(torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))).square().sum().backward()
        opt.step()
        opt.zero_grad()

    ref, ref_opt = model_and_opt(0)
    step(ref, ref_opt, 1)
    run = RunFolder(tmp_path / "run")
    run.save_state(ref, ref_opt, TrainState(global_step=1), {"model": "x"}, torch.device("cpu"))
    resumed, resumed_opt = model_and_opt(5)
    run.load_state(resumed, resumed_opt, run.read_state(), torch.device("cpu"))
    assert resumed_opt.state[resumed.weight]["exp_avg"].stride() == resumed.weight.stride()
    for seed in (2, 3):
        step(ref, ref_opt, seed)
        step(resumed, resumed_opt, seed)
    assert torch.equal(ref.weight, resumed.weight) and torch.equal(ref.bias, resumed.bias)
