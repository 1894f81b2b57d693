"""Eager PyTorch vs ONNX Runtime vs OpenVINO for one checkpoint on one photo, in one process (issue 20).

    .venv/bin/python benchmarks/onnx_speed.py [--checkpoint default] [--photo PATH] [--rounds 7] [--threads N]

The photo defaults to scikit-image's ``coffee`` resized to 1024×768 and saved as a quality-90 JPEG (a real
photo's JPEG history, as the default model expects). The model is exported to a temporary ``.onnx`` file
(:func:`tamperscope.engine.onnx_runtime.export_onnx`). Each round runs every back end once on the photo, in turn
(interleaved, so that drift in the machine's speed hits all of them alike), through the same
``Predictor.predict_array`` that ``tamperscope predict`` uses; the report gives the median latency per back end,
the median of the per-round ratios eager / back end, the split between the error-level front end (numpy/OpenCV,
the same for all) and the network, and the largest difference from eager in the probability map and the score.
With ``--compile`` a ``torch.compile``d eager model is timed as well, and ``--channels-last`` times eager in the
plain (NCHW) memory format beside the default model's channels-last inference. The load average is printed before and after."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def default_photo(path: Path) -> Path:
    from skimage import data

    rgb = cv2.resize(data.coffee(), (1024, 768), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="run folder, .safetensors or default (the bundled model)")
    ap.add_argument("--photo", default=None, help="photo to time (default: coffee at 1024×768, JPEG q90)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="threads for every back end (default: torch's)")
    ap.add_argument("--runtimes", default="eager,onnxruntime,openvino")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (eager-compiled)")
    ap.add_argument("--channels-last", action="store_true", help="also time eager in the plain NCHW layout")
    args = ap.parse_args(argv)

    from tamperscope.engine.onnx_runtime import OnnxModel, export_onnx
    from tamperscope.engine.predict import Predictor, load_predictor
    from tamperscope.io import read_image

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="onnx-speed-"))
    photo = read_image(args.photo or default_photo(tmp / "coffee-1024x768.jpg"))
    eager = load_predictor(args.checkpoint, device="cpu")
    onnx_path = tmp / "model.onnx"
    t0 = time.perf_counter()
    export_onnx(eager.model, onnx_path, image_size=eager.image_size)
    print(f"export: {time.perf_counter() - t0:.1f} s, {onnx_path.stat().st_size / 2**20:.1f} MiB")

    backends = {}
    for name in args.runtimes.split(","):
        if name == "eager":
            backends[name] = eager
        else:
            backends[name] = Predictor(OnnxModel(onnx_path, runtime=name, threads=threads), eager.image_size,
                                       eager.device, name)
    if args.channels_last:  # the default model's inference runs channels-last; this row is the plain layout
        import copy

        model = copy.deepcopy(eager.model)
        model.channels_last_inference = False
        backends["eager-nchw"] = Predictor(model, eager.image_size, eager.device, "eager-nchw")
    if args.compile:
        from tamperscope.engine.compile import compile_model

        backends["eager-compiled"] = Predictor(compile_model(load_predictor(args.checkpoint, device="cpu").model),
                                               eager.image_size, eager.device, "compiled")

    print(f"photo {photo.shape[1]}×{photo.shape[0]}, torch {torch.__version__}, {threads} threads, "
          f"load average {os.getloadavg()}")
    reference = eager.predict_array(photo)
    for name, pred in backends.items():  # warm up (and compile) each; check the outputs agree
        t0 = time.perf_counter()
        out = pred.predict_array(photo)
        diff_map = float(np.abs(out.probability - reference.probability).max())
        print(f"{name:>22}: first call {time.perf_counter() - t0:.2f} s, max |Δ map| {diff_map:.2e}, "
              f"|Δ score| {abs(out.score - reference.score):.2e}, verdict {out.verdict}")
    times = {name: [] for name in backends}
    from tamperscope.nn.norm import imagenet_normalize
    x = imagenet_normalize(torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255.0)
    front = []
    for _ in range(args.rounds):
        for name, pred in backends.items():
            t0 = time.perf_counter()
            pred.predict_array(photo)
            times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        eager.model.export_inputs(x)
        front.append(time.perf_counter() - t0)
    base = times.get("eager")
    print(f"\nmedian of {args.rounds} interleaved rounds, load average after {os.getloadavg()}:")
    print(f"{'error-level front end':>22}: {1000 * statistics.median(front):7.1f} ms (inside every row below)")
    for name, ts in times.items():
        ratio = f", eager / this {statistics.median(b / t for b, t in zip(base, ts)):.2f}×" if base else ""
        print(f"{name:>22}: {1000 * statistics.median(ts):7.1f} ms (min {1000 * min(ts):.1f}, max "
              f"{1000 * max(ts):.1f}){ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
