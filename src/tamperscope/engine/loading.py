"""One way to load a model for inference (ARCHITECTURE.md, "Layers": one function loads any model), used by
``predict``, ``serve``, ``evaluate``, ``compare``, ``robustness`` and ``export-onnx``.

A model spec is one of
- ``None`` or ``"default"`` (when no file or folder of that name exists here): the bundled default model,
  ``tamperscope/weights/default.safetensors`` (found with ``importlib.resources``);
- a run folder or a ``.safetensors`` checkpoint (:func:`tamperscope.checkpoint.model_from_checkpoint`), with the
  weight-free experts its config names (:mod:`tamperscope.engine.experts`);
- the name of a registered model without parameters (the ``ela`` baseline), built from its default config.

The input size is the one the checkpoint was trained at (its ``train`` section, or a single file's
``extra.train``), else :data:`~tamperscope.sizes.DEFAULT_IMAGE_SIZE`; the checkpoint's config is read once.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ..errors import UserError
from ..sizes import DEFAULT_IMAGE_SIZE, INPUT_MULTIPLE, check_image_size
from .experts import EXPERTS_KEY, ExpertFusion, build_experts

DEFAULT_WEIGHTS = "default.safetensors"
DEFAULT_CHECKPOINT = "default"


def default_weights_ref():
    """The packaged default checkpoint (an importlib.resources Traversable; may not exist)."""
    return resources.files("tamperscope").joinpath("weights").joinpath(DEFAULT_WEIGHTS)


def names_default_model(spec) -> bool:
    """Whether a model spec means the bundled default model: none given, or ``default`` when no file or folder of
    that name exists here."""
    return spec is None or (str(spec) == DEFAULT_CHECKPOINT and not Path(spec).exists())


def default_model_available() -> bool:
    return default_weights_ref().is_file()


def resolve_checkpoint(spec) -> str:
    """The bundled default model's file for ``None``/``default`` (:func:`names_default_model`); any other spec
    unchanged. A missing bundled file is a one-line error."""
    if not names_default_model(spec):
        return str(spec)
    ref = default_weights_ref()
    if not ref.is_file():
        raise UserError(f"no default model installed (tamperscope/weights/{DEFAULT_WEIGHTS} is missing); "
                        "name a run folder or a .safetensors checkpoint", option="checkpoint")
    return str(ref)


def training_recipe(cfg: dict) -> dict:
    """The training section of a checkpoint config: a single file's ``extra.train`` or a run folder's ``train``
    (empty when unknown)."""
    return (cfg.get("extra") or {}).get("train") or cfg.get("train") or {}


def trained_image_size(cfg: dict) -> int:
    """The input size a checkpoint config was trained at (:func:`training_recipe`);
    :data:`~tamperscope.sizes.DEFAULT_IMAGE_SIZE` when unknown."""
    return int(training_recipe(cfg).get("image_size") or DEFAULT_IMAGE_SIZE)


@dataclass
class LoadedModel:
    """A model in eval mode on its device, the input size it expects, a display name, and the weight-free
    experts its checkpoint names (``{name: (model, validation scores or None)}``, on the same device)."""

    model: torch.nn.Module
    image_size: int
    name: str
    experts: dict = field(default_factory=dict)

    def fused(self) -> torch.nn.Module:
        """The model and its experts as one (:class:`~tamperscope.engine.experts.ExpertFusion`) for dataset
        evaluation; the model itself when it has none."""
        return ExpertFusion(self.model, self.experts).eval() if self.experts else self.model


def _builtin_model(name: str, overrides: dict):
    """A registered model that needs no weights (no parameters), or None when ``name`` is not one."""
    from ..registry import create_model, is_registered

    if not is_registered(name):
        return None
    model = create_model(name, **overrides)
    if any(True for _ in model.parameters()):
        raise UserError(f"{name}: model '{name}' needs trained weights; pass a run folder or a .safetensors "
                        "checkpoint")
    return model


def load_model(spec: str | os.PathLike | None, device: str | torch.device = "cpu", overrides: dict | None = None,
               *, experts: bool = True, image_size: int | None = None) -> LoadedModel:
    """Load the model ``spec`` names (module docstring) with config ``overrides`` (keys that do not change the
    weights, e.g. an ensemble size); its experts are left out when ``experts`` is False. ``image_size`` replaces
    the size it was trained at."""
    from ..checkpoint import model_from_checkpoint, read_checkpoint_config

    overrides = dict(overrides or {})
    if image_size is not None:
        check_image_size(image_size)
    default = names_default_model(spec)
    path = resolve_checkpoint(spec)
    if Path(path).exists():
        with resources.as_file(default_weights_ref()) if default else nullcontext(path) as local:
            cfg = read_checkpoint_config(local)
            model = model_from_checkpoint(local, cfg, "cpu", overrides=overrides)
        attached = cfg.get(EXPERTS_KEY) if experts else None
        label = "+".join([cfg["model"], *(attached or {})])
        name = f"default ({label})" if default else f"{label} ({Path(path).name})"
        size = image_size or trained_image_size(cfg)
        if size % INPUT_MULTIPLE:
            raise UserError(f"{path}: trained image size {size} is not a multiple of {INPUT_MULTIPLE}")
    else:
        model = _builtin_model(path, overrides)
        if model is None:
            raise UserError(f"{path}: no such run folder or file (and not a weight-free built-in model such as "
                            "'ela')")
        attached, name, size = None, path, image_size or DEFAULT_IMAGE_SIZE
    fused = build_experts(attached, str(DEFAULT_CHECKPOINT if default else path))
    return LoadedModel(model.to(device).eval(), size, name,
                       {k: (m.to(device), scores) for k, (m, scores) in fused.items()})
