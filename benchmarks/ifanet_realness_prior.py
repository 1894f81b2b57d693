"""Does a small MAE realness prior, trained on authentic photos only, reconstruct tampered regions worse?

    .venv/bin/python benchmarks/ifanet_realness_prior.py [--data ../shared/data] [--minutes 5] [--crop 128]
        [--batch 16] [--lr 1e-3] [--threads 1] [--max-images 0] [--json OUT]

1. Trains IFA-Net's ``realness-prior`` stage (the "small" MAE of :mod:`tamperscope.backbones.mae`, 75 % random
   masking, MSE on removed patches) on random crops of ``authentic/`` (Kodak24, McMaster, LIVE1, BSDS500;
   the deliberately odd EXIF samples are skipped) for a fixed wall-clock budget on the CPU.
2. On the tampered images of CASIA v1 ``test.json`` it computes the Stage-I residual map
   (``IFANet.reconstruction_residual``: complementary-4 masking, seeded, at the image's own size) and reports
   the mean residual inside vs outside the tampered mask (per-image means averaged over images, and pooled
   over all pixels), the share of images whose inside mean is higher, and the per-image pixel AUC of the
   residual as a tampering score — for the trained prior and for the same MAE at random initialisation.

Not run by the test suite. This is a sanity check of the realness-prior mechanics at toy scale, not a
reproduction of the paper (which uses the ImageNet ViT-L MAE).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from tamperscope.errors import ImageReadError
from tamperscope.io import read_image, read_mask
from tamperscope.nn.norm import imagenet_normalize
from tamperscope.registry import create_model

AUTHENTIC_SETS = ("kodak24", "mcmaster18", "live1", "bsds500")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
# tiny MiT: the DSSN is not used by this benchmark, only built
MODEL_CONFIG = dict(mae_variant="small", mae_input_size=None, mit_variant="b0", mit_embed_dims=[16, 32, 80, 128],
                    mit_depths=[1, 1, 1, 1], decoder_dim=32, prompt_channels=[4, 8, 8, 16], prompt_dim=16)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return imagenet_normalize(torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None])


def load_authentic(root: Path, crop: int) -> list[np.ndarray]:
    images = []
    for name in AUTHENTIC_SETS:
        for path in sorted((root / "authentic" / name).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                rgb = read_image(path)
            except ImageReadError as exc:
                print(f"skip {exc}", file=sys.stderr)
                continue
            if min(rgb.shape[:2]) >= crop:
                images.append(rgb)
    return images


def random_batch(images: list[np.ndarray], crop: int, batch: int, rng: random.Random) -> torch.Tensor:
    out = []
    for _ in range(batch):
        img = images[rng.randrange(len(images))]
        y, x = rng.randrange(img.shape[0] - crop + 1), rng.randrange(img.shape[1] - crop + 1)
        patch = img[y:y + crop, x:x + crop]
        out.append(to_tensor(np.ascontiguousarray(patch[:, ::-1] if rng.random() < 0.5 else patch)))
    return torch.cat(out)


def train_prior(model, images, args) -> dict:
    rng = random.Random(0)
    val = random_batch(images, args.crop, 32, random.Random(123))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05, betas=(0.9, 0.95))
    model.eval()
    val_start = model.stage_validation_step({"image": val})["val_loss"]
    start, step, losses = time.time(), 0, []
    budget = args.minutes * 60
    while time.time() - start < budget:
        # linear warm-up over the first 5 % of the budget, then cosine decay by elapsed time
        frac = (time.time() - start) / budget
        lr = args.lr * min(1.0, frac / 0.05) if frac < 0.05 else args.lr * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = max(lr, args.lr * 0.01)
        model.train()
        loss = model.training_step({"image": random_batch(images, args.crop, args.batch, rng)})["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            print(f"step {step}  loss {np.mean(losses[-50:]):.4f}  {time.time() - start:.0f}s", file=sys.stderr)
    model.eval()
    return {"steps": step, "train_loss_last50": float(np.mean(losses[-50:])), "val_loss_before": val_start,
            "val_loss_after": model.stage_validation_step({"image": val})["val_loss"],
            "train_seconds": round(time.time() - start, 1)}


def casia_tampered(root: Path, limit: int) -> list[tuple[Path, Path]]:
    items = json.loads((root / "casia1" / "test.json").read_text())
    pairs = [(root / "casia1" / img, root / "casia1" / m) for img, m in items if m != "Negative"]
    return pairs[:limit] if limit else pairs


@torch.no_grad()
def residual_stats(model, pairs) -> dict:
    inside, outside, wins, aucs, pooled_in, pooled_out, skipped = [], [], 0, [], [0.0, 0], [0.0, 0], []
    for img_path, mask_path in pairs:
        try:
            rgb = read_image(img_path)
            gt = read_mask(mask_path, expected_size=rgb.shape[:2])
        except ImageReadError as exc:
            skipped.append(str(exc))
            continue
        h, w = (s // 32 * 32 for s in rgb.shape[:2])  # CASIA v1 is 384×256 (already multiples of 32)
        rgb, gt = rgb[:h, :w], gt[:h, :w]
        if not gt.any() or gt.all():
            skipped.append(f"{mask_path}: mask is empty or full after cropping")
            continue
        res = model.reconstruction_residual(to_tensor(np.ascontiguousarray(rgb)))[0, 0].numpy()
        r_in, r_out = float(res[gt].mean()), float(res[~gt].mean())
        inside.append(r_in)
        outside.append(r_out)
        wins += r_in > r_out
        aucs.append(roc_auc_score(gt.ravel(), res.ravel()))
        pooled_in[0] += float(res[gt].sum()); pooled_in[1] += int(gt.sum())
        pooled_out[0] += float(res[~gt].sum()); pooled_out[1] += int((~gt).sum())
    n = len(inside)
    return {"n_images": n, "skipped": skipped, "mean_inside": float(np.mean(inside)),
            "mean_outside": float(np.mean(outside)), "ratio": float(np.mean(inside) / np.mean(outside)),
            "pooled_inside": pooled_in[0] / pooled_in[1], "pooled_outside": pooled_out[0] / pooled_out[1],
            "share_inside_higher": wins / n, "pixel_auc_mean": float(np.mean(aucs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=0, help="CASIA test images to score (0 = all tampered)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(args.data).resolve()
    if not (root / "authentic").is_dir() or not (root / "casia1" / "test.json").is_file():
        sys.exit(f"{root}: expected authentic/ and casia1/test.json (see ../shared/data/README.md)")

    images = load_authentic(root, args.crop)
    pairs = casia_tampered(root, args.max_images)
    model = create_model("ifanet", stage="realness-prior", **MODEL_CONFIG)
    untrained = residual_stats(model.eval(), pairs)
    training = train_prior(model, images, args)
    trained = residual_stats(model.eval(), pairs)
    result = {"command": " ".join([".venv/bin/python"] + sys.argv), "authentic_images": len(images),
              "config": MODEL_CONFIG, "training": training, "untrained": untrained, "trained": trained}
    for key in ("untrained", "trained"):
        r = result[key]
        print(f"{key:9s}: residual inside {r['mean_inside']:.4f} vs outside {r['mean_outside']:.4f} "
              f"(ratio {r['ratio']:.3f}; pooled {r['pooled_inside']:.4f}/{r['pooled_outside']:.4f}); "
              f"inside higher in {100 * r['share_inside_higher']:.1f}% of {r['n_images']} images; "
              f"pixel AUC {r['pixel_auc_mean']:.3f}; skipped {len(r['skipped'])}")
    print(f"training: {training}")
    print(f"command: {result['command']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
