"""The model contract (ARCHITECTURE.md, "The model contract"; models/base.py), checked on every registered model at
its registry ``tiny_config`` and 64 px, in the manner of segmentation_models_pytorch's ``tests/models/base.py``: a new
model gets these tests without writing them. Its own test file checks what is particular to it."""
import json

import numpy as np
import pytest
import torch

from tamperscope.checkpoint import load_checkpoint, save_checkpoint
from tamperscope.errors import UserError
from tamperscope.models.base import TamperModel
from tamperscope.nn.error_level import to_uint8_rgb
from tamperscope.registry import create_model, get_entry, list_models, signature_config

SIZE = 64
MODELS = list_models()
# the full-size SegFormer variants have no smaller config (their size is what tells them apart)
LARGE = {"segformer-b2", "segformer-b3", "segformer-b4", "segformer-b5"}
PARAMS = [pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name for name in MODELS]
# models without noise_mit_weights announce their trained noise branch (nfavit); not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:nfavit. no noise_mit_weights")


def tiny(name: str, **overrides) -> TamperModel:
    return create_model(name, **(get_entry(name).tiny_config | overrides))


def batch(height: int = SIZE, width: int = SIZE) -> dict:
    """One forged image (a brighter rectangle, its mask and edge band) and one authentic image."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 1, height, width)
    mask[0, :, height // 4: height // 2, width // 4: 3 * width // 4] = 1
    edge = torch.nn.functional.max_pool2d(mask, 3, 1, 1) - (-torch.nn.functional.max_pool2d(-mask, 3, 1, 1))
    image = torch.randn(2, 3, height, width, generator=g) * 0.5 + mask
    return {"image": image, "mask": mask, "edge": edge, "label": torch.tensor([1.0, 0.0]), "index": torch.arange(2)}


def outputs(model: TamperModel, image: torch.Tensor) -> dict:
    torch.manual_seed(0)  # diffusion models draw their starting noise
    with torch.no_grad():
        return model.eval()(image)


def check_outputs(out: dict, b: int, h: int, w: int) -> None:
    assert out["mask_logits"].shape == (b, 1, h, w)
    assert out["image_logit"].shape == (b,)
    assert bool(torch.isfinite(out["mask_logits"]).all()) and bool(torch.isfinite(out["image_logit"]).all())


@pytest.mark.parametrize("name", PARAMS)
def test_forward_returns_the_contract_outputs(name):
    model = tiny(name)
    check_outputs(outputs(model, batch()["image"]), 2, SIZE, SIZE)
    probs, scores = model.predict_probabilities(batch()["image"])
    assert probs.shape == (2, 1, SIZE, SIZE) and scores.shape == (2,)
    assert bool(((probs >= 0) & (probs <= 1)).all()) and bool(((scores >= 0) & (scores <= 1)).all())


@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("hw", [(SIZE, SIZE + 32), (SIZE + 32, SIZE)])
def test_non_square_inputs_keep_their_size(name, hw):
    """Native-resolution photos are padded to multiples of 32 but rarely square; the map keeps the input's size."""
    check_outputs(outputs(tiny(name), batch(*hw)["image"]), 2, *hw)


@pytest.mark.parametrize("name", PARAMS)
def test_every_stage_trains(name):
    """Forward and backward of each training stage: a finite total loss whose gradient reaches the trainable
    parameters. Models without parameters say they are not trainable, in one line."""
    entry = get_entry(name)
    if not any(True for _ in tiny(name).parameters()):
        with pytest.raises(UserError, match="not trainable"):
            tiny(name).training_step(batch())
        return
    for stage in entry.stages or (None,):
        model = tiny(name, **({"stage": stage} if stage else {}))
        if model.stages:
            model.set_stage(stage)
        model.train()
        losses = model.training_step(batch())
        assert "total" in losses and bool(torch.isfinite(losses["total"])), (stage, losses)
        losses["total"].backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert trainable and any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable), stage
        grouped = [p for group in model.param_groups(0.01) for p in group["params"]]
        assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}


@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("layout", ["model.safetensors", "run"])
def test_save_load_round_trip(name, layout, tmp_path):
    """A checkpoint (single file or run folder) rebuilds the same model: config, weights and outputs."""
    model = tiny(name)
    with torch.no_grad():  # weights off their initial values, so that a load that did nothing would show
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    back = load_checkpoint(save_checkpoint(model, tmp_path / layout))
    assert type(back) is type(model) and back.model_name == name and back.config == model.config
    theirs = back.state_dict()
    assert theirs.keys() == model.state_dict().keys()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    image = batch()["image"]
    a, b = outputs(model, image), outputs(back, image)
    assert torch.equal(a["mask_logits"], b["mask_logits"]) and torch.equal(a["image_logit"], b["image_logit"])


@pytest.mark.parametrize("name", PARAMS)
def test_config_round_trip(name):
    """``model.config`` is JSON, holds only registered keys, and rebuilds a model of the same shape and config, with
    or without reading the weight files it names."""
    model = tiny(name)
    config = json.loads(json.dumps(model.config))
    assert set(config) <= set(get_entry(name).default_config) | set(model.resolved_config())
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for again in (create_model(name, **config), create_model(name, weight_files=False, **config)):
        assert again.config == model.config  # weight_files=False: as a checkpoint or `train --resume` rebuilds it
        assert {k: v.shape for k, v in again.state_dict().items()} == shapes


@pytest.mark.parametrize("name", PARAMS)
def test_declared_hooks(name):
    """The optional hooks answer with the types the engine expects (models/base.py)."""
    model = tiny(name)
    req = model.data_requirements()
    assert req.get("edge") in (None, "band", "canny") and req.get("augment", "full") in ("full", "no_forgery", "flips")
    key, mode = model.selection_metric()
    assert isinstance(key, str) and mode in ("max", "min")
    assert isinstance(model.native_resolution, bool) and isinstance(model.resolved_config(), dict)
    assert all(callable(getattr(model, part)) for part in model.compile_parts)
    assert tuple(model.stages) == get_entry(name).stages


@pytest.mark.parametrize("name", PARAMS)
def test_the_constructor_defaults_and_their_json_form_build_the_same_model(name):
    """The registry hands a model its keyword defaults as JSON (tuples as lists): the constructor must build the
    same model from either form (at the tiny config, with the values this registered name sets apart)."""
    entry = get_entry(name)
    own = signature_config(entry.cls)
    given = {k: v for k, v in entry.default_config.items() if v != own[k]} | entry.tiny_config
    torch.manual_seed(0)
    direct = entry.cls(**given).state_dict()
    torch.manual_seed(0)
    registered = tiny(name).state_dict()
    assert direct.keys() == registered.keys() and all(torch.equal(v, registered[k]) for k, v in direct.items())


@pytest.mark.parametrize("name", PARAMS)
def test_any_photo_size_gives_a_map_of_that_size(name):
    """``predict`` on a photo whose sides are not multiples of 32: resized to the model's input (or, for a
    native-resolution model, padded at its own size) and the map brought back to the photo's size."""
    from tamperscope.engine.predict import Predictor

    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    pred = Predictor(tiny(name).eval(), SIZE, torch.device("cpu"), name).predict_array(rgb)
    assert pred.probability.shape == (50, 70) and 0.0 <= pred.score <= 1.0
    assert bool(((pred.probability >= 0) & (pred.probability <= 1)).all())


@pytest.mark.parametrize("name", PARAMS)
def test_a_model_that_reads_pixels_gives_forward_its_photo_logits(name):
    """``photo_logits`` (the experts' direct path in ``predict``) and ``forward`` agree on the same photo."""
    model = tiny(name).eval()
    image = batch()["image"][:1]
    direct = model.photo_logits(to_uint8_rgb(image)[0])
    if direct is None:  # a learned model: no pixel path
        return
    out = outputs(model, image)
    np.testing.assert_allclose(out["mask_logits"][0, 0].numpy(), direct[0], atol=1e-5)
    assert out["image_logit"][0].item() == pytest.approx(direct[1], abs=1e-5)
