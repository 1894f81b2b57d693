"""Checkpoints: safetensors + JSON round trip, and readable errors for damaged or mismatched weights."""
import json

import pytest
import torch
from PIL import Image

import tamperscope
from tamperscope.checkpoint import load_checkpoint, load_weights, read_checkpoint_config, save_checkpoint
from tamperscope.cli import main
from tamperscope.errors import UserError


@pytest.fixture()
def run(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tamperscope.create_model("segformer-b0"), tmp_path / "run",
                           extra={"train": {"image_size": 64}})


def test_round_trip_is_exact_and_self_describing(run):
    model = load_checkpoint(run)
    again = load_checkpoint(run)
    assert read_checkpoint_config(run)["model"] == "segformer-b0"
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert not list(run.glob("*.pt")) and not list(run.glob("*.pth"))  # never pickle


def test_truncated_weights_are_one_error_naming_the_file(run, capsys):
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a partial copy
    with pytest.raises(UserError, match="model.safetensors: cannot read weights"):
        load_checkpoint(run)
    assert main(["predict", "--checkpoint", str(run), str(weights), "--out", str(run.parent / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err


def test_weights_of_another_variant_name_the_mismatch(run):
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["variant"] = "b1"  # the file says b1, the weights are b0
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"model.safetensors .*shape mismatch .*\(64, 32\) vs \(128, 64\)"):
        load_checkpoint(run)


def test_load_weights_reports_missing_and_unexpected_keys():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="1 missing key.*bias.*1 unexpected key.*extra"):
        load_weights(model, {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}, "test")
    assert load_weights(model, {"weight": torch.ones(2, 2)}, "test", strict=False) == (["bias"], [])
    assert torch.equal(model.weight, torch.ones(2, 2))


def test_export_never_overwrites_a_runs_weights_or_state(run, tmp_path, capsys):
    other = save_checkpoint(tamperscope.create_model("segformer-b0"), tmp_path / "other")
    before = (other / "model.safetensors").read_bytes()
    assert main(["export", str(run), str(other / "model.safetensors")]) == 2
    assert (other / "model.safetensors").read_bytes() == before
    assert "would overwrite" in capsys.readouterr().err
    assert main(["export", str(run), str(tmp_path / "shared.safetensors")]) == 0
    assert main(["export", str(run), str(tmp_path / "shared.safetensors")]) == 0  # an export may be redone


def test_a_relative_calibration_is_refused_in_one_line(run, tmp_path, capsys):
    """Per-photo relative calibrations were removed: such a file must be re-exported, not silently misread."""
    model = load_checkpoint(run)
    model.calibration = {"mode": "relative", "threshold": 0.5, "percentile": 99.0, "data": "val.json"}
    old = save_checkpoint(model, tmp_path / "old.safetensors")
    with pytest.raises(UserError, match=r"old\.safetensors: calibration mode 'relative' is no longer supported.*"
                                         r"re-export"):
        load_checkpoint(old)
    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert main(["predict", "--checkpoint", str(old), str(photo), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(old) in err and "re-export" in err


def test_read_state_dict_finds_the_weights_file_of_a_model_folder(tmp_path):
    """An HF/diffusers model folder: its model.safetensors first, then diffusion_pytorch_model.safetensors, then
    pytorch_model.bin; a folder with none of them is a one-line error naming it."""
    from safetensors.torch import save_file

    from tamperscope.checkpoint import read_state_dict

    folder = tmp_path / "vae"
    folder.mkdir()
    with pytest.raises(UserError, match=f"{folder}: folder holds no model.safetensors or pytorch_model.bin"):
        read_state_dict(folder)
    torch.save({"state_dict": {"w": torch.ones(2)}}, folder / "pytorch_model.bin")
    assert torch.equal(read_state_dict(folder)["w"], torch.ones(2))
    save_file({"w": torch.zeros(2)}, str(folder / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(read_state_dict(folder)["w"], torch.zeros(2))
    save_file({"module.w": torch.full((2,), 3.0)}, str(folder / "model.safetensors"))
    assert torch.equal(read_state_dict(folder)["w"], torch.full((2,), 3.0))
