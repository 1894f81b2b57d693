"""``--compile`` of train, evaluate and predict: ``torch.compile`` of a model's tensor maths, in place.

- A model that lists ``compile_parts`` (method names, e.g. ela-unet's ``("decode",)``: its JPEG error levels are
  OpenCV work that the compiler could only break its graph on) gets those methods compiled; any other model its
  whole ``forward`` (:meth:`torch.nn.Module.compile`). Either way the model stays the same object with the same
  parameters and ``state_dict`` keys, so checkpoints, calibration and DDP are unaffected.
- The first call of each input shape compiles (minutes on a 2-core CPU, seconds on a GPU workstation); a second
  shape makes the compiler mark the sizes dynamic, so photos of any size compile once more and then run.
- The maths are unchanged; the compiler fuses and reorders float operations, so outputs differ from eager in the
  last bits (tests/engine/test_compile.py checks 1e-4).
"""
from __future__ import annotations

import torch

from ..errors import UserError


def compile_model(model: torch.nn.Module, *, dynamic: bool | None = None) -> torch.nn.Module:
    """Compile ``model`` in place (module docstring) and return it."""
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"torch.compile applies to PyTorch models, not to {type(model).__name__} (an .onnx file is "
                        "already optimised by its runtime)")
    parts = tuple(getattr(model, "compile_parts", ()) or ())
    for name in parts:
        method = getattr(model, name, None)
        if not callable(method):
            raise UserError(f"model '{getattr(model, 'model_name', type(model).__name__)}': compile_parts names "
                            f"'{name}', which is not one of its methods")
        setattr(model, name, torch.compile(method, dynamic=dynamic))
    if not parts:
        model.compile(dynamic=dynamic)
    return model
