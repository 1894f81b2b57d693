"""A run folder, the one on-disk layout that training writes and export, evaluation and resume read.

* ``config.json`` + ``model.safetensors``: the model selected on val (or the last one without val), a checkpoint
  like any other (:mod:`tamperscope.checkpoint`);
* ``trainer_state.json``: the :class:`TrainState` and the pointer to the latest resumable state
  ``state/step-N/`` (``model.safetensors``; ``optimizer.safetensors`` with the optimizer and RNG states);
* ``metrics.jsonl`` (one JSON line per training report and validation) and ``curves.png``.

Every file is written atomically and the pointer last, so a kill at any moment leaves a consistent run.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (CONFIG_FILE, MODEL_FILE, load_weights, read_checkpoint_config, read_weights_file,
                         save_state_dict)
from .errors import UserError
from .io import atomic_write_text

STATE_FILE = "trainer_state.json"
LOG_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
OPTIMIZER_FILE = "optimizer.safetensors"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"state.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
    # a state tensor shaped like its parameter takes the parameter's memory layout back (saving made it contiguous;
    # channels-last weights are not): fused optimizers walk parameter and state memory side by side, so a layout
    # that differs would pair the wrong elements silently
    for group in opt.param_groups:
        for param in group["params"]:
            for name, value in opt.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    opt.state[param][name] = torch.empty_like(param).copy_(value)


def _rng_state(device: torch.device) -> tuple[dict, dict]:
    """CPU, Python and NumPy RNG states, and the CUDA state of the training device. Every rank is seeded alike and
    runs the same random calls, so rank 0's device stream is each rank's (restored onto each rank's own device)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    py, n = random.getstate(), np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]], "numpy": [n[0], n[1].tolist(), n[2], n[3], n[4]]}


def _restore_rng(tensors: dict, js: dict, device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda":
        # older runs stored every visible device of rank 0: its training device is the one to take
        cuda = tensors.get("rng.cuda", tensors.get(f"rng.cuda.{device.index or 0}"))
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
    py = js["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = js["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


@dataclass
class TrainState:
    """The trainer's progress, written to ``trainer_state.json`` beside the pointer to the saved tensors."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best: dict | None = None
    finished: bool = False
    epochs_since_best: int = 0


class RunFolder:
    """The files of one training run (module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / CONFIG_FILE
        self.weights_file = self.path / MODEL_FILE
        self.state_file = self.path / STATE_FILE
        self.log_file = self.path / LOG_FILE
        self.curves_file = self.path / CURVES_FILE

    def read_config(self) -> dict:
        """The run's checkpoint config (:func:`tamperscope.checkpoint.read_checkpoint_config`)."""
        return read_checkpoint_config(self.path)

    def last_state_weights(self) -> Path:
        """``model.safetensors`` of the run's last saved training state."""
        if not self.state_file.is_file():
            raise UserError(f"{self.path}: no {STATE_FILE} (not a training run folder)")
        weights = self.path / self.read_state()["checkpoint"] / MODEL_FILE
        if not weights.is_file():
            raise UserError(f"{weights}: missing")
        return weights

    def best_val_metrics(self) -> dict | None:
        """The validation row of the epoch the run selected (``metrics.jsonl`` + ``trainer_state.json``)."""
        if not (self.state_file.is_file() and self.log_file.is_file()):
            return None
        best = (self.read_state().get("best") or {}).get("epoch")
        rows = [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]
        match = [r for r in rows if r.get("type") == "val" and r.get("epoch") == best]
        return match[-1] if match else None

    def exists(self) -> bool:
        return self.state_file.is_file()

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.state_file}: cannot read trainer state ({exc})")

    def save_state(self, model, opt, state: TrainState, config: dict, device: torch.device) -> None:
        """Write ``state/step-N/`` then point ``trainer_state.json`` at it; older states are removed."""
        step_dir = self.path / "state" / f"step-{state.global_step:09d}"
        step_dir.mkdir(parents=True, exist_ok=True)
        save_state_dict(model, step_dir / MODEL_FILE)
        opt_tensors, groups = _optimizer_tensors(opt)
        rng_tensors, rng_json = _rng_state(device)
        save_state_dict({**opt_tensors, **rng_tensors}, step_dir / OPTIMIZER_FILE)
        saved = asdict(state) | {"checkpoint": str(step_dir.relative_to(self.path)), "optimizer_groups": groups,
                                 "rng": rng_json}
        atomic_write_text(self.config_file, json.dumps(config, indent=2, sort_keys=True))
        atomic_write_text(self.state_file, json.dumps(saved, indent=2))
        for old in (self.path / "state").glob("step-*"):
            if old != step_dir:
                shutil.rmtree(old)

    def load_state(self, model, opt, saved: dict, device: torch.device) -> TrainState:
        """Load the model, optimizer and RNG states that ``saved`` (the read ``trainer_state.json``) points at."""
        step_dir = self.path / saved["checkpoint"]
        load_weights(model, read_weights_file(step_dir / MODEL_FILE, device), str(step_dir))
        tensors = read_weights_file(step_dir / OPTIMIZER_FILE)
        _load_optimizer(opt, {k: v.to(device) for k, v in tensors.items() if k.startswith("state.")},
                        saved["optimizer_groups"])
        _restore_rng({k: v for k, v in tensors.items() if k.startswith("rng.")}, saved["rng"], device)
        return TrainState(**{f.name: saved[f.name] for f in fields(TrainState)})
