"""Weight-free experts beside a learned model, fused into one detector (the bundled default: the learned localiser,
the dense-field copy-move detector, :mod:`tamperscope.models.copymove`, the JPEG-lattice detector,
:mod:`tamperscope.models.jpeglattice`, and the aligned double-JPEG evidence, :mod:`tamperscope.models.doublejpeg`).

A checkpoint names its experts in its JSON config: ``"experts": {"copymove": {"config": {...}, "image":
{"authentic_scores": [...], "tampered_scores": [...]}}}`` — the expert's config overrides and its scores on the
validation photos (for the false-alarm and miss rates that ``predict`` reports when the expert decides).

Fusion rule (resolved choice, chosen on validation data, docs/MODELS.md): every probability is already on a scale
where 0.5 is the operating point chosen on validation data (the learned model's calibration; the deciding experts'
own rules: the copy-move expert's size rule, the JPEG-lattice expert's area rule). The fused score is the maximum
score: the photo is called tampered when any expert calls it so. The fused map is the pixel-wise maximum, except
that when an expert fires (its score above its 0.5) the learned map is first halved: it keeps its order (for the
pixel AUC) but no longer passes 0.5, so the regions drawn are the expert's. A found clone explains the photo far
better than the learned map's weak guesses around it (CASIA v1 val: mean pixel F1 0.344 with the plain maximum,
0.411 with this rule, 57 of its 138 forgeries firing the expert; a generated copy-move val set: 0.627 and 0.708,
116 of 138 firing; pixel AUC unchanged on both). In ``predict`` an expert sees the whole photo, never a tile (a
copy-move's two copies may lie in different tiles); in dataset evaluation (:class:`ExpertFusion`) it sees the photo
as the learned model does, at its own size, but unpadded: the learned model's input is padded to its multiple of 32
(:func:`~tamperscope.inference.padded_probabilities`), the experts' is not (their ``input_multiple`` is 1).

Evidence experts (``TamperModel.evidence``, the double-JPEG expert) do not detect on their own: their mask logits are
a log-likelihood ratio per block, added to the learned model's calibrated logits before the rule above (naive
Bayes: independent evidence adds in log-odds), with the weight and offset their config stores (chosen on
validation data, docs/MODELS.md). They never fire, never change the score and are not listed among the experts'
scores, so verdicts and false-alarm rates are the learned model's and the deciding experts'.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.base import TamperModel
from ..nn.norm import imagenet_normalize
from ..registry import create_model, is_registered
from ..errors import UserError
from ..inference import padded_probabilities

EXPERTS_KEY = "experts"
MAIN = "model"
_EPS = 1e-6
#: the learned map is multiplied by this when an expert fires (module docstring), so it stays at or below 0.5
FIRED_SCALE = 0.5


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
    """``{name: (H×W probability map, image probability)}`` of each expert on one whole uint8 RGB photo. An expert
    that reads pixels (:meth:`TamperModel.photo_logits`) gets the photo itself; the others the normalised tensor,
    made once."""
    out, x = {}, None
    for name, (model, _) in experts.items():
        direct = None if model.calibration else model.photo_logits(np.ascontiguousarray(image))
        if direct is not None:
            logits, logit = direct
            out[name] = (torch.sigmoid(torch.from_numpy(logits).float()).numpy(),
                         float(torch.sigmoid(torch.tensor(float(logit), dtype=torch.float64))))
            continue
        if x is None:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)
            x = imagenet_normalize(x).to(device)
        probs, scores = padded_probabilities(model, x)
        out[name] = (probs[0, 0].clamp(0, 1).cpu().numpy(), float(scores[0]))
    return out


def fuse(prob: torch.Tensor, score: torch.Tensor, outputs, evidence=()) -> tuple[torch.Tensor, torch.Tensor]:
    """The fusion rule (module docstring) on a batch: ``prob`` (``B×1×H×W``) and ``score`` (``B``) of the learned
    model, ``outputs`` an iterable of each deciding expert's ``(prob, score)`` of the same shapes and ``evidence``
    of each evidence expert's ``prob``, all calibrated."""
    evidence = list(evidence)
    if evidence:  # evidence first: its logits are added to the learned model's
        logit = torch.logit(prob, eps=_EPS)
        for p in evidence:
            logit = logit + torch.logit(p.to(prob.dtype), eps=_EPS)
        prob = torch.sigmoid(logit)
    outputs = list(outputs)
    if not outputs:
        return prob, score
    fired = torch.stack([s.reshape(-1) > 0.5 for _, s in outputs]).any(0)
    scale = torch.where(fired, FIRED_SCALE, 1.0).to(device=prob.device, dtype=prob.dtype)
    prob = prob * scale.view(-1, *([1] * (prob.dim() - 1)))
    for p, s in outputs:
        prob, score = torch.maximum(prob, p.to(prob.dtype)), torch.maximum(score, s.to(score.dtype))
    return prob, score


def evidence_names(experts: dict) -> frozenset[str]:
    """The names of the evidence experts (``TamperModel.evidence``) among ``{name: (model, scores)}``."""
    return frozenset(name for name, (model, _) in experts.items() if model.evidence)


def fuse_photo(prob: np.ndarray, score: float, outputs: dict, evidence: frozenset[str] = frozenset()
               ) -> tuple[np.ndarray, float]:
    """:func:`fuse` on one photo: the fused (``H×W`` map, score) from the learned model's map and score and the
    experts' :func:`expert_maps`, of which ``evidence`` names the evidence experts."""
    def batch(m, s):
        return torch.from_numpy(np.ascontiguousarray(m))[None, None], torch.tensor([float(s)], dtype=torch.float64)

    fused, fused_score = fuse(*batch(prob, score),
                              (batch(m, s) for name, (m, s) in outputs.items() if name not in evidence),
                              (batch(m, s)[0] for name, (m, s) in outputs.items() if name in evidence))
    return fused[0, 0].numpy(), float(fused_score[0])


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
        self.input_multiple = 1  # each part pads the photo as it needs (module docstring)

    def forward(self, image: torch.Tensor) -> dict:
        probs, scores = padded_probabilities(self.model, image)
        experts = list(self.experts.values())
        probs, scores = fuse(probs, scores, (padded_probabilities(e, image) for e in experts if not e.evidence),
                             (padded_probabilities(e, image)[0] for e in experts if e.evidence))
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
