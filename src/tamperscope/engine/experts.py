"""Weight-free experts beside a learned model, fused into one detector (the bundled default: the learned localiser
and the dense-field copy-move detector, :mod:`tamperscope.models.copymove`).

A checkpoint names its experts in its JSON config: ``"experts": {"copymove": {"config": {...}, "image":
{"authentic_scores": [...], "tampered_scores": [...]}}}`` — the expert's config overrides and its scores on the
validation photos (for the false-alarm and miss rates that ``predict`` reports when the expert decides).

Fusion rule (resolved choice, docs/MODELS.md): every probability is already on a scale where 0.5 is the operating
point chosen on validation data (the learned model's calibration; the copy-move expert's own size rule), so the
fused map is the pixel-wise maximum and the fused score the maximum score: the photo is called tampered when any
expert calls it so, and each expert's regions are drawn. In ``predict`` an expert sees the whole photo, never a
tile (a copy-move's two copies may lie in different tiles); in dataset evaluation (:class:`ExpertFusion`) it sees
what the learned model sees, the photo padded to a multiple of 32.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.base import TamperModel
from ..nn.norm import imagenet_normalize
from ..registry import create_model, is_registered
from ..errors import UserError
from ..inference import model_probabilities

EXPERTS_KEY = "experts"
MAIN = "model"
_EPS = 1e-6


def build_experts(spec: dict | None, where: str) -> dict[str, tuple[TamperModel, dict | None]]:
    """``{name: (expert model, its validation scores or None)}`` from a checkpoint's ``experts`` entry."""
    experts = {}
    for name, entry in (spec or {}).items():
        if not isinstance(entry, dict) or not is_registered(name):
            raise UserError(f"{where}: unknown expert {name!r} in the checkpoint's experts")
        model = create_model(name, **dict(entry.get("config") or {}))
        if any(True for _ in model.parameters()):
            raise UserError(f"{where}: expert {name!r} needs weights; only weight-free experts can be attached")
        experts[name] = (model.eval(), entry.get("image"))
    return experts


def expert_maps(experts: dict, image: np.ndarray, device: torch.device) -> dict[str, tuple[np.ndarray, float]]:
    """``{name: (H×W probability map, image probability)}`` of each expert on one whole uint8 RGB photo."""
    if not experts:
        return {}
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)
    x = imagenet_normalize(x).to(device)
    out = {}
    for name, (model, _) in experts.items():
        probs, scores = model_probabilities(model, x)
        out[name] = (probs[0, 0].clamp(0, 1).cpu().numpy(), float(scores[0]))
    return out


class ExpertFusion(TamperModel):
    """A learned model and its experts as one model, for dataset evaluation (module docstring: the fusion rule).
    It outputs fused logits and carries no calibration of its own: the learned model's is applied inside."""

    def __init__(self, model: TamperModel, experts: dict[str, tuple[TamperModel, dict | None]]):
        super().__init__()
        self.model = model
        self.experts = torch.nn.ModuleDict({name: expert for name, (expert, _) in experts.items()})
        self.model_name = f"{model.model_name}+{'+'.join(experts)}"
        self.config = model.config
        self.native_resolution = model.native_resolution

    def forward(self, image: torch.Tensor) -> dict:
        probs, scores = model_probabilities(self.model, image)
        for expert in self.experts.values():
            p, s = model_probabilities(expert, image)
            probs, scores = torch.maximum(probs, p.to(probs.dtype)), torch.maximum(scores, s.to(scores.dtype))
        return {"mask_logits": torch.logit(probs.float(), eps=_EPS), "image_logit": torch.logit(scores, eps=_EPS)}


def attach_experts(source, out, spec: dict) -> None:
    """Write the single-file checkpoint ``source`` to ``out`` with its ``experts`` entry set to ``spec`` (weights
    unchanged; ``out`` must be another file)."""
    import json
    from pathlib import Path

    from ..checkpoint import read_checkpoint_config, read_weights_file, save_state_dict

    if Path(out).resolve() == Path(source).resolve():
        raise UserError(f"{out}: the output must not replace the input checkpoint")
    cfg = read_checkpoint_config(source)
    build_experts(spec, str(source))  # refuse unknown experts before writing
    save_state_dict(read_weights_file(source), out, metadata={"tamperscope": json.dumps(dict(cfg, experts=spec))})
