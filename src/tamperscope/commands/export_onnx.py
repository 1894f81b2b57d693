"""`tamperscope export-onnx CHECKPOINT OUT.onnx`: a model's network as one ONNX file for CPU inference with ONNX
Runtime or OpenVINO (``predict --checkpoint OUT.onnx``), carrying the checkpoint's config and calibration, so that
the verdicts are those of the checkpoint. Work that is not tensor maths (the default model's JPEG error levels)
stays outside the graph and is recomputed by ``predict``, which also fuses the checkpoint's weight-free experts
(copy-move) as it does for the checkpoint. Every export is checked against PyTorch (probability map
and score within 1e-4) before it is written. Needs ``pip install 'tamperscope[onnx]'``; see
:mod:`tamperscope.engine.onnx_runtime`."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..sizes import DEFAULT_IMAGE_SIZE

NAME = "export-onnx"
HELP = "write a model's network as an ONNX file for fast CPU inference (predict --checkpoint FILE.onnx)"


def add_arguments(p):
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run folder, .safetensors checkpoint, or 'default' (the bundled default model)")
    p.add_argument("out", help="output file, ending in .onnx")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size of the graph for models that run at a fixed size (default: the size the "
                        f"checkpoint was trained at, else {DEFAULT_IMAGE_SIZE}); models that read photos at their own "
                        "size get dynamic height and width")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")


def run(args) -> int:
    from ..checkpoint import read_checkpoint_config
    from ..engine.experts import EXPERTS_KEY
    from ..engine.onnx_runtime import OPSET, export_onnx
    from ..engine.loading import resolve_checkpoint
    from ..engine.predict import load_predictor

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UserError(f"{out}: the output must end in .onnx")
    if str(args.checkpoint).endswith(".onnx"):
        raise UserError(f"{args.checkpoint}: already an ONNX file; give the run folder or .safetensors checkpoint")
    predictor = load_predictor(args.checkpoint, device="cpu", image_size=args.image_size)
    source = Path(resolve_checkpoint(str(args.checkpoint)))
    attached = read_checkpoint_config(source).get(EXPERTS_KEY) if source.exists() else None
    meta = export_onnx(predictor.model, out, image_size=predictor.image_size, opset=args.opset or OPSET,
                       extra={"source": str(args.checkpoint)}, experts=attached)
    shape = "any height and width (multiples of 32)" if meta["dynamic_hw"] else \
        f"{meta['image_size']}×{meta['image_size']} inputs"
    outside = "; pre-processing (export_inputs) outside the graph" if meta["inputs"] == "export_inputs" else ""
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, model {predictor.name}, {shape}{outside}; "
          f"largest difference from PyTorch {meta['max_abs_diff']:.2g})")
    return 0
