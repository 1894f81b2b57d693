"""tamperscope: image manipulation detection and localization.

Public API: :func:`create_model`, :func:`list_models`, :func:`load_checkpoint`, :func:`save_checkpoint`,
:func:`predict`.
"""
from .registry import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_checkpoint", "save_checkpoint", "predict", "__version__"]


def __getattr__(name):  # lazy: keep `import tamperscope` light
    if name in ("load_checkpoint", "save_checkpoint"):
        from . import checkpoint
        return getattr(checkpoint, name)
    if name in ("predict", "Prediction"):
        from .engine import predict as _predict
        return getattr(_predict, name)
    raise AttributeError(name)
