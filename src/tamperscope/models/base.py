"""The model contract every method follows (ARCHITECTURE.md, "The model contract").

* ``forward(image)`` takes an ImageNet-normalised ``B×3×H×W`` tensor and returns a dict with at least
  ``mask_logits`` (``B×1×H×W``) and ``image_logit`` (``B``). Inference never needs a mask.
* ``loss(outputs, batch)`` returns ``{"total": tensor, <term>: tensor, ...}``.
* ``training_step(batch)`` is what the engine calls while training; the default is
  ``loss(forward(batch["image"]), batch)``. Diffusion models override it because their training
  forward needs the ground truth.
* ``data_requirements`` tells the data layer which extra targets to compute (edge bands).
* Multi-stage methods list ``stages`` and implement ``set_stage`` (freezing what the stage freezes).
* Optional capabilities are declared here with their defaults (ARCHITECTURE.md, "The model contract"), never
  discovered with ``getattr``: ``native_resolution``, ``input_multiple``, ``evidence``, ``finding``,
  ``compile_parts``, ``legacy_config``, ``complexity_variants``, :meth:`resolved_config`,
  :meth:`load_pretrained_stage`, :meth:`profile_extras` and :meth:`photo_logits`.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_weights
from ..errors import UserError
from ..inference import model_probabilities
from ..nn.error_level import to_uint8_rgb
from ..sizes import INPUT_MULTIPLE


class TamperModel(nn.Module):
    #: filled in by :func:`tamperscope.registry.create_model` (with :attr:`config`, the resolved config)
    model_name: str = ""
    #: names of training stages, in order (empty when the method has a single stage)
    stages: tuple[str, ...] = ()
    #: the stage :meth:`set_stage` chose (None for a single-stage method)
    stage: str | None = None
    #: whether the model reads each photo at its own size, padded to a multiple of 32, instead of a resize to
    #: ``S×S`` (resampling erases the JPEG traces ELA-style models read): predict, evaluation and training crops
    native_resolution: bool = False
    #: the multiple of which its input's sides must be; a photo of another size is padded at the bottom/right by
    #: edge replication and the map cropped back (:func:`tamperscope.inference.padded_probabilities`). Models that
    #: read pixels at any size (the weight-free experts) set 1, so that padding never enters their evidence
    input_multiple: int = INPUT_MULTIPLE
    #: whether, as a weight-free expert fused with a learned model, its mask logits are evidence (a log-likelihood
    #: ratio) added to the learned model's logits rather than a detection of its own that fires
    #: (:mod:`tamperscope.engine.experts`)
    evidence: bool = False
    #: what it means when this model, fused as a deciding expert, fires, in the analyst's words (``predict``'s
    #: verdict line and ``results.json`` ``findings``); empty for models that are not experts
    finding: str = ""
    #: operating points applied to the mask and image probabilities at inference (never in training), chosen on
    #: validation data by ``tamperscope export --calibrate`` and stored in the checkpoint (engine.calibration,
    #: applied by :func:`tamperscope.inference.model_probabilities`)
    calibration: dict | None = None
    #: methods that ``--compile`` compiles instead of the whole ``forward`` (:mod:`tamperscope.engine.compile`)
    compile_parts: tuple[str, ...] = ()
    #: config keys added after runs were saved, with the value those runs were trained with (``train --resume``)
    legacy_config: Mapping = MappingProxyType({})
    #: labelled config overrides whose cost ``tamperscope models`` lists beside the default's (e.g. without TTA)
    complexity_variants: Mapping[str, dict] = MappingProxyType({})

    def __init__(self):
        super().__init__()
        self.config: dict = {}

    def resolved_config(self) -> dict:
        """Config values the constructor resolved (e.g. from whether weight files were given), recorded in the
        checkpoint so that it rebuilds the same model without those files."""
        return {}

    def load_pretrained_stage(self, state_dict: dict, where: str = "pretrained weights"
                              ) -> tuple[list[str], list[str], list[str]]:
        """Start a stage from an earlier run's weights (``train --pretrained``); ``where`` names them in errors.
        Default: every weight that fits (``strict=False``). Returns (missing, unexpected, left out)."""
        missing, unexpected = load_weights(self, state_dict, where, strict=False)
        return missing, unexpected, []

    def profile_extras(self, image_size: int, device) -> dict:
        """Extra flat figures for ``tamperscope profile`` (e.g. DiffIML's cost per denoiser call); default none."""
        return {}

    def photo_logits(self, rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
        """``(H×W float32 mask logits, image logit)`` straight from one uint8 RGB photo, for weight-free models that
        read pixels (the experts): :func:`tamperscope.engine.experts.expert_maps` calls it instead of normalising a
        large photo into a tensor and back once per expert, and :class:`PhotoExpert` builds ``forward`` from it.
        Default None: the model has no such path."""
        return None

    def export_inputs(self, image: torch.Tensor):
        """The weight-free part of ``forward`` that stays outside an exported graph (e.g. OpenCV JPEG round trips,
        :mod:`tamperscope.engine.onnx_runtime`): the graph's input. Default: the image itself."""
        return image

    def export_forward(self, inputs: torch.Tensor) -> dict:
        """``forward`` from :meth:`export_inputs`' result: the part ONNX export traces."""
        return self(inputs)

    def data_requirements(self) -> dict:
        """What the data layer must build: extra targets (``"edge"``: None | "band" | "canny", ``"edge_width"``) and
        the training augmentation policy (``"augment"``: full | no_forgery | flips, :func:`augment_policy`)."""
        return {"edge": None, "edge_width": 7, "augment": "full"}

    def loss(self, outputs: dict, batch: dict) -> dict:
        raise UserError(f"{self.model_name or type(self).__name__} is not trainable: it defines no training loss")

    def training_step(self, batch: dict) -> dict:
        return self.loss(self(batch["image"]), batch)

    def stage_validation_step(self, batch: dict) -> dict | None:
        """Scalar validation metrics for pre-text stages whose ``forward`` is not a mask predictor
        (e.g. a reconstruction F1); ``None`` means "score ``forward`` with the pixel/image metrics"."""
        return None

    def selection_metric(self) -> tuple[str, str]:
        """(key, "max"|"min") used to choose the best epoch on the validation set."""
        return ("pixel_f1", "max")

    def set_stage(self, stage: str | None) -> None:
        if stage and stage not in self.stages:
            raise ValueError(f"{self.model_name}: unknown stage '{stage}' (stages: {', '.join(self.stages) or 'none'})")
        self.stage = stage

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: no weight decay on biases, norms, 1-d parameters and tokens (timm convention)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if p.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name:
                no_decay.append(p)
            else:
                decay.append(p)
        groups = []
        if decay:
            groups.append({"params": decay, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    @torch.no_grad()
    def predict_probabilities(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mask probability B×1×H×W, image probability B)``, calibrated when the model carries a
        ``calibration``."""
        return model_probabilities(self, image)


def max_pool_image_logit(mask_logits: torch.Tensor) -> torch.Tensor:
    """Image logit of a model without a detection head: the maximum mask logit (resolved choice)."""
    return mask_logits.flatten(1).amax(dim=1)


class PhotoExpert(TamperModel):
    """A weight-free detector that reads the uint8 photo itself (the experts fused into the default model): it
    implements :meth:`TamperModel.photo_logits`, and its ``forward`` is built from that, so the two paths agree. It
    reads each photo at its own size and unpadded (resampling or padding would add content that is not the photo's),
    and has nothing to train."""

    native_resolution = True
    input_multiple = 1

    def forward(self, image: torch.Tensor) -> dict:
        """:meth:`photo_logits` on each photo of the batch."""
        results = [self.photo_logits(np.ascontiguousarray(rgb)) for rgb in to_uint8_rgb(image)]
        logits = torch.from_numpy(np.stack([m for m, _ in results]).astype(np.float32)).to(image.device)[:, None]
        scores = torch.tensor([s for _, s in results], dtype=torch.float32, device=image.device)
        return {"mask_logits": logits, "image_logit": scores}

    def param_groups(self, weight_decay: float) -> list[dict]:
        raise UserError(f"{self.model_name or type(self).__name__} is not trainable: it is a fixed classical detector "
                        "without parameters")
