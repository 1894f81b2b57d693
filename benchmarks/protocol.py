"""One comparison of every registered model under one fixed-budget protocol, re-runnable by anyone.

Every model is trained on the same data (CASIA v1 ``train.json``, plus forgeries from ``tamperscope generate`` with
``--generated DIR``), at the same image size, batch size and step budget, selected on ``val`` (the trainer keeps
the best epoch by the model's selection metric) and reported on ``test`` with ``tamperscope evaluate``. The script
only calls the command line (``tamperscope train`` / ``evaluate``) through ``subprocess``, so the commands it
writes to ``docs/RESULTS.md`` are exactly the ones that ran.

Budgets (:data:`BUDGETS`):
- ``cpu``: 128 px, batch 4, 300 optimisation steps per model (pre-text stages included), validation every 100
  steps on a fixed 64-image subset of val, so that all models run in about an hour on a 2-core machine.
  Heavy defaults are scaled down with ``--set`` (:func:`model_plan`; printed and written to RESULTS.md).
- ``gpu``: 512 px (the papers' size), batch 16, 4000 steps per model, validation every 200 steps on all of val,
  the models' paper configs (only inference-time settings as the papers).

Shared protocol choices (the papers each use their own data and schedules, §4 of each):
- An "epoch" is ``epoch_samples`` images drawn from the training sources (``mix:SRC1,SRC2@N``, the balanced
  protocol: equal draws per source), so that validation — and thus model selection — happens a few times within
  the step budget whatever the dataset size.
- Each model trains with its own default preset (optimizer, learning rate, schedule) and the protocol's batch
  size; the warm-up is 5 % of the model's step budget (``train.warmup_epochs`` in the written YAML), because
  the presets' warm-ups are in epochs of the papers' datasets.
- Multi-stage methods split their budget: diffiml ``lightvae`` → ``denoiser``, diffforensics ``pretrain`` →
  ``finetune``, ifanet ``realness-prior`` (MAE pre-training on authentic photos, BSDS500 train) → ``main``; the
  later stage starts from the earlier run (``--pretrained``).
- ``ela`` has no weights: it is saved as a weight-free checkpoint and evaluated directly.

Usage: ``python benchmarks/protocol.py --budget cpu [--models a,b] [--generated DIR] [--dry-run]``. A run that
was interrupted continues: finished stages and evaluations are skipped, an unfinished training is resumed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path("../shared/data")
sys.path.insert(0, str(REPO / "src"))
from tamperscope.run_folder import RunFolder  # noqa: E402  (the file names of a run folder)


@dataclass(frozen=True)
class Budget:
    image_size: int
    batch_size: int
    steps: int               # optimisation steps per model, all its stages together
    epoch_samples: int       # images per "epoch" (validation after each)
    val_subset: int | None   # validate on this many val images (stratified, seeded); None = all of val
    warmup_share: float      # share of each stage's steps used for linear warm-up
    device: str
    workers: int
    eval_batch_size: int
    skip: tuple[str, ...] = ()  # registered models left out of the default list of this budget
    note: str = ""


BUDGETS = {
    "cpu": Budget(image_size=128, batch_size=4, steps=300, epoch_samples=400, val_subset=64, warmup_share=0.05,
                  device="cpu", workers=1, eval_batch_size=8,
                  skip=("segformer-b1", "segformer-b3", "segformer-b4", "segformer-b5"),
                  note="segformer-b1/b3/b4/b5 are left out of the CPU budget (same family as b0 and b2, too slow on "
                       "2 cores); add them with --models."),
    "gpu": Budget(image_size=512, batch_size=16, steps=4000, epoch_samples=3200, val_subset=None, warmup_share=0.05,
                  device="cuda", workers=8, eval_batch_size=16),
}

#: share of a model's step budget given to its pre-text stage
PRETEXT_SHARE = {"diffiml": 1 / 3, "diffforensics": 1 / 2, "ifanet": 1 / 3}


@dataclass
class Stage:
    """One ``tamperscope train`` call of a model."""
    run: str                       # run folder name under OUT/runs
    steps: int
    stage: str | None = None
    preset: str | None = None
    train: str = "casia"           # "casia" (the training mix) or "photos" (authentic photos, pre-text only)
    pretrained: str | None = None  # run folder name of the previous stage
    sets: list[str] = field(default_factory=list)


@dataclass
class ModelPlan:
    model: str
    stages: list[Stage]
    eval_sets: list[str] = field(default_factory=list)  # inference-time overrides for evaluate
    note: str = ""


def model_plan(model: str, budget_name: str, steps: int, image_size: int) -> ModelPlan:
    """The stages, steps and ``--set`` overrides of one model under a budget (module docstring)."""
    cpu = budget_name == "cpu"
    if model == "ela":
        return ModelPlan(model, [], note="weight-free: evaluated directly")
    if model == "nfavit":
        weights = DATA / "weights" / "noiseprint++" / "noiseprint++.th"
        if (REPO / weights).is_file():
            return ModelPlan(model, [Stage(model, steps, sets=[f"noiseprint_weights={weights}"])],
                             note="real Noiseprint++ weights (GRIP licence, read from ../shared/data)")
        return ModelPlan(model, [Stage(model, steps, sets=["noise_extractor=residual"])],
                         note="Noiseprint++ weights not found: SRM residual noise extractor")
    if model == "diffiml":
        sets = ["ensemble_size=1", "flip_tta=false"] if cpu else []
        first = max(1, round(steps * PRETEXT_SHARE[model]))
        return ModelPlan(model, [Stage("diffiml-lightvae", first, stage="lightvae", preset="lightvae-code", sets=sets),
                                 Stage(model, steps - first, stage="denoiser", pretrained="diffiml-lightvae",
                                       sets=sets)],
                         note="CPU: one ensemble member, no flip TTA (paper: N=5 with flip TTA)" if cpu else "")
    if model == "diffforensics":
        first = max(1, round(steps * PRETEXT_SHARE[model]))
        return ModelPlan(model, [Stage("diffforensics-pretrain", first, stage="pretrain", preset="pretrain"),
                                 Stage(model, steps - first, stage="finetune", pretrained="diffforensics-pretrain")])
    if model == "ifanet":
        sets = ["mae_variant=small", f"mae_input_size={image_size}"] if cpu else []
        first = max(1, round(steps * PRETEXT_SHARE[model]))
        return ModelPlan(model, [Stage("ifanet-realness-prior", first, stage="realness-prior", preset="realness-prior",
                                       train="photos", sets=sets),
                                 Stage(model, steps - first, stage="main", pretrained="ifanet-realness-prior",
                                       sets=sets)],
                         note="CPU: small MAE (192-d, 6 blocks) at the image size (paper: ViT-L/16)" if cpu else "")
    return ModelPlan(model, [Stage(model, steps)])


# ------------------------------------------------------------------------------------------------ commands


def cli_prefix() -> tuple[list[str], str]:
    """(argv prefix that runs the CLI, how it is written in RESULTS.md)."""
    exe = Path(sys.executable).parent / "tamperscope"
    if exe.is_file():
        return [str(exe)], "tamperscope"
    return [sys.executable, "-m", "tamperscope.cli"], "python -m tamperscope.cli"


def write_val_subset(val: str, n: int, out: Path) -> Path:
    """A seeded, stratified subset of a JSON val list (paths made absolute), written once to ``out``."""
    if out.is_file():
        return out
    src = (REPO / val).resolve() if not Path(val).is_absolute() else Path(val)
    items = json.loads(src.read_text())
    for it in items:
        it[0] = str((src.parent / it[0]).resolve())
        if it[1] != "Negative":
            it[1] = str((src.parent / it[1]).resolve())
    rng = random.Random(0)
    fake = [it for it in items if it[1] != "Negative"]
    real = [it for it in items if it[1] == "Negative"]
    n_fake = min(len(fake), max(1, round(n * len(fake) / max(1, len(items)))))
    chosen = rng.sample(fake, n_fake) + rng.sample(real, min(len(real), n - n_fake))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(chosen, indent=0))
    return out


def train_sources(args) -> list[str]:
    sources = [args.train_data]
    if args.generated:
        gen = Path(args.generated)
        sources.append(str(gen / "train.json") if (gen / "train.json").is_file() else str(gen))
    return sources


def build_commands(args, budget: Budget, models: list[str], out: Path) -> list[dict]:
    """Every step as ``{"model", "kind" (train/eval/ela), "run", "argv" (display form, relative to the repo)}``."""
    image_size, steps, bs = args.image_size or budget.image_size, args.steps or budget.steps, \
        args.batch_size or budget.batch_size
    sources = train_sources(args)
    per_source = max(1, (args.epoch_samples or budget.epoch_samples) // len(sources))
    train_spec = f"mix:{','.join(sources)}@{per_source}"
    epoch_steps = max(1, -(-per_source * len(sources) // bs))
    val = str(out / "val_subset.json") if budget.val_subset else args.val_data
    device = args.device or budget.device
    yaml_file = out / "protocol_train.yaml"
    steps_list = []
    for model in models:
        plan = model_plan(model, args.budget, steps, image_size)
        if not plan.stages:
            run = out / "runs" / model
            code = ("from tamperscope import create_model; from tamperscope.checkpoint import save_checkpoint; "
                    f"save_checkpoint(create_model({json.dumps(model)}), {json.dumps(str(run))}, "
                    f"extra={{\"train\": {{\"image_size\": {image_size}}}}})")
            steps_list.append({"model": model, "kind": "ela", "run": str(run), "argv": ["python", "-c", code],
                               "note": plan.note})
        for st in plan.stages:
            run = out / "runs" / st.run
            epochs = max(1, -(-st.steps // epoch_steps))
            data = train_spec if st.train == "casia" else f"mix:{args.photos}@{per_source * len(sources)}"
            argv = ["train", model, "--train", data, "--val", val, "--out", str(run), "--image-size", str(image_size),
                    "--batch-size", str(bs), "--accum", "1", "--max-steps", str(st.steps), "--epochs", str(epochs),
                    "--config", str(yaml_file), "--device", device, "--workers", str(budget.workers),
                    "--no-progress"]
            if st.stage:
                argv += ["--stage", st.stage]
            if st.preset:
                argv += ["--preset", st.preset]
            if st.pretrained:
                argv += ["--pretrained", str(out / "runs" / st.pretrained)]
            for s in st.sets:
                argv += ["--set", s]
            steps_list.append({"model": model, "kind": "train", "run": str(run), "argv": argv, "stage": st.stage,
                               "steps": st.steps, "note": plan.note})
        final = out / "runs" / model
        argv = ["evaluate", "--checkpoint", str(final), "--data", args.test_data, "--out",
                str(out / "metrics" / f"{model}.json"), "--batch-size", str(budget.eval_batch_size), "--device",
                device, "--workers", str(budget.workers)]
        for s in plan.eval_sets:
            argv += ["--set", s]
        steps_list.append({"model": model, "kind": "eval", "run": str(final), "argv": argv, "note": plan.note})
    return steps_list


def display(step: dict, prefix_text: str) -> str:
    argv = step["argv"]
    if step["kind"] == "ela":
        return " ".join(shlex.quote(a) for a in argv)
    return prefix_text + " " + " ".join(shlex.quote(a) for a in argv)


def step_done(step: dict, out: Path) -> bool:
    run = RunFolder(step["run"])
    if step["kind"] == "ela":
        return run.config_file.is_file()
    if step["kind"] == "eval":
        return (out / "metrics" / f"{step['model']}.json").is_file()
    return run.exists() and run.read_state().get("finished", False)


def run_step(step: dict, prefix: list[str], out: Path) -> tuple[int, float, str]:
    """Run one step (resuming an unfinished training); returns (exit code, seconds, log path)."""
    argv = list(step["argv"])
    if step["kind"] == "ela":
        argv = [sys.executable] + argv[1:]
    else:
        if step["kind"] == "train" and RunFolder(step["run"]).exists():
            argv.append("--resume")
        argv = prefix + argv
    log = out / "logs" / f"{Path(step['run']).name}-{step['kind']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(shlex.quote(a) for a in argv)}\n")
        fh.flush()
        rc = subprocess.call(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return rc, time.perf_counter() - t0, str(log)


def last_line(log: str) -> str:
    lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------------------------------------ report


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    text = f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def write_results(path: Path, args, budget: Budget, steps_list: list[dict], log: dict, prefix_text: str,
                  out: Path, total_s: float) -> None:
    from tamperscope.report.compare import COMPARE_METRICS, to_markdown

    test = Path(args.test_data)
    test_name = f"{test.parent.name}/{test.stem}" if test.suffix == ".json" else test.name
    results, rows = {}, []
    models = list(dict.fromkeys(s["model"] for s in steps_list))
    for model in models:
        mine = [s for s in steps_list if s["model"] == model]
        info = [log.get(display(s, prefix_text), {}) for s in mine]
        train_s = sum(i.get("seconds", 0.0) for s, i in zip(mine, info) if s["kind"] in ("train", "ela"))
        eval_s = sum(i.get("seconds", 0.0) for s, i in zip(mine, info) if s["kind"] == "eval")
        failed = [f"{Path(s['run']).name} {s['kind']}: {i['error']}" for s, i in zip(mine, info) if i.get("error")]
        metrics_file = out / "metrics" / f"{model}.json"
        if metrics_file.is_file():
            results[model] = {test_name: json.loads(metrics_file.read_text())}
        best = []
        for s in mine:
            run = RunFolder(s["run"])
            if s["kind"] == "train" and run.exists():
                b = run.read_state().get("best") or {}
                if b.get("value") is not None:
                    best.append(f"{s.get('stage') or 'train'}: {b['metric']} {b['value']:.4f} @ step {b['step']}")
        stages = " → ".join(f"{s.get('stage') or 'train'} {s['steps']}" for s in mine if s["kind"] == "train")
        rows.append(f"| {model} | {stages or '–'} | {'; '.join(best) or '–'} | {train_s / 60:.1f} | "
                    f"{eval_s / 60:.1f} | {'; '.join(failed) or mine[0].get('note') or ''} |")
    image_size = args.image_size or budget.image_size
    lines = ["# Results of the fixed-budget protocol", "",
             f"Written by `benchmarks/protocol.py --budget {args.budget}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", f"- Machine: {machine()}", f"- Total wall time: {total_s / 60:.1f} min",
             f"- Budget `{args.budget}`: image {image_size} px, batch {args.batch_size or budget.batch_size}, "
             f"{args.steps or budget.steps} optimisation steps per model (pre-text stages included), "
             f"{args.epoch_samples or budget.epoch_samples} images per epoch (validation after each), "
             f"warm-up {budget.warmup_share:.0%} of the step budget, device {args.device or budget.device}.",
             f"- Train: {', '.join(train_sources(args))} (balanced mix); val: {args.val_data}"
             + (f" (seeded stratified subset of {budget.val_subset} images)" if budget.val_subset else "")
             + f"; test: {args.test_data}. Selection on val, numbers on test.",
             "- Metrics: IMDL-BenCo / TruFor definitions at threshold 0.5, per-image pixel metrics averaged over tampered "
             "images; "
             "`pixel_f1_best` is the per-image oracle threshold.",
             ]
    if budget.note and not args.models:
        lines.append(f"- {budget.note}")
    lines += ["", "## Test metrics", "", to_markdown(results, COMPARE_METRICS) if results else "(no model finished)",
              "", "## Runs", "", "| model | stages (steps) | best on val | train (min) | test eval (min) | notes |",
              "|---|---|---|---:|---:|---|", *rows, "", "## Exact commands", "",
              f"Run from the repository root. `{out / 'protocol_train.yaml'}` holds:", "", "```yaml",
              (out / "protocol_train.yaml").read_text().rstrip(), "```", "", "```sh"]
    lines += [display(s, prefix_text) for s in steps_list]
    lines += ["```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), required=True)
    p.add_argument("--models", help="comma-separated subset (default: every registered model of the budget)")
    p.add_argument("--generated", help="output folder of `tamperscope generate` to add to the training data")
    p.add_argument("--device", help="override the budget's device (cpu, cuda)")
    p.add_argument("--out", help="working folder (default runs/protocol-<budget>)")
    p.add_argument("--results", default="docs/RESULTS.md", help="Markdown report to write")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument("--train-data", default=str(DATA / "casia1" / "train.json"))
    p.add_argument("--val-data", default=str(DATA / "casia1" / "val.json"))
    p.add_argument("--test-data", default=str(DATA / "casia1" / "test.json"))
    p.add_argument("--photos", default=str(DATA / "authentic" / "bsds500" / "train"),
                   help="authentic photos for label-free pre-text stages (ifanet realness-prior)")
    p.add_argument("--steps", type=int, help="override the budget's steps per model")
    p.add_argument("--image-size", type=int, help="override the budget's image size")
    p.add_argument("--batch-size", type=int, help="override the budget's batch size")
    p.add_argument("--epoch-samples", type=int, help="override the budget's images per epoch")
    p.add_argument("--val-subset", type=int, help="override the budget's val subset size (0 = all of val)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    budget = BUDGETS[args.budget]
    if args.val_subset:
        budget = Budget(**{**budget.__dict__, "val_subset": args.val_subset})
    elif args.val_subset == 0:
        budget = Budget(**{**budget.__dict__, "val_subset": None})
    sys.path.insert(0, str(REPO / "src"))
    from tamperscope.registry import list_models

    registered = list_models()
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in registered]
        if unknown:
            print(f"protocol: unknown model '{unknown[0]}'; registered: {', '.join(registered)}", file=sys.stderr)
            return 2
    else:
        models = [m for m in registered if m not in budget.skip]
    out = Path(args.out or f"runs/protocol-{args.budget}")
    steps_list = build_commands(args, budget, models, out)
    prefix, prefix_text = cli_prefix()
    stage_steps = args.steps or budget.steps
    warmup_epochs = budget.warmup_share * stage_steps * (args.batch_size or budget.batch_size) \
        / (args.epoch_samples or budget.epoch_samples)
    yaml_text = (f"# written by benchmarks/protocol.py --budget {args.budget}\n"
                 f"train:\n  warmup_epochs: {warmup_epochs:.4g}\n")
    print(f"budget {args.budget}: {', '.join(models)}")
    for model, note in dict((s["model"], s.get("note")) for s in steps_list).items():
        if note:
            print(f"  {model}: {note}")
    if args.dry_run:
        print(f"# {out / 'protocol_train.yaml'}:\n" + "".join(f"#   {ln}\n" for ln in yaml_text.splitlines()))
        for s in steps_list:
            print(display(s, prefix_text))
        return 0
    if budget.val_subset:
        write_val_subset(args.val_data, budget.val_subset, out / "val_subset.json")
    (out / "protocol_train.yaml").parent.mkdir(parents=True, exist_ok=True)
    (out / "protocol_train.yaml").write_text(yaml_text)
    log_file = out / "protocol_log.json"
    log = json.loads(log_file.read_text()) if log_file.is_file() else {}
    failed_models: set[str] = set()
    t_start = time.perf_counter()
    for i, step in enumerate(steps_list, 1):
        key = display(step, prefix_text)
        if step["model"] in failed_models:
            continue
        if step_done(step, out):
            print(f"[{i}/{len(steps_list)}] done already: {key}")
            continue
        print(f"[{i}/{len(steps_list)}] {key}", flush=True)
        rc, seconds, log_path = run_step(step, prefix, out)
        entry = {"seconds": log.get(key, {}).get("seconds", 0.0) + seconds, "rc": rc, "log": log_path}
        if rc:
            entry["error"] = last_line(log_path)
            failed_models.add(step["model"])
            print(f"    failed ({rc}) after {seconds:.0f} s: {entry['error']} (log {log_path})", flush=True)
        else:
            print(f"    ok in {seconds:.0f} s", flush=True)
        log[key] = entry
        log_file.write_text(json.dumps(log, indent=1))
    total = time.perf_counter() - t_start + log.get("__total__", {}).get("seconds", 0.0)
    log["__total__"] = {"seconds": total}
    log_file.write_text(json.dumps(log, indent=1))
    write_results(Path(args.results), args, budget, steps_list, log, prefix_text, out, total)
    print(f"results written to {args.results}")
    return 1 if failed_models else 0


if __name__ == "__main__":
    sys.exit(main())
