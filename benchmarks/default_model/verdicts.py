"""What an analyst would be told: `tamperscope predict`'s verdict on every photo of an IMDL-BenCo list.

Prints the share of photos called tampered / inconclusive / authentic, split into authentic and tampered
photos, and checks on every photo that the output does not contradict itself (an authentic verdict draws no
region, a tampered verdict draws at least one). Used for docs/MODELS.md's false-alarm numbers:

    python benchmarks/default_model/verdicts.py configs/default-model/test_photos.json [--checkpoint default]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter


from tamperscope.data.datasets import load_evaluation_records
from tamperscope.engine.predict import load_predictor
from tamperscope.io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="IMDL-BenCo JSON list (or mix: spec)")
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--out", help="also write one JSON row per photo here")
    args = ap.parse_args()
    predictor = load_predictor(args.checkpoint)
    counts: dict[str, Counter] = {"authentic": Counter(), "tampered": Counter()}
    rows, start = [], time.perf_counter()
    for rec in load_evaluation_records(args.data):
        pred = predictor.predict_array(read_image(rec.image), path=str(rec.image))
        row = pred.to_dict()
        truth = "authentic" if rec.mask is None else "tampered"
        counts[truth][row["verdict"]] += 1
        drawn = bool(pred.mask.any())
        assert drawn == (row["tampered_area_pct"] > 0), row
        assert not (row["verdict"] == "authentic" and drawn), row
        assert not (row["verdict"] == "tampered" and not drawn), row
        rows.append(dict(row, truth=truth))
    for truth, c in counts.items():
        n = sum(c.values())
        if n:
            shares = ", ".join(f"{v} {100 * c[v] / n:.1f} %" for v in ("tampered", "inconclusive", "authentic"))
            print(f"{truth} photos ({n}): {shares}")
    print(f"{len(rows)} photos in {time.perf_counter() - start:.0f} s; no contradiction")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
