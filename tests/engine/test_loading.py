"""One loader for every model spec (engine/loading.py): run folder, single file, weight-free built-in and the bundled
default give the same kind of answer, read a checkpoint's config once and fail in one line about the value."""
import pytest
import torch

import tamperscope
from tamperscope import checkpoint
from tamperscope.checkpoint import save_checkpoint
from tamperscope.engine import loading
from tamperscope.engine.experts import ExpertFusion
from tamperscope.engine.loading import load_model
from tamperscope.errors import UserError


@pytest.fixture()
def model():
    return tamperscope.create_model("segformer-b0", dropout=0.0)


def test_run_folder_file_builtin_and_default(model, tmp_path, monkeypatch):
    run = save_checkpoint(model, tmp_path / "run", extra={"train": {"image_size": 64}})
    single = save_checkpoint(model, tmp_path / "m.safetensors", extra={"train": {"image_size": 96}})
    monkeypatch.setattr(loading, "default_weights_ref", lambda: single)
    answers = {spec: load_model(spec) for spec in (str(run), str(single), "ela", None, "default")}
    assert [a.image_size for a in answers.values()] == [64, 96, 512, 96, 96]
    assert [a.name for a in answers.values()] == ["segformer-b0 (run)", "segformer-b0 (m.safetensors)", "ela",
                                                    "default (segformer-b0)", "default (segformer-b0)"]
    assert all(not a.model.training and a.experts == {} and a.fused() is a.model for a in answers.values())
    assert load_model(str(run), image_size=128).image_size == 128  # the caller's size replaces the trained one
    theirs = answers[str(run)].model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_config_is_read_once_and_overrides_reach_the_model(model, tmp_path, monkeypatch):
    run = save_checkpoint(model, tmp_path / "run")
    reads = []
    real = checkpoint.read_checkpoint_config
    monkeypatch.setattr(checkpoint, "read_checkpoint_config", lambda path: reads.append(path) or real(path))
    loaded = load_model(str(run), overrides={"dice_weight": 0.5})
    assert len(reads) == 1 and loaded.model.config["dice_weight"] == 0.5 and loaded.image_size == 512


def test_experts_come_fused_for_evaluation(tmp_path):
    from tamperscope.engine.experts import attach_experts

    plain = save_checkpoint(tamperscope.create_model("ela"), tmp_path / "ela.safetensors")
    fused = tmp_path / "fused.safetensors"
    attach_experts(plain, fused, {"copymove": {"config": {"min_area": 300}}})
    loaded = load_model(str(fused))
    assert list(loaded.experts) == ["copymove"] and loaded.name == "ela+copymove (fused.safetensors)"
    assert isinstance(loaded.fused(), ExpertFusion) and load_model(str(fused), experts=False).experts == {}


@pytest.mark.parametrize("spec, message", [
    ("no/such/run", "no/such/run: no such run folder or file (and not a weight-free built-in model such as 'ela')"),
    ("segformer-b0", "segformer-b0: model 'segformer-b0' needs trained weights; pass a run folder or a "
                     ".safetensors checkpoint"),
])
def test_errors_name_the_value(spec, message):
    with pytest.raises(UserError) as err:
        load_model(spec)
    assert str(err.value) == message


def test_image_size_rule(model, tmp_path):
    with pytest.raises(UserError, match="^image size must be a positive multiple of 32, got 100$"):
        load_model("ela", image_size=100)
    odd = save_checkpoint(model, tmp_path / "odd.safetensors", extra={"train": {"image_size": 100}})
    with pytest.raises(UserError, match="trained image size 100 is not a multiple of 32"):
        load_model(str(odd))
