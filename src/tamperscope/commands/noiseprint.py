"""`tamperscope noiseprint`: the Noiseprint++ map of one image (TruFor, CVPR 2023, §3.1; grip-unina/TruFor).

The image is read as RGB uint8 and scaled by 1/256 as TruFor's loaders do, then fed to the DnCNN; the
raw (unnormalised) ``H×W`` float32 map is saved as ``.npy``. ``--png`` also writes a viewable grey image:
the map clipped to its 1st–99th percentiles and stretched to 0–255. Without ``--weights`` the weight-free
fallback (SRM "KV" residual of the luminance, unit std per image) is used, with a notice on stderr.
"""
from __future__ import annotations

import io as _io
import sys

import numpy as np

from ..errors import UserError

NAME = "noiseprint"
HELP = "extract the Noiseprint++ map of an image (.npy, optional viewable .png)"


def add_arguments(p):
    p.add_argument("image", metavar="IMAGE", help="input image file")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="Noiseprint++ weights (TruFor's noiseprint++.th); without it a fixed SRM residual is used")
    p.add_argument("--out", metavar="FILE.npy", required=True, help="where to write the H×W float32 map")
    p.add_argument("--png", metavar="FILE.png", default=None, help="also write a percentile-stretched PNG")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> int:
    from ..backbones.dncnn import NoiseprintExtractor, ResidualNoiseExtractor, photo_noise_map
    from ..io import atomic_write_bytes, read_image, write_png
    from ..report.visualize import stretch_to_uint8

    if not str(args.out).lower().endswith(".npy"):
        raise UserError(f"{args.out}: --out must end in .npy")
    if args.png is not None and not str(args.png).lower().endswith(".png"):
        raise UserError(f"{args.png}: --png must end in .png")
    rgb = read_image(args.image)
    if args.weights is None:
        print("tamperscope noiseprint: no --weights given; writing the weight-free SRM residual "
              "(unit std), not Noiseprint++", file=sys.stderr)
    extractor = NoiseprintExtractor(args.weights) if args.weights is not None else ResidualNoiseExtractor()
    noise_map = photo_noise_map(extractor.to(args.device).eval(), rgb, args.device)
    buf = _io.BytesIO()
    np.save(buf, noise_map.astype(np.float32))
    inputs = [args.image] + ([args.weights] if args.weights else [])
    atomic_write_bytes(args.out, buf.getvalue(), protect=inputs)
    if args.png is not None:
        write_png(args.png, stretch_to_uint8(noise_map), protect=inputs)
    print(f"{args.out}: {noise_map.shape[0]}×{noise_map.shape[1]} map, mean {noise_map.mean():.5f}, "
          f"std {noise_map.std():.5f}")
    return 0
