"""Model registry: name -> (class, default config, paper reference, stages, training presets, tiny config).

Every module of :mod:`tamperscope.models` is imported on the first lookup and registers its models with
:func:`register_model`, so a new method needs no line here. Looking up one name first imports only the module of
that name (``copymove`` lives in ``models/copymove.py``), so running a weight-free model alone does not import every
architecture (≈ 3.6 s on the 2-core CPU); a name registered elsewhere falls back to importing them all.

A model states its paper defaults once, as the keyword defaults of its constructor, and the registry reads its
default config from that signature (as ``transformers``' configuration classes hold theirs in ``__init__``);
:func:`create_model` merges user overrides into those defaults and rejects unknown keys, so a typo in a config
never goes unnoticed.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

_MODELS_PACKAGE = "tamperscope.models"


@dataclass
class ModelEntry:
    name: str
    cls: Callable[..., Any]
    #: the constructor's keyword defaults with the registered ``overrides`` (:func:`register_model`)
    default_config: dict
    paper: str
    stages: tuple[str, ...] = ()
    train_presets: dict[str, dict] = field(default_factory=dict)
    description: str = ""
    #: overrides that make a small model of the same architecture, for the contract tests every model inherits
    #: (tests/models/test_contract.py); empty when the defaults are already small
    tiny_config: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def signature_config(cls) -> dict:
    """The keyword defaults of ``cls.__init__`` as a JSON config (tuples become lists). Every parameter needs a
    JSON default (no ``*args``/``**kwargs``): the config of a saved model must rebuild it."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    missing = [p.name for p in params if p.default is p.empty]
    if missing:
        raise TypeError(f"{cls.__name__}.__init__: {', '.join(missing)} without a default; a registered model "
                        "states its whole config as keyword defaults")
    return json.loads(json.dumps({p.name: p.default for p in params}))


def register_model(name: str, *, paper: str, overrides: dict | None = None, train_presets: dict | None = None,
                   description: str = "", tiny_config: dict | None = None):
    """Class decorator: ``@register_model("frdnet", paper="...")``. The default config is the constructor's keyword
    defaults, updated by ``overrides`` where one class is registered under several names (SegFormer's
    ``variant``); the stages are the class's ``stages``. A stale key in ``overrides`` or ``tiny_config`` fails
    at import."""

    def wrap(cls):
        defaults = merge_config(signature_config(cls), overrides or {}, where=f"{name} overrides")
        merge_config(defaults, tiny_config or {}, where=f"{name} tiny_config")
        _REGISTRY[name] = ModelEntry(name, cls, defaults, paper, tuple(cls.stages), copy.deepcopy(train_presets or {}),
                                     description, copy.deepcopy(tiny_config or {}))
        return cls

    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(_MODELS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{_MODELS_PACKAGE}.{module.name}")


def _load_named(name: str) -> None:
    """Import the models module called ``name`` if there is one (it registers the models it defines)."""
    if name.isidentifier() and importlib.util.find_spec(f"{_MODELS_PACKAGE}.{name}") is not None:
        importlib.import_module(f"{_MODELS_PACKAGE}.{name}")


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered model (imports its own module first, every module only when needed)."""
    if name not in _REGISTRY:
        _load_named(name)
    if name not in _REGISTRY:
        _load_all()
    return name in _REGISTRY


def get_entry(name: str) -> ModelEntry:
    if not is_registered(name):
        raise KeyError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def merge_config(defaults: dict, overrides: dict, *, where: str) -> dict:
    """Deep-merge ``overrides`` into ``defaults``; unknown keys raise a ValueError naming them."""
    out = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if key not in out:
            raise ValueError(f"{where}: unknown config key '{key}' (known: {', '.join(sorted(out))})")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge_config(out[key], value, where=f"{where}.{key}")
        else:
            out[key] = value
    return out


def parse_overrides(items) -> dict:
    """``["ensemble_size=1", "flip_tta=false"]`` -> ``{"ensemble_size": 1, "flip_tta": False}``: each value read as
    JSON, else kept as text (the ``--set KEY=VALUE`` options)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"a config override must be KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def create_model(name: str, *, weight_files: bool = True, **overrides):
    """Build a registered model with its paper defaults updated by ``overrides``; the one place that sets a model's
    ``model_name`` and ``config``. ``weight_files=False`` builds it without reading the weight files its config
    names (the ``*_weights`` paths: a checkpoint or a resumed run already holds those weights); the config still
    records them."""
    entry = get_entry(name)
    config = merge_config(entry.default_config, overrides, where=name)
    build = config if weight_files else {k: None if k.endswith("_weights") and isinstance(v, str) else v
                                         for k, v in config.items()}
    model = entry.cls(**build)
    model.model_name = name
    # a value the constructor resolved (e.g. NFA-ViT's train_noise_branch from whether weights were given) is
    # recorded, so the checkpoint rebuilds the same model without the weight files
    model.config = config | model.resolved_config()
    return model
