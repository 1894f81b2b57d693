"""Training engine: runs end to end, resumes exactly after SIGKILL, DDP ranks agree, NaN stops clearly."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tamperscope
from tamperscope.cli import main
from tamperscope.data.transforms import FLIPS_ONLY, AugmentConfig
from tamperscope.engine.train import (TrainOptions, Trainer, default_preset, lr_at, resolve_train_config, run_schedule,
                                      schedule_steps)
from tamperscope.errors import UserError
from tamperscope.registry import get_entry

from .synthetic import make_dataset

CLI = [sys.executable, "-m", "tamperscope.cli"]
TINY = ["--image-size", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress",
        "--lr", "1e-3"]


def _final_weights(run: Path) -> dict:
    state = json.loads((run / "trainer_state.json").read_text())
    return load_file(str(run / state["checkpoint"] / "model.safetensors"))


def test_lr_schedule():
    assert lr_at(0, 100, 10, 1.0, 0.0, "cosine") == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.0, "cosine") == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.0, "cosine") == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(50, 100, 0, 1.0, 0.0, "constant") == 1.0


def test_max_steps_lays_the_schedule_over_the_step_budget():
    """A 20-step run of segformer-b0's preset (100 epochs, 2 warm-up) reaches the peak LR, not 2 % of warm-up."""
    cfg = resolve_train_config(TrainOptions(model="segformer-b0", train="x", out="y"), get_entry("segformer-b0"), {})
    assert (cfg["epochs"], cfg["warmup_epochs"], cfg["lr"]) == (100, 2, 1e-4)
    total, warmup = schedule_steps(cfg | {"max_steps": 20}, steps_per_epoch=50)
    assert (total, warmup) == (20, 0)  # the warm-up keeps its 2 % share: 0.4 steps
    peak = max(lr_at(s, total, warmup, cfg["lr"], cfg["min_lr"], cfg["schedule"]) for s in range(total))
    assert peak == pytest.approx(1e-4)
    assert lr_at(total - 1, total, warmup, 1e-4, 0.0, "cosine") < 1e-6  # the decay ends with the run
    assert schedule_steps(cfg | {"max_steps": 1000}, 50) == (1000, 20)  # 2 of 100 epochs → 2 % of 1000 steps
    assert schedule_steps(cfg | {"max_steps": 10_000}, 50) == (5000, 100)  # not binding: the recipe as is
    assert schedule_steps(cfg | {"max_steps": None}, 50) == (5000, 100)
    # a new run stores its schedule; a resumed one reuses it, and one saved before it was stored keeps the
    # unscaled warm-up it was trained with
    new = cfg | {"max_steps": 1000}
    assert run_schedule(new, 50, resumed=False) == (1000, 20)
    assert (new["total_steps"], new["warmup_steps"]) == (1000, 20)
    assert run_schedule(new | {"max_steps": 10}, 60, resumed=True) == (1000, 20)
    assert run_schedule(cfg | {"max_steps": 1000}, 50, resumed=True) == (1000, 100)


def test_max_steps_schedule_in_a_run_and_warm_up_warning(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_tampered=6, n_authentic=2)  # 8 images, batch 2: 4 steps per epoch
    run = tmp_path / "run"
    # 3 epochs = 12 steps with 2 warm-up epochs (8 steps); --max-steps 6 → warm-up 8·6/12 = 4 steps
    assert main(["train", "segformer-b0", "--train", str(data), "--out", str(run), "--epochs", "3", "--max-steps",
                 "6", "--log-every", "1", *TINY]) == 0
    out = capsys.readouterr()
    assert "laid over 6 steps (warm-up 4 steps)" in out.out and "warning" not in out.err
    lrs = [json.loads(x)["lr"] for x in (run / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["type"] == "train"]
    # then cosine to the preset's min_lr 1e-6 over the last 2 steps
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-6 + (1e-3 - 1e-6) / 2])
    train_cfg = json.loads((run / "config.json").read_text())["train"]
    assert (train_cfg["total_steps"], train_cfg["warmup_steps"]) == (6, 4)  # what --resume continues with
    # a warm-up as long as the run: said so
    assert main(["train", "segformer-b0", "--train", str(data), "--out", str(tmp_path / "r2"), "--epochs", "2",
                 "--max-steps", "3", *TINY]) == 0
    assert "warning: the warm-up (3 steps) is as long as the run (3 steps)" in capsys.readouterr().err


def test_train_and_evaluate_cli(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    rc = main(["train", "segformer-b0", "--train", str(data / "list.json"), "--val", str(data), "--out", str(run),
               "--epochs", "2", *TINY])
    assert rc == 0
    for f in ("config.json", "model.safetensors", "trainer_state.json", "metrics.jsonl", "curves.png"):
        assert (run / f).is_file(), f
    from tamperscope.checkpoint import read_checkpoint_config
    from tamperscope.engine.loading import trained_image_size

    assert trained_image_size(read_checkpoint_config(run)) == 64  # evaluate/predict run the model at its training size
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "val"] == [0, 1]
    assert all("pixel_f1" in r for r in rows if r["type"] == "val")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(data / "list.json"), "--out", str(out),
                 "--workers", "0", "--batch-size", "3", "--device", "cpu"]) == 0
    m = json.loads(out.read_text())
    assert m["n_images"] == 8 and m["n_tampered"] == 6 and m["n_authentic"] == 2
    assert 0.0 <= m["pixel_f1"] <= 1.0 and m["image_auc"] is not None
    # an existing run is never overwritten without --resume
    assert main(["train", "segformer-b0", "--train", str(data), "--out", str(run), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    data = make_dataset(tmp_path / "data", n_tampered=8, n_authentic=2)
    common = ["train", "segformer-b0", "--train", str(data), "--max-steps", "10", "--epochs", "3",
              "--save-every", "1", *TINY]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run(CLI + common + ["--out", str(ref)], check=True, env=env, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(CLI + common + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a mid-run state (step ≥ 4) exists
        try:
            if json.loads((run / "trainer_state.json").read_text())["global_step"] >= 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_killed = json.loads((run / "trainer_state.json").read_text())["global_step"]
    assert 4 <= step_killed < 10
    subprocess.run(CLI + common + ["--out", str(run), "--resume"], check=True, env=env, capture_output=True)
    a, b = _final_weights(ref), _final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ref_log = (ref / "metrics.jsonl").read_text().splitlines()
    run_log = (run / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]  # noqa: E731
    assert strip(ref_log) == strip(run_log)


def test_non_finite_loss_names_step_and_terms(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_tampered=2, n_authentic=0)
    rc = main(["train", "segformer-b0", "--train", str(data), "--out", str(tmp_path / "r"), "--max-steps", "2",
               *TINY[:-2], "--lr", "1e30"])
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite loss" in err and "step" in err and "bce=" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data, out, dump):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(TrainOptions(model="segformer-b0", train=data, out=out, max_steps=3, epochs=1, batch_size=2,
                                   image_size=64, device="cpu", workers=0, lr=1e-3, progress=False))
    trainer.fit()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{dump}/rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    data = make_dataset(tmp_path / "data", n_tampered=6, n_authentic=1)  # 7 images: ranks get padded shards
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(data), str(tmp_path / "run"), str(tmp_path)),
                                nprocs=2, join=True)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))  # written by rank 0 (no val: last model)
    for k in a:
        assert torch.equal(a[k], saved[k]), k


def test_yaml_config_and_early_stopping_on_val(tmp_path):
    data = make_dataset(tmp_path / "data", n_tampered=3, n_authentic=1)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model:\n  dropout: 0.0\ntrain:\n  patience: 1\n  lr: 0.0\n  warmup_epochs: 0\n")
    run = tmp_path / "run"
    assert main(["train", "segformer-b0", "--train", str(data), "--val", str(data), "--out", str(run), "--epochs", "5",
                 "--config", str(cfg), *TINY[:-2]]) == 0
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["finished"] and state["epoch"] == 2  # with lr 0 nothing improves after epoch 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["dropout"] == 0.0 and saved["train"]["patience"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: {}\n")
    assert main(["train", "segformer-b0", "--train", str(data), "--out", str(tmp_path / "r2"), "--config", str(bad),
                 *TINY]) == 2


class _Wants:
    """A stand-in model that only states its data requirements."""
    native_resolution = False

    def __init__(self, augment):
        self.augment = augment

    def data_requirements(self):
        return {"edge": None, "augment": self.augment}


def test_training_augmentation_follows_the_models_policy(tmp_path):
    """IFA-Net trains without copy-move/inpainting (§2.4), DiffForensics with flips only (§5.4), others the list."""
    data = make_dataset(tmp_path / "data", n_tampered=2, n_authentic=1)
    trainer = Trainer(TrainOptions(model="segformer-b0", train=str(data), out=str(tmp_path / "run"), device="cpu",
                                   progress=False))
    cfg = {"image_size": 64, "seed": 0, "augment": True}
    for policy, (config, forgery_ops) in {"full": (AugmentConfig(), True), "no_forgery": (AugmentConfig(), False),
                                          "flips": (FLIPS_ONLY, False)}.items():
        train_ds, _ = trainer._datasets(_Wants(policy), cfg)
        assert (train_ds.augment_config, train_ds.forgery_ops) == (config, forgery_ops), policy
    assert tamperscope.create_model("diffforensics", encoder_variant="b0").data_requirements()["augment"] == "flips"
    assert tamperscope.create_model("segformer-b0").data_requirements()["augment"] == "full"


def test_evaluate_weight_free_builtin_model_at_native_resolution(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_tampered=2, n_authentic=1)
    out = tmp_path / "ela.json"
    for flags in ([], ["--no-progress"]):
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", "ela", "--data", str(data), "--out", str(out), "--device", "cpu",
                     "--perturb", "jpeg:90", "--workers", "0", *flags]) == 0
        assert ("evaluate:" in capsys.readouterr().err) == (not flags)  # the progress bar, unless asked not to
    m = json.loads(out.read_text())
    assert m["n_images"] == 3 and m["pixel_f1"] is not None
    assert main(["evaluate", "--checkpoint", "no-such-run", "--data", str(data)]) == 2


def test_evaluate_group_by_metadata_with_authentic_images(tmp_path):
    data = make_dataset(tmp_path / "data", n_tampered=4, n_authentic=2)
    lines = [json.dumps({"image": f"t{i}.png", "region": "Stuff" if i % 2 else "Background", "method": "cvNS",
                         "area_bin": "<20"}) for i in range(4)]
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "g.json"
    assert main(["evaluate", "--checkpoint", "ela", "--data", str(data), "--group-by", "region", "--out", str(out),
                 "--device", "cpu"]) == 0
    groups = json.loads(out.read_text())["groups"]
    assert set(groups) == {"Stuff", "Background", "authentic"}
    assert groups["Stuff"]["n_tampered"] == 2 and groups["Background"]["n_tampered"] == 2
    assert groups["authentic"]["n_authentic"] == 2 and groups["authentic"]["real_recall"] is not None


def test_default_preset_follows_the_stage():
    def preset(model, stage=None, preset=None):
        return default_preset(get_entry(model), TrainOptions(model=model, train="x", out="y", stage=stage,
                                                             preset=preset))

    assert preset("diffiml") == "code"
    assert preset("diffiml", stage="lightvae") == "lightvae-code"  # not the denoiser's recipe
    assert preset("diffiml", stage="lightvae", preset="paper") == "paper"
    assert preset("diffforensics", stage="pretrain") == "pretrain"
    assert preset("diffforensics", stage="finetune") == "paper"
    assert preset("ifanet", stage="realness-prior") == "realness-prior"


def test_preset_global_batch_sets_the_accumulation():
    """FRD-Net's official recipe is 16 per GPU on 2 GPUs: one process accumulates 2 batches unless told otherwise."""
    def accum(world=1, **kw):
        return resolve_train_config(TrainOptions(model="frdnet", train="x", out="y", **kw), get_entry("frdnet"), {},
                                    world)["accum"]

    assert accum() == 2 and accum(world=2) == 1
    assert accum(accum=3) == 3 and accum(batch_size=4) == 1  # an explicit choice wins over the recipe
    assert accum(preset="paper") == 1  # no global batch stated
    with pytest.raises(UserError, match="global batch 32"):
        accum(world=3)
    code = resolve_train_config(TrainOptions(model="diffiml", train="x", out="y"), get_entry("diffiml"), {})
    assert (code["batch_size"], code["accum"]) == (16, 8)  # 16/GPU × 8 GPUs in the official script


@pytest.mark.parametrize("model,preset,stage,world,total", [
    ("ifanet", "paper", None, 8, 32),                  # IFA-Net §4: 8 GPUs, effective batch 32
    ("nfavit", "default", None, 4, 64),                # BR-Gen §5: batch 64 on 4 GPUs
    ("nfavit", "paper", None, 4, 64),
    ("nfavit", "official", None, 4, 64),               # train.sh: 16 per GPU × 4 GPUs
    ("diffforensics", "paper", "finetune", 4, 32),     # DiffForensics §4.1: 4 GPUs, batch 32 (fine-tuning)
    ("diffforensics", "pretrain", "pretrain", 4, 16),  # batch 16 (diffusion pre-training)
    ("frdnet", "official", None, 2, 32),
    ("diffiml", "code", None, 8, 128),
])
def test_presets_give_the_papers_global_batch_on_any_world_size(model, preset, stage, world, total):
    """The paper's total batch is ``global_batch``: per-process batch × accumulation × processes equals it on one
    process, on the paper's GPU count and on the sizes between, instead of torchrun multiplying it."""
    entry = get_entry(model)
    assert entry.train_presets[preset]["global_batch"] == total
    for w in sorted({1, 2, world}):
        if world % w:
            continue
        cfg = resolve_train_config(TrainOptions(model=model, train="x", out="y", preset=preset, stage=stage),
                                   entry, {}, w)
        assert cfg["batch_size"] * cfg["accum"] * w == total, (w, cfg["batch_size"], cfg["accum"])
    cfg = resolve_train_config(TrainOptions(model=model, train="x", out="y", preset=preset, stage=stage), entry, {},
                               world)
    assert cfg["accum"] == 1  # on the paper's GPU count each GPU holds the paper's per-GPU batch


def _merge_worker(rank, world, port, dump):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from tamperscope.engine.distributed import merge_validation_sums

    # rank 0's shard held the only tampered image (a stage metric), rank 1's none: different key sets
    sums, counts = ({"val_loss": 3.0, "recon_f1": 0.8}, {"val_loss": 3, "recon_f1": 1}) if rank == 0 else \
        ({"val_loss": 1.0}, {"val_loss": 1})
    merged = merge_validation_sums(sums, counts, rank == 1)
    torch.distributed.barrier()  # the ranks are still in step afterwards
    Path(dump, f"merged{rank}.json").write_text(json.dumps(merged))
    torch.distributed.destroy_process_group()


def test_validation_sums_merge_across_ranks_with_different_keys(tmp_path):
    torch.multiprocessing.spawn(_merge_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        sums, counts, flag = json.loads((tmp_path / f"merged{rank}.json").read_text())
        assert sums == {"val_loss": 4.0, "recon_f1": 0.8} and counts == {"val_loss": 4, "recon_f1": 1} and flag


def test_resume_refuses_other_data_and_survives_a_kill_inside_the_epoch_save(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_tampered=3, n_authentic=1)
    run = tmp_path / "run"
    common = ["train", "segformer-b0", "--train", str(data), "--val", str(data), "--out", str(run),
              "--max-steps", "2", "--epochs", "1", *TINY]
    assert main(common) == 0
    other = make_dataset(tmp_path / "other", n_tampered=2, n_authentic=1)
    for flag, what in (("--val", "validation data"), ("--train", "training data")):
        args = [str(other) if a == str(data) and common[i - 1] == flag else a for i, a in enumerate(common)]
        capsys.readouterr()
        assert main([*args, "--resume"]) == 2
        assert f"trained with {what} {data}, not {other}" in capsys.readouterr().err
    no_val = [a for i, a in enumerate(common) if a != "--val" and common[i - 1] != "--val"]
    assert main([*no_val, "--resume"]) == 2  # would overwrite the val-selected model with the last weights
    # killed after the epoch's model save rewrote config.json and before the state save restored "train"
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "train"}
                                                | {"extra": {"train": cfg["train"]}}))
    assert main([*common, "--resume"]) == 0


def _stop_worker(rank, world, port, dump):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    trainer = Trainer.__new__(Trainer)  # only the stop agreement is under test
    trainer.world, trainer.device = world, torch.device("cpu")
    trainer.stop_signal = signal.SIGTERM if rank == 1 else None  # the signal reached one rank only
    first = trainer._stop_requested()
    trainer.stop_signal = None if rank == 1 else trainer.stop_signal
    Path(dump, f"stop{rank}.json").write_text(json.dumps([first, trainer.stop_signal]))
    torch.distributed.destroy_process_group()


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    torch.multiprocessing.spawn(_stop_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        first, kept = json.loads((tmp_path / f"stop{rank}.json").read_text())
        assert first is True
    assert json.loads((tmp_path / "stop0.json").read_text())[1] == int(signal.SIGTERM)


def test_sigterm_to_the_whole_process_group_saves_the_state(tmp_path):
    """A job scheduler (or `kill -- -PGID`) signals every process of the run, DataLoader workers included: the
    trainer must still save a resumable state and stop with its one-line message, not a worker traceback."""
    data = make_dataset(tmp_path / "data", n_tampered=8, n_authentic=2)
    run = tmp_path / "run"
    args = ["train", "segformer-b0", "--train", str(data), "--out", str(run), "--epochs", "200", "--log-every", "1",
            *TINY[:6], "--workers", "2", *TINY[8:]]
    proc = subprocess.Popen(CLI + args, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # signal once training is under way
        log = run / "metrics.jsonl"
        if log.is_file() and sum('"train"' in line for line in log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "stopped by signal 15" in out, err
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] >= 3 and not state["finished"]


def test_a_new_run_in_a_failed_runs_folder_starts_a_new_log_and_shows_validation(tmp_path):
    """A folder left by a run that failed before saving any state holds a metrics.jsonl: the new run does not append
    to it. Validation shows its own progress bar, and the epoch line is printed above the bar, not glued onto it."""
    data = make_dataset(tmp_path / "data", n_tampered=2, n_authentic=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "epoch": 0, "step": 1, "loss": 99.0}) + "\n")
    tiny = [a for a in TINY if a != "--no-progress"]
    proc = subprocess.run([*CLI, "train", "segformer-b0", "--train", str(data), "--val", str(data), "--out", str(run),
                           "--epochs", "1", *tiny], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in rows] == ["train", "val"] and rows[0]["loss"] != 99.0
    assert "log of an earlier run that saved no state" in proc.stdout
    assert "validate" in proc.stdout and "epoch 0:" in proc.stdout
    assert re.search(r"[^\r\n]epoch 0:", proc.stdout) is None
