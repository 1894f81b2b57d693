"""Refit the default model's detection head on whole photos, the network frozen (docs/MODELS.md, "Image score").

The head was trained with the network on 256-pixel windows, but `predict` runs it on whole photos, where maxima
grow with the number of pixels. This script fits a new head (same architecture, 64 hidden units) on statistics
of whole training photos (``head_features.py``), for each ``head_pooling`` of ``ela-unet``, prints the
validation table that chooses between them, and writes the chosen head into a run folder that
``tamperscope export RUN OUT --calibrate VAL`` turns into a calibrated checkpoint:

    python benchmarks/default_model/refit_head.py --checkpoint src/tamperscope/weights/default.safetensors \
        --train F/train_photos.npz --train F/casia_train.npz --train F/syn_head.npz \
        --val F/casia_val.npz --val F/val_photos.npz --val F/syn_val.npz --val F/syn_val_nc.npz \
        --pooling top --out runs/default-head

Fit: the statistics standardised on the training photos (folded into the first layer afterwards), AdamW
(lr 3e-3, weight decay 1e-3), full batch, 400 steps, BCE with both classes weighted equally, seed 0. Validation
report: image AUC over all validation photos, and the recall of tampered photos at the score that 10 % of the
authentic validation photos pass (the shipped false-alarm rate), overall and for each validation file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tamperscope.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from tamperscope.metrics import image_metrics

#: the statistics (head_features.py) that each head_pooling of ela-unet feeds its head, in its order
POOLED = {"max": ("b_mean", "b_max", "l_max", "l_top1"), "top": ("b_mean", "b_top", "l_top01", "l_top1")}
FALSE_ALARM = 0.10


def load(files: list[str]) -> dict:
    parts = [dict(np.load(f, allow_pickle=False)) for f in files]
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("label", "pixels", *{s for v in POOLED.values()
                                                                                for s in v})}
    out["file"] = np.concatenate([[Path(f).stem] * len(p["label"]) for f, p in zip(files, parts)])
    return out


def pooled(data: dict, pooling: str) -> np.ndarray:
    cols = [data[k] if data[k].ndim == 2 else data[k][:, None] for k in POOLED[pooling]]
    return np.concatenate(cols, 1).astype(np.float32)


def fit_head(x: np.ndarray, y: np.ndarray, hidden: int, seed: int = 0, steps: int = 400) -> nn.Sequential:
    """The head ``Linear → ReLU → Linear`` on raw pooled statistics (standardisation folded in)."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.from_numpy((x - mu) / sd), torch.from_numpy(y.astype(np.float32))
    weight = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    head = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(head(xt)[:, 0], yt, weight=weight)
        loss.backward()
        opt.step()
    with torch.no_grad():  # W((x − μ)/σ) + b = (W/σ) x + (b − W μ/σ)
        first = head[0]
        first.bias -= first.weight @ torch.from_numpy(mu / sd)
        first.weight /= torch.from_numpy(sd)
    return head


def scores(head: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.from_numpy(x))[:, 0].numpy()


def report(name: str, s: np.ndarray, data: dict) -> str:
    y = data["label"]
    t = np.quantile(s[y == 0], 1 - FALSE_ALARM)
    auc = image_metrics(1.0 / (1.0 + np.exp(-s.astype(np.float64))), y)["image_auc"]
    row = [name, f"{auc:.3f}", f"{(s[y == 1] > t).mean():.3f}"]
    for f in dict.fromkeys(data["file"]):
        m = data["file"] == f
        au, tp = s[m & (y == 0)], s[m & (y == 1)]
        row.append(f"{(au > t).mean():.2f} / " + (f"{(tp > t).mean():.2f}" if len(tp) else "—"))
    big = (data["pixels"] >= 2_000_000) & (y == 0)
    row.append(f"{int((s[big] > t).sum())}/{int(big.sum())}")
    return "| " + " | ".join(row) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--train", action="append", required=True, help="features of training photos (repeat)")
    ap.add_argument("--val", action="append", required=True, help="features of validation photos (repeat)")
    ap.add_argument("--pooling", choices=tuple(POOLED), help="write the head refitted with this pooling")
    ap.add_argument("--out", help="run folder for the refitted model (with --pooling)")
    args = ap.parse_args()
    train, val = load(args.train), load(args.val)
    model = load_checkpoint(args.checkpoint).eval()
    hidden = model.head[0].out_features
    files = " | ".join(f"{f} FA / recall" for f in dict.fromkeys(val["file"]))
    print(f"| head | val image AUC | recall at {FALSE_ALARM:.0%} FA | {files} | ≥ 2 MP authentic FA |")
    print("|---" * (4 + len(set(val["file"]))) + "|")
    shipped = model.head
    print(report("shipped (max, fitted on 256-px windows)", scores(shipped, pooled(val, "max")), val))
    heads = {}
    for pooling in POOLED:
        heads[pooling] = fit_head(pooled(train, pooling), train["label"], hidden)
        print(report(f"{pooling}, refitted on whole photos", scores(heads[pooling], pooled(val, pooling)), val))
    if args.pooling:
        if not args.out:
            ap.error("--pooling needs --out")
        cfg = read_checkpoint_config(args.checkpoint)
        refit = load_checkpoint(args.checkpoint, head_pooling=args.pooling)
        refit.head.load_state_dict(heads[args.pooling].state_dict())
        train_recipe = dict((cfg.get("extra") or {}).get("train") or {})
        train_recipe["head_refit"] = {"pooling": args.pooling, "train": args.train, "val": args.val,
                                      "from": str(args.checkpoint)}
        refit.calibration = None
        save_checkpoint(refit, args.out, extra={"train": train_recipe})
        print(f"wrote {args.out} (head_pooling {args.pooling}); calibrate it with tamperscope export")


if __name__ == "__main__":
    main()
