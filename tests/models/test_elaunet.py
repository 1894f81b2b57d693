"""ela-unet, the default model: contract, error-level input, parameter count, it learns a JPEG splice, and the
engine trains it on grid-aligned crops and validates/predicts at native resolution."""
import json

import cv2
import numpy as np
import pytest
import torch

import tamperscope
from tamperscope.checkpoint import read_checkpoint_config
from tamperscope.cli import main
from tamperscope.data.transforms import jpeg_roundtrip
from tamperscope.errors import UserError
from tamperscope.nn.error_level import error_level
from tamperscope.models.elaunet import with_context
from tamperscope.nn.norm import imagenet_normalize


def _x(rgb: np.ndarray) -> torch.Tensor:
    return imagenet_normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)


def _splice(rng, size=64):
    """A JPEG (q 85) photo with a never-compressed patch on an off-grid position; mask = the patch."""
    base = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (0, 0), 1.2)
    image = jpeg_roundtrip(base, 85)
    h, w = rng.integers(size // 4, size // 2, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    donor = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (0, 0), 1.2)
    image[y:y + h, x:x + w] = donor[y:y + h, x:x + w]
    mask = np.zeros((size, size), bool)
    mask[y:y + h, x:x + w] = True
    return image, mask


def test_contract_parameter_count_and_odd_sizes():
    model = tamperscope.create_model("ela-unet").eval()
    assert sum(p.numel() for p in model.parameters()) == 1_103_137  # 4.4 MB as float32
    assert model.native_resolution
    out = model(imagenet_normalize(torch.rand(2, 3, 64, 96)))
    assert out["mask_logits"].shape == (2, 1, 64, 96) and out["image_logit"].shape == (2,)
    torch.testing.assert_close(out["image_logit"], out["mask_logits"].flatten(1).amax(1))
    from tamperscope.engine.profile import meta_complexity

    assert meta_complexity("ela-unet")["gmacs"] == pytest.approx(6.414, abs=1e-3)  # 512×512, as `profile` on CPU
    small = tamperscope.create_model("ela-unet", widths=[8, 16, 32]).eval()
    assert small(imagenet_normalize(torch.rand(1, 3, 40, 56)))["mask_logits"].shape == (1, 1, 40, 56)


def test_input_is_rgb_plus_error_levels():
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    model = tamperscope.create_model("ela-unet", qualities=[90, 60], error_scale=4.0)
    feats = model.features(_x(rgb))
    assert feats.shape == (1, 9, 32, 48)
    torch.testing.assert_close(feats[:, :3], _x(rgb))
    for k, q in enumerate((90, 60)):
        ref = torch.from_numpy(error_level(rgb, q) / 4.0).permute(2, 0, 1)
        torch.testing.assert_close(feats[0, 3 + 3 * k:6 + 3 * k], ref)
    assert model.stem[0].in_channels == 9
    with_map = tamperscope.create_model("ela-unet", ela_map=True)
    feats = with_map.features(_x(rgb))
    assert feats.shape == (1, 10, 32, 48) and with_map.stem[0].in_channels == 10
    ela = tamperscope.create_model("ela")
    torch.testing.assert_close(feats[:, 9:], ela(_x(rgb))["level_map"])
    assert float(feats[:, 9:].max()) == 1.0  # relative to the photo's own 99.5th percentile


def test_ela_prior_starts_from_the_ela_baseline():
    rgb = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    model = tamperscope.create_model("ela-unet", ela_map=True, ela_prior=True, widths=[8, 16]).eval()
    ela = tamperscope.create_model("ela")
    with torch.no_grad():
        ours, base = model.predict_probabilities(_x(rgb))[0], ela.predict_probabilities(_x(rgb))[0]
    torch.testing.assert_close(ours, base)


@pytest.mark.parametrize("cfg, msg", [({"qualities": [0]}, "qualities"), ({"widths": [8]}, "widths"),
                                      ({"error_scale": 0}, "error_scale"), ({"ela_prior": True}, "needs ela_map")])
def test_bad_config(cfg, msg):
    with pytest.raises(UserError, match=msg):
        tamperscope.create_model("ela-unet", **cfg)


def test_learns_a_jpeg_splice():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = tamperscope.create_model("ela-unet", widths=[8, 16, 32])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(60):
        pairs = [_splice(rng) for _ in range(4)]
        batch = {"image": torch.cat([_x(p[0]) for p in pairs]),
                 "mask": torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.float32))}
        loss = model.training_step(batch)
        assert set(loss) == {"total", "bce", "dice"}
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        first = first if first is not None else float(loss["total"].detach())
    model.eval()
    image, mask = _splice(np.random.default_rng(99))
    with torch.no_grad():
        prob = torch.sigmoid(model(_x(image))["mask_logits"])[0, 0].numpy()
    assert float(loss["total"].detach()) < 0.8 * first
    assert prob[mask].mean() > prob[~mask].mean() + 0.2


def test_engine_trains_on_crops_and_predicts_at_native_size(tmp_path):
    rng = np.random.default_rng(1)
    for sub in ("Tp", "Gt"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(4):
        image, mask = _splice(rng, 80)
        image, mask = image[:, :72], mask[:, :72]  # 80×72: crops of 64 need padding on no side, 2 corners
        cv2.imwrite(str(tmp_path / "data" / "Tp" / f"t{i}.png"), image[..., ::-1])
        cv2.imwrite(str(tmp_path / "data" / "Gt" / f"t{i}_gt.png"), mask.astype(np.uint8) * 255)
    run = tmp_path / "run"
    assert main(["train", "ela-unet", "--train", str(tmp_path / "data"), "--val", str(tmp_path / "data"),
                 "--out", str(run), "--image-size", "64", "--batch-size", "2", "--epochs", "1", "--workers", "0",
                 "--device", "cpu", "--no-progress", "--set", "widths=[8,16]"]) == 0
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert len(val) == 1 and val[0]["n_images"] == 4 and val[0]["pixel_f1"] is not None
    photo = str(tmp_path / "data" / "Tp" / "t0.png")
    pred = tamperscope.predict(photo, checkpoint=str(run))
    assert pred.probability.shape == (80, 72)
    # `export`: one self-describing file that predicts the same and remembers the recipe and the val scores
    single = tmp_path / "model.safetensors"
    assert main(["export", str(run), str(single)]) == 0
    cfg = read_checkpoint_config(single)
    assert cfg["model"] == "ela-unet" and cfg["extra"]["train"]["image_size"] == 64
    assert cfg["extra"]["val"]["epoch"] == 0 and cfg["extra"]["val"]["n_images"] == 4
    np.testing.assert_array_equal(tamperscope.predict(photo, checkpoint=str(single)).probability, pred.probability)
    assert main(["export", str(run), str(tmp_path / "model.pt")]) == 2
    assert main(["export", str(run), str(run / "model.safetensors")]) == 2  # never over the run's own weights
    # --calibrate: the operating points best on the given (validation) data become the model's 0.5; the image
    # threshold needs authentic photos too
    (tmp_path / "au").mkdir()
    cv2.imwrite(str(tmp_path / "au" / "a0.png"), jpeg_roundtrip(_splice(rng, 80)[0], 85)[..., ::-1])
    val = tmp_path / "val.json"
    val.write_text(json.dumps([[f"data/Tp/t{i}.png", f"data/Gt/t{i}_gt.png"] for i in range(4)]
                              + [["au/a0.png", "Negative"]]))
    for flags in ([], ["--weights", "last"]):
        calibrated = tmp_path / f"calibrated{len(flags)}.safetensors"
        assert main(["export", str(run), str(calibrated), "--calibrate", str(val), "--device", "cpu",
                     "--no-progress", *flags]) == 0
        cal = read_checkpoint_config(calibrated)["calibration"]
        assert cal["mode"] == "absolute"
        assert cal["pixel_f1"] == pytest.approx(max(cal["pixel_f1_by_threshold"]), abs=1e-6)
        assert cal["pixel_f1"] >= cal["pixel_f1_at_0.5"]
        assert (len(cal["image"]["authentic_scores"]), len(cal["image"]["tampered_scores"])) == (1, 4)
        out = tmp_path / "m.json"
        assert main(["evaluate", "--checkpoint", str(calibrated), "--data", str(val), "--out", str(out),
                     "--device", "cpu", "--workers", "0"]) == 0
        assert json.loads(out.read_text())["pixel_f1"] == pytest.approx(cal["pixel_f1"], abs=1e-4)
        assert tamperscope.load_checkpoint(calibrated).calibration == cal


def test_calibrated_maps():
    """p > t becomes > 0.5, the same on every photo (absolute, never relative to the photo)."""
    from tamperscope.inference import calibrate_map

    prob = torch.rand(2, 1, 20, 30, generator=torch.Generator().manual_seed(0))
    prob = prob * torch.tensor([1.0, 0.2]).view(2, 1, 1, 1)  # the second photo's map is 5× dimmer
    assert torch.equal(calibrate_map(prob, None), prob)
    shifted = calibrate_map(prob, {"mode": "absolute", "threshold": 0.3})
    assert torch.equal(shifted > 0.5, prob > 0.3)
    assert torch.equal(shifted.diff(dim=-1).sign(), prob.diff(dim=-1).sign())  # the ranking is kept


def test_global_context_compares_each_photo_with_itself():
    from tamperscope.models.elaunet import with_context

    x = torch.randn(2, 3, 16, 24) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 7.0
    y = with_context(x)
    torch.testing.assert_close(y[:, :3], x)
    torch.testing.assert_close(y[:, 3:].mean((2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, 3:].std((2, 3), unbiased=False), torch.ones(2, 3), atol=1e-3, rtol=0)
    # a photo compressed twice as hard overall looks the same relative to itself
    torch.testing.assert_close(with_context(2 * x + 3)[:, 3:], y[:, 3:], atol=1e-4, rtol=1e-4)
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    model = tamperscope.create_model("ela-unet", global_context=True)
    feats = model.features(_x(rgb))
    assert feats.shape == (1, 3 + 2 * 6, 32, 48) and model.stem[0].in_channels == 15
    torch.testing.assert_close(feats[:, 3:9], tamperscope.create_model("ela-unet").features(_x(rgb))[:, 3:])


def test_srm_residuals_match_a_reference_filter():
    from tamperscope.models.elaunet import SRM_KERNELS

    rgb = np.random.default_rng(3).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    model = tamperscope.create_model("ela-unet", residual=True, residual_scale=2.0)
    feats = model.features(_x(rgb))
    assert feats.shape[1] == 3 + 6 + 3 and model.stem[0].in_channels == 12
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    for k, kernel in enumerate(SRM_KERNELS):  # correlation with replicated borders, /scale, truncated to ±3
        ref = cv2.filter2D(grey, -1, kernel, borderType=cv2.BORDER_REPLICATE) / 2.0
        np.testing.assert_allclose(feats[0, 9 + k].numpy(), np.clip(ref, -3, 3), atol=2e-3)
    flat = np.full((16, 16, 3), 128, np.uint8)
    assert float(model.residuals(_x(flat)).abs().max()) < 1e-4  # no residual on a flat photo


def test_detection_head_is_trained_on_the_image_label():
    torch.manual_seed(0)
    model = tamperscope.create_model("ela-unet", global_context=True, detection_head=True, widths=[8, 16],
                                     cls_weight=0.25)
    x = imagenet_normalize(torch.rand(2, 3, 32, 32))
    out = model(x)
    assert out["image_logit"].shape == (2,)
    assert not torch.equal(out["image_logit"], out["mask_logits"].flatten(1).amax(1))
    batch = {"image": x, "mask": torch.zeros(2, 1, 32, 32), "label": torch.tensor([1.0, 0.0])}
    terms = model.training_step(batch)
    assert set(terms) == {"total", "bce", "dice", "cls"}
    torch.testing.assert_close(terms["total"], terms["bce"] + terms["dice"] + 0.25 * terms["cls"])
    terms["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


def test_top_pooling_is_steady_across_photo_sizes_where_maxima_grow():
    """head_pooling "top": on statistically identical photos of 64² and 1024² positions, the pooled statistics move
    far less than the maxima of head_pooling "max" (the reason for the option: a head trained on windows must not
    read a large photo as suspicious), while a forged patch of 2 % of the photo still raises every statistic."""
    pooled = {}
    for name in ("max", "top"):
        model = tamperscope.create_model("ela-unet", global_context=True, detection_head=True, widths=[4, 8],
                                         head_pooling=name)
        small, large = (model.pooled(torch.randn(1, 16, s, s, generator=torch.Generator().manual_seed(s)),
                                     torch.randn(1, 1, 4 * s, 4 * s, generator=torch.Generator().manual_seed(s + 1)))
                        for s in (8, 256))
        pooled[name] = (small, large)
        assert small.shape == large.shape == (1, 2 * 16 + 2)
    drift = {name: (large - small)[0, 16:].abs().mean().item() for name, (small, large) in pooled.items()}
    assert drift["top"] < 0.35 * drift["max"], drift
    model = tamperscope.create_model("ela-unet", global_context=True, detection_head=True, widths=[4, 8],
                                     head_pooling="top")
    bottom, half = torch.randn(1, 16, 64, 64), torch.randn(1, 1, 256, 256)
    forged_bottom, forged_half = bottom.clone(), half.clone()
    forged_bottom[..., :9, :9] += 3.0  # 2 % of the positions
    forged_half[..., :36, :36] += 3.0
    before, after = model.pooled(bottom, half)[0, 16:], model.pooled(forged_bottom, forged_half)[0, 16:]
    assert bool((after > before + 1.0).all())


def test_head_pooling_is_checked_and_max_is_the_former_head():
    with pytest.raises(UserError, match="head_pooling must be one of max, top"):
        tamperscope.create_model("ela-unet", detection_head=True, head_pooling="mean")
    torch.manual_seed(0)
    model = tamperscope.create_model("ela-unet", global_context=True, detection_head=True, widths=[4, 8]).eval()
    x = imagenet_normalize(torch.rand(1, 3, 64, 96))
    with torch.no_grad():
        out = model(x)
        grabbed = {}
        model.out.register_forward_hook(lambda m, i, o: grabbed.__setitem__("half", o))
        model.down[-1].register_forward_hook(lambda m, i, o: grabbed.__setitem__("bottom", o))
        model(x)
        bottom, flat = with_context(grabbed["bottom"]), grabbed["half"].flatten(1)
        k = max(1, flat.shape[1] // 100)
        former = torch.cat([bottom.mean((2, 3)), bottom.amax((2, 3)), flat.amax(1, keepdim=True),
                            flat.topk(k, dim=1).values.mean(1, keepdim=True)], 1)
    torch.testing.assert_close(out["image_logit"], model.head(former).squeeze(1), rtol=0, atol=0)
