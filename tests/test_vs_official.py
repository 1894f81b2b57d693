"""benchmarks/vs_official.py and its helpers in benchmarks/ab_timing.py: the paired-ratio maths, the interleaved
order, the refusal to time a pair whose parameter counts differ, skipped pairs and the one-line errors for bad
official folders. The official code itself is not needed, except by the last test, which runs the NFA-ViT pair at a
tiny size when ``TAMPERSCOPE_BRGEN_REPO`` names a checkout of clpbc/BR-Gen (skipped otherwise)."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ab():
    return _load("ab_timing", REPO / "benchmarks" / "ab_timing.py")


@pytest.fixture(scope="module")
def vs(ab):
    return _load("tamperscope_vs_official", REPO / "benchmarks" / "vs_official.py")


def test_paired_ratio_is_the_median_of_per_round_ratios(ab):
    ours, theirs = [1.0, 2.0, 9.0], [2.0, 2.0, 3.0]
    assert ab.paired_ratio(ours, theirs) == pytest.approx(1.0)  # ratios 0.5, 1.0, 3.0
    assert ab.median(ours) / ab.median(theirs) == pytest.approx(1.0)
    assert ab.paired_ratio([1.0, 4.0], [2.0, 2.0]) == pytest.approx(1.25)  # ratios 0.5, 2.0
    with pytest.raises(ValueError):
        ab.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        ab.paired_ratio([], [])


def test_interleaved_alternates_order_and_drops_warmup(ab):
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = ab.interleaved(fns, rounds=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def _fake_pair(vs, ours_out: int, official_out: int, called: list):
    def build(args):
        return vs.Pair("fake", torch.nn.Linear(4, ours_out), torch.nn.Linear(4, official_out))

    def rows(pair, x, batch):
        pair.rows.append(vs.Row("fake row", lambda: called.append("ours"), lambda: called.append("official"),
                                lambda: called.append("ours train"), lambda: called.append("official train")))
    return build, rows


def test_pair_with_different_parameter_counts_is_not_timed(vs, monkeypatch):
    called = []
    monkeypatch.setitem(vs.BUILDERS, "segformer", _fake_pair(vs, 3, 5, called))
    args = vs.parse_args(["--pairs", "segformer", "--iters", "2", "--infer-size", "8", "--train-size", "8"])
    report = vs.run(args)
    assert called == []
    (row,) = report["rows"]
    assert (row["params_ours"], row["params_official"], row["params_equal"]) == (15, 25, False)
    assert "inference" not in row and "not timed" in row["note"]
    assert "ours 15 vs official 25" in vs.markdown(report)


def test_pair_with_equal_counts_is_timed_interleaved(vs, monkeypatch):
    called = []
    monkeypatch.setitem(vs.BUILDERS, "segformer", _fake_pair(vs, 3, 3, called))
    args = vs.parse_args(["--pairs", "segformer", "--iters", "2", "--warmup", "1", "--infer-size", "8",
                          "--train-size", "8"])
    report = vs.run(args)
    assert called.count("ours") == called.count("official") == 3  # warm-up + 2 rounds
    assert called.count("ours train") == called.count("official train") == 3
    (row,) = report["rows"]
    assert row["params"].startswith("yes")
    assert len(row["inference"]["ours_s"]) == 2 and row["train"]["paired_ratio"] > 0
    assert "| fake row | yes" in vs.markdown(report)


class _WithDeadWeight(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(3, 1)
        self.dead = torch.nn.Parameter(torch.ones(5))

    def forward(self, image):
        return self.used(image.mean(dim=(2, 3))).mean()


def test_declared_unused_official_parameters_are_checked_and_left_out(vs):
    batch = vs.data(8, 2, 0)
    official = _WithDeadWeight()
    pair = vs.Pair("fake", torch.nn.Linear(3, 1), official, official_unused=("dead",),
                   official_loss=lambda b: official(b["image"]))
    assert vs.verify_unused(pair, batch) == 5
    assert vs.parity(4, 9, 5, ("dead",))[0] and not vs.parity(4, 9)[0]
    assert "5 parameters its forward never uses (dead)" in vs.parity(4, 9, 5, ("dead",))[1]
    pair.official_unused = ("used.weight",)  # a parameter the forward does use must not be left out
    with pytest.raises(vs.PairError, match="used.weight are used by its forward"):
        vs.verify_unused(pair, batch)
    pair.official_unused = ("nope",)
    with pytest.raises(vs.PairError, match="no trainable parameter nope"):
        vs.verify_unused(pair, batch)


def test_pairs_without_a_folder_are_skipped(vs):
    report = vs.run(vs.parse_args(["--pairs", "frdnet", "nfavit", "diffiml"]))
    assert report["rows"] == []
    assert report["skipped"] == ["frdnet: skipped, no --frdnet-repo given", "nfavit: skipped, no --brgen-repo given",
                                 "diffiml: skipped, no --diffiml-repo given"]


def test_bad_folders_give_one_line_naming_the_folder(vs, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit, match=f"--brgen-repo {missing}: no such folder"):
        vs.check_folders(vs.parse_args(["--brgen-repo", str(missing)]))
    with pytest.raises(SystemExit, match=f"--diffiml-repo {tmp_path}: not a checkout .*diffiml.py"):
        vs.check_folders(vs.parse_args(["--diffiml-repo", str(tmp_path)]))


def test_unimportable_official_code_is_reported_and_the_run_goes_on(vs, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m.split(".")[0] == "IMDLBenCo"]:
        monkeypatch.delitem(sys.modules, name)
    (tmp_path / "IMDLBenCo" / "model_zoo" / "diffiml").mkdir(parents=True)
    (tmp_path / "IMDLBenCo" / "model_zoo" / "diffiml" / "diffiml.py").write_text("import no_such_module_here\n")
    try:
        report = vs.run(vs.parse_args(["--pairs", "diffiml", "--diffiml-repo", str(tmp_path)]))
    finally:  # the folder's namespace package must not outlive the test
        for name in [m for m in sys.modules if m.split(".")[0] == "IMDLBenCo"]:
            del sys.modules[name]
    assert report["rows"] == []
    (line,) = report["skipped"]
    assert line.startswith(f"diffiml: not measured: --diffiml-repo {tmp_path}: importing")
    assert "no_such_module_here" in line


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TAMPERSCOPE_BRGEN_REPO"),
                    reason="TAMPERSCOPE_BRGEN_REPO (a clpbc/BR-Gen checkout) not set")
def test_nfavit_pair_against_the_official_code(vs):
    pytest.importorskip("einops")  # the official MiT imports it
    args = vs.parse_args(["--pairs", "nfavit", "--brgen-repo", os.environ["TAMPERSCOPE_BRGEN_REPO"], "--iters", "1",
                          "--warmup", "0", "--infer-size", "64", "--train-size", "64", "--threads", "1"])
    report = vs.run(args)
    (row,) = report["rows"]
    assert row["params_equal"] and row["params_ours"] == row["params_official"] - row["params_official_unused"], row
    assert row["params_official_unused"] == 1024  # its decoder's γ5 and γ6
    assert row["inference"]["paired_ratio"] > 0 and row["train"]["paired_ratio"] > 0


def test_model_file_is_imported_without_the_package_inits_above_it(vs, tmp_path):
    """IMDL-BenCo's package __init__ imports its whole training stack: only the model file's own imports run."""
    sub = tmp_path / "zoo_pkg" / "sub"
    sub.mkdir(parents=True)
    (tmp_path / "zoo_pkg" / "__init__.py").write_text("raise ImportError('the whole training stack')\n")
    (sub / "__init__.py").write_text("raise ImportError('every other model')\n")
    (sub / "helper.py").write_text("VALUE = 3\n")
    (sub / "model.py").write_text("from IMDLBenCo.registry import MODELS\nfrom .helper import VALUE\n\n\n"
                                  "@MODELS.register_module()\nclass Net:\n    size = VALUE\n")
    saved_path = list(sys.path)
    had_registry = {m: sys.modules[m] for m in list(sys.modules) if m.split(".")[0] == "IMDLBenCo"}
    try:
        module = vs.import_model_file(str(tmp_path), "zoo_pkg.sub.model", "--x-repo")
        assert module.Net.size == 3  # the stand-in registry returned the class unchanged
        (sub / "broken.py").write_text("import no_such_module_here\n")
        with pytest.raises(vs.PairError, match=f"--x-repo {tmp_path}: importing zoo_pkg.sub.broken failed"):
            vs.import_model_file(str(tmp_path), "zoo_pkg.sub.broken", "--x-repo")
    finally:
        sys.path[:] = saved_path
        for name in [m for m in sys.modules if m.split(".")[0] in ("zoo_pkg", "IMDLBenCo")]:
            del sys.modules[name]
        sys.modules.update(had_registry)


def test_profile_lists_each_sides_largest_operators(vs, monkeypatch):
    a, b = torch.randn(64, 64), torch.randn(64, 64)

    def build(args):
        return vs.Pair("fake", torch.nn.Linear(4, 3), torch.nn.Linear(4, 3))

    def rows(pair, x, batch):
        pair.rows.append(vs.Row("fake row", lambda: a @ b, lambda: torch.sigmoid(a) + b))
    monkeypatch.setitem(vs.BUILDERS, "segformer", (build, rows))
    report = vs.run(vs.parse_args(["--pairs", "segformer", "--iters", "1", "--warmup", "0", "--profile", "2"]))
    profile = report["rows"][0]["inference"]["profile"]
    assert "aten::mm" in profile["ours"]["ops"] and "aten::sigmoid" in profile["official"]["ops"]
    assert "aten::mm" not in profile["official"]["ops"] and len(profile["ours"]["ops"]) <= 2
    assert profile["ours"]["total_ms"] >= profile["ours"]["ops"]["aten::mm"][0] > 0
    text = vs.markdown(report)
    assert "Where the time goes" in text and "| `aten::mm` |" in text and "| `aten::sigmoid` | — |" in text


def test_a_row_whose_code_fails_is_reported_and_the_run_goes_on(vs, monkeypatch):
    def build(args):
        return vs.Pair("fake", torch.nn.Linear(4, 3), torch.nn.Linear(4, 3))

    def fails():
        raise RuntimeError("Sizes of tensors must match\nmore detail")

    def rows(pair, x, batch):
        pair.rows.append(vs.Row("failing row", lambda: None, fails))
        pair.rows.append(vs.Row("good row", lambda: None, lambda: None))
    monkeypatch.setitem(vs.BUILDERS, "segformer", (build, rows))
    report = vs.run(vs.parse_args(["--pairs", "segformer", "--iters", "1", "--warmup", "0"]))
    failing, good = report["rows"]
    assert "inference" not in failing and failing["note"] == "not timed: RuntimeError: Sizes of tensors must match"
    assert good["inference"]["ratio"] > 0
    assert "| failing row | yes" in vs.markdown(report)
