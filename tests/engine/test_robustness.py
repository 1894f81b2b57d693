"""Robustness sweeps: level parsing, the CLI end to end (two models, two levels per kind), agreement with
`tamperscope evaluate --perturb`, and one-line errors."""
import json

import numpy as np
import pytest
import tamperscope
from tamperscope.checkpoint import save_checkpoint
from tamperscope.cli import main
from tamperscope.commands.robustness import parse_kinds, parse_levels, sweep_plan
from tamperscope.engine.robustness import DEFAULT_LEVELS, is_identity, unique_labels
from tamperscope.engine.runs import evaluate_source
from tamperscope.errors import UserError

from .synthetic import make_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    data = make_dataset(root / "data", n_tampered=4, n_authentic=2, size=(48, 56))
    run = root / "seg"
    save_checkpoint(tamperscope.create_model("segformer-b0"), run, extra={"train": {"image_size": 64}})
    return root, data / "list.json", run


def test_level_parsing():
    assert parse_kinds(None) == list(DEFAULT_LEVELS)
    assert parse_kinds("jpeg, blur,jpeg") == ["jpeg", "blur"]
    assert parse_levels(["jpeg:90,70", "gamma:1.3"]) == {"jpeg": (90.0, 70.0), "gamma": (1.3,)}
    plan = sweep_plan(["jpeg", "resize"], {"jpeg": (90.0,)})
    assert plan == [("jpeg", 90.0), ("resize", 0.5), ("resize", 0.75), ("resize", 1.0)]
    assert DEFAULT_LEVELS["noise"] == (0, 3, 7, 11, 15, 19, 23) and DEFAULT_LEVELS["jpeg"][-1] == 50
    assert is_identity("blur", 0) and is_identity("gamma", 1.0) and not is_identity("jpeg", 100)
    for bad in (lambda: parse_kinds("jpeg,sharpen"), lambda: parse_levels(["jpeg:150"]),
                lambda: parse_levels(["blur:4"]), lambda: parse_levels(["jpeg"]),
                lambda: sweep_plan(["jpeg"], {"blur": (3.0,)})):
        with pytest.raises(UserError):
            bad()
    assert unique_labels(["x/a/run", "x/b/run", "ela", "ela"]) == ["a/run", "b/run", "ela#1", "ela#2"]


def test_robustness_cli_two_models(setup, capsys):
    root, data, run = setup
    out = root / "out"
    rc = main(["robustness", "--checkpoint", str(run), "ela", "--data", str(data), "--out", str(out),
               "--kinds", "jpeg,noise", "--levels", "jpeg:90,70", "--levels", "noise:0,50", "--device", "cpu",
               "--workers", "0", "--batch-size", "4", "--no-progress"])
    assert rc == 0
    result = json.loads((out / "robustness.json").read_text())
    assert list(result["models"]) == ["seg", "ela"]
    assert result["models"]["seg"]["image_size"] == 64 and result["models"]["ela"]["image_size"] == 512
    for label in ("seg", "ela"):
        per_kind = result["results"][label]
        assert [r["level"] for r in per_kind["jpeg"]] == [90.0, 70.0]
        assert [r["level"] for r in per_kind["noise"]] == [0.0, 50.0]
        assert [r["identity"] for r in per_kind["noise"]] == [True, False]
        for rows in per_kind.values():
            for r in rows:
                assert r["n_images"] == 6 and r["n_tampered"] == 4
                for key in ("pixel_f1", "pixel_iou", "pixel_auc", "image_auc"):
                    assert 0.0 <= r[key] <= 1.0
    ela = result["results"]["ela"]
    # error-level analysis (at the photos' own size) finds the noisy pasted patch on clean PNGs; strong noise hides it
    assert ela["noise"][0]["pixel_f1"] > 0.8
    assert ela["noise"][1]["pixel_f1"] < ela["noise"][0]["pixel_f1"] - 0.1
    for kind in ("jpeg", "noise"):
        png = (out / f"robustness_{kind}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "ela" in capsys.readouterr().out

    # the sweep scores exactly like `evaluate --perturb` (and the identity level like clean evaluation)
    seg = result["results"]["seg"]
    for perturb, row in (("jpeg:70", seg["jpeg"][1]), (None, seg["noise"][0])):
        ref, _ = evaluate_source(checkpoint=str(run), data=str(data), perturb=perturb, device="cpu", workers=0,
                                 batch_size=4, progress=False)
        for key in ("pixel_f1", "pixel_auc", "image_auc"):
            assert np.isclose(row[key], ref[key], atol=1e-6), (perturb, key)


def test_robustness_bad_input(setup, capsys):
    root, data, run = setup
    base = ["robustness", "--data", str(data), "--out", str(root / "bad"), "--device", "cpu", "--workers", "0"]
    assert main(base + ["--checkpoint", str(run), "--levels", "jpeg:150"]) == 2
    assert "jpeg" in capsys.readouterr().err
    assert main(base + ["--checkpoint", str(root / "missing_run"), "--kinds", "jpeg", "--levels", "jpeg:90"]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing_run" in err and len(err.splitlines()) == 1
    assert not (root / "bad" / "robustness.json").exists()
