"""The local web UI behind ``tamperscope serve``: standard library only (``http.server.ThreadingHTTPServer``).

Routes
- ``GET /`` — the page (``static/index.html``); ``GET /static/NAME`` — the files of ``static/``, served from an
  in-memory table built at start-up, so a request path never reaches the file system.
- ``GET /api/models`` — the model choices (ids and labels), the default id, whether the Noiseprint++ view is
  available, the threshold and the upload limit.
- ``POST /api/predict?model=ID&tiles=0|1&noiseprint=0|1&raw_map=0|1`` — the request body is the raw image file.
  Its size is checked from ``Content-Length`` before reading (413 above the limit) and its type by content
  (:func:`tamperscope.io.read_image_bytes`; the file name and the declared content type are ignored). The answer is
  JSON: :meth:`tamperscope.engine.predict.Prediction.to_dict` (score, verdict tampered / inconclusive / authentic,
  confidence, drawn area, size, model) and the original, tampering-probability map, mask, overlay (and
  Noiseprint++ map) as PNG data URLs ready to show and download. No region is drawn on an authentic verdict
  unless ``raw_map=1``.

Models: ``default`` (the bundled model, when installed), ``checkpoint`` (``--checkpoint``), every run folder or
``.safetensors`` checkpoint directly inside ``--models DIR`` (``dir:NAME``), and the weight-free ``ela`` baseline.
The client only ever names an id from this table. The two most recently used models stay loaded; inference runs
one request at a time (a lock), while other requests (page, static files) are served concurrently.
"""
from __future__ import annotations

import base64
import io as _io
import json
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from ..errors import UserError

DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_PIXELS = 40_000_000
MAX_LOADED_MODELS = 2
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".jpg": "image/jpeg", ".png": "image/png",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; "
                                "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'"),
}


def load_static() -> dict[str, tuple[bytes, str]]:
    """``{file name: (bytes, content type)}`` of the packaged ``static/`` folder."""
    folder = resources.files("tamperscope.serve").joinpath("static")
    table = {}
    for entry in folder.iterdir():
        suffix = Path(entry.name).suffix.lower()
        if entry.is_file() and suffix in CONTENT_TYPES:
            table[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    if "index.html" not in table:
        raise UserError("tamperscope/serve/static/index.html is missing from the installation")
    return table


def png_data_url(image: np.ndarray) -> str:
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def find_checkpoints(folder: str | Path) -> dict[str, Path]:
    """``{name: path}`` for run folders (with ``config.json``) and tamperscope ``.safetensors`` files directly
    inside ``folder``; other entries are skipped with a notice on stderr."""
    from ..checkpoint import read_checkpoint_config

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--models {folder}: not a folder")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not (entry.is_dir() or entry.suffix == ".safetensors"):
            continue
        try:
            read_checkpoint_config(entry)
        except UserError as exc:
            print(f"tamperscope serve: skipping {entry}: {exc}", file=sys.stderr)
            continue
        found[entry.name] = entry
    return found


@dataclass
class ServeApp:
    """What the handlers share: the model table, cached predictors, the optional Noiseprint++ extractor."""

    models: dict[str, tuple[str, str | None]]  # id -> (label, spec for load_predictor)
    default_id: str
    device: str = "cpu"
    threshold: float = 0.5
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    noiseprint: object = None
    static: dict = field(default_factory=load_static)
    quiet: bool = False
    _predictors: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def predictor(self, model_id: str):
        from ..engine.predict import load_predictor

        if model_id not in self.models:
            raise UserError(f"unknown model id {model_id!r}")
        if model_id in self._predictors:
            self._predictors[model_id] = self._predictors.pop(model_id)  # most recently used goes last
        else:
            while len(self._predictors) >= MAX_LOADED_MODELS:
                self._predictors.pop(next(iter(self._predictors)))  # least recently used
            self._predictors[model_id] = load_predictor(self.models[model_id][1], device=self.device)
        return self._predictors[model_id]

    def model_list(self) -> dict:
        return {"models": [{"id": k, "label": label} for k, (label, _) in self.models.items()],
                "default": self.default_id, "noiseprint": self.noiseprint is not None,
                "threshold": self.threshold, "max_upload_bytes": self.max_upload_bytes}

    def analyse(self, data: bytes, model_id: str, tiles: bool, want_noiseprint: bool, raw_map: bool = False) -> dict:
        """Decode an uploaded image (type checked by content) and return the JSON answer."""
        from ..commands.noiseprint import stretch_to_uint8
        from ..io import read_image_bytes

        rgb = read_image_bytes(data, name="uploaded file", max_pixels=self.max_pixels)
        if want_noiseprint and self.noiseprint is None:
            raise UserError("the Noiseprint++ view needs the server to be started with --noiseprint-weights FILE")
        with self._lock:
            pred = self.predictor(model_id).predict_array(rgb, threshold=self.threshold, raw_map=raw_map, tiles=tiles)
            noise = self._noiseprint_map(rgb) if want_noiseprint else None
        images = {"original": png_data_url(rgb), "heatmap": png_data_url(pred.heatmap()),
                  "mask": png_data_url(pred.mask_png()), "overlay": png_data_url(pred.overlay())}
        if noise is not None:
            images["noiseprint"] = png_data_url(stretch_to_uint8(noise))
        return {**pred.to_dict(), "model_id": model_id, "images": images}

    def _noiseprint_map(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 256.0  # TruFor scaling
        return self.noiseprint.forward_rgb01(x.to(self.device))[0, 0].float().cpu().numpy()


class Handler(BaseHTTPRequestHandler):
    """Request handler; the app lives on ``self.server.app``."""

    server_version = "tamperscope"
    sys_version = ""
    timeout = 120  # seconds a silent client may hold a connection (socket timeout)

    @property
    def app(self) -> ServeApp:
        return self.server.app

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if not self.app.quiet:
            sys.stderr.write(f"tamperscope serve: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self):  # noqa: N802 (http.server naming)
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            body, ctype = self.app.static["index.html"]
            return self._send(200, body, ctype)
        if path == "/api/models":
            return self._json(200, self.app.model_list())
        if path.startswith("/static/") and path[len("/static/"):] in self.app.static:
            body, ctype = self.app.static[path[len("/static/"):]]
            return self._send(200, body, ctype, cache=True)
        return self._error(404, "not found")

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        url = urlsplit(self.path)
        if url.path != "/api/predict":
            return self._error(404, "not found")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            return self._error(HTTPStatus.LENGTH_REQUIRED, "send the image as the request body with a Content-Length")
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            return self._error(400, "invalid Content-Length")
        limit = self.app.max_upload_bytes
        if length > limit:
            self.close_connection = True  # the body is not read
            return self._error(413, f"file too large ({length / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB)")
        if length <= 0:
            return self._error(400, "empty upload")
        data = self.rfile.read(length)
        query = parse_qs(url.query)
        model_id = query.get("model", [self.app.default_id])[0]
        flags = {k: query.get(k, ["0"])[0] in ("1", "true", "on") for k in ("tiles", "noiseprint", "raw_map")}
        try:
            answer = self.app.analyse(data, model_id, flags["tiles"], flags["noiseprint"], flags["raw_map"])
        except UserError as exc:
            return self._error(400, str(exc))
        except MemoryError:
            return self._error(413, "not enough memory for this image")
        except Exception as exc:  # a model failure must still answer the page, and is logged in full here
            traceback.print_exc(file=sys.stderr)
            return self._error(500, f"internal error while analysing the image ({type(exc).__name__}: {exc})")
        return self._json(200, answer)


def build_app(*, checkpoint: str | None = None, models_dir: str | None = None, noiseprint_weights: str | None = None,
              device: str = "cpu", threshold: float = 0.5, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
              quiet: bool = False) -> ServeApp:
    """The model table and settings; checks every given file now, so mistakes show before the page does."""
    from ..checkpoint import read_checkpoint_config
    from ..engine.predict import default_model_available, names_default_model, resolve_device
    from ..engine.runs import resolve_checkpoint

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {threshold}")
    if max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    dev = str(resolve_device(device))
    models: dict[str, tuple[str, str | None]] = {}
    if checkpoint is not None and names_default_model(checkpoint):
        resolve_checkpoint(checkpoint)  # a one-line error when the bundled model is missing
        checkpoint = None  # the "default" entry below is then offered first
    if checkpoint is not None:
        cfg = read_checkpoint_config(checkpoint)
        models["checkpoint"] = (f"{cfg['model']} ({Path(checkpoint).name})", str(checkpoint))
    if default_model_available():
        models["default"] = ("default model", None)
    if models_dir is not None:
        for name, path in find_checkpoints(models_dir).items():
            cfg = read_checkpoint_config(path)
            models[f"dir:{name}"] = (f"{cfg['model']} ({name})", str(path))
    models["ela"] = ("ela (error-level analysis, no weights)", "ela")
    default_id = next(iter(models))
    noiseprint = None
    if noiseprint_weights is not None:
        from ..backbones.dncnn import NoiseprintExtractor

        noiseprint = NoiseprintExtractor(noiseprint_weights).to(dev).eval()
    return ServeApp(models, default_id, dev, float(threshold), int(max_upload_mb * 1024 * 1024),
                    noiseprint=noiseprint, quiet=quiet)


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A bound (not yet serving) threaded HTTP server; ``port=0`` picks a free port (``server.server_port``)."""
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    server.daemon_threads = True
    server.app = app
    return server
