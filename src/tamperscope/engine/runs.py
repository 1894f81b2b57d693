"""Shared glue of the evaluation-style commands (evaluate, robustness, compare): load a model at the image size it
was trained at (:func:`tamperscope.engine.loading.load_model`), build the dataset, run, compute."""
from __future__ import annotations

from ..data.datasets import load_evaluation_records
from ..data.transforms import parse_perturb
from ..errors import UserError
from ..sizes import DEFAULT_IMAGE_SIZE
from .distributed import init_distributed
from .evaluate import evaluate_model, evaluate_predictions, evaluation_dataset
from .loading import load_model


def evaluate_source(*, checkpoint=None, predictions=None, data, threshold=0.5, perturb=None, image_size=None,
                    batch_size=8, device="auto", workers=2, on_mismatch="error", group_by=None, overrides=None,
                    model=None, progress=True, compile=False, experts=True):
    """Metrics (and per-group metrics) of a checkpoint/model (:func:`~tamperscope.engine.loading.load_model`, with
    config ``overrides``) or a predictions folder on ``data``; ``experts=False`` scores a fused checkpoint's learned
    model alone."""
    records = load_evaluation_records(data)
    if predictions:
        if perturb:
            raise UserError(f"perturbation {perturb}: applies to a model, not to saved predictions")
        acc = evaluate_predictions(predictions, records, threshold, progress=progress, on_mismatch=on_mismatch)
    else:
        rank, world, dev = init_distributed(device)
        if model is None:
            loaded = load_model(checkpoint, dev, overrides, experts=experts, image_size=image_size)
            model, size = loaded.fused(), loaded.image_size
        else:
            model, size = model.to(dev).eval(), image_size or DEFAULT_IMAGE_SIZE
        if compile:
            from .compile import compile_model

            compile_model(model)
        ds = evaluation_dataset(model, records, size, on_mismatch=on_mismatch,
                                perturb=parse_perturb(perturb) if perturb else None)
        acc, _ = evaluate_model(model, ds, batch_size=batch_size, device=dev, threshold=threshold,
                                workers=workers, rank=rank, world_size=world, progress=progress)
    metrics = acc.compute()
    groups = acc.compute(group_by=group_by) if group_by else None
    return metrics, groups
