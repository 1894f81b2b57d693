"""Learnability of every paper model and the SegFormer baseline at a CPU size (issue 21, point 1).

Two checks per model, at a reduced size (small encoders, fewer diffusion steps; the exact configuration of each
model is printed and written to the results JSON):

* ``overfit`` (a): train on the same 16 tampered CASIA v1 training images (the first 16 tampered entries of
  ``casia1/train.json``, resized to ``--overfit-size``, no augmentation, the whole set as one batch) for a fixed
  number of steps, then score the model's own inference output (``forward``: for DiffIML the full DDIM sampling
  and LightVAE decoding) on those images: mean per-image pixel F1 at 0.5 at the training resolution. A model
  that cannot reach 0.9 has a bug (or needs more steps than the budget: the curve tells which).
* ``budget`` (b): train for a fixed number of CPU seconds of the training process (``time.process_time``, so a
  machine shared with other jobs gives the same budget) on generated forgeries (``tamperscope synthesize``), with
  each model's own training augmentation policy, and validate at fixed CPU intervals on a generated val set;
  ELA (``--checkpoint ela``, no training) is scored on the same val set. Val scoring is the protocol's
  (:func:`tamperscope.engine.evaluate.evaluate_model`: maps upsampled to the full-resolution ground truth,
  mean per-image F1 at 0.5 over the tampered images). The trivial all-one map is scored too: where generated
  regions are large it beats ELA, so it is the floor to read a model against. A model with an earlier stage
  (DiffIML's LightVAE) spends the first 10 % of its budget on it.

Data for (b) (outside the repository), synthesized at the check's size so that no resize blurs the JPEG traces::

    tamperscope synthesize --photos configs/default-model/train_photos.json --out /work/cache/learn/train \\
        --tampered 1200 --authentic 200 --seed 1 --max-side 128
    tamperscope synthesize --photos configs/default-model/val_photos.json --out /work/cache/learn/val \\
        --tampered 96 --authentic 32 --seed 2 --max-side 128

Usage::

    OMP_NUM_THREADS=1 python benchmarks/learnability.py overfit --overfit-steps 150 [--models NAME ...]
    OMP_NUM_THREADS=1 python benchmarks/learnability.py ela            # ELA and the all-one map on val
    OMP_NUM_THREADS=1 python benchmarks/learnability.py budget --minutes 4 --evals 2
    python benchmarks/learnability.py plot          # PNGs of the (a) and (b) curves from the saved results

Results (JSON per model and check, curves PNG) go to ``--out`` (default /work/cache/learn/results), never into
the repository. Training runs on the CPU with one thread (``torch.set_num_threads(1)``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
DEFAULT_OUT = Path("/work/cache/learn/results")


@dataclass
class Spec:
    """One model at its CPU size: registry name, config overrides, optimiser and a note on what was reduced."""
    model: str
    config: dict
    lr: float
    reduced: str
    #: an earlier stage trained first on the same data, ``(stage, steps, lr)`` (DiffIML's LightVAE)
    pre_stage: tuple[str, int, float] | None = None
    clip_grad: float | None = 1.0
    weight_decay: float = 0.0


#: the CPU configurations (the papers' sizes are given in docs/MODELS.md)
SPECS: dict[str, Spec] = {
    "segformer-b0": Spec(
        "segformer-b0", dict(drop_path_rate=0.0, dropout=0.0, dice_weight=1.0, dice_form="image"), 1e-3,
        "MiT-b0 + All-MLP head (256); BCE + per-image Dice (the repo's CPU recipe); random init"),
    "frdnet": Spec(
        "frdnet", dict(encoder_variant="b0", drop_path_rate=0.0), 1e-3,
        "MiT-b0 encoder (paper: b2), stage-4 width 256, 4 FRD blocks, ICM centres 64/16/2, paper decoder widths; "
        "squared Dice + edge Dice (official code); random init"),
    "nfavit": Spec(
        "nfavit", dict(noise_extractor="residual", image_variant="b0", decoder_dim=128, drop_path_rate=0.0), 1e-3,
        "image MiT-b0 (paper: b2), noise MiT-b0 trained (no ImageNet weights), SRM residual instead of "
        "Noiseprint++, decoder width 128 (paper: 512); random init"),
    "ifanet": Spec(
        "ifanet", dict(mae_variant="tiny", mae_input_size=None, mit_variant="b0", decoder_dim=128,
                       prompt_channels=[8, 16, 32, 64], prompt_dim=64, drop_path_rate=0.0, head_dropout=0.0), 1e-3,
        "both stages (MAE realness prior, TAPI, adaptive decoder): tiny ViT-MAE (2 blocks, width 32, random and "
        "frozen; paper: ViT-L/16 pretrained) at the input size, two MiT-b0 streams (paper: b2), head 128; "
        "random init"),
    "diffforensics": Spec(
        "diffforensics", dict(encoder_variant="b0", encoder_drop_path=0.0), 1e-3,
        "fine-tune stage from random init (no Simplex-DDPM pre-training), MiT-b0 encoder (paper: b2), decoder "
        "widths 32/64/128"),
    "diffiml": Spec(
        "diffiml", dict(encoder_variant="b0", condition_channels=64, unet_channels=64, ensemble_size=2,
                        num_inference_steps=4, flip_tta=False, drop_path_rate=0.0), 1e-3,
        "LightVAE (b = 32, trained first on the same masks, L1 only: no SD-VAE teacher), MiT-b0 condition "
        "encoder (paper: b3) to 64 channels, 64-channel UNet (paper: 128), DDIM 4 steps (paper: 8), ensemble "
        "of 2 (paper: 5), no flip TTA (at 64 px the ×8 LightVAE's 8×8 latent reconstructs the 16 masks only to "
        "a mean F1 of ≈ 0.86, the ceiling of the sampled masks: run the overfit check at --overfit-size 96)",
        pre_stage=("lightvae", 300, 1e-3)),
}


# ------------------------------------------------------------------------------------------------ helpers


def cpu_info() -> str:
    return (f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)")


def build(spec: Spec, stage: str | None = None):
    from tamperscope.registry import create_model

    cfg = dict(spec.config)
    if stage:
        cfg["stage"] = stage
    model = create_model(spec.model, **cfg)
    if model.stages:
        model.set_stage(stage or model.config.get("stage"))
    return model


def optimizer(model, spec: Spec, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.param_groups(spec.weight_decay), lr=lr)


def dataset(model, records, size: int, augment: bool, seed: int = 0):
    from tamperscope.data.datasets import ForensicsDataset
    from tamperscope.data.transforms import augment_policy

    req = model.data_requirements()
    config, forgery_ops = augment_policy(req.get("augment", "full"))
    extra = {"canny_dilate": req.get("edge_width", 5)} if req.get("edge") == "canny" else {}
    return ForensicsDataset(records, image_size=size, augment=augment, edge=req.get("edge"),
                            edge_width=req.get("edge_width", 7), on_mismatch="skip", seed=seed,
                            augment_config=config, forgery_ops=forgery_ops, **extra)


def stacked(ds, n: int | None = None) -> dict:
    from tamperscope.data.datasets import collate

    return collate([ds[i] for i in range(min(len(ds), n or len(ds)))])


def step(model, opt, batch: dict, clip: float | None) -> dict:
    model.train()
    losses = model.training_step(batch)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
    opt.step()
    return {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}


@torch.no_grad()
def pixel_f1_on(model, batch: dict, chunk: int = 16) -> dict:
    """Mean per-image pixel F1 at 0.5 of the model's inference output on a stacked batch, at its resolution."""
    from tamperscope.inference import model_probabilities
    from tamperscope.metrics import MetricAccumulator

    model.eval()
    acc = MetricAccumulator(0.5)
    for i in range(0, batch["image"].shape[0], chunk):
        probs, _ = model_probabilities(model, batch["image"][i:i + chunk])
        acc.add(batch["index"][i:i + chunk].numpy(), probs.numpy(), batch["mask"][i:i + chunk].numpy() > 0.5)
    m = acc.compute()
    return {"pixel_f1": m["pixel_f1"], "pixel_iou": m["pixel_iou"], "pixel_auc": m.get("pixel_auc")}


@torch.no_grad()
def lightvae_ceiling(model, batch: dict) -> float:
    """Mean per-image F1 at 0.5 of DiffIML's LightVAE round trip decode(encode(mask)): what a perfect denoiser
    would give."""
    from tamperscope.backbones.lightvae import mask_to_pm1
    from tamperscope.metrics import MetricAccumulator

    acc = MetricAccumulator(0.5)
    recon = model.lightvae.decode(model.lightvae.encode(mask_to_pm1(batch["mask"])))
    acc.add(batch["index"].numpy(), torch.sigmoid(recon).numpy(), batch["mask"].numpy() > 0.5)
    return acc.compute()["pixel_f1"]


def overfit_records(n: int):
    from tamperscope.data.datasets import load_evaluation_records

    records = [r for r in load_evaluation_records(SHARED / "casia1" / "train.json") if r.mask is not None]
    return records[:n + 4]  # a few spare: the dataset drops a record whose mask does not fit its image


# ------------------------------------------------------------------------------------------------ (a) overfit


def run_overfit(name: str, spec: Spec, records, size: int, steps: int, eval_every: int, seed: int = 0,
                log=print, n_images: int = 16) -> dict:
    """Train ``spec`` on ``records`` (one batch, no augmentation) for ``steps`` steps; F1 of ``forward`` on them."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    result = {"model": name, "check": "overfit", "config": spec.config, "reduced": spec.reduced, "size": size,
              "steps": steps, "lr": spec.lr, "curve": []}
    t0 = time.process_time()
    model = build(spec, spec.pre_stage[0] if spec.pre_stage else None)
    batch = stacked(dataset(model, records, size, augment=False), n_images)
    result["images"] = int(batch["image"].shape[0])
    if spec.pre_stage:  # e.g. DiffIML's LightVAE, trained on the same masks before the denoiser
        stage, pre_steps, pre_lr = spec.pre_stage
        opt = optimizer(model, spec, pre_lr)
        for _ in range(pre_steps):
            terms = step(model, opt, batch, spec.clip_grad)
        model.eval()
        result["pre_stage"] = {"stage": stage, "steps": pre_steps, "lr": pre_lr, "last_loss": terms["total"],
                               **(model.stage_validation_step(batch) or {})}
        if hasattr(model, "lightvae"):  # DiffIML: the ceiling of its sampled masks, in the check's metric
            result["pre_stage"]["recon_pixel_f1"] = lightvae_ceiling(model, batch)
        log(f"  {name}: {stage} stage {pre_steps} steps, {result['pre_stage']}")
        model.set_stage(None)
    opt = optimizer(model, spec, spec.lr)
    result["curve"].append({"step": 0, **pixel_f1_on(model, batch)})  # the untrained model, for contrast
    for s in range(1, steps + 1):
        terms = step(model, opt, batch, spec.clip_grad)
        if s % eval_every == 0 or s == steps:
            metrics = pixel_f1_on(model, batch)
            result["curve"].append({"step": s, "loss": terms["total"], "terms": terms, **metrics})
            log(f"  {name} step {s}: loss {terms['total']:.4f} F1 {metrics['pixel_f1']:.3f} "
                f"({time.process_time() - t0:.0f} s CPU)")
    result["pixel_f1"] = result["curve"][-1]["pixel_f1"]
    result["best_pixel_f1"] = max(p["pixel_f1"] for p in result["curve"] if p["step"])
    if getattr(model, "sample_scheduler", None) is not None:  # DiffIML: the same weights, x̂₀ clipped to ±1
        unclipped = model.sample_scheduler
        model.sample_scheduler = type(unclipped).from_config(unclipped.config, clip_sample=True,
                                                             clip_sample_range=1.0)
        result["pixel_f1_official_clip"] = pixel_f1_on(model, batch)["pixel_f1"]
        model.sample_scheduler = unclipped
        log(f"  {name}: F1 with DDIM's x0 clipped to ±1 (official sampler): {result['pixel_f1_official_clip']:.3f}")
    result["cpu_s"] = time.process_time() - t0
    result["passed"] = result["pixel_f1"] >= 0.9
    return result


# ------------------------------------------------------------------------------------------------ (b) budget


def all_tampered_model():
    """The trivial all-one map (every pixel tampered): the floor a learnt model must beat where regions are large.
    A model of the toolkit's contract, so it is evaluated exactly as the trained models are."""
    from tamperscope.models.base import TamperModel

    class AllTampered(TamperModel):
        def forward(self, image):
            logits = torch.full_like(image[:, :1], 20.0)
            return {"mask_logits": logits, "image_logit": logits.flatten(1).amax(1)}

    return AllTampered()


def evaluate_on(model, records, size: int) -> dict:
    from tamperscope.engine.evaluate import evaluate_model, evaluation_dataset

    acc, _ = evaluate_model(model, evaluation_dataset(model, records, size, on_mismatch="skip"), batch_size=8,
                            progress=False)
    m = acc.compute()
    return {k: m.get(k) for k in ("pixel_f1", "pixel_iou", "pixel_auc", "pixel_f1_best", "image_auc")}


def run_budget(name: str, spec: Spec, train_records, val_records, size: int, seconds: float, evals: int,
               batch_size: int, seed: int = 0, log=print) -> dict:
    """Train for ``seconds`` of process CPU time, validating ``evals`` times at equal CPU intervals."""
    from torch.utils.data import DataLoader

    from tamperscope.data.datasets import collate

    torch.manual_seed(seed)
    np.random.seed(seed)
    result = {"model": name, "check": "budget", "config": spec.config, "reduced": spec.reduced, "size": size,
              "cpu_budget_s": seconds, "batch_size": batch_size, "lr": spec.lr, "curve": []}
    model = build(spec, spec.pre_stage[0] if spec.pre_stage else None)
    train_ds = dataset(model, train_records, size, augment=True, seed=seed)
    stages = []
    if spec.pre_stage:  # share of the budget for the earlier stage: its step count at the main stage's batch
        stages.append((spec.pre_stage[0], spec.pre_stage[2], seconds * 0.1))
    stages.append((None, spec.lr, seconds - sum(s[2] for s in stages)))
    spent, steps, epoch = 0.0, 0, 0
    for stage, lr, stage_budget in stages:
        if stage is None and spec.pre_stage:
            model.eval()
            probe = stacked(dataset(model, val_records[:32], size, augment=False))
            result["pre_stage"] = {"stage": spec.pre_stage[0], "steps": steps, "cpu_s": spent,
                                   **(model.stage_validation_step(probe) or {})}
            log(f"  {name}: {result['pre_stage']}")
            model.set_stage(None)
            steps = 0
        opt = optimizer(model, spec, lr)
        stage_start = spent
        next_eval = stage_start + stage_budget / evals if stage is None else math.inf
        if stage is None:
            result["curve"].append({"step": 0, "cpu_s": spent, **evaluate_on(model, val_records, size)})
            log(f"  {name} step 0: val F1 {result['curve'][-1]['pixel_f1']:.4f}")
        done = False
        while not done:
            train_ds.set_epoch(epoch)
            loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0, collate_fn=collate,
                                drop_last=True, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for batch in loader:
                t = time.process_time()
                terms = step(model, opt, batch, spec.clip_grad)
                spent += time.process_time() - t
                steps += 1
                if spent >= next_eval or spent - stage_start >= stage_budget:
                    if stage is None:
                        point = {"step": steps, "cpu_s": spent, "loss": terms["total"],
                                 **evaluate_on(model, val_records, size)}
                        result["curve"].append(point)
                        log(f"  {name} step {steps}: loss {terms['total']:.4f} val F1 {point['pixel_f1']:.4f} "
                            f"AUC {point['pixel_auc']:.3f} ({spent:.0f} s CPU)")
                        next_eval += stage_budget / evals
                    if spent - stage_start >= stage_budget:
                        done = True
                        break
            epoch += 1
    result["steps"] = steps
    result["pixel_f1"] = result["curve"][-1]["pixel_f1"]
    result["best_pixel_f1"] = max(p["pixel_f1"] for p in result["curve"] if p["step"])  # trained points only
    return result


# ------------------------------------------------------------------------------------------------ CLI


def plot(out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("budget-*.json"))]
    if not runs:
        return None
    base = json.loads((out / "ela.json").read_text()) if (out / "ela.json").is_file() else None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, ax, label in (("pixel_f1", axes[0], "val pixel F1 at 0.5"), ("pixel_auc", axes[1], "val pixel AUC")):
        for r in runs:
            ax.plot([p["cpu_s"] / 60 for p in r["curve"]], [p[key] for p in r["curve"]], marker="o", label=r["model"])
        if base is not None:
            ax.axhline(base[key], color="k", ls="--", label=f"ELA (no training) {base[key]:.3f}")
            ax.axhline(base["all_one"][key], color="grey", ls=":", label=f"all-one map {base['all_one'][key]:.3f}")
        ax.set_xlabel("training CPU minutes (1 thread)")
        ax.set_ylabel(f"{label} (generated forgeries)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Learnability on generated forgeries ({runs[0]['size']} px, random init)")
    fig.tight_layout()
    path = out / "budget_curves.png"
    fig.savefig(path, dpi=120)
    fig2, axes = plt.subplots(1, 1, figsize=(7, 4.5))
    for p in sorted(out.glob("overfit-*.json")):
        r = json.loads(p.read_text())
        axes.plot([c["step"] for c in r["curve"]], [c["pixel_f1"] for c in r["curve"]], marker=".",
                  label=r["model"])
    axes.axhline(0.9, color="k", ls="--", label="0.9")
    axes.set_xlabel("step (16 images, one batch)")
    axes.set_ylabel("pixel F1 on the training images")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    fig2.tight_layout()
    fig2.savefig(out / "overfit_curves.png", dpi=120)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("check", choices=["overfit", "budget", "ela", "plot", "all"])
    ap.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overfit-images", type=int, default=16)
    ap.add_argument("--overfit-size", type=int, default=64)
    ap.add_argument("--overfit-steps", type=int, default=300)
    ap.add_argument("--overfit-eval-every", type=int, default=50)
    ap.add_argument("--train", type=Path, default=Path("/work/cache/learn/train/list.json"))
    ap.add_argument("--val", type=Path, default=Path("/work/cache/learn/val/list.json"))
    ap.add_argument("--size", type=int, default=128, help="image side of the budget check")
    ap.add_argument("--minutes", type=float, default=4.0, help="training CPU minutes per model (budget check)")
    ap.add_argument("--evals", type=int, default=4, help="validations during the budget")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, help="learning rate of the budget check's main stage (default: each "
                    "model's, 1e-3 for most)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_info()}")
    print(f"command: {' '.join(sys.argv)}")
    checks = ["overfit", "ela", "budget", "plot"] if args.check == "all" else [args.check]
    if "overfit" in checks:
        records = overfit_records(args.overfit_images)
        for name in args.models:
            print(f"[overfit] {name}: {SPECS[name].reduced}", flush=True)
            r = run_overfit(name, SPECS[name], records, args.overfit_size, args.overfit_steps, args.overfit_eval_every,
                            args.seed, log=lambda s: print(s, flush=True), n_images=args.overfit_images)
            r["machine"], r["command"] = cpu_info(), " ".join(sys.argv)
            (args.out / f"overfit-{name}.json").write_text(json.dumps(r, indent=1))
            print(f"[overfit] {name}: F1 {r['pixel_f1']:.3f} after {r['steps']} steps, {r['cpu_s']:.0f} s CPU "
                  f"-> {'PASS' if r['passed'] else 'FAIL'}", flush=True)
    if "ela" in checks or "budget" in checks:
        from tamperscope.data.datasets import load_evaluation_records

        val_records = load_evaluation_records(args.val)
        if "ela" in checks or not (args.out / "ela.json").is_file():
            from tamperscope.registry import create_model

            t = time.process_time()
            ela = evaluate_on(create_model("ela"), val_records, args.size)
            ela.update(model="ela", val=str(args.val), cpu_s=time.process_time() - t)
            ela["all_one"] = evaluate_on(all_tampered_model(), val_records, args.size)
            (args.out / "ela.json").write_text(json.dumps(ela, indent=1))
            print(f"[ela] val F1 {ela['pixel_f1']:.4f} AUC {ela['pixel_auc']:.3f}; all-one map F1 "
                  f"{ela['all_one']['pixel_f1']:.4f}", flush=True)
        ela_f1 = json.loads((args.out / "ela.json").read_text())["pixel_f1"]
    if "budget" in checks:
        train_records = load_evaluation_records(args.train)
        for name in args.models:
            print(f"[budget] {name}: {SPECS[name].reduced}", flush=True)
            spec = replace(SPECS[name], lr=args.lr) if args.lr else SPECS[name]
            r = run_budget(name, spec, train_records, val_records, args.size, args.minutes * 60, args.evals,
                           args.batch_size, args.seed, log=lambda s: print(s, flush=True))
            r.update(machine=cpu_info(), command=" ".join(sys.argv), ela_pixel_f1=ela_f1,
                     above_ela=r["pixel_f1"] > ela_f1, train=str(args.train), val=str(args.val))
            (args.out / f"budget-{name}.json").write_text(json.dumps(r, indent=1))
            print(f"[budget] {name}: val F1 {r['pixel_f1']:.4f} (best {r['best_pixel_f1']:.4f}) vs ELA "
                  f"{ela_f1:.4f} after {r['steps']} steps", flush=True)
    if "plot" in checks:
        path = plot(args.out)
        print(f"[plot] {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
