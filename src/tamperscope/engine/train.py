"""Training from one CPU to many GPUs (``torchrun``), with exact resume.

* AdamW (or Adam) with per-step LR: linear warm-up then cosine (or constant); gradient accumulation and
  clipping; bf16 autocast and channels-last on CUDA; seeded.
* DDP when launched by ``torchrun`` (gloo on CPU, NCCL on GPU) — the same command, no code changes.
* Validation each epoch; the model is chosen on **val** (never test) by the model's selection metric.
* A run folder (:mod:`tamperscope.run_folder`): the model selected on val, the latest resumable state, the log
  and its curves; written atomically, so a kill at any moment leaves a consistent run.
* A resumed run (``resume``) continues exactly: same next batch (seeded per-epoch order, started mid-epoch),
  same LR (the run's step count and warm-up are stored in its config), same RNG streams; the final weights equal
  those of an uninterrupted run.
* ``max_steps`` below the epochs' steps lays the whole schedule (warm-up share and decay) over those steps.
* A non-finite loss stops with a message naming the step and the loss terms; SIGTERM/SIGINT save a
  resumable state first.
"""
from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import (checkpoint_config, checkpoint_weights_path, format_key_report, read_state_dict,
                          save_checkpoint)
from ..data.datasets import ForensicsDataset, collate, load_dataset_spec, load_evaluation_records
from ..data.transforms import augment_policy
from ..errors import UserError
from ..inference import autocast_for
from ..io import atomic_write_text
from ..registry import create_model, get_entry
from ..run_folder import RunFolder, TrainState
from ..sizes import DEFAULT_IMAGE_SIZE
from .distributed import ResumableSampler, barrier, init_distributed, is_main, merge_validation_sums
from .evaluate import evaluate_model

TRAIN_DEFAULTS = {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05, "epochs": 10, "warmup_epochs": 0,
                  "schedule": "cosine", "min_lr": 0.0, "batch_size": 8, "betas": [0.9, 0.999]}


@dataclass
class TrainOptions:
    model: str
    train: str
    out: str
    val: str | None = None
    stage: str | None = None
    preset: str | None = None
    config_file: str | None = None
    pretrained: str | None = None
    resume: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    image_size: int = DEFAULT_IMAGE_SIZE
    device: str = "auto"
    workers: int = 2
    accum: int | None = None  # None: what the preset's global batch needs (global_accumulation), else 1
    clip_grad: float | None = None
    seed: int = 42
    max_steps: int | None = None
    save_every: int = 0
    log_every: int = 10
    augment: bool = True
    on_mismatch: str = "skip"
    threshold: float = 0.5
    val_batch_size: int | None = None
    model_overrides: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    progress: bool = True
    compile: bool = False  # torch.compile the model (tamperscope.engine.compile)


# ------------------------------------------------------------------------------------------------
# configuration


def load_yaml_config(path: str | None) -> dict:
    """``{"model": {...config overrides...}, "train": {...training options...}}`` from a YAML file."""
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})")
    unknown = set(data) - {"model", "train", "name"}
    if unknown:
        raise UserError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))} (use model:, train:)")
    return data


def default_preset(entry, opts: TrainOptions) -> str | None:
    """``opts.preset``, else a preset named like ``opts.stage`` (or ``<stage>-…``, e.g. DiffIML's
    ``lightvae-code``), else the model's first preset."""
    if opts.preset:
        return opts.preset
    staged = [n for n in entry.train_presets if opts.stage and (n == opts.stage or n.startswith(f"{opts.stage}-"))]
    return next(iter(staged or entry.train_presets), None)


def global_accumulation(cfg: dict, world: int) -> int:
    """Accumulation steps that give a preset's ``global_batch`` (the recipe's batch over all its GPUs, e.g.
    FRD-Net's 16/GPU × 2) with ``batch_size`` per process on ``world`` processes; 1 without a global batch."""
    total = cfg.get("global_batch")
    if not total:
        return 1
    per_step = cfg["batch_size"] * world
    if total % per_step:
        raise UserError(f"preset '{cfg.get('preset')}': its global batch {total} is not a multiple of "
                        f"{cfg['batch_size']} × {world} process(es); set accum or batch_size")
    return max(1, total // per_step)


def resolve_train_config(opts: TrainOptions, entry, yaml_cfg: dict, world: int = 1) -> dict:
    """Preset (paper/official recipe) ← YAML ``train:`` ← explicit options. ``accum``: ``opts.accum``, else the
    steps that reach the preset's ``global_batch`` while the batch size is the preset's, else 1."""
    presets = entry.train_presets
    name = default_preset(entry, opts)
    if opts.preset and opts.preset not in presets:
        raise UserError(f"{entry.name}: unknown preset '{opts.preset}' (presets: {', '.join(presets) or 'none'})")
    preset = presets.get(name) or {}
    cfg = dict(TRAIN_DEFAULTS) | {k: v for k, v in preset.items() if k != "model"}
    cfg |= (yaml_cfg.get("train") or {}) | opts.train_overrides
    cfg |= {key: getattr(opts, key) for key in ("epochs", "batch_size", "lr") if getattr(opts, key) is not None}
    cfg["preset"] = name
    cfg["accum"] = opts.accum if opts.accum is not None else (
        global_accumulation(cfg, world) if cfg["batch_size"] == preset.get("batch_size") else 1)
    if cfg["optimizer"] not in ("adamw", "adam"):
        raise UserError(f"unknown optimizer '{cfg['optimizer']}' (adamw, adam)")
    if cfg["schedule"] not in ("cosine", "constant"):
        raise UserError(f"unknown schedule '{cfg['schedule']}' (cosine, constant)")
    return cfg


def schedule_steps(cfg: dict, steps_per_epoch: int) -> tuple[int, int]:
    """(optimisation steps of the run, warm-up steps) for a training config. The run is ``epochs`` epochs, or
    ``max_steps`` when that is fewer: then the whole schedule is laid over ``max_steps`` — the cosine decay ends at
    the last step and the warm-up keeps its share of the run (``warmup_epochs`` scaled by ``max_steps`` / the
    epochs' steps), so a short run does not spend itself in a warm-up sized for the full recipe."""
    full = max(1, int(cfg["epochs"] * steps_per_epoch))
    total = min(full, cfg["max_steps"]) if cfg.get("max_steps") else full
    warmup = cfg.get("warmup_epochs", 0) * steps_per_epoch
    return total, int(warmup * total / full if total < full else warmup)


def run_schedule(train_cfg: dict, steps_per_epoch: int, resumed: bool) -> tuple[int, int]:
    """(total, warm-up) steps of a run. A new run computes them (:func:`schedule_steps`) and stores them in
    ``train_cfg`` (saved in the run's config); a resumed run takes the stored ones, so it continues with the LR
    schedule it started with — a run saved before they were stored did not scale its warm-up to ``max_steps``."""
    if resumed and "total_steps" in train_cfg:
        return train_cfg["total_steps"], train_cfg["warmup_steps"]
    if resumed:
        total = train_cfg["epochs"] * steps_per_epoch
        if train_cfg.get("max_steps"):
            total = min(total, train_cfg["max_steps"])
        return total, int(train_cfg.get("warmup_epochs", 0) * steps_per_epoch)
    total, warmup = schedule_steps(train_cfg, steps_per_epoch)
    train_cfg.update(total_steps=total, warmup_steps=warmup)
    return total, warmup


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, schedule: str) -> float:
    """Linear warm-up to ``base_lr`` then cosine decay to ``min_lr`` (or constant); see :func:`schedule_steps`."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model, cfg: dict) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg["weight_decay"])
    if not groups:
        raise UserError(f"{model.model_name}: no trainable parameters in this stage")
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    # the fused kernel updates every parameter in one pass instead of a Python loop of per-tensor ops: the same
    # update rule, ≈ 2.8× faster on the CPU (FRD-Net's 39.8 M parameters: 49 vs 138 ms a step)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    if cfg["optimizer"] == "adam":  # Adam with L2 weight decay, as the papers that name Adam use it
        return torch.optim.Adam(groups, lr=cfg["lr"], betas=betas, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=betas, fused=fused)


# ------------------------------------------------------------------------------------------------
# the loop


@dataclass
class Fit:
    """What one :meth:`Trainer.fit` works with: the model and the module stepping it (DDP-wrapped), optimizer,
    sampler, data, the run's config and log, step schedule, selection metric ``(key, "max"|"min")``, progress, and
    the images seen since the log's last train line."""

    model: torch.nn.Module
    step_module: torch.nn.Module
    opt: torch.optim.Optimizer
    sampler: ResumableSampler
    train_ds: object
    val_ds: object | None
    config: dict
    log: object | None
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    batches_per_epoch: int
    batch_size: int
    accum: int
    selection: tuple[str, str]
    state: TrainState
    seen: int = 0
    since: float = 0.0  # time.perf_counter() at the last train line

    def completes_step(self, batch_in_epoch: int) -> bool:
        """Whether the epoch's ``batch_in_epoch``-th batch ends a step (every ``accum``-th and the last one do)."""
        return batch_in_epoch % self.accum == 0 or batch_in_epoch == self.batches_per_epoch


class _TrainStep(torch.nn.Module):
    """Lets DDP wrap ``model.training_step`` (DDP synchronises gradients through ``forward``)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.training_step(batch)


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and k != "mask_full":
            v = v.to(device, non_blocking=True)
            if k == "image" and device.type == "cuda":
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _scalar_terms(losses: dict) -> dict:
    return {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}


def check_resume_options(run: Path, train_cfg: dict, opts: TrainOptions, world: int) -> None:
    """A resumed run continues exactly only on the same data and number of processes: refuse anything else
    (a resume without validation data would, for one, overwrite the model selected on val with the last weights)."""
    def same(saved, now) -> bool:
        if saved == now:
            return True
        plain = isinstance(saved, str) and isinstance(now, str) and not saved.startswith("mix:")
        return plain and Path(saved).resolve() == Path(now).resolve()

    for key, what, now in (("train", "training data", opts.train), ("val", "validation data", opts.val),
                           ("on_mismatch", "on_mismatch", opts.on_mismatch), ("world_size", "processes", world)):
        if key in train_cfg and not same(train_cfg[key], now):
            raise UserError(f"{run}: the run was trained with {what} {train_cfg[key]}, not {now}; resume it with the "
                            f"same data and number of processes (training options come from the run)")


def load_pretrained_stage(model, source: str) -> None:
    """Load an earlier stage's run (or any of our checkpoints) with ``strict=False``, printing the report. A model's
    ``load_pretrained_stage(state_dict) -> (missing, unexpected, left_out)`` takes over (e.g. only the MAE of an
    IFA-Net realness-prior run)."""
    sd = read_state_dict(checkpoint_weights_path(source))
    where = f"pretrained weights {source}"
    try:
        missing, unexpected, left_out = model.load_pretrained_stage(sd, where)
    except RuntimeError as exc:  # torch's size-mismatch report
        raise UserError(f"{where}: they do not fit the model ({str(exc).splitlines()[-1].strip()[:200]})") from None
    if is_main():
        print(format_key_report(where, list(missing), list(unexpected)))
        if left_out:
            modules = sorted({k.split(".")[0] for k in left_out})
            print(f"{where}: took {len(sd) - len(left_out)} tensors; left out {len(left_out)} of "
                  f"modules that stage does not train ({', '.join(modules[:6])}{', …' if len(modules) > 6 else ''})")


def leave_stop_signals_to_the_trainer(_worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM and SIGINT: a scheduler or a shell that signals the whole process group
    must reach the trainer's handler, which saves the state and stops, instead of killing a worker mid-batch
    (the trainer then died with a worker traceback and lost the steps since the last save)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Trainer:
    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.rank, self.world, self.device = init_distributed(opts.device)
        self.run = RunFolder(opts.out)
        self.stop_signal: int | None = None

    # -- set-up --------------------------------------------------------------------------------
    def _build(self):
        opts = self.opts
        entry = get_entry(opts.model)
        yaml_cfg = load_yaml_config(opts.config_file)
        resume_state = None
        if opts.resume:
            if not self.run.exists():
                raise UserError(f"{self.run.path}: nothing to resume (no {self.run.state_file.name})")
            resume_state = self.run.read_state()
            saved = self.run.read_config()
            if saved["model"] != opts.model:
                raise UserError(f"{self.run.path}: run is for model '{saved['model']}', not '{opts.model}'")
            # a kill between the epoch's model save and the state save leaves the train section under "extra"
            train_cfg = saved.get("train") or (saved.get("extra") or {}).get("train")
            if not train_cfg or "config" not in saved:
                raise UserError(f"{self.run.config_file}: no training configuration to resume from")
            # keys added to a model after the run was saved take the value the run was trained with
            model_cfg = dict(entry.cls.legacy_config) | saved["config"]
            check_resume_options(self.run.path, train_cfg, opts, self.world)
        else:
            if self.run.exists() and is_main():
                raise UserError(f"{self.run.path}: already holds a run; resume it or choose another run folder")
            # model config: preset's "model" part (e.g. the official code's loss weight) ← YAML ← model_overrides
            preset = entry.train_presets.get(default_preset(entry, opts)) or {}
            model_cfg = preset.get("model", {}) | (yaml_cfg.get("model") or {}) | opts.model_overrides
            if opts.stage:
                if opts.stage not in entry.stages:
                    raise UserError(f"{opts.model}: unknown stage '{opts.stage}' "
                                    f"(stages: {', '.join(entry.stages) or 'none'})")
                model_cfg["stage"] = opts.stage
            train_cfg = resolve_train_config(opts, entry, yaml_cfg, self.world)
            train_cfg.update({"image_size": opts.image_size, "clip_grad": opts.clip_grad,
                              "seed": opts.seed, "max_steps": opts.max_steps, "augment": opts.augment,
                              "train": opts.train, "val": opts.val, "pretrained": opts.pretrained,
                              "on_mismatch": opts.on_mismatch, "world_size": self.world})
        torch.manual_seed(train_cfg["seed"])
        np.random.seed(train_cfg["seed"] % 2**32)
        random.seed(train_cfg["seed"])
        # on resume the run's state already holds every weight: external weight files are not re-read
        model = create_model(opts.model, weight_files=not resume_state, **model_cfg)
        if model.stages:
            model.set_stage(model.config.get("stage"))
        if opts.pretrained and not resume_state:
            load_pretrained_stage(model, opts.pretrained)
        return model, train_cfg, resume_state

    def _datasets(self, model, train_cfg):
        req = model.data_requirements()
        common = dict(image_size=train_cfg["image_size"], edge=req.get("edge"), edge_width=req.get("edge_width", 7))
        if req.get("edge") == "canny":  # the width of the Canny variant is its dilation kernel
            common["canny_dilate"] = req.get("edge_width", 5)
        # native-resolution models train on grid-aligned crops of the photo and validate on whole photos
        native = model.native_resolution
        train_records = load_dataset_spec(self.opts.train, seed=train_cfg["seed"])
        augment_config, forgery_ops = augment_policy(req.get("augment", "full"))
        train_ds = ForensicsDataset(train_records, augment=train_cfg["augment"], on_mismatch=self.opts.on_mismatch,
                                    seed=train_cfg["seed"], resolution="crop" if native else "resize",
                                    augment_config=augment_config, forgery_ops=forgery_ops, **common)
        val_ds = None
        if self.opts.val:
            val_ds = ForensicsDataset(load_evaluation_records(self.opts.val), augment=False,
                                      on_mismatch=self.opts.on_mismatch, resolution="native" if native else "resize",
                                      **common)
        if len(train_ds) == 0:
            raise UserError(f"{self.opts.train}: no training images")
        return train_ds, val_ds

    # -- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, model, val_ds) -> dict:
        model.eval()
        bs = self.opts.val_batch_size or self.train_cfg["batch_size"]
        if val_ds.resolution == "native":  # photos of different sizes
            bs = 1
        # this rank's share without padding (a padded shard would count its repeated images twice)
        shard = list(range(self.rank, len(val_ds), self.world))
        loader = DataLoader(val_ds, batch_size=bs, sampler=shard, num_workers=self.opts.workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(0),
                            worker_init_fn=leave_stop_signals_to_the_trainer)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # validation must not shift the training RNG streams
            torch.manual_seed(12345)
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            has_custom = False
            show = self.opts.progress and is_main()
            for batch in tqdm(loader, desc="validate", unit="batch", disable=not show, leave=False,
                              dynamic_ncols=True):
                batch = _to_device(batch, self.device)
                b = batch["image"].shape[0]
                with autocast_for(self.device):
                    terms = _scalar_terms(model.training_step(batch))
                    custom = model.stage_validation_step(batch)
                vals = {"val_loss": terms.get("total", float("nan"))}
                if custom is not None:
                    has_custom = True
                    vals.update({k: float(v) for k, v in custom.items()})
                for k, v in vals.items():  # a key is averaged over the images of the batches that report it
                    sums[k] = sums.get(k, 0.0) + v * b
                    counts[k] = counts.get(k, 0) + b
            sums, counts, has_custom = merge_validation_sums(sums, counts, has_custom)
            metrics = {k: sums[k] / counts[k] for k in sorted(sums) if counts[k]}
            if not has_custom:  # a mask predictor: score it with the protocol metrics
                acc, _ = evaluate_model(model, val_ds, batch_size=bs, device=self.device,
                                        threshold=self.opts.threshold, workers=self.opts.workers, rank=self.rank,
                                        world_size=self.world, progress=show)
                metrics.update(acc.compute())
        model.train()
        return metrics

    # -- set-up of one fit -----------------------------------------------------------------------
    def fit(self) -> dict:
        """Train the run in ``opts.out``, or continue it; returns the final :class:`TrainState` as a dict."""
        model, train_cfg, resume_state = self._build()
        self.model, self.train_cfg = model, train_cfg
        model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        train_ds, val_ds = self._datasets(model, train_cfg)
        bs, accum = train_cfg["batch_size"], max(1, train_cfg["accum"])
        sampler = ResumableSampler(len(train_ds), seed=train_cfg["seed"], shuffle=True, rank=self.rank,
                                   world_size=self.world)
        batches_per_epoch = math.ceil(sampler.per_rank / bs)
        steps_per_epoch = math.ceil(batches_per_epoch / accum)
        total_steps, warmup_steps = run_schedule(train_cfg, steps_per_epoch, resumed=bool(resume_state))
        opt = build_optimizer(model, train_cfg)
        # a recipe may select on another key than the model's, e.g. ["pixel_iou", "max"]
        selection = tuple(train_cfg.get("selection_metric") or model.selection_metric())
        config = checkpoint_config(model) | {"train": train_cfg}
        state = self.run.load_state(model, opt, resume_state, self.device) if resume_state else TrainState()
        if state.finished:
            if is_main():
                print(f"{self.run.path}: training already finished")
            return asdict(state)
        self.run.path.mkdir(parents=True, exist_ok=True)
        model, step_module = self._wrap(model)
        fit = Fit(model, step_module, opt, sampler, train_ds, val_ds, config, None, total_steps, warmup_steps,
                  steps_per_epoch, batches_per_epoch, bs, accum, selection, state)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        fit.log = self._open_log(resumed=bool(resume_state), step=state.global_step)
        self._announce(fit)
        model.train()
        try:
            self._loop(fit)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if fit.log:
                fit.log.close()
        return asdict(state)

    def _wrap(self, model) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The model as it trains (SyncBN on GPUs, as the official IMDL recipes) and the module stepping it (DDP)."""
        if self.world > 1 and self.device.type == "cuda":
            model = self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.opts.compile:
            from .compile import compile_model

            compile_model(model)
        step_module = _TrainStep(model)
        if self.world > 1:
            step_module = DistributedDataParallel(step_module, find_unused_parameters=True,
                                                  device_ids=[self.device.index] if self.device.type == "cuda"
                                                  else None)
        return model, step_module

    def _open_log(self, resumed: bool, step: int):
        """Rank 0's log: a new one, or the resumed run's cut to ``step`` (as an uninterrupted run's would be)."""
        path = self.run.log_file
        if not is_main():
            return None
        if resumed and path.is_file():
            keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            atomic_write_text(path, "".join(line + "\n" for line in keep))
        elif not resumed and path.is_file() and path.stat().st_size:  # left by a run that failed before it saved
            print(f"tamperscope train: {path} is the log of an earlier run that saved no state; starting a "
                  "new log", file=sys.stderr)
        return open(path, "a" if resumed else "w", buffering=1)

    def _announce(self, fit: Fit) -> None:
        """Print the run's outline and schedule, and warn of a warm-up as long as the run."""
        if not is_main():
            return
        cfg, total, warmup = self.train_cfg, fit.total_steps, fit.warmup_steps
        print(f"training {self.opts.model}{' stage ' + fit.model.stage if fit.model.stage else ''}: "
              f"{len(fit.train_ds)} train images, {len(fit.val_ds) if fit.val_ds else 0} val, {total} steps "
              f"({fit.steps_per_epoch}/epoch), batch {fit.batch_size}×{fit.accum}×{self.world}, "
              f"device {self.device}, preset {cfg.get('preset')}")
        if total < cfg["epochs"] * fit.steps_per_epoch and "total_steps" in cfg:
            print(f"max_steps {total} is less than {cfg['epochs']} epochs: warm-up and {cfg['schedule']} "
                  f"schedule laid over {total} steps (warm-up {warmup} steps)")
        if warmup >= total > 0:
            print(f"tamperscope train: warning: the warm-up ({warmup} steps) is as long as the run ({total} steps) "
                  f"or longer: the learning rate rises for the whole run and reaches {cfg['lr']:g} at the last step "
                  "at best; lower train.warmup_epochs", file=sys.stderr)

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self, fit: Fit) -> None:
        """Epochs of optimisation steps until the step budget, the epochs or early stopping end the run."""
        state = fit.state
        epochs = math.ceil(fit.total_steps / fit.steps_per_epoch)
        with tqdm(total=fit.total_steps, initial=state.global_step, desc="train", unit="step",
                  disable=not (self.opts.progress and is_main()), dynamic_ncols=True) as bar:
            while state.global_step < fit.total_steps and state.epoch < epochs and not state.finished:
                for batch in self._epoch_batches(fit):
                    losses = self._forward_backward(fit, batch)
                    if not fit.completes_step(state.batch_in_epoch):
                        continue
                    lr = self._optimizer_step(fit)
                    self._report(fit, bar, losses, lr)
                    self._save_periodically(fit)
                    self._stop_if_signalled(fit)
                    if state.global_step >= fit.total_steps:
                        break
                self._end_epoch(fit)

    def _epoch_batches(self, fit: Fit):
        """The batches of the state's epoch from its ``batch_in_epoch`` on, in the seeded order, on the device."""
        epoch = fit.state.epoch
        fit.sampler.set_epoch(epoch, start_sample=fit.state.batch_in_epoch * fit.batch_size)
        if hasattr(fit.train_ds, "set_epoch"):
            fit.train_ds.set_epoch(epoch)
        # the loader gets its own generator: creating an iterator must not consume the global RNG, or a
        # run resumed mid-epoch (one more iterator) would shift the model's dropout/noise stream
        loader = DataLoader(fit.train_ds, batch_size=fit.batch_size, sampler=fit.sampler,
                            num_workers=self.opts.workers, collate_fn=collate, drop_last=False,
                            pin_memory=self.device.type == "cuda", worker_init_fn=leave_stop_signals_to_the_trainer,
                            generator=torch.Generator().manual_seed(self.train_cfg["seed"] * 1_000_003 + epoch))
        fit.seen, fit.since = 0, time.perf_counter()
        return (_to_device(batch, self.device) for batch in loader)

    def _forward_backward(self, fit: Fit, batch: dict) -> dict:
        """The batch's losses and its share of the step's gradients (synchronised by DDP at the step's last)."""
        state = fit.state
        sync = self.world == 1 or fit.completes_step(state.batch_in_epoch + 1)
        with nullcontext() if sync else fit.step_module.no_sync(), autocast_for(self.device):
            losses = fit.step_module(batch)
        self._check_finite(losses, state)
        (losses["total"] / fit.accum).backward()
        state.batch_in_epoch += 1
        fit.seen += batch["image"].shape[0]
        return losses

    def _optimizer_step(self, fit: Fit) -> float:
        """Set the step's learning rate (returned), clip the gradient norm, step and clear the gradients."""
        cfg = self.train_cfg
        lr = lr_at(fit.state.global_step, fit.total_steps, fit.warmup_steps, cfg["lr"], cfg.get("min_lr", 0.0),
                   cfg["schedule"])
        for g in fit.opt.param_groups:
            g["lr"] = lr
        if cfg.get("clip_grad"):
            torch.nn.utils.clip_grad_norm_(fit.model.parameters(), cfg["clip_grad"])
        fit.opt.step()
        fit.opt.zero_grad(set_to_none=True)
        fit.state.global_step += 1
        return lr

    def _report(self, fit: Fit, bar, losses: dict, lr: float) -> None:
        """Advance the progress bar; write a train line at the first step and every ``log_every`` steps."""
        state, terms = fit.state, _scalar_terms(losses)
        bar.update(1)
        bar.set_postfix(loss=f"{terms['total']:.4f}", lr=f"{lr:.2e}")
        if fit.log and (state.global_step % self.opts.log_every == 0 or state.global_step == 1):
            dt = time.perf_counter() - fit.since
            fit.log.write(json.dumps({"type": "train", "epoch": state.epoch, "step": state.global_step, "lr": lr,
                                      "images_per_s": fit.seen * self.world / max(dt, 1e-9),
                                      **{f"loss_{k}" if k != "total" else "loss": v for k, v in terms.items()}})
                          + "\n")
            fit.seen, fit.since = 0, time.perf_counter()

    def _save_periodically(self, fit: Fit) -> None:
        """A resumable state every ``save_every`` steps (the last step's is saved at the epoch's end)."""
        step = fit.state.global_step
        if self.opts.save_every and step % self.opts.save_every == 0 and step < fit.total_steps:
            self._save(fit)

    def _stop_if_signalled(self, fit: Fit) -> None:
        """On SIGTERM/SIGINT (to any rank) save a resumable state and stop."""
        if self._stop_requested():
            self._save(fit)
            raise KeyboardInterrupt(f"stopped by signal {self.stop_signal} at step {fit.state.global_step}")

    def _end_epoch(self, fit: Fit) -> None:
        """Validate, select on val, stop early, log, save the selected model and the state."""
        state = fit.state
        epoch = state.epoch
        state.epoch, state.batch_in_epoch, state.finished = epoch + 1, 0, state.global_step >= fit.total_steps
        metrics = self.validate(fit.model, fit.val_ds) if fit.val_ds is not None else {}
        key, improved = self._select(fit, metrics, epoch)
        patience = self.train_cfg.get("patience")
        if patience and state.epochs_since_best >= patience:  # early stopping on val (IFA-Net: IoU, 10)
            state.finished = True
            if is_main():
                tqdm.write(f"early stop: no {key} improvement on val for {patience} epochs")
        if fit.log:
            fit.log.write(json.dumps({"type": "val", "epoch": epoch, "step": state.global_step,
                                      **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}})
                          + "\n")
            fit.log.flush()
        if is_main() and improved:
            save_checkpoint(fit.model, self.run.path, extra={"train": self.train_cfg, "best": state.best})
        if is_main() and metrics:
            keys = dict.fromkeys(("val_loss", key, "pixel_f1", "image_auc"))  # ordered, no repeats
            shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float))
            tqdm.write(f"epoch {epoch}: {shown}{' (best)' if improved else ''}")  # above the bar, not on it
        self._save(fit)
        if is_main():
            from ..report.plots import plot_training_curves

            plot_training_curves(self.run.log_file, self.run.curves_file)

    @staticmethod
    def _select(fit: Fit, metrics: dict, epoch: int) -> tuple[str, bool]:
        """(metric, improved): the epoch is the best if it improves the metric on val (the validation loss where
        it is missing, e.g. without tampered val images); without val every epoch is (the last model is kept)."""
        state, (key, mode) = fit.state, fit.selection
        improved = fit.val_ds is None
        if not improved:
            value = metrics.get(key)
            if value is None:
                key, mode, value = "val_loss", "min", metrics.get("val_loss")
            best = state.best
            improved = best is None or (value is not None and (value > best["value"] if mode == "max"
                                                                else value < best["value"]))
            if improved:
                state.best = {"metric": key, "value": value, "epoch": epoch, "step": state.global_step}
        state.epochs_since_best = 0 if improved else state.epochs_since_best + 1
        return key, improved

    def _save(self, fit: Fit) -> None:
        if self.world > 1:  # BN running statistics evolve per rank: rank 0's are the run's
            for buf in fit.model.buffers():
                dist.broadcast(buf, 0)
        if is_main():
            self.run.save_state(fit.model, fit.opt, fit.state, fit.config, self.device)
        barrier()

    def _check_finite(self, losses: dict, state: TrainState) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(losses["total"].detach()).all() else 1.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(bad)
        if bad.item():
            terms = ", ".join(f"{k}={v:.4g}" for k, v in _scalar_terms(losses).items())
            raise UserError(f"non-finite loss at epoch {state.epoch}, step {state.global_step + 1} "
                            f"(batch {state.batch_in_epoch + 1}): {terms or 'no scalar terms'}; "
                            f"lower the learning rate (lr), clip the gradient norm (clip_grad), or check the data")

    def _on_signal(self, signum, frame):
        self.stop_signal = signum

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGTERM/SIGINT: all ranks agree (one tiny all-reduce per step), so they save and
        stop at the same step instead of one rank leaving the collectives."""
        if self.world == 1:
            return self.stop_signal is not None
        flag = torch.tensor([0.0 if self.stop_signal is None else float(self.stop_signal)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.stop_signal is None:
            self.stop_signal = int(flag.item())
        return bool(flag.item())


def train(opts: TrainOptions) -> dict:
    """Run training; returns the final trainer state (epoch, step, best)."""
    trainer = Trainer(opts)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

