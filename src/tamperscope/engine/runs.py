"""Shared glue of the evaluation-style commands (evaluate, robustness, compare): load a checkpoint with the
image size it was trained at, build the dataset, run, compute."""
from __future__ import annotations

from ..checkpoint import load_checkpoint, read_checkpoint_config
from ..errors import UserError
from .distributed import init_distributed
from .evaluate import evaluate_model, evaluate_predictions, evaluation_dataset
from .experts import EXPERTS_KEY, ExpertFusion, build_experts


def resolve_checkpoint(spec: str) -> str:
    """The bundled default model's file for ``default`` (:func:`~tamperscope.engine.predict.names_default_model`);
    any other spec unchanged."""
    from .predict import DEFAULT_WEIGHTS, default_weights_ref, names_default_model

    if not names_default_model(spec):
        return spec
    ref = default_weights_ref()
    if not ref.is_file():
        raise UserError(f"--checkpoint default: no default model installed (tamperscope/weights/{DEFAULT_WEIGHTS} "
                        "is missing)")
    return str(ref)


def trained_image_size(checkpoint: str) -> int:
    """The input size a checkpoint was trained at: from a single-file checkpoint's ``extra.train`` or a run
    folder's ``train`` section; 512 when unknown."""
    cfg = read_checkpoint_config(resolve_checkpoint(checkpoint))
    train = (cfg.get("extra") or {}).get("train") or cfg.get("train") or {}
    return int(train.get("image_size") or 512)


def load_for_inference(checkpoint: str, device, set_items=(), experts: bool = True):
    """A checkpoint (run folder / file), ``default``, or the name of a weight-free built-in model such as ``ela``;
    a checkpoint that names experts comes fused with them unless ``experts`` is False (engine.experts)."""
    from pathlib import Path

    from ..commands.profile import parse_overrides
    from .predict import _builtin_model

    checkpoint = resolve_checkpoint(checkpoint)
    if not Path(checkpoint).exists():
        model = _builtin_model(str(checkpoint))
        if model is None:
            raise UserError(f"--checkpoint {checkpoint}: no such run folder or file (and not a weight-free "
                            "built-in model such as 'ela')")
        return model.to(device).eval()
    model = load_checkpoint(checkpoint, map_location="cpu", **parse_overrides(list(set_items)))
    spec = read_checkpoint_config(checkpoint).get(EXPERTS_KEY) if experts else None
    if spec:
        model = ExpertFusion(model, build_experts(spec, checkpoint))
    return model.to(device).eval()


def trained_image_size_or_default(checkpoint: str) -> int:
    from pathlib import Path

    checkpoint = resolve_checkpoint(checkpoint)
    return trained_image_size(checkpoint) if Path(checkpoint).exists() else 512


def evaluate_source(*, checkpoint=None, predictions=None, data, threshold=0.5, perturb=None, image_size=None,
                    batch_size=8, device="auto", workers=2, on_mismatch="error", group_by=None, set_items=(),
                    model=None, progress=True, compile=False, experts=True):
    """Metrics (and per-group metrics) of a checkpoint/model or a predictions folder on ``data``; ``experts=False``
    scores a fused checkpoint's learned model alone."""
    from ..data.datasets import load_evaluation_records
    from ..data.transforms import parse_perturb

    records = load_evaluation_records(data)
    if predictions:
        if perturb:
            raise UserError("--perturb applies to a model, not to saved predictions")
        acc = evaluate_predictions(predictions, records, threshold, progress=progress, on_mismatch=on_mismatch)
    else:
        rank, world, dev = init_distributed(device)
        if model is None:
            model = load_for_inference(checkpoint, dev, set_items, experts)
            size = image_size or trained_image_size_or_default(checkpoint)
        else:
            model, size = model.to(dev).eval(), image_size or 512
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
