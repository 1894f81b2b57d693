"""`tamperscope models`: a model whose cost depends on an inference option shows each labelled count."""
import json

import pytest

from tamperscope.cli import main
from tamperscope.commands import models


def test_diffiml_row_shows_gmacs_with_and_without_flip_tta():
    row = models.model_row("diffiml")
    variants = row["gmacs_variants"]
    assert list(variants) == ["flip TTA, default", "no TTA"]
    assert row["gmacs"] == variants["flip TTA, default"]  # the default config runs the flipped copy too
    assert variants["flip TTA, default"] == pytest.approx(2 * variants["no TTA"], rel=1e-6)
    assert variants["no TTA"] == pytest.approx(679.3, abs=0.1)  # docs/MODELS.md's N = 5 count
    cell = models.gmacs_cell(row)
    assert cell.startswith(f"{variants['flip TTA, default']:.1f} (flip TTA, default) / ") and cell.endswith(
        f"{variants['no TTA']:.1f} (no TTA)")


def test_plain_rows_and_the_table(monkeypatch, capsys):
    fake = {"segformer-b0": 3.7, "diffiml": None}

    def row(name, with_gmacs=True):
        out = {"name": name, "params_m": 1.0, "gmacs": fake[name], "stages": [], "paper": "p"}
        if name == "diffiml":
            out["gmacs_variants"] = {"flip TTA, default": 20.0, "no TTA": 10.0}
        return out

    monkeypatch.setattr(models, "model_row", row)
    monkeypatch.setattr("tamperscope.registry.list_models", lambda: list(fake))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "20.0 (flip TTA, default) / 10.0 (no TTA)" in lines[2] and lines[1].split()[2] == "3.7"
    assert main(["models", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[1]["gmacs_variants"] == {"flip TTA, default": 20.0, "no TTA": 10.0}
