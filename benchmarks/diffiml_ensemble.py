"""DiffIML efficiency and LightVAE reconstruction (paper 002 Table 4 and §4 "LightVAE reconstruction quality").

    .venv/bin/python benchmarks/diffiml_ensemble.py complexity [--image-size 512]
    .venv/bin/python benchmarks/diffiml_ensemble.py latency [--image-size 512] [--repeats 3] [--threads 1]
    .venv/bin/python benchmarks/diffiml_ensemble.py train-lightvae [--data ../shared/data/casia1] [--size 256]
                     [--minutes 5] [--batch 8] [--lr 1e-3] [--crop 0] [--resume W.safetensors] [--threads 1]
                     [--out lightvae.safetensors]

``complexity`` counts parameters and GMACs (FlopCounterMode ÷ 2, attention matmuls included, on the meta
device so nothing is computed) for the condition encoder, ONE denoiser call, the LightVAE decoder and the full
8-step sampling with N = 1 and N = 5 (no flip TTA, as in Table 4). ``latency`` times the full forward with
N = 1 and N = 5 (no TTA) on the CPU, the two interleaved in one run, and reports the median ratio.
``train-lightvae`` trains the LightVAE from scratch (L1 only, no teacher) on the CASIA v1 training masks and
their edge bands through the model's own ``training_step`` and reports the reconstruction F1 at 0.5 on the
tampered masks of ``val.json`` (pooled over all pixels, and the mean per mask). Not run by the test suite.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tamperscope.backbones.lightvae import mask_to_pm1
from tamperscope.data.edges import edge_band
from tamperscope.complexity import count_gmacs_split
from tamperscope.io import read_mask
from tamperscope.registry import create_model

REPO = Path(__file__).resolve().parents[1]


def complexity(image_size: int) -> dict:
    with torch.device("meta"):
        model = create_model("diffiml", flip_tta=False).eval()
    n = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 3)  # noqa: E731
    h = image_size // 8
    meta = torch.device("meta")
    z = torch.empty(1, 8, h, h, device=meta)
    t = torch.zeros(1, dtype=torch.long, device=meta)
    cond = torch.empty(1, 128, h, h, device=meta)
    parts = {
        "condition_encoder": lambda x: model.condition(x),
        "denoiser_call": lambda x: model.denoiser(z, t, cond),
        "lightvae_decode": lambda x: model.lightvae.decode(z[:, :4]),
    }
    out = {"image_size": image_size,
           "params_m": {"total": n(model), "condition_encoder": n(model.condition_encoder),
                        "mit": n(model.condition_encoder.backbone), "denoiser": n(model.denoiser),
                        "lightvae": n(model.lightvae)}}
    for name, fn in parts.items():
        total, attention = count_gmacs_split(model, image_size, device="meta", forward=fn)
        out[f"gmacs_{name}"] = round(total, 3)
        out[f"gmacs_{name}_attention"] = round(attention, 3)
    for members in (1, 5):
        model.ensemble_size = members
        total, attention = count_gmacs_split(model, image_size, device="meta")
        out[f"gmacs_full_8step_N{members}"] = round(total, 3)
        out[f"gmacs_full_8step_N{members}_excl_attention"] = round(total - attention, 3)
    return out


def latency(image_size: int, repeats: int) -> dict:
    model = create_model("diffiml", flip_tta=False).eval()
    x = torch.randn(1, 3, image_size, image_size)
    times: dict[int, list[float]] = {1: [], 5: []}
    with torch.inference_mode():
        for members in (1, 5):  # warm-up
            model.ensemble_size = members
            model(x)
        for _ in range(repeats):
            for members in (1, 5):
                model.ensemble_size = members
                start = time.perf_counter()
                model(x)
                times[members].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"image_size": image_size, "threads": torch.get_num_threads(), "repeats": repeats,
            "ms_N1": round(1000 * med[1], 1), "ms_N5": round(1000 * med[5], 1),
            "ratio_N5_over_N1": round(med[5] / med[1], 3)}


def load_masks(json_path: Path, size: int, tampered_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of an IMDL-BenCo list and their edge bands (width 7, at the original resolution), resized to
    ``size`` with nearest neighbour; authentic entries ("Negative") are empty masks unless ``tampered_only``."""
    items = json.loads(json_path.read_text())
    masks, edges = [], []
    for _, mask_rel in items:
        if mask_rel == "Negative":
            if tampered_only:
                continue
            m = np.zeros((size, size), dtype=bool)
        else:
            m = read_mask(json_path.parent / mask_rel)
        band = edge_band(m, 7)
        for arr, out in ((m, masks), (band, edges)):
            t = torch.from_numpy(arr.astype(np.float32))[None, None]
            out.append(F.interpolate(t, size=(size, size), mode="nearest")[0])
    return torch.stack(masks), torch.stack(edges)


@torch.no_grad()
def reconstruction_f1(vae, masks: torch.Tensor, batch: int = 32) -> dict:
    tp = fp = fn = 0
    per_mask = []
    for chunk in masks.split(batch):
        pred = vae.decode(vae.encode(mask_to_pm1(chunk))) > 0
        gt = chunk > 0.5
        ctp = (pred & gt).flatten(1).sum(1)
        cfp = (pred & ~gt).flatten(1).sum(1)
        cfn = (~pred & gt).flatten(1).sum(1)
        tp, fp, fn = tp + int(ctp.sum()), fp + int(cfp.sum()), fn + int(cfn.sum())
        per_mask += (2 * ctp / (2 * ctp + cfp + cfn).clamp(min=1)).tolist()
    return {"recon_f1_pooled": round(2 * tp / (2 * tp + fp + fn), 5),
            "recon_f1_mean": round(float(np.mean(per_mask)), 5), "n_masks": len(per_mask)}


def random_crops(masks: torch.Tensor, edges: torch.Tensor, crop: int, generator: torch.Generator):
    """The same random ``crop``×``crop`` window of each mask and its edge band (the LightVAE is local)."""
    size = masks.shape[-1]
    corners = torch.randint(0, size - crop + 1, (len(masks), 2), generator=generator).tolist()
    return (torch.stack([m[:, y:y + crop, x:x + crop] for m, (y, x) in zip(masks, corners)]),
            torch.stack([e[:, y:y + crop, x:x + crop] for e, (y, x) in zip(edges, corners)]))


def train_lightvae(data: Path, size: int, minutes: float, batch: int, lr: float, crop: int, resume: Path | None,
                   out: Path | None) -> dict:
    train_masks, train_edges = load_masks(data / "train.json", size, tampered_only=False)
    val_masks, _ = load_masks(data / "val.json", size, tampered_only=True)
    model = create_model("diffiml", stage="lightvae", encoder_variant="b0")  # the encoder is unused here
    if resume is not None:
        model.load_lightvae_weights(resume)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(0)
    start, step, epoch = time.perf_counter(), 0, 0
    while time.perf_counter() - start < 60 * minutes:
        order = torch.randperm(len(train_masks), generator=generator)
        for idx in order.split(batch):
            flip = bool(torch.rand((), generator=generator) < 0.5)  # cheap augmentation: horizontal flip
            m, e = train_masks[idx], train_edges[idx]
            if crop:
                m, e = random_crops(m, e, crop, generator)
            if flip:
                m, e = m.flip(-1), e.flip(-1)
            loss = model.training_step({"mask": m, "edge": e})["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if time.perf_counter() - start > 60 * minutes:
                break
        epoch += 1
        print(f"epoch {epoch} step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    result = {"size": size, "crop": crop, "resumed_from": str(resume) if resume else None, "steps": step,
              "epochs_started": epoch, "batch": batch, "lr": lr,
              "train_masks": len(train_masks), "seconds": round(time.perf_counter() - start, 1),
              "final_loss": round(loss.item(), 5), **reconstruction_f1(model.lightvae, val_masks)}
    if out is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.lightvae.state_dict().items()}, str(out))
        result["saved"] = str(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("complexity")
    p.add_argument("--image-size", type=int, default=512)
    p = sub.add_parser("latency")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("train-lightvae")
    p.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "casia1")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--crop", type=int, default=0, help="train on random crops of this size (0: whole masks)")
    p.add_argument("--resume", type=Path, default=None, help="LightVAE weights to start from")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "complexity":
        result = complexity(args.image_size)
    elif args.command == "latency":
        result = latency(args.image_size, args.repeats)
    else:
        result = train_lightvae(args.data.resolve(), args.size, args.minutes, args.batch, args.lr, args.crop,
                                args.resume, args.out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
