"""Shared glue of the evaluation-style commands (evaluate, robustness, compare): load a checkpoint with the
image size it was trained at, build the dataset, run, compute."""
from __future__ import annotations

from ..checkpoint import load_checkpoint, read_checkpoint_config
from ..errors import UserError
from .distributed import init_distributed
from .evaluate import evaluate_model, evaluate_predictions


def trained_image_size(checkpoint: str) -> int:
    """The input size a checkpoint was trained at: from a single-file checkpoint's ``extra.train`` or a run
    folder's ``train`` section; 512 when unknown."""
    cfg = read_checkpoint_config(checkpoint)
    train = (cfg.get("extra") or {}).get("train") or cfg.get("train") or {}
    return int(train.get("image_size") or 512)


def load_for_inference(checkpoint: str, device, set_items=()):
    """A checkpoint (run folder / file), or the name of a weight-free built-in model such as ``ela``."""
    from pathlib import Path

    from ..commands.profile import parse_overrides
    from .predict import _builtin_model

    if not Path(checkpoint).exists():
        model = _builtin_model(str(checkpoint))
        if model is None:
            raise UserError(f"--checkpoint {checkpoint}: no such run folder or file (and not a weight-free "
                            "built-in model such as 'ela')")
        return model.to(device).eval()
    model = load_checkpoint(checkpoint, map_location="cpu", **parse_overrides(list(set_items)))
    return model.to(device).eval()


def trained_image_size_or_default(checkpoint: str) -> int:
    from pathlib import Path

    return trained_image_size(checkpoint) if Path(checkpoint).exists() else 512


def evaluate_native(model, records, device, threshold, perturb=None, progress=True):
    """Models that must see the photo at its own resolution (``native_resolution``, e.g. ELA: resampling
    erases JPEG traces) are run one image at a time, padded to a multiple of 32, through the predictor."""
    import numpy as np
    from tqdm import tqdm

    from ..data.transforms import parse_perturb
    from ..data.transforms import perturb as perturb_image
    from ..io import read_image, read_mask
    from ..metrics import MetricAccumulator
    from .evaluate import _groups, upsample_to
    from .predict import Predictor

    predictor = Predictor(model, 512, device, getattr(model, "model_name", "model"), 1)
    kind_level = parse_perturb(perturb) if perturb else None
    acc = MetricAccumulator(threshold)
    for index, rec in enumerate(tqdm(records, desc="evaluate", unit="img", disable=not progress, leave=False)):
        image = read_image(rec.image)
        gt = read_mask(rec.mask, expected_size=image.shape[:2]) if rec.mask else np.zeros(image.shape[:2], bool)
        if kind_level:
            image = perturb_image(image, kind_level[0], kind_level[1], rng=np.random.default_rng([0, index]))
        prob, score = predictor.maps([image])[0]
        if prob.shape != gt.shape:
            import torch

            prob = upsample_to(torch.from_numpy(prob)[None], gt.shape)
        acc.add(index, prob, gt, score=score, label=int(gt.any()), groups=_groups(rec.meta, int(gt.any())))
    return acc


def evaluate_source(*, checkpoint=None, predictions=None, data, threshold=0.5, perturb=None, image_size=None,
                    batch_size=8, device="auto", workers=2, on_mismatch="error", group_by=None, set_items=(),
                    model=None, progress=True):
    """Metrics (and per-group metrics) of a checkpoint/model or a predictions folder on ``data``."""
    from ..data.datasets import ForensicsDataset, load_dataset_spec
    from ..data.transforms import parse_perturb

    records = load_dataset_spec(data)
    if predictions:
        if perturb:
            raise UserError("--perturb applies to a model, not to saved predictions")
        acc = evaluate_predictions(predictions, records, threshold, progress=progress)
    else:
        rank, world, dev = init_distributed(device)
        if model is None:
            model = load_for_inference(checkpoint, dev, set_items)
            size = image_size or trained_image_size_or_default(checkpoint)
        else:
            model, size = model.to(dev).eval(), image_size or 512
        if getattr(model, "native_resolution", False):
            acc = evaluate_native(model, records, dev, threshold, perturb, progress)
        else:
            ds = ForensicsDataset(records, image_size=size, augment=False, on_mismatch=on_mismatch,
                                  perturb=parse_perturb(perturb) if perturb else None)
            acc, _ = evaluate_model(model, ds, batch_size=batch_size, device=dev, threshold=threshold,
                                    workers=workers, rank=rank, world_size=world, progress=progress)
    metrics = acc.compute()
    groups = acc.compute(group_by=group_by) if group_by else None
    return metrics, groups
