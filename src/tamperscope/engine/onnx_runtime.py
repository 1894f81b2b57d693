"""ONNX export of a model's network, and the CPU runtimes that run it in ``predict`` (ONNX Runtime, OpenVINO).

What goes into the graph
- The model's :meth:`~tamperscope.models.base.TamperModel.export_forward`: the network from the output of its
  weight-free :meth:`~tamperscope.models.base.TamperModel.export_inputs` (for ``ela-unet``, the default model:
  the U-Net from RGB + error levels; the OpenCV JPEG round trips stay in numpy outside the graph, computed by a
  weight-free instance of the model rebuilt from its config). Models without such a split export ``forward``
  whole (graph input: the ImageNet-normalised image).
- Graph: inputs ``inputs`` (``B×C×H×W`` float32; then ``inputs_1``, ... when ``export_inputs`` returns a tuple,
  e.g. ela-unet's per-photo means and deviations), outputs ``mask_logits`` (``B×1×H×W``) and ``image_logit``
  (``B``), traced with ``torch.onnx.export(dynamo=True)``. The batch is a dynamic axis; for native-resolution
  models (every photo at its own size, padded to a multiple of 32) so are H and W, declared as multiples of 32;
  other models keep the ``S×S`` size they run at.
- The file's ``metadata_props["tamperscope"]`` is the checkpoint's own JSON (model name, config, calibration,
  as :func:`tamperscope.checkpoint.checkpoint_config`) plus ``onnx``: ``{"inputs": "image" | "export_inputs",
  "native_resolution", "image_size", "dynamic_hw", "opset", "torch", "max_abs_diff"}``, so that ``predict
  --checkpoint model.onnx`` applies the same calibration and gives the same verdicts as the checkpoint.
- Every export is checked before it is written: ONNX Runtime against PyTorch on a sample batch (and, with dynamic
  H/W, on a second size), probability maps and scores within :data:`TOLERANCE` (1e-4), else a one-line error.

Runtimes (:class:`OnnxModel`): ``onnxruntime`` (default) or ``openvino`` (reads the same ``.onnx`` file; fp32
inference precision is forced, so its outputs stay within the tolerance). Both are optional dependencies: ``pip
install 'tamperscope[onnx]'``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import FORMAT, checkpoint_config
from ..errors import UserError
from ..inference import calibrate_map, calibrate_score
from ..io import atomic_write_bytes
from ..models.base import TamperModel
from ..nn.norm import imagenet_normalize
from ..registry import create_model
from ..sizes import INPUT_MULTIPLE
from .experts import EXPERTS_KEY

ONNX_SUFFIX = ".onnx"
METADATA_KEY = "tamperscope"
RUNTIMES = ("onnxruntime", "openvino")
#: ``auto``: the first of these that is installed (OpenVINO was the faster on the 2-core CPU, docs/BENCHMARKS.md)
AUTO_ORDER = ("openvino", "onnxruntime")
OPSET = 18
TOLERANCE = 1e-4
#: H and W of the traced sample of a native-resolution model (different, multiples of 32), and of the second check
SAMPLE_HW = (256, 320)
CHECK_HW = (192, 416)
SAMPLE_BATCH = 2
INSTALL_HINT = "pip install 'tamperscope[onnx]'"


def require(module: str):
    """Import an optional runtime dependency, or a one-line error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this needs the Python package '{module}', which is not installed ({INSTALL_HINT})") from None


class ExportGraph(torch.nn.Module):
    """What ONNX export traces: :meth:`export_forward` as a pair ``(mask_logits, image_logit)``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor):
        out = self.model.export_forward(*inputs)
        return out["mask_logits"], out["image_logit"].reshape(-1)


def as_tuple(inputs) -> tuple[torch.Tensor, ...]:
    """``export_inputs``' result (a tensor or a tuple of tensors) as a tuple."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def input_names(n: int) -> list[str]:
    """The graph's input names: ``inputs``, then ``inputs_1``, ``inputs_2``, ..."""
    return ["inputs"] + [f"inputs_{i}" for i in range(1, n)]


def sample_images(native: bool, image_size: int, hw: tuple[int, int] = SAMPLE_HW, seed: int = 0) -> torch.Tensor:
    """A deterministic ``SAMPLE_BATCH×3×H×W`` ImageNet-normalised batch of uint8-valued photos (smooth gradients plus
    noise, so that JPEG round trips and error levels are not degenerate)."""
    h, w = hw if native else (image_size, image_size)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 127 + 60 * np.sin(xx[..., None] / 17.0 + yy[..., None] / 23.0 + np.arange(3) * 2.0)
    rgb = np.stack([np.clip(base + rng.normal(0, 12, base.shape), 0, 255).round() for _ in range(SAMPLE_BATCH)])
    x = torch.from_numpy(rgb.astype(np.float32)).permute(0, 3, 1, 2).div_(255.0)
    return imagenet_normalize(x)


def fresh_preprocessor(name: str, config: dict):
    """A weight-free instance of model ``name`` for its ``export_inputs`` (``*_weights`` paths not read)."""
    return create_model(name, weight_files=False, **config).eval()


def probabilities(mask_logits, image_logit, calibration: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``predict`` shows: the calibrated probabilities (:func:`tamperscope.inference.model_probabilities`)."""
    mask = calibrate_map(torch.sigmoid(torch.as_tensor(mask_logits).float()), calibration)
    return mask, calibrate_score(torch.sigmoid(torch.as_tensor(image_logit).double().reshape(-1)), calibration)


def max_difference(model, session, images: torch.Tensor) -> float:
    """Largest absolute difference between the model's own ``forward`` (PyTorch) and ``export_inputs`` + the graph
    under ONNX Runtime on ``images``, over the calibrated probability map and image score."""
    calibration = model.calibration
    with torch.inference_mode():
        out = model(images)
        ours = probabilities(out["mask_logits"], out["image_logit"], calibration)
        inputs = as_tuple(model.export_inputs(images))
    feed = {name: t.numpy() for name, t in zip(input_names(len(inputs)), inputs)}
    theirs = probabilities(*[torch.from_numpy(a) for a in session.run(None, feed)], calibration)
    if ours[0].shape != theirs[0].shape or ours[1].shape != theirs[1].shape:
        raise UserError(f"ONNX graph returns shapes {tuple(theirs[0].shape)}, {tuple(theirs[1].shape)} where PyTorch "
                        f"returns {tuple(ours[0].shape)}, {tuple(ours[1].shape)}")
    return max(float((a.double() - b.double()).abs().max()) for a, b in zip(ours, theirs))


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, image_size: int, extra: dict | None = None,
                opset: int = OPSET, experts: dict | None = None) -> dict:
    """Write ``model`` (a loaded, calibrated :class:`TamperModel`) as a checked, self-describing ONNX file (module
    docstring); ``experts``: the checkpoint's weight-free experts entry (:mod:`tamperscope.engine.experts`), kept
    so that ``predict`` fuses the same experts. Returns the ``onnx`` metadata written (with ``max_abs_diff``)."""
    onnx, ort = require("onnx"), require("onnxruntime")
    path = Path(path)
    if path.suffix != ONNX_SUFFIX:
        raise UserError(f"{path}: the output must end in {ONNX_SUFFIX}")
    model = model.to("cpu").eval()
    name = model.model_name or type(model).__name__
    native = model.native_resolution
    # whether the model computes part of its input outside the graph (overrides export_inputs)
    split = isinstance(model, TamperModel) and type(model).export_inputs is not TamperModel.export_inputs
    images = sample_images(native, image_size)
    with torch.inference_mode():
        inputs = as_tuple(model.export_inputs(images))
    if split:  # export_inputs must not depend on trained weights: predict rebuilds it from the config alone
        with torch.inference_mode():
            fresh = as_tuple(fresh_preprocessor(model.model_name, dict(model.config)).export_inputs(images))
        if len(fresh) != len(inputs) or not all(a.shape == b.shape and torch.equal(a, b)
                                                for a, b in zip(fresh, inputs)):
            raise UserError(f"model '{name}': its export_inputs depend on trained weights, so they cannot stay "
                            "outside the ONNX graph")
    names = input_names(len(inputs))
    try:
        with torch.no_grad(), quiet_exporter():
            program = torch.onnx.export(ExportGraph(model).eval(), inputs, None, input_names=names,
                                        output_names=["mask_logits", "image_logit"], opset_version=opset,
                                        dynamic_shapes=(dynamic_shapes(inputs, images.shape[-2:] if native else None),),
                                        dynamo=True, verbose=False)
    except Exception as exc:  # tracing failures come as many exception types, with long multi-line messages
        raise UserError(f"model '{name}' cannot be exported to ONNX ({export_failure(exc)})") from None
    proto = program.model_proto
    meta = {"inputs": "export_inputs" if split else "image", "input_names": names, "native_resolution": native,
            "image_size": int(image_size), "dynamic_hw": native, "opset": opset, "torch": torch.__version__}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    diff = max_difference(model, session, images)
    if native:
        diff = max(diff, max_difference(model, session, sample_images(native, image_size, CHECK_HW, seed=1)))
    if not diff <= TOLERANCE:
        raise UserError(f"model '{name}': ONNX outputs differ from PyTorch by {diff:.3g} (more than {TOLERANCE:g}); "
                        f"{path} not written")
    meta["max_abs_diff"] = diff
    cfg = checkpoint_config(model) | {"extra": extra or {}, "onnx": meta}
    if experts:
        cfg[EXPERTS_KEY] = experts
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(cfg)})
    atomic_write_bytes(path, proto.SerializeToString())
    return meta


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporter's notes to developers (deprecations, torchvision absent, axis names): the user sees
    the result line or a one-line error."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_failure(exc: Exception) -> str:
    """The line of a ``torch.onnx.export`` failure that says what went wrong (its summary, else the first line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("## Exception summary") and i + 1 < len(lines):
            return lines[i + 1][:300]
    return f"{type(exc).__name__}: {(lines or [''])[0][:300]}"


def dynamic_shapes(inputs: tuple[torch.Tensor, ...], hw) -> tuple[dict, ...]:
    """The batch axis of every input is dynamic; with ``hw`` (native resolution) so are the axes 2 and 3 of the
    inputs at the photo's size, as multiples of 32."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    h, w = (32 * torch.export.Dim(n, min=1, max=1024) for n in ("h32", "w32"))
    out = []
    for t in inputs:
        dims = {0: batch}
        if hw is not None and t.ndim == 4 and tuple(t.shape[2:]) == tuple(hw):
            dims.update({2: h, 3: w})
        out.append(dims)
    return tuple(out)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(buf: bytes):
    """``(field number, value)`` of one protobuf message's fields: ints for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):  # fixed 64 / 32 bits
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated")
        yield number, value


def onnx_metadata(path: Path) -> dict[str, str]:
    """``ModelProto.metadata_props`` (field 14, entries of key 1 / value 2) read straight from the protobuf, so that
    ``predict`` needs neither the ``onnx`` package nor the time to import it."""
    props = {}
    for number, value in _fields(path.read_bytes()):
        if number == 14 and isinstance(value, bytes):
            entry = dict(_fields(value))
            props[bytes(entry.get(1, b"")).decode()] = bytes(entry.get(2, b"")).decode()
    return props


def read_onnx_config(path: str | os.PathLike) -> dict:
    """The tamperscope JSON of an exported ``.onnx`` file, or a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    try:
        props = onnx_metadata(path)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if METADATA_KEY not in props:
        raise UserError(f"{path}: ONNX file without tamperscope metadata (not written by `tamperscope export-onnx`)")
    try:
        cfg = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid tamperscope metadata ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or "onnx" not in cfg:
        raise UserError(f"{path}: unknown tamperscope metadata format")
    calibration = cfg.get("calibration")
    if calibration and calibration.get("mode") != "absolute":
        raise UserError(f"{path}: calibration mode {calibration.get('mode')!r} is not supported; re-export it")
    return cfg


def resolve_runtime(runtime: str) -> str:
    """``onnxruntime``, ``openvino``, or for ``auto`` the first installed of :data:`AUTO_ORDER`."""
    if runtime == "auto":
        for name in AUTO_ORDER:
            if importlib.util.find_spec(name) is not None:
                return name
        raise UserError(f"running an .onnx model needs onnxruntime or openvino, neither is installed ({INSTALL_HINT})")
    if runtime not in RUNTIMES:
        raise UserError(f"unknown ONNX runtime '{runtime}' (choose from auto, {', '.join(RUNTIMES)})")
    return runtime


def onnxruntime_session(path: str, threads: int | None = None):
    """``run(inputs) -> (mask_logits, image_logit)`` with ONNX Runtime on the CPU, all graph optimisations on."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *inputs: tuple(session.run(None, dict(zip(names, inputs))))


def openvino_session(path: str, threads: int | None = None):
    """``run(inputs) -> (mask_logits, image_logit)`` with OpenVINO on the CPU, at fp32 (no bf16 shortcut)."""
    ov = require("openvino")
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request, lock = compiled.create_infer_request(), threading.Lock()  # one request: serve's threads take turns
    outputs = [compiled.output(n) for n in ("mask_logits", "image_logit")]
    names = [i.get_any_name() for i in compiled.inputs]

    def run(*inputs):
        with lock:  # copies: the request's output buffers are reused by the next call
            result = request.infer(dict(zip(names, inputs)))
            return tuple(np.array(result[o]) for o in outputs)

    return run


class OnnxModel:
    """An exported ``.onnx`` file standing in for the model in :class:`~tamperscope.engine.predict.Predictor`:
    called on an ImageNet-normalised batch, it returns ``{"mask_logits", "image_logit"}`` as torch tensors on the
    input's device, and carries the checkpoint's ``model_name``, ``config``, ``calibration`` and
    ``native_resolution``; its ``input_multiple`` is the dynamic graph's (32). The graph runs on the CPU whatever
    the device."""

    input_multiple = INPUT_MULTIPLE

    def __init__(self, path: str | os.PathLike, runtime: str = "auto", threads: int | None = None):
        runtime = resolve_runtime(runtime)
        self.path = Path(path)
        cfg = read_onnx_config(self.path)
        self.model_name, self.config = cfg["model"], cfg["config"]
        self.calibration = cfg.get("calibration")
        self.experts_config = cfg.get(EXPERTS_KEY)  # fused by the Predictor, outside the graph
        onnx_meta = cfg["onnx"]
        self.native_resolution = bool(onnx_meta["native_resolution"])
        self.image_size = int(onnx_meta["image_size"])
        self.runtime = runtime
        self._prep = fresh_preprocessor(self.model_name, self.config) if onnx_meta["inputs"] == "export_inputs" \
            else None
        make = onnxruntime_session if runtime == "onnxruntime" else openvino_session
        try:
            self._run = make(str(self.path), threads)
        except UserError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UserError(f"{self.path}: {runtime} cannot load it ({first})") from None

    def __call__(self, images: torch.Tensor) -> dict:
        with torch.inference_mode():
            inputs = as_tuple(self._prep.export_inputs(images) if self._prep is not None else images)
        arrays = self._run(*(np.ascontiguousarray(t.detach().float().cpu().numpy()) for t in inputs))
        mask, score = (torch.from_numpy(np.asarray(a)).to(images.device) for a in arrays)
        return {"mask_logits": mask, "image_logit": score}

    def to(self, device) -> "OnnxModel":  # the graph always runs on the CPU; outputs follow the input's device
        return self

    def eval(self) -> "OnnxModel":
        return self


def load_onnx_model(path, runtime: str = "auto", image_size: int | None = None,
                    experts: bool = True) -> tuple[OnnxModel, int, str, dict | None]:
    """``(model, input size, display name, the experts entry or None)`` for
    :func:`tamperscope.engine.predict.load_predictor`. A graph of fixed size (a model that is not
    native-resolution) runs only at the size it was exported at."""
    model = OnnxModel(path, runtime)
    if image_size is not None and image_size != model.image_size and not model.native_resolution:
        raise UserError(f"{path}: the ONNX graph takes {model.image_size}×{model.image_size} inputs; export it again "
                        f"at image size {image_size} to run at that size")
    attached = model.experts_config if experts else None
    name = f"{'+'.join([model.model_name, *(attached or {})])} ({Path(path).name}, {model.runtime})"
    return model, image_size or model.image_size, name, attached
