"""Experts fused with a learned model (engine/experts.py) in predict and in dataset evaluation."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tamperscope.checkpoint import read_checkpoint_config, save_checkpoint
from tamperscope.inference import model_probabilities
from tamperscope.engine.experts import (FIRED_SCALE, ExpertFusion, attach_experts, build_experts, evidence_names,
                                       expert_maps)
from tamperscope.engine.predict import load_predictor, verdict_line
from tamperscope.errors import UserError
from tamperscope.nn.norm import imagenet_normalize
from tamperscope.registry import create_model

SMALL = {"min_area": 300, "min_distance": 30, "max_jump": 32, "min_pixels": 0}
REFERENCE = {"authentic_scores": [0.01, 0.02, 0.3], "tampered_scores": [0.6, 0.9]}


@pytest.fixture()
def fused_checkpoint(tmp_path):
    torch.manual_seed(0)
    plain = save_checkpoint(create_model("ela-unet", widths=[4, 8]), tmp_path / "plain.safetensors")
    out = tmp_path / "fused.safetensors"
    attach_experts(plain, out, {"copymove": {"config": SMALL, "image": REFERENCE}})
    return plain, out


def test_attach_keeps_the_weights_and_names_the_experts(fused_checkpoint):
    plain, fused = fused_checkpoint
    assert read_checkpoint_config(fused)["experts"]["copymove"]["config"] == SMALL
    assert "experts" not in read_checkpoint_config(plain)
    a, b = (load_predictor(p).model.state_dict() for p in (plain, fused))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_attach_refuses_to_replace_its_input_and_unknown_experts(fused_checkpoint, tmp_path):
    plain, _ = fused_checkpoint
    with pytest.raises(UserError, match="must not replace"):
        attach_experts(plain, plain, {"copymove": {}})
    with pytest.raises(UserError, match="unknown expert"):
        attach_experts(plain, tmp_path / "x.safetensors", {"nope": {}})
    with pytest.raises(UserError, match="needs weights"):
        build_experts({"segformer-b0": {}}, "x")


def test_predict_fuses_the_copy_move_expert_and_says_which_fired(fused_checkpoint, copy_move):
    _, fused = fused_checkpoint
    predictor = load_predictor(fused)
    assert list(predictor.experts) == ["copymove"] and "copymove" in predictor.name
    image, gt = copy_move.forged()
    pred = predictor.predict_array(image)
    row = pred.to_dict()
    assert set(row["experts"]) == {"ela-unet", "copymove"} and "copymove" in row["fired"]
    assert row["findings"] == {"copymove": create_model("copymove").finding} and "copied" in row["findings"]["copymove"]
    assert f"copymove — {row['findings']['copymove']}" in verdict_line(row)  # the analyst reads what it means
    assert pred.score == max(pred.experts.values()) > 0.5 and pred.verdict == "tampered"
    assert pred.mask[gt].mean() > 0.7  # both copies drawn
    assert pred.false_alarm_rate == 0.0  # the expert's own validation scores give the rate


def test_without_experts_the_learned_model_answers_alone(fused_checkpoint, copy_move):
    _, fused = fused_checkpoint
    alone = load_predictor(fused, experts=False)
    assert alone.experts == {}
    image, _ = copy_move.forged()
    assert "experts" not in alone.predict_array(image).to_dict()


def test_an_authentic_photo_fires_no_expert(fused_checkpoint, copy_move):
    _, fused = fused_checkpoint
    pred = load_predictor(fused).predict_array(copy_move.texture(seed=5))
    assert "copymove" not in pred.fired and pred.experts["copymove"] < 0.5
    assert pred.score == pred.experts["ela-unet"]  # the learned model decides


def test_fusion_model_halves_the_learned_map_where_an_expert_fires(copy_move):
    torch.manual_seed(0)
    learned = create_model("ela-unet", widths=[4, 8]).eval()
    expert = create_model("copymove", **SMALL)
    fusion = ExpertFusion(learned, {"copymove": (expert, None)}).eval()
    batch = np.stack([copy_move.forged()[0], copy_move.texture(seed=5)])  # the expert fires on the first only
    x = imagenet_normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
    p, s = model_probabilities(fusion, x)
    (pl, sl), (pe, se) = model_probabilities(learned, x), model_probabilities(expert, x)
    assert se[0] > 0.5 >= se[1]
    torch.testing.assert_close(p[0], torch.maximum(pl[0] * FIRED_SCALE, pe[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(p[1], torch.maximum(pl[1], pe[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(s, torch.maximum(sl, se), atol=1e-5, rtol=0)
    assert fusion.native_resolution and fusion.model_name == "ela-unet+copymove"


def test_predict_draws_only_the_expert_regions_when_it_fires(fused_checkpoint, copy_move):
    _, fused = fused_checkpoint
    image, _ = copy_move.forged()
    pred = load_predictor(fused).predict_array(image)
    alone = load_predictor(fused, experts=False).predict_array(image)
    expert_prob, _ = expert_maps(load_predictor(fused).experts, image, torch.device("cpu"))["copymove"]
    np.testing.assert_allclose(pred.probability, np.maximum(alone.probability * FIRED_SCALE, expert_prob), atol=1e-6)
    np.testing.assert_array_equal(pred.mask, expert_prob > 0.5)


def _logit(p):
    return torch.logit(torch.as_tensor(p, dtype=torch.float32), eps=1e-6)


def test_an_evidence_expert_adds_its_logits_and_never_decides(double_jpeg, tmp_path):
    torch.manual_seed(0)
    plain = save_checkpoint(create_model("ela-unet", widths=[4, 8]), tmp_path / "plain.safetensors")
    fused = tmp_path / "dq.safetensors"
    attach_experts(plain, fused, {"doublejpeg": {"config": {"weight": 2.0}}})
    predictor = load_predictor(fused)
    assert evidence_names(predictor.experts) == {"doublejpeg"}
    image, mask = double_jpeg.spliced()
    pred = predictor.predict_array(image)
    alone = load_predictor(fused, experts=False).predict_array(image)
    evidence, _ = expert_maps(predictor.experts, image, torch.device("cpu"))["doublejpeg"]
    expected = torch.sigmoid(_logit(alone.probability) + _logit(evidence)).numpy()
    np.testing.assert_allclose(pred.probability, expected, atol=1e-5)
    assert pred.probability[mask].mean() > alone.probability[mask].mean()  # the pasted region is raised
    assert pred.probability[~mask].mean() < alone.probability[~mask].mean()  # the double-compressed rest lowered
    assert pred.score == alone.score and set(pred.experts) == {"ela-unet"}  # it never decides the verdict
    assert "doublejpeg" not in pred.to_dict()["fired"]


def test_fusion_model_adds_evidence_before_the_clone_rule(copy_move, double_jpeg):
    torch.manual_seed(0)
    learned = create_model("ela-unet", widths=[4, 8]).eval()
    clone, evidence = create_model("copymove", **SMALL), create_model("doublejpeg", weight=2.0)
    fusion = ExpertFusion(learned, {"doublejpeg": (evidence, None), "copymove": (clone, None)}).eval()
    batch = np.stack([copy_move.forged()[0], copy_move.texture(seed=5)])
    for i in range(2):  # saved as JPEG twice, so that the evidence expert has a lattice to read
        batch[i] = double_jpeg.jpeg(double_jpeg.jpeg(batch[i], 60), 90)
    x = imagenet_normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
    p, s = model_probabilities(fusion, x)
    (pl, sl), (pc, sc), (pe, _) = (model_probabilities(m, x) for m in (learned, clone, evidence))
    assert sc[0] > 0.5 >= sc[1] and (pe != 0.5).any()
    shifted = torch.sigmoid(_logit(pl) + _logit(pe))
    torch.testing.assert_close(p[0], torch.maximum(shifted[0] * FIRED_SCALE, pc[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(p[1], torch.maximum(shifted[1], pc[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(s, torch.maximum(sl, sc), atol=1e-5, rtol=0)  # evidence leaves the score alone


def test_the_jpeg_lattice_expert_decides_on_a_decoded_jpeg_edited_and_kept_lossless(double_jpeg, tmp_path):
    torch.manual_seed(0)
    plain = save_checkpoint(create_model("ela-unet", widths=[4, 8]), tmp_path / "plain.safetensors")
    fused = tmp_path / "lattice.safetensors"
    attach_experts(plain, fused, {"jpeglattice": {"image": REFERENCE}})
    predictor = load_predictor(fused)
    image, mask = double_jpeg.lossless_edit()
    pred = predictor.predict_array(image)
    assert "jpeglattice" in pred.to_dict()["fired"] and pred.verdict == "tampered"
    assert "decoded from a JPEG" in pred.to_dict()["findings"]["jpeglattice"]
    assert pred.score == pred.experts["jpeglattice"] > 0.5 and pred.false_alarm_rate == 0.0
    drawn = pred.mask
    assert (drawn & mask).sum() / (drawn | mask).sum() > 0.7  # the pasted region, not the learned map's guesses
    authentic = predictor.predict_array(double_jpeg.jpeg(double_jpeg.photo_like(4), 75))
    assert "jpeglattice" not in authentic.fired and authentic.experts["jpeglattice"] < 0.5
    assert authentic.to_dict()["findings"] == {} and "jpeglattice" not in verdict_line(authentic.to_dict())


@pytest.mark.parametrize("name, config", [("copymove", SMALL), ("doublejpeg", {"weight": 2.0}), ("jpeglattice", {})])
def test_experts_read_the_photo_directly_with_the_tensor_paths_result(name, config, copy_move, double_jpeg):
    """expert_maps gives a pixel-reading expert the photo itself (photo_logits), skipping the normalised tensor;
    the maps and scores are those of the contract's tensor path."""
    expert = create_model(name, **config).eval()
    photo = copy_move.forged()[0] if name == "copymove" else double_jpeg.lossless_edit()[0]
    if name == "doublejpeg":
        photo = double_jpeg.spliced()[0]
    prob, score = expert_maps({name: (expert, None)}, photo, torch.device("cpu"))[name]
    x = imagenet_normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    probs, scores = model_probabilities(expert, x)
    np.testing.assert_allclose(prob, probs[0, 0].numpy(), atol=1e-6)
    assert score == pytest.approx(float(scores[0]), abs=1e-6) and 0.0 < score < 1.0


class ShapeRecorder(torch.nn.Module):
    """A weight-free stand-in expert that records the size of every input it is given."""

    def __init__(self, expert):
        super().__init__()
        self.expert, self.sizes = expert, []
        self.evidence, self.calibration, self.input_multiple = expert.evidence, None, expert.input_multiple

    def forward(self, image):
        self.sizes.append(tuple(image.shape[-2:]))
        return self.expert(image)


def test_dataset_evaluation_pads_for_the_learned_model_and_never_for_the_experts(double_jpeg, tmp_path):
    """``evaluate`` pads a photo of 229×243 to 256×256 by edge replication for the learned model; the experts read
    the photo itself (``input_multiple`` 1): padded blocks lie on no lattice and would fire the lattice expert on
    an authentic decoded JPEG (what happened before), and would enter the double-JPEG estimates."""
    from tamperscope.data.datasets import load_dataset_spec
    from tamperscope.engine.evaluate import evaluation_dataset, iterate_maps

    photo = double_jpeg.jpeg(double_jpeg.photo_like(4), 75)[:229, :243]
    Image.fromarray(photo).save(tmp_path / "a.png")
    (tmp_path / "list.json").write_text(json.dumps([["a.png", "Negative"]]))
    torch.manual_seed(0)
    model = create_model("ela-unet", widths=[4, 8])
    learned = ShapeRecorder(model)  # input_multiple 32, as the model's
    lattice, evidence = ShapeRecorder(create_model("jpeglattice")), ShapeRecorder(create_model("doublejpeg"))
    fusion = ExpertFusion(model, {"jpeglattice": (lattice, None), "doublejpeg": (evidence, None)}).eval()
    fusion.model = learned  # the fusion's learned model, recorded
    dataset = evaluation_dataset(fusion, load_dataset_spec(str(tmp_path / "list.json")), 64)
    (_, prob, gt, _, _, _), = iterate_maps(fusion, dataset, progress=False)
    assert learned.sizes == [(256, 256)] and lattice.sizes == evidence.sizes == [(229, 243)]
    assert prob.shape == gt.shape == (229, 243)
    padded = np.pad(photo, ((0, 256 - 229), (0, 256 - 243), (0, 0)), mode="edge")
    expert = create_model("jpeglattice")
    assert expert.detect(padded)[1] > 0 > expert.detect(photo)[1]  # the padding alone would fire it
