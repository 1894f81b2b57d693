"""Score the learned model alone, the copy-move expert alone and their fusion on one dataset, in one pass
(each network runs once per photo), grouped by the "method" of metadata.jsonl (the copy-move transform) and
with authentic photos as their own group (docs/MODELS.md, "Copy-move expert").

    python benchmarks/copymove/evaluate.py --data CM_SET/list.json --authentic configs/default-model/test_photos.json \
        --checkpoint FUSED.safetensors --per-group 20 --out results.json

--expert-only scores the copy-move expert alone (its default config, no checkpoint, no learned model); --jobs N then
analyses N photos at once.

--per-group N keeps the first N forgeries of each transform and every k-th authentic photo so that about N*4
authentic photos remain (a subsample, said in the output). --transforms keeps only the forgeries of the named
transforms (e.g. --transforms translation).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections import defaultdict

import numpy as np
import torch

from tamperscope.data.datasets import load_evaluation_records
from tamperscope.engine.experts import build_experts, expert_maps, fuse_photo
from tamperscope.engine.predict import load_predictor
from tamperscope.io import read_image, read_mask
from tamperscope.metrics import MetricAccumulator


_EXPERTS: dict = {}


def _init_worker(experts: dict) -> None:
    torch.set_num_threads(1)
    _EXPERTS.update(experts)


def _expert_map(path: str) -> tuple[np.ndarray, float, float]:
    """The copy-move expert's (probability map, score, seconds) on one photo."""
    image = read_image(path)
    t = time.perf_counter()
    prob, score = expert_maps(_EXPERTS, image, torch.device("cpu"))["copymove"]
    return prob, score, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="copy-move forgeries (list.json with metadata.jsonl)")
    ap.add_argument("--authentic", help="authentic photos (a list or folder)")
    ap.add_argument("--checkpoint", help="a checkpoint that names the copymove expert")
    ap.add_argument("--expert-only", action="store_true",
                    help="score the copy-move expert alone, default config (no learned model, no checkpoint)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="with --expert-only: photos analysed at once, each in its own process (one thread each)")
    ap.add_argument("--per-group", type=int, default=0, help="at most this many forgeries per transform (0: all)")
    ap.add_argument("--transforms", nargs="+", metavar="NAME",
                    help="only the forgeries of these transforms (metadata.jsonl \"method\", e.g. translation)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    forged = load_evaluation_records(args.data)
    if args.transforms:
        known = {rec.meta.get("method") for rec in forged}
        unknown = sorted(set(args.transforms) - known)
        if unknown:
            ap.error(f"--transforms: {', '.join(unknown)} not in {args.data} "
                     f"(it has {', '.join(sorted(map(str, known)))})")
        forged = [rec for rec in forged if rec.meta.get("method") in args.transforms]
    if args.per_group:
        by_method = defaultdict(list)
        for rec in forged:
            by_method[rec.meta.get("method")].append(rec)
        forged = [rec for recs in by_method.values() for rec in recs[: args.per_group]]
    authentic = load_evaluation_records(args.authentic) if args.authentic else []
    if args.per_group and authentic:
        step = max(1, len(authentic) // (4 * args.per_group))
        authentic = authentic[::step]
    if args.expert_only:
        predictor, experts = None, build_experts({"copymove": {"config": {}}}, "--expert-only")
    elif args.checkpoint:
        predictor = load_predictor(args.checkpoint, experts=True)
        experts = predictor.experts
        predictor.experts = {}  # the learned model alone; the experts run beside it below
    else:
        ap.error("give --checkpoint or --expert-only")
    names = ("copymove",) if predictor is None else ("learned", "copymove", "fused")
    acc = {name: MetricAccumulator() for name in names}
    times = []
    records = forged + authentic
    if predictor is None and args.jobs > 1:
        pool = multiprocessing.get_context("fork").Pool(args.jobs, _init_worker, (experts,))
        expert_results = pool.imap(_expert_map, [rec.image for rec in records])
    else:
        _init_worker(experts)
        expert_results = map(_expert_map, [rec.image for rec in records])
    for i, (rec, (cm_prob, cm_score, seconds)) in enumerate(zip(records, expert_results)):
        image = read_image(rec.image)
        gt = read_mask(rec.mask, image.shape[:2]) if rec.mask else np.zeros(image.shape[:2], bool)
        times.append((image.shape[0] * image.shape[1], seconds))
        group = {"method": rec.meta.get("method", "copy-move") if rec.mask else "authentic"}
        scored = [("copymove", cm_prob, cm_score)]
        if predictor is not None:
            learned = predictor.predict_array(image)
            scored += [("learned", learned.probability, learned.score),
                       ("fused", *fuse_photo(learned.probability, learned.score, {"copymove": (cm_prob, cm_score)}))]
        for name, prob, score in scored:
            acc[name].add(i, prob, gt, score=score, label=int(bool(rec.mask)), groups=group)
        print(f"{i + 1}/{len(records)} {rec.image} {group['method']} "
              + " ".join(f"{name} {score:.2f}" for name, _, score in scored), flush=True)
    keys = ("pixel_f1", "pixel_auc", "image_auc", "fake_recall", "real_recall", "n_images")
    out = {"n_forged": len(forged), "n_authentic": len(authentic), "transforms": args.transforms,
           "copymove_seconds_per_megapixel": sum(t for _, t in times) / (sum(p for p, _ in times) / 1e6)}
    for name, a in acc.items():
        out[name] = {"all": {k: a.compute().get(k) for k in keys},
                     **{g: {k: v.get(k) for k in keys} for g, v in a.compute("method").items()}}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
