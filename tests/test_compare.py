"""`tamperscope compare`: the table logic (mean row, best in bold, lower-is-better EER, missing values), dataset
naming, and the command end to end (two models × two datasets) agreeing with `evaluate`."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import tamperscope
from tamperscope.checkpoint import save_checkpoint
from tamperscope.cli import main
from tamperscope.commands.compare import parse_named_data
from tamperscope.engine.runs import evaluate_source
from tamperscope.errors import UserError
from tamperscope.report.compare import mean_over_datasets, pick_examples, table_rows, to_html, to_markdown

from engine import synthetic


def make_dataset(root: Path, n_tampered: int = 3, n_authentic: int = 1, size=(48, 56), seed: int = 0) -> Path:
    """The engine tests' synthetic forgeries; returns their IMDL-BenCo ``list.json``."""
    return synthetic.make_dataset(root, n_tampered, n_authentic, size, seed) / "list.json"


RESULTS = {
    "A": {"d1": {"pixel_f1": 0.5, "image_auc": 0.9, "image_eer": 0.2},
          "d2": {"pixel_f1": 0.3, "image_auc": None, "image_eer": None}},
    "B": {"d1": {"pixel_f1": 0.7, "image_auc": 0.8, "image_eer": 0.1},
          "d2": {"pixel_f1": 0.3, "image_auc": None, "image_eer": None}},
}


def test_table_mean_and_bold():
    metrics = ("pixel_f1", "image_auc", "image_eer")
    mean = mean_over_datasets(RESULTS, metrics)
    assert mean["A"]["pixel_f1"] == pytest.approx(0.4) and mean["B"]["pixel_f1"] == pytest.approx(0.5)
    assert mean["A"]["image_auc"] == pytest.approx(0.9)  # the dataset without authentic images is left out
    rows = {(name, model): bold for name, model, _, bold in table_rows(RESULTS, metrics)}
    assert list(rows) == [("d1", "A"), ("d1", "B"), ("d2", "A"), ("d2", "B"), ("mean", "A"), ("mean", "B")]
    assert rows[("d1", "B")] == {"pixel_f1", "image_eer"}  # lower EER is better
    assert rows[("d1", "A")] == {"image_auc"}
    assert rows[("d2", "A")] == rows[("d2", "B")] == set()  # all equal or missing: nothing stands out
    md = to_markdown(RESULTS, metrics)
    assert "| d1 | B | **0.700** | 0.800 | **0.100** |" in md
    assert "| d2 | A | 0.300 | – | – |" in md
    assert "| mean | B | **0.500** |" in md
    page = to_html(RESULTS, metrics, notes=["<script>"], grid_png=b"\x89PNG")
    assert "<b>0.700</b>" in page and "&lt;script&gt;" in page and "data:image/png;base64," in page


def test_named_data_and_examples(tmp_path):
    data = make_dataset(tmp_path / "casia")
    assert parse_named_data(["x=a.json", str(data)]) == {"x": "a.json", "casia": str(data)}
    with pytest.raises(UserError):
        parse_named_data(["x=a.json", "x=b.json"])
    from tamperscope.data.datasets import load_records

    records = load_records(data)
    picked = pick_examples(records, 2)
    assert len(picked) == 2 and all(r.mask is not None for r in picked) and picked[0] != picked[1]
    assert pick_examples(records, 0) == []


def test_compare_cli(tmp_path, capsys):
    d1 = make_dataset(tmp_path / "set1", seed=1)
    d2 = make_dataset(tmp_path / "set2", seed=2)
    run = tmp_path / "seg"
    save_checkpoint(tamperscope.create_model("segformer-b0"), run, extra={"train": {"image_size": 64}})
    out = tmp_path / "cmp"
    rc = main(["compare", str(run), "ela", "--data", f"one={d1}", f"two={d2}", "--out", str(out), "--examples", "1",
               "--device", "cpu", "--workers", "0", "--batch-size", "4", "--no-progress"])
    assert rc == 0
    payload = json.loads((out / "compare.json").read_text())
    assert list(payload["results"]) == ["seg", "ela"] and list(payload["datasets"]) == ["one", "two"]
    ref, _ = evaluate_source(checkpoint=str(run), data=str(d2), device="cpu", workers=0, batch_size=4, progress=False)
    for key in ("pixel_f1", "pixel_auc", "pixel_f1_permuted", "image_auc"):
        assert payload["results"]["seg"]["two"][key] == pytest.approx(ref[key], abs=1e-6)
    assert payload["mean"]["ela"]["pixel_f1"] == pytest.approx(
        np.mean([payload["results"]["ela"][d]["pixel_f1"] for d in ("one", "two")]))
    md = (out / "compare.md").read_text()
    assert md.count("\n") == 2 + 3 * 2 and "| mean | ela |" in md and "**" in md
    page = (out / "compare.html").read_text()
    assert "data:image/png;base64," in page and "<b>" in page
    grid = cv2.imread(str(out / "examples.png"))
    assert grid is not None and grid.shape[1] > 1.3 * grid.shape[0]  # 2 rows (one per dataset) × 4 columns
    assert "| one | seg |" in capsys.readouterr().out


def test_compare_bad_input(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    assert main(["compare", "ela", "--data", str(data), "--out", str(tmp_path / "o"), "--metrics", "pixel_f2"]) == 2
    assert "pixel_f2" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope"), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err


def test_profile_markdown_table():
    """`profile --markdown`: measured values beside the papers' numbers; literature-only methods as reference rows."""
    from tamperscope.commands.profile import markdown_table

    rows = [{"model": "frdnet", "params_m": 39.8, "gmacs": 1.37, "latency_ms": 12.5, "images_per_s": 80.0,
             "best_batch_size": 4, "peak_mem_mb": 900.0},
            {"model": "segformer-b0", "params_m": 3.7, "gmacs": None, "latency_ms": 2.0, "images_per_s": 500.0,
             "best_batch_size": 2, "peak_mem_mb": 300.0}]
    md = markdown_table(rows, 128, "cpu")
    assert "| frdnet | 39.80 | 39.00 | 1.4 | 25.6 | 12.5 | 80.00 (4) | 900 | FRD-Net Table 2 |" in md
    assert "| segformer-b0 | 3.70 | – | – | – |" in md
    assert "| SparseViT (paper only) | – | 50.30 |" in md
    assert "diffiml" not in md  # implemented here but not measured in this call: no paper-only row
