"""One vocabulary across the commands (issue 18): every option has help, help never cites files users do not
have, `--no-progress` is the one name for hiding progress, models are given the same way to robustness and compare,
and warnings print as one line without Python's file and line."""
import argparse
import subprocess
import sys

import pytest

from tamperscope.cli import build_parser

#: commands that run long enough to show progress
LONG_COMMANDS = ("compare", "demo", "evaluate", "export", "generate", "predict", "profile", "robustness",
                 "synthesize", "train")


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_that_cites_no_internal_file():
    missing, internal = [], []
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(label)
            elif any(word in action.help for word in ("SEED-SPECS", "ARCHITECTURE", "DEVELOPING", ".md")):
                internal.append(f"{label}: {action.help}")
    assert not missing, f"options without help: {missing}"
    assert not internal, f"help citing files users do not have: {internal}"


def test_no_progress_everywhere_and_old_names_still_work():
    subs = _subparsers()
    for name in LONG_COMMANDS:
        options = {o for a in subs[name]._actions for o in a.option_strings}
        assert "--no-progress" in options, name
    predict = subs["predict"].parse_args(["x.jpg", "--quiet"])  # deprecated alias, same meaning
    assert predict.no_progress is True
    assert subs["demo"].parse_args(["--quiet"]).no_progress is True
    assert subs["serve"].parse_args(["--quiet"]).no_request_log is True
    assert not any("--quiet" in a.option_strings and "deprecated" not in (a.help or "")
                   for sub in subs.values() for a in sub._actions)


def test_evaluate_checkpoint_help_names_ela():
    action = next(a for a in _subparsers()["evaluate"]._actions if "--checkpoint" in a.option_strings)
    assert "ela" in action.help and "default" in action.help


@pytest.mark.parametrize("command", ["robustness", "compare"])
def test_robustness_and_compare_take_models_the_same_way(command):
    sub = _subparsers()[command]
    common = ["--data", "d.json", "--out", "o"]
    positional = sub.parse_args(["a", "b", *common])
    flag = sub.parse_args(["--checkpoint", "a", "b", *common])
    mixed = sub.parse_args(["a", "--checkpoint", "b", *common])
    from tamperscope.commands._common import model_specs

    assert model_specs(positional) == model_specs(flag) == model_specs(mixed) == ["a", "b"]


def test_warnings_print_as_one_line_without_python_file_and_line(tmp_path):
    script = ("import warnings, tamperscope.commands.models as m\n"
              "m.run = lambda args: warnings.warn('something odd', UserWarning) or 0\n"
              "from tamperscope.cli import main\n"
              "raise SystemExit(main(['models']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "tamperscope models: warning: something odd\n"


def test_profile_shows_its_stages_unless_no_progress(capsys):
    from tamperscope.cli import main

    args = ["profile", "segformer-b0", "--image-size", "64", "--iters", "1", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "segformer-b0: counting GMACs" in captured.err and "timing batch 1" in captured.err
    assert '"params_m"' in captured.out
    assert main([*args, "--no-progress"]) == 0
    assert "counting GMACs" not in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["predict", "x.png", "--image-size", "100"],
    ["evaluate", "--checkpoint", "ela", "--data", "d.json", "--image-size", "100"],
    ["compare", "ela", "--data", "d.json", "--out", "o", "--image-size", "100"],
    ["robustness", "ela", "--data", "d.json", "--out", "o", "--image-size", "100"],
    ["train", "segformer-b0", "--train", "d.json", "--out", "o", "--image-size", "100"],
    ["profile", "ela", "--image-size", "100"],
])
def test_one_image_size_rule_before_any_work(argv, tmp_path, monkeypatch, capsys):
    """Every command checks --image-size with the one rule (tamperscope.sizes.check_image_size) first."""
    from tamperscope.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tamperscope {argv[0]}: error: --image-size must be a positive multiple of 32, got 100"


@pytest.mark.parametrize("command, options, by_name", [
    ("train", "tamperscope.engine.train:TrainOptions",
     {"accum", "batch_size", "clip_grad", "compile", "device", "epochs", "image_size", "log_every", "lr", "max_steps",
      "model", "on_mismatch", "out", "preset", "pretrained", "resume", "save_every", "seed", "stage", "train", "val",
      "workers"}),
    ("generate", "tamperscope.data.brgen:GenerateOptions",
     {"area_bins", "area_policy", "backend", "clip_min_score", "device", "inpaint_steps", "jpeg_quality", "max_side",
      "methods", "model_dirs", "n", "out", "photos", "regions", "retries", "seed", "shard", "workers"}),
])
def test_flags_passed_to_the_options_by_name_are_the_known_ones(command, options, by_name):
    """`train` and `generate` fill their options dataclass from the argparse fields of the same name: a new flag
    (or a new options field) that shares a name with the other side would be passed on without anyone choosing
    to. This list makes that a decision."""
    import importlib
    from dataclasses import fields

    module, name = options.split(":")
    names = {f.name for f in fields(getattr(importlib.import_module(module), name))}
    dests = {action.dest for action in _subparsers()[command]._actions}
    assert dests & names == by_name
