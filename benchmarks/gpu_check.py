"""One-GPU check of every paper model (issue 21, point 2); run through ``benchmarks/gpu_check.sh``.

For each model (default: the SegFormer baseline and the five paper models) it

1. profiles inference (:func:`tamperscope.engine.profile.profile_model`: images/s at the training batch, peak
   memory; bf16 autocast on CUDA),
2. trains from random initialisation on CASIA v1 ``train.json`` with ``tamperscope train`` (the default stage and
   preset; bf16 autocast and channels-last on CUDA, as the trainer always does there) for ``--steps`` steps, or,
   by default, for about ``--minutes`` of training (steps estimated from the inference throughput / 3), and reads
   the training images/s from the run's ``metrics.jsonl`` (median over the logged intervals after the first) and
   the peak GPU memory of the training process (``torch.cuda.max_memory_allocated``),
3. evaluates the trained run on CASIA v1 ``test.json`` with ``tamperscope evaluate`` (protocol metrics),

and writes ``results.json`` and ``gpu_check.md`` (one Markdown table row per model) to ``--out``. A model whose
step fails is reported with its one-line error and the others go on; models that would start after
``--deadline-minutes`` are listed as skipped, so the whole check fits its GPU slot.

A few minutes of training from scratch does not make a useful detector: the F1 column shows that the pipeline
runs end to end at 512 with bf16 on the GPU, not what the methods reach. ``--size 64 --steps 2 --limit 8
--device cpu`` is the CPU dry run of the same code path.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = ("segformer-b2", "frdnet", "nfavit", "diffiml", "diffforensics", "ifanet")


def machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()} CPU, torch {torch.__version__}"


def subset(src: Path, out: Path, limit: int | None) -> Path:
    """``src`` (a JSON list) limited to its first ``limit`` tampered and ``limit // 2`` authentic items, with
    absolute paths, written to ``out``; ``src`` itself when no limit is given."""
    if not limit:
        return src
    items = json.loads(src.read_text())
    tampered = [it for it in items if it[1] != "Negative"][:limit]
    authentic = [it for it in items if it[1] == "Negative"][: max(1, limit // 2)]
    resolve = (lambda p: p if p == "Negative" else str((src.parent / p).resolve()))
    out.write_text(json.dumps([[resolve(a), resolve(b)] for a, b in tampered + authentic], indent=0))
    return out


def cli(argv: list[str]) -> tuple[int, str]:
    """Run a ``tamperscope`` command in this process; return its exit code and the last stderr line."""
    from tamperscope.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    sys.stderr.write(err.getvalue())
    return rc, (lines[-1] if lines else "")


def train_images_per_s(run: Path) -> float | None:
    from tamperscope.run_folder import RunFolder

    rows = [json.loads(line) for line in RunFolder(run).log_file.read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in rows if r.get("type") == "train" and "images_per_s" in r]
    rates = rates[1:] or rates  # the first interval holds the start-up (allocation, cuDNN autotuning)
    return statistics.median(rates) if rates else None


def check_model(name: str, args, train_json: Path, test_json: Path, out: Path) -> dict:
    from tamperscope.engine.profile import profile_model

    row: dict = {"model": name, "size": args.size, "batch": args.batch_size,
                 "precision": "bf16 autocast" if args.device.startswith("cuda") else "fp32"}
    dev = torch.device(args.device)
    # 1. inference profile
    prof = profile_model(name, image_size=args.size, batch_size=args.batch_size, device=args.device, iters=3)
    # peak memory on the GPU only: on the CPU profile reports the process's peak RSS, which in this one
    # process accumulates over the models checked before
    row.update(params_m=round(prof["params_m"], 2), infer_images_per_s=round(prof["images_per_s"], 2),
               infer_peak_mem_mb=round(prof["peak_mem_mb"], 1) if dev.type == "cuda" else None)
    # 2. training
    steps = args.steps or max(10, min(5000, round(args.minutes * 60 * prof["images_per_s"] / 3 / args.batch_size)))
    run = out / "runs" / name
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    rc, err = cli(["train", name, "--train", str(train_json), "--out", str(run), "--image-size", str(args.size),
                   "--batch-size", str(args.batch_size), "--max-steps", str(steps), "--device", args.device,
                   "--workers", str(args.workers), "--log-every", str(max(1, min(10, steps // 4))),
                   "--no-progress"])
    row["train_s"] = round(time.perf_counter() - t0, 1)
    row["steps"] = steps
    if rc != 0:
        raise RuntimeError(f"train exited {rc}: {err}")
    ips = train_images_per_s(run)
    row["train_images_per_s"] = None if ips is None else round(ips, 2)
    row["train_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" \
        else None
    # 3. CASIA v1 test
    t0 = time.perf_counter()
    metrics = out / "eval" / f"{name}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    rc, err = cli(["evaluate", "--checkpoint", str(run), "--data", str(test_json), "--image-size", str(args.size),
                   "--batch-size", str(args.batch_size), "--device", args.device, "--on-mismatch", "skip",
                   "--workers", str(args.workers), "--no-progress", "--out", str(metrics)])
    row["eval_s"] = round(time.perf_counter() - t0, 1)
    if rc != 0:
        raise RuntimeError(f"evaluate exited {rc}: {err}")
    m = json.loads(metrics.read_text())
    row.update(test_images=m["n_images"], pixel_f1=m["pixel_f1"], image_auc=m["image_auc"])
    return row


def fmt(v, digits: int) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(rows: list[dict], header: str) -> str:
    cols = [("model", "model", 0), ("status", "status", 0), ("size", "size", 0), ("batch", "batch", 0),
            ("precision", "precision", 0), ("steps", "steps", 0), ("train_s", "train s", 1),
            ("train_images_per_s", "train img/s", 1), ("train_peak_mem_mb", "train peak MiB", 0),
            ("infer_images_per_s", "infer img/s", 1), ("infer_peak_mem_mb", "infer peak MiB", 0),
            ("test_images", "CASIA v1 test images", 0), ("pixel_f1", "pixel F1", 3), ("image_auc", "image AUC", 3),
            ("eval_s", "eval s", 1)]
    lines = [header, "", "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), d) for k, _, d in cols) + " |")
    notes = [f"- {r['model']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--size", type=int, default=512, help="training and test size (default 512)")
    p.add_argument("--steps", type=int, default=0, help="training steps per model (default: about --minutes)")
    p.add_argument("--minutes", type=float, default=0.75, help="training time per model when --steps is 0")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=0, help="use only this many tampered images (and half as many "
                                                        "authentic) of train and test (dry runs)")
    p.add_argument("--data", type=Path, default=(REPO / ".." / "shared" / "data" / "casia1").resolve())
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=4, help="data-loader processes")
    p.add_argument("--deadline-minutes", type=float, default=9.0, help="start no model after this")
    p.add_argument("--out", type=Path, default=Path("gpu-check"))
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda but no CUDA device is visible (use --device cpu for a dry run)",
              file=sys.stderr)
        return 2
    for split in ("train", "test"):
        if not (args.data / f"{split}.json").is_file():
            print(f"gpu_check: error: {args.data / f'{split}.json'}: not found (CASIA v1 lists)", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    train_json = subset(args.data / "train.json", args.out / "train_subset.json", args.limit)
    test_json = subset(args.data / "test.json", args.out / "test_subset.json", args.limit)
    start, rows = time.perf_counter(), []
    for name in args.models:
        elapsed = (time.perf_counter() - start) / 60
        if elapsed > args.deadline_minutes:
            rows.append({"model": name, "status": "skipped",
                         "error": f"not started: {elapsed:.1f} min used of the {args.deadline_minutes:g}-min slot"})
            continue
        print(f"== {name}", flush=True)
        try:
            rows.append({**check_model(name, args, train_json, test_json, args.out), "status": "ok"})
        except Exception as exc:  # report the failure, keep checking the other models
            rows.append({"model": name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(json.dumps(rows[-1]), flush=True)
    total = (time.perf_counter() - start) / 60
    header = (f"GPU check: {machine(args.device)}; {total:.1f} min in all; CASIA v1 "
              f"{'subset of ' + str(args.limit) + ' tampered images' if args.limit else 'train / test'}; "
              f"size {args.size}, batch {args.batch_size}, "
              f"{str(args.steps) + ' steps' if args.steps else f'about {args.minutes:g} min of training'} per model")
    (args.out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
