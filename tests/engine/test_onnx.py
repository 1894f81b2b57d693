"""`tamperscope export-onnx` and `predict --checkpoint FILE.onnx` (engine.onnx_runtime): the exported network with
its numpy/OpenCV front end gives PyTorch's probability map and score within 1e-4 at any photo size, under ONNX
Runtime and OpenVINO; the file carries the checkpoint's calibration, so verdicts match; bad files and missing
runtimes are one-line errors. Skipped where the optional packages (``tamperscope[onnx]``) are absent."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

import tamperscope
from tamperscope.checkpoint import save_checkpoint
from tamperscope.cli import main
from tamperscope.engine import onnx_runtime
from tamperscope.engine.onnx_runtime import OnnxModel, as_tuple, read_onnx_config
from tamperscope.engine.predict import Predictor, load_predictor
from tamperscope.errors import UserError
from tamperscope.models.elaunet import top_count

HAS_EXPORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_EXPORT, reason="onnx, onnxscript or onnxruntime not installed "
                                                       "(pip install 'tamperscope[onnx]')")
RUNTIMES = [pytest.param("onnxruntime"),
            pytest.param("openvino", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                                              reason="openvino not installed"))]
TOL = 1e-4
#: a calibrated tiny model: the verdicts depend on the stored operating points
CALIBRATION = {"mode": "absolute", "threshold": 0.45, "data": "val.json",
               "image": {"threshold": 0.55, "inconclusive_from": 0.5, "max_false_alarm": 0.1,
                         "authentic_scores": [0.2, 0.4, 0.5, 0.6], "tampered_scores": [0.5, 0.7, 0.9]}}


def tiny_elaunet():
    """The default model's architecture (global context, detection head) at toy widths, calibrated."""
    torch.manual_seed(0)
    model = tamperscope.create_model("ela-unet", widths=[4, 8, 16], global_context=True, detection_head=True)
    with torch.no_grad():  # move the BN statistics off their init so that they matter
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.calibration = CALIBRATION
    return model.eval()


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth photo with noise and a JPEG history, so that error levels and the maps are not flat."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 70 * np.sin(xx[..., None] / 9.0 + yy[..., None] / 13.0 + np.arange(3))
    rgb = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    rgb[h // 3:h // 2, w // 4:w // 2] = rng.integers(0, 256, (h // 2 - h // 3, w // 2 - w // 4, 3))
    return rgb


#: the weight-free copy-move expert attached to the checkpoint (engine.experts), at a size for small photos
EXPERTS = {"copymove": {"config": {"min_area": 300, "min_distance": 30, "max_jump": 32, "min_pixels": 0},
                        "image": {"authentic_scores": [0.01, 0.3], "tampered_scores": [0.6, 0.9]}}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint with the copy-move expert attached, onnx file) of the tiny ela-unet, exported through the CLI."""
    from tamperscope.engine.experts import attach_experts

    folder = tmp_path_factory.mktemp("onnx")
    plain = save_checkpoint(tiny_elaunet(), folder / "plain.safetensors", extra={"train": {"image_size": 64}})
    ckpt = folder / "tiny.safetensors"
    attach_experts(plain, ckpt, EXPERTS)
    if not HAS_EXPORT:
        pytest.skip("onnx export packages not installed")
    out = folder / "tiny.onnx"
    assert main(["export-onnx", str(ckpt), str(out)]) == 0
    return ckpt, out


def test_elaunet_forward_is_the_exported_split():
    """forward(image) equals export_forward(*export_inputs(image)) exactly, and the top-1 % count is the former
    ``max(1, int(0.01 * n))`` for every size (it is a symbolic integer in the graph)."""
    model = tiny_elaunet()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), model.export_forward(*as_tuple(model.export_inputs(x)))
    for key in ("mask_logits", "image_logit"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert all(top_count(n) == max(1, int(0.01 * n)) for n in [*range(1, 5_000), *range(786_400, 786_500)])


@needs_onnx
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_onnx_maps_and_scores_equal_pytorch_at_any_size(exported, runtime):
    ckpt, onnx_file = exported
    eager = load_predictor(str(ckpt), experts=False)  # the model alone (the experts are numpy on both sides)
    fast = load_predictor(str(onnx_file), onnx_runtime=runtime, experts=False)
    assert isinstance(fast.model, OnnxModel) and fast.model.runtime == runtime and fast.native_resolution
    assert fast.model.calibration == CALIBRATION and fast.image_size == eager.image_size == 64
    verdicts = set()
    for i, (h, w) in enumerate([(70, 90), (128, 64), (33, 200)]):  # padded to 96×96, 128×64, 64×224
        rgb = photo(h, w, seed=i)
        a, b = eager.predict_array(rgb), fast.predict_array(rgb)
        assert b.probability.shape == (h, w)
        np.testing.assert_allclose(b.probability, a.probability, rtol=0, atol=TOL)
        assert abs(b.score - a.score) <= TOL and abs(b.raw_score - a.raw_score) <= TOL
        assert b.verdict == a.verdict and b.inconclusive_from == a.inconclusive_from
        verdicts.add(a.verdict)
        tiled_a, tiled_b = eager.predict_array(rgb, tiles=True, tile_size=64), fast.predict_array(rgb, tiles=True,
                                                                                                    tile_size=64)
        np.testing.assert_allclose(tiled_b.probability, tiled_a.probability, rtol=0, atol=TOL)
    with torch.no_grad():  # a batch of two through the model contract: the batch axis is dynamic too
        x = torch.randn(2, 3, 64, 96)
        ours, theirs = eager.model(x), fast.model(x)
    for key in ("mask_logits", "image_logit"):
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=TOL)


@needs_onnx
def test_the_file_carries_the_checkpoint(exported):
    ckpt, onnx_file = exported
    cfg = read_onnx_config(onnx_file)
    assert cfg["model"] == "ela-unet" and cfg["calibration"] == CALIBRATION and cfg["experts"] == EXPERTS
    assert cfg["config"]["widths"] == [4, 8, 16] and cfg["extra"]["source"] == str(ckpt)
    meta = cfg["onnx"]
    assert meta["inputs"] == "export_inputs" and meta["input_names"] == ["inputs", "inputs_1", "inputs_2"]
    assert meta["dynamic_hw"] and meta["native_resolution"] and meta["max_abs_diff"] <= TOL
    assert meta["image_size"] == 64 and meta["torch"] == torch.__version__


@needs_onnx
def test_cli_predict_with_an_onnx_file_gives_the_checkpoints_results(exported, tmp_path, capsys):
    ckpt, onnx_file = exported
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, (h, w) in enumerate([(80, 100), (64, 150)]):
        Image.fromarray(photo(h, w, seed=10 + i)).save(inputs / f"p{i}.jpg", quality=92)
    rows = {}
    for name, model in (("torch", ckpt), ("onnx", onnx_file)):
        assert main(["predict", str(inputs), "--checkpoint", str(model), "--out", str(tmp_path / name),
                     "--no-progress"]) == 0
        rows[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert "model ela-unet+copymove (tiny.onnx, " in capsys.readouterr().out  # fused as the checkpoint is
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["input"] == b["input"] and a["verdict"] == b["verdict"] and a["experts"].keys() == b["experts"].keys()
        assert abs(a["score"] - b["score"]) <= TOL
        assert abs(a["tampered_area_pct"] - b["tampered_area_pct"]) <= 1.0
    assert main(["predict", str(inputs), "--checkpoint", str(onnx_file), "--compile", "--out",
                 str(tmp_path / "x")]) == 2
    assert "torch.compile applies to PyTorch models" in capsys.readouterr().err


@needs_onnx
def test_bad_onnx_files_and_outputs_are_one_line(exported, tmp_path, capsys):
    import onnx

    ckpt, _ = exported
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    for path, problem in ((garbage, "not a readable ONNX file"), (foreign, "without tamperscope metadata"),
                          (tmp_path / "missing.onnx", "not found")):
        assert main(["predict", str(ckpt), "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and problem in err, err
    assert main(["export-onnx", str(ckpt), str(tmp_path / "model.pt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path), str(tmp_path / "model.onnx")]) == 2
    assert "tamperscope export-onnx" in capsys.readouterr().err
    assert main(["export-onnx", "ela", str(tmp_path / "ela.onnx")]) == 2  # numpy all the way: not traceable
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be exported to ONNX" in err and not (tmp_path / "ela.onnx").exists()


@needs_onnx
def test_export_refuses_a_front_end_that_depends_on_weights(monkeypatch, tmp_path):
    """predict rebuilds export_inputs from the config alone, so they must not read trained weights."""
    from tamperscope.models.elaunet import ErrorLevelUNet

    original = ErrorLevelUNet.export_inputs
    monkeypatch.setattr(ErrorLevelUNet, "export_inputs",
                        lambda self, image: tuple(t * self.out.weight.abs().sum() for t in as_tuple(original(self, image))))
    with pytest.raises(UserError, match="depend on trained weights"):
        onnx_runtime.export_onnx(tiny_elaunet(), tmp_path / "w.onnx", image_size=64)
    assert not (tmp_path / "w.onnx").exists()


def test_missing_runtimes_are_one_line(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a))
    with pytest.raises(UserError, match=r"neither is installed \(pip install 'tamperscope\[onnx\]'\)"):
        onnx_runtime.resolve_runtime("auto")
    with pytest.raises(UserError, match="unknown ONNX runtime 'tensorrt'"):
        onnx_runtime.resolve_runtime("tensorrt")
    monkeypatch.setattr(importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(UserError, match=r"'onnx', which is not installed \(pip install 'tamperscope\[onnx\]'\)"):
        onnx_runtime.require("onnx")


@needs_onnx
@pytest.mark.slow
def test_a_fixed_size_model_exports_at_its_size(tmp_path, capsys):
    """A model that sees photos resized to S×S (SegFormer) gets a graph of that size; the batch stays dynamic."""
    torch.manual_seed(0)
    ckpt = save_checkpoint(tamperscope.create_model("segformer-b0"), tmp_path / "seg.safetensors",
                           extra={"train": {"image_size": 64}})
    out = tmp_path / "seg.onnx"
    assert main(["export-onnx", str(ckpt), str(out)]) == 0
    assert "64×64 inputs" in capsys.readouterr().out
    meta = read_onnx_config(out)["onnx"]
    assert meta["inputs"] == "image" and not meta["dynamic_hw"] and not meta["native_resolution"]
    eager, fast = load_predictor(str(ckpt)), load_predictor(str(out))
    rgb = photo(50, 90, seed=3)
    a, b = eager.predict_array(rgb), fast.predict_array(rgb)
    np.testing.assert_allclose(b.probability, a.probability, rtol=0, atol=TOL)
    assert abs(a.score - b.score) <= TOL
    crops = [photo(40, 40, seed=4), photo(70, 30, seed=5)]  # one batch of two through the graph
    for (pa, sa), (pb, sb) in zip(Predictor(eager.model, 64, eager.device, "t", batch_size=2).maps(crops),
                                  Predictor(fast.model, 64, fast.device, "o", batch_size=2).maps(crops)):
        np.testing.assert_allclose(pb, pa, rtol=0, atol=TOL)
        assert abs(sa - sb) <= TOL
    with pytest.raises(UserError, match="takes 64×64 inputs"):
        load_predictor(str(out), image_size=96)


@needs_onnx
def test_top_pooling_head_exports_with_size_dependent_counts(tmp_path):
    """head_pooling "top": the top-share counts of the bottleneck and of the logits stay functions of the photo
    size in the graph, so the exported score equals PyTorch's at sizes other than the traced one."""
    torch.manual_seed(1)
    model = tamperscope.create_model("ela-unet", widths=[4, 8, 16], global_context=True, detection_head=True,
                                     head_pooling="top").eval()
    ckpt = save_checkpoint(model, tmp_path / "top.safetensors", extra={"train": {"image_size": 64}})
    out = tmp_path / "top.onnx"
    assert main(["export-onnx", str(ckpt), str(out)]) == 0
    eager, fast = load_predictor(str(ckpt), experts=False), load_predictor(str(out), experts=False)
    for i, (h, w) in enumerate([(64, 64), (250, 330)]):  # top 0.1 % of the logits: 1 and 22 values
        rgb = photo(h, w, seed=20 + i)
        a, b = eager.predict_array(rgb), fast.predict_array(rgb)
        np.testing.assert_allclose(b.probability, a.probability, rtol=0, atol=TOL)
        assert abs(b.raw_score - a.raw_score) <= TOL
