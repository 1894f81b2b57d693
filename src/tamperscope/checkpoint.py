"""Checkpoints: our own format (safetensors + JSON, never pickle) and the reading of any weight file.

Own format
    A run folder holds ``config.json`` (model name, config, stage) and ``model.safetensors``; a single
    ``.safetensors`` file carries the same JSON in its metadata. Writes are atomic (temp file + rename).
Official weights
    :func:`read_state_dict` reads any state dict (safetensors, pickle through ``torch.load(weights_only=True)``
    only, HF folders); each converter lives beside the backbone it converts: MiT/SegFormer in
    :mod:`tamperscope.backbones.mit`, MAE in :mod:`tamperscope.backbones.mae`, Noiseprint++ in
    :mod:`tamperscope.backbones.dncnn`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from .errors import UserError
from .io import atomic_write_bytes, atomic_write_text
from .registry import create_model

FORMAT = "tamperscope-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# ----------------------------------------------------------------------------------------------
# reading any weight file


def source_name(source: Any, name: str | None = None) -> str:
    """How errors name a weights source: ``name``, the path, or "state dict" (never the tensors themselves)."""
    return name or ("state dict" if isinstance(source, dict) else str(source))


def read_state_dict(source: Any) -> dict[str, torch.Tensor]:
    """A flat state dict from a dict, a ``.safetensors`` / pickle file, or an HF model folder.

    Wrappers ``state_dict`` / ``model`` / ``network`` (mmseg, FAIR MAE, TruFor) are unwrapped and a DDP
    ``module.`` prefix is removed.
    """
    if isinstance(source, dict):
        sd = source
    else:
        path = Path(source)
        if path.is_dir():
            names = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin")
            path = next((path / n for n in names if (path / n).is_file()), None)
            if path is None:
                raise UserError(f"{source}: folder holds no model.safetensors or pytorch_model.bin")
        if not path.is_file():
            raise UserError(f"{source}: weight file not found")
        if path.suffix == ".safetensors":
            sd = read_weights_file(path)
        else:
            try:
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:  # corrupt file, or a pickle with code objects
                raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: "
                                f"{(str(exc).splitlines() or [''])[0][:200]})") from None
    for wrapper in ("state_dict", "model", "network"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{source_name(source)}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def format_key_report(what: str, missing: list[str], unexpected: list[str], limit: int = 8) -> str:
    """One readable paragraph listing missing/unexpected keys (first ``limit`` of each)."""
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(keys[:limit]) + (f", … (+{len(keys) - limit} more)" if len(keys) > limit else "")
            parts.append(f"{len(keys)} {label} key(s): {shown}")
    return f"{what}: " + ("; ".join(parts) if parts else "all keys matched")


# ----------------------------------------------------------------------------------------------
# our own checkpoints


def _tensors_for_saving(model_or_sd) -> dict[str, torch.Tensor]:
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, torch.nn.Module) else model_or_sd
    out, seen = {}, {}
    for k, v in sd.items():
        t = v.detach().to("cpu")
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        # safetensors refuses shared storage: clone tensors that alias another entry
        out[k] = t.clone().contiguous() if ptr in seen or not t.is_contiguous() else t
        seen[ptr] = k
    return out


def save_state_dict(sd_or_module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically."""
    atomic_write_bytes(Path(path), save(_tensors_for_saving(sd_or_module), metadata=metadata))


def checkpoint_config(model) -> dict:
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.model_name,
           "config": model.config, "stage": model.config.get("stage") if isinstance(model.config, dict) else None}
    calibration = getattr(model, "calibration", None)
    if calibration:
        cfg["calibration"] = calibration
    return cfg


def save_checkpoint(model, path: str | Path, extra: dict | None = None) -> Path:
    """Save ``model`` to a run folder (``config.json`` + ``model.safetensors``) or, when ``path`` ends in
    ``.safetensors``, to one self-describing file. Returns the path written."""
    path = Path(path)
    cfg = checkpoint_config(model)
    if extra:
        cfg["extra"] = extra
    single_file = path.suffix == ".safetensors"
    (path.parent if single_file else path).mkdir(parents=True, exist_ok=True)
    save_state_dict(model, path if single_file else path / MODEL_FILE, metadata={"tamperscope": json.dumps(cfg)})
    if not single_file:
        atomic_write_text(path / CONFIG_FILE, json.dumps(cfg, indent=2, sort_keys=True))
    return path


def read_checkpoint_config(path: str | Path) -> dict:
    """The JSON config of a run folder or single-file checkpoint."""
    path = Path(path)
    if path.is_dir():
        cfg_file = path / CONFIG_FILE
        if not cfg_file.is_file():
            raise UserError(f"{path}: not a tamperscope run folder (no {CONFIG_FILE})")
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{cfg_file}: invalid JSON ({exc})")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{cfg_file}: cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})")
        where = cfg_file
    elif path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise UserError(f"{path}: not a safetensors checkpoint ({type(exc).__name__})")
        if "tamperscope" not in meta:
            raise UserError(f"{path}: safetensors file without tamperscope metadata (not our checkpoint)")
        try:
            cfg = json.loads(meta["tamperscope"])
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: invalid tamperscope metadata ({exc})")
        where = path
    else:
        raise UserError(f"{path}: checkpoint not found")
    if not isinstance(cfg, dict):
        raise UserError(f"{where}: expected a JSON object, found a {type(cfg).__name__} (not a tamperscope "
                        "checkpoint config)")
    if cfg.get("format") != FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {cfg.get('format')!r}")
    if not isinstance(cfg.get("model"), str) or not isinstance(cfg.get("config"), dict):
        raise UserError(f"{where}: incomplete checkpoint config (needs a model name and a config object)")
    return cfg


def checkpoint_weights_path(path: str | Path) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def read_weights_file(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors weights file, or one readable error naming it (truncated copy, not safetensors, ...)."""
    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise UserError(f"{path}: weight file not found") from None
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {first})") from None


def load_weights(model: torch.nn.Module, state_dict: dict, where: str, strict: bool = True) -> tuple[list, list]:
    """``model.load_state_dict`` with readable errors: shape mismatches listed (e.g. another variant's weights),
    and with ``strict`` missing/unexpected keys too. Returns (missing, unexpected)."""
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        more = f", … (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        raise UserError(f"{where}: weights do not fit the model: shape mismatch (file vs model) for "
                        f"{', '.join(bad[:4])}{more} (another variant or config?)")
    result = model.load_state_dict(state_dict, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise UserError(format_key_report(f"{where}: weights do not fit the model", result.missing_keys,
                                          result.unexpected_keys))
    return list(result.missing_keys), list(result.unexpected_keys)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", strict: bool = True, **overrides):
    """Rebuild the model a checkpoint describes and load its weights (no pickle involved).

    ``overrides`` change config keys that do not affect the weights (e.g. ensemble size)."""
    return model_from_checkpoint(path, read_checkpoint_config(path), map_location, strict, overrides)


def model_from_checkpoint(path: str | Path, cfg: dict, map_location: str | torch.device = "cpu", strict: bool = True,
                          overrides: dict | None = None):
    """:func:`load_checkpoint` with the checkpoint's config ``cfg`` (:func:`read_checkpoint_config`) already read."""
    overrides = dict(overrides or {})
    calibration = cfg.get("calibration")
    if calibration and calibration.get("mode") != "absolute":
        raise UserError(f"{path}: calibration mode {calibration.get('mode')!r} is no longer supported (per-photo "
                        "relative maps were removed); re-export it with `tamperscope export RUN FILE --calibrate VAL`")
    # the checkpoint already holds the weights of the files its config names: they are not re-read
    model = create_model(cfg["model"], weight_files=False, **(cfg["config"] | overrides))
    weights = checkpoint_weights_path(path)
    load_weights(model, read_weights_file(weights, map_location), f"{weights} (model '{cfg['model']}')", strict)
    if calibration:  # chosen on validation data by `tamperscope export --calibrate`
        model.calibration = calibration
    return model
