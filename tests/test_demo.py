"""`tamperscope demo` end to end with a tiny random checkpoint, its ELA fallback, and the HTML report builder."""
import html
import json
import re

import numpy as np
import pytest
import torch

import tamperscope
from tamperscope.checkpoint import save_checkpoint
from tamperscope.cli import main
from tamperscope.engine import demo as demo_engine
from tamperscope.engine import loading as loading_mod
from tamperscope.errors import UserError
from tamperscope.report.html import HtmlReport, format_value


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = tamperscope.create_model("segformer-b0")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "run", extra={"train": {"image_size": 64}})


def test_demo_end_to_end_then_ela_fallback(tmp_path, run_dir, monkeypatch, capsys):
    if not demo_engine.sample_photos():
        pytest.skip("scikit-image ships no sample photos in this installation")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "2", "--max-side", "128", "--quiet"]
    assert main([*args, "--checkpoint", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    report = out / "report.html"
    assert f"report: {report.resolve()}" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_tampered"] == 2 and metrics["n_authentic"] >= 1
    assert metrics["model"].startswith("segformer-b0") and 0 <= metrics["pixel_f1"] <= 1
    page = report.read_text()
    for text in ("Forgeries", "Authentic photos", "pixel_f1", "ground truth", "heat map"):
        assert text in page
    # what an analyst needs to read it (issue 18): a colour legend, what the score is, what each metric means,
    # bordered images (a white mask region touching the edge stays visible), no promise the method cannot keep
    assert page.count('<div class="legend">') == 2 and "linear-gradient(to right, #000004" in page
    assert "the model's probability, from 0 to 1, that the photo was manipulated" in html.unescape(page)
    assert "<th>meaning</th>" in page and "area under the ROC curve of the image scores" in page
    assert re.search(r"figure img\{[^}]*border:1px solid", page)
    assert "A good model leaves these empty" not in page and "Ideally the heat map stays dark" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 2 * 4 + 3
    assert len(list((out / "predictions").glob("forged-*.overlay.png"))) == 2
    options = json.loads((out / "forgeries" / "summary.json").read_text())["options"]
    assert options["methods"] == ["cvTelea", "cvNS", "exemplar", "splice", "copymove", "pseudoLDM"]  # every kind
    # the sample photos get a camera-like JPEG history at the requested size
    from PIL import Image

    photos = sorted((out / "photos").iterdir())
    assert photos and all(p.suffix == ".jpg" for p in photos)
    assert all(Image.open(p).format == "JPEG" and max(Image.open(p).size) <= 128 for p in photos)

    # no default model installed: the demo says so and uses the weight-free ELA baseline (the forgeries resume)
    monkeypatch.setattr(loading_mod, "default_weights_ref", lambda: tmp_path / "absent.safetensors")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "using the weight-free 'ela' baseline" in captured.err
    assert json.loads((out / "metrics.json").read_text())["model"] == "ela"
    page = report.read_text()
    assert "so it is never empty, on authentic photos too" in page and "Ideally the heat map" not in page


def test_demo_rejects_bad_options(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--n", "0"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "file"), "--checkpoint", "ela"]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("embed", [True, False])
def test_html_report(tmp_path, embed):
    report = HtmlReport("Results <&>", intro="intro text", embed=embed, max_side=32)
    sec = report.section("Images", "two pictures")
    grey = np.zeros((64, 48), np.uint8)
    rgb = np.full((10, 20, 3), 200, np.uint8)
    sec.image_row("row <1>", [("grey", grey), ("rgb", rgb)], caption="caption & more")
    sec.metrics({"pixel_f1": 0.123456, "image_auc": None, "n_images": 3}, keys=["n_images", "pixel_f1", "image_auc"])
    sec.table([{"name": "a", "ok": True}, {"name": "b", "score": 0.5}], title="rows")
    path = report.write(tmp_path / "r.html")
    page = path.read_text()
    assert "Results &lt;&amp;&gt;" in page and "row &lt;1&gt;" in page and "caption &amp; more" in page
    assert "<td class=\"num\">0.1235</td>" in page and "<td>–</td>" in page and "<td>yes</td>" in page
    assert page.index("n_images") < page.index("pixel_f1") < page.index("image_auc")
    if embed:
        assert page.count("data:image/png;base64,") == 2 and not (tmp_path / "r_files").exists()
    else:
        files = sorted((tmp_path / "r_files").iterdir())
        assert len(files) == 2 and all(f"r_files/{f.name}" in page for f in files)
        from PIL import Image

        assert max(Image.open(files[0]).size) == 32  # shrunk to max_side


def test_html_report_rejects_bad_images(tmp_path):
    report = HtmlReport("x")
    report.section("s").image_row("r", [("bad", np.zeros((4, 4), np.float32))])
    with pytest.raises(UserError, match="uint8"):
        report.write(tmp_path / "x.html")
    assert format_value(None) == "–" and format_value(2) == "2" and format_value(0.5) == "0.5000"


def test_forgeries_of_an_older_generator_are_set_aside_not_deleted(tmp_path):
    from tamperscope.data.brgen.pipeline import FORMAT_VERSION, RUN_FILE, STATE_DIR

    folder = tmp_path / "forgeries"
    (folder / STATE_DIR).mkdir(parents=True)
    (folder / STATE_DIR / RUN_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION}))
    assert demo_engine.set_aside_older_forgeries(folder) is None  # the current format resumes in place
    assert folder.is_dir()
    (folder / STATE_DIR / RUN_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION - 1}))
    (folder / "keep.txt").write_text("x")
    moved = tmp_path / f"forgeries.format-{FORMAT_VERSION - 1}"
    assert demo_engine.set_aside_older_forgeries(folder) == moved
    assert not folder.exists() and (moved / "keep.txt").read_text() == "x"
