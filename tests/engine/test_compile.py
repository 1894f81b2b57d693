"""``--compile`` (engine.compile): torch.compile in place, the same model and state dict, outputs within 1e-4 of
eager; the flag reaches train, evaluate and predict."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import tamperscope
from tamperscope.cli import main
from tamperscope.engine.compile import compile_model
from tamperscope.errors import UserError

from .synthetic import make_dataset

TINY = ["--image-size", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress"]


def tiny_elaunet():
    torch.manual_seed(0)
    return tamperscope.create_model("ela-unet", widths=[4, 8], global_context=True, detection_head=True).eval()


@pytest.mark.slow
def test_compiled_model_is_the_same_model_with_the_same_outputs():
    """A real torch.compile (inductor, on the CPU) of the tiny default architecture: only ``decode`` is compiled,
    the model keeps its identity and state dict, and its outputs stay within 1e-4 of eager."""
    model = tiny_elaunet()
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
        assert compile_model(model) is model
        compiled = model(x)
    assert list(model.state_dict()) == keys and "decode" in vars(model)  # the compiled method, on the instance
    for key in ("mask_logits", "image_logit"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=0, atol=1e-4)


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile replaced by a recorder that returns the function unchanged (the wiring, without minutes of
    compilation; the real compiler is exercised above)."""
    calls = []

    def fake_compile(fn, **kwargs):
        calls.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_whole_forward_or_the_models_compile_parts(compile_calls):
    compile_model(tiny_elaunet())
    compile_model(tamperscope.create_model("segformer-b0"))
    assert compile_calls == ["decode", "_call_impl"]
    broken = tiny_elaunet()
    broken.compile_parts = ("no_such_method",)
    with pytest.raises(UserError, match="compile_parts names 'no_such_method'"):
        compile_model(broken)


def test_the_flag_reaches_train_evaluate_and_predict(tmp_path, compile_calls):
    data = make_dataset(tmp_path / "data", n_tampered=2, n_authentic=1)
    run = tmp_path / "run"
    assert main(["train", "ela-unet", "--set", "widths=[4,8]", "--train", str(data), "--out", str(run),
                 "--max-steps", "1", "--compile", *TINY]) == 0
    assert compile_calls == ["decode"]
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--workers", "0", "--no-progress", "--compile"]) == 0
    assert compile_calls == ["decode"] * 2 and json.loads(out.read_text())["n_images"] == 3
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    assert main(["predict", str(tmp_path / "p.png"), "--checkpoint", str(run), "--out", str(tmp_path / "pred"),
                 "--no-progress", "--compile"]) == 0
    assert compile_calls == ["decode"] * 3
    for command in (["evaluate", "--checkpoint", str(run), "--data", str(data), "--workers", "0", "--no-progress"],
                    ["predict", str(tmp_path / "p.png"), "--checkpoint", str(run), "--out", str(tmp_path / "p2"),
                     "--no-progress"]):
        assert main(command) == 0
    assert compile_calls == ["decode"] * 3  # nothing compiled without the flag
