"""Time of all per-image pixel scores (counts, AUC, band, oracle F1) on a 512×512 map.

Run: .venv/bin/python benchmarks/metrics_speed.py
"""
import time

import numpy as np

from tamperscope.metrics import pixel_stats


def main() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((512, 512), bool)
    gt[100:300, 150:400] = True
    prob = np.clip(rng.random((512, 512)) + 0.3 * gt, 0, 1).astype(np.float32)
    timings = []
    for _ in range(10):
        start = time.perf_counter()
        pixel_stats(prob, gt)
        timings.append(time.perf_counter() - start)
    timings.sort()
    print(f"pixel_stats 512×512: best {timings[0] * 1e3:.1f} ms, median {timings[5] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
