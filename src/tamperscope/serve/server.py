"""The local web UI behind ``tamperscope serve``: standard library only (``http.server.ThreadingHTTPServer``).

Routes
- ``GET /`` — the page (``static/index.html``); ``GET /static/NAME`` — the files of ``static/``, served from an
  in-memory table built at start-up, so a request path never reaches the file system.
- ``GET /api/models`` — the model choices (ids and labels), the default id, whether the Noiseprint++ view is
  available, the threshold and the upload limit.
- ``GET /api/progress?job=JOB`` — where the analysis a page started with ``job=JOB`` stands: ``queued`` (with its
  ``position``), ``running`` (``done`` of ``total`` windows) or ``unknown``; the page shows it while it waits.
- ``POST /api/predict?model=ID&tiles=0|1&noiseprint=0|1&raw_map=0|1&job=JOB`` — the request body is the raw image file.
  Its size is checked from ``Content-Length`` before reading (413 above the limit) and its type by content
  (:func:`tamperscope.io.read_image_bytes`; the file name and the declared content type are ignored). The answer is
  JSON: :meth:`tamperscope.engine.predict.Prediction.to_dict` (score, verdict tampered / inconclusive / authentic,
  confidence, drawn area, size, model) and the original, tampering-probability map, mask, overlay (and
  Noiseprint++ map) as PNG data URLs ready to show and download. No region is drawn on an authentic verdict
  unless ``raw_map=1``.

Models: ``default`` (the bundled model, when installed), ``checkpoint`` (``--checkpoint``), every run folder or
``.safetensors`` checkpoint directly inside ``--models DIR`` (``dir:NAME``; an entry that is not a usable checkpoint
is skipped with a warning naming it), and the weight-free ``ela`` baseline. The client only ever names an id from
this table, and errors never show a model's file path (it goes to the server's log). The two most recently used
models stay loaded.

One upload cannot stall the server
- Inference runs one request at a time, first come first served (:class:`InferenceQueue`); at most ``queue_size``
  requests wait (more are answered 503 before their body is read), each at most ``queue_timeout`` seconds (then
  503), holding only its upload: its header is checked at once, its pixels decoded in its turn. Between two windows, a running analysis lets the waiting ones have their turn first, so a large photo
  delays a small one by about one window. Other requests (page, static files, progress) are served concurrently.
- The pixel count is checked from the header before decoding (``max_pixels``, ``--max-megapixels``); photos above
  ``TILE_ABOVE_PIXELS`` given to a native-resolution model are processed in ``SERVE_TILE``-pixel windows, so memory
  stays bounded whatever the photo's size.
- Between windows the analysis stops when it has run ``max_seconds`` (503) or when the client has closed its
  connection (nothing is answered, one log line); a dropped connection never prints a traceback.
- Memory does not creep: one thread per connection would give each its own glibc malloc arena, whose freed pages
  stay with the process (RSS grew by 248 MB over 39 answered requests in the load benchmark); the server caps
  glibc at :data:`MALLOC_ARENAS` arenas (:func:`limit_malloc_arenas`: +49 MB over 65 requests, docs/BENCHMARKS.md).

Cross-site requests
- Every request's ``Host`` header must name the address the server is bound to (``127.0.0.1:PORT``,
  ``localhost:PORT``, ``[::1]:PORT`` for a loopback bind), which defeats DNS rebinding; a wildcard bind
  (``0.0.0.0``) accepts any host.
- A ``POST`` must carry the server's session token (a random value made at start-up and written into the page,
  sent back in the ``X-Tamperscope-Token`` header, which no cross-site form can set) and, when the browser sends an
  ``Origin``, come from the page's own origin.
"""
from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import secrets
import select
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import UserError
from ..io import check_image_bytes, encode_image, read_image_bytes

DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_MEGAPIXELS = 24.0
DEFAULT_MAX_PIXELS = int(DEFAULT_MAX_MEGAPIXELS * 1_000_000)
DEFAULT_MAX_SECONDS = 120.0
DEFAULT_QUEUE_SIZE = 16
DEFAULT_QUEUE_TIMEOUT = 60.0
#: native-resolution models see photos above this many pixels in windows of ``SERVE_TILE`` pixels (memory bound)
TILE_ABOVE_PIXELS = 2 * 1024 * 1024
SERVE_TILE = 1024
MAX_LOADED_MODELS = 2
MAX_TRACKED_JOBS = 256
TOKEN_HEADER = "X-Tamperscope-Token"
TOKEN_PLACEHOLDER = b"__TAMPERSCOPE_TOKEN__"
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
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
    return "data:image/png;base64," + base64.b64encode(encode_image(image)).decode("ascii")


def find_checkpoints(folder: str | Path) -> dict[str, Path]:
    """``{name: path}`` for run folders (with ``config.json``) and tamperscope ``.safetensors`` files directly
    inside ``folder``; other entries (malformed configs, unknown models, unreadable files) are skipped with a
    warning on stderr naming the file."""
    from ..checkpoint import read_checkpoint_config
    from ..registry import list_models

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--models {folder}: not a folder")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not (entry.is_dir() or entry.suffix == ".safetensors"):
            continue
        try:
            cfg = read_checkpoint_config(entry)
            if cfg["model"] not in list_models():
                raise UserError(f"{entry}: unknown model '{cfg['model']}' (see `tamperscope models`)")
        except (UserError, OSError) as exc:
            problem = str(exc) if isinstance(exc, UserError) else f"{entry}: {exc.strerror or exc}"
            print(f"tamperscope serve: warning: skipping {problem}", file=sys.stderr)
            continue
        found[entry.name] = entry
    return found


class RequestStopped(Exception):
    """An analysis stopped between two windows: its client has gone (``abandoned``) or it ran too long."""

    def __init__(self, message: str, abandoned: bool = False):
        super().__init__(message)
        self.abandoned = abandoned


class InferenceQueue:
    """One analysis at a time, first come first served, with a bounded number of waiting requests and a bounded
    wait (module docstring)."""

    def __init__(self, size: int = DEFAULT_QUEUE_SIZE, timeout: float = DEFAULT_QUEUE_TIMEOUT):
        self.size, self.timeout = int(size), float(timeout)
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running: object | None = None
        self._paused: set[int] = set()  # ids of waiting tickets that already ran (they yield to no one)

    def join(self, ticket: object) -> bool:
        """Take a place in the queue; False when ``size`` requests already wait."""
        with self._cond:
            if len(self._waiting) >= self.size:
                return False
            self._waiting.append(ticket)
            return True

    def position(self, ticket: object) -> int | None:
        """How many requests run or wait before ``ticket`` (None once it runs or left)."""
        with self._cond:
            if ticket not in self._waiting:
                return None
            return self._waiting.index(ticket) + (self._running is not None)

    def wait(self, ticket: object, cancelled=lambda: False, timeout: float | None = None) -> bool:
        """Block until it is ``ticket``'s turn (True) or ``timeout`` (default: the queue's) passes or
        ``cancelled()`` (False; it leaves)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while self._running is not None or self._waiting[0] is not ticket:
                left = deadline - time.monotonic()
                if left <= 0 or cancelled():
                    self._waiting.remove(ticket)
                    self._cond.notify_all()
                    return False
                self._cond.wait(min(left, 0.25))
            self._waiting.pop(0)
            self._running = ticket
            return True

    def pause(self, ticket: object, cancelled=lambda: False) -> bool:
        """Between two windows of the running ``ticket``: when requests that have not run yet wait, let each of
        them have its turn first (``ticket`` goes to the back of the queue) and take the turn back; False when
        ``cancelled()`` meanwhile. A long analysis thus delays a short one by about one window, not by its run."""
        with self._cond:
            if self._running is not ticket or all(id(t) in self._paused for t in self._waiting):
                return True
            self._running = None
            self._waiting.append(ticket)
            self._paused.add(id(ticket))
            self._cond.notify_all()
        try:
            return self.wait(ticket, cancelled, timeout=float("inf"))
        finally:
            with self._cond:
                self._paused.discard(id(ticket))

    def leave(self, ticket: object) -> None:
        """``ticket`` is done (or gives up its place)."""
        with self._cond:
            if self._running is ticket:
                self._running = None
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()


def client_gone(sock) -> bool:
    """Whether the peer of ``sock`` has closed its side (readable with nothing left to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError, socket.timeout):
        return False
    except (OSError, ValueError):
        return True


def window_count(predictor, height: int, width: int, tile: int) -> int:
    """Windows :meth:`Predictor.predict_array` runs for a ``height × width`` photo in ``tile``-pixel tiles."""
    from ..data.transforms import JPEG_GRID
    from ..engine.predict import DEFAULT_TILE_OVERLAP, tile_windows

    grid = JPEG_GRID if predictor.native_resolution else 1
    return (len(tile_windows(height, tile, DEFAULT_TILE_OVERLAP, grid))
            * len(tile_windows(width, tile, DEFAULT_TILE_OVERLAP, grid)))


def watched(predictor, on_windows):
    """A per-request copy of ``predictor`` that calls ``on_windows(n)`` before and after each batch of ``n``
    windows it runs (``n = 0`` before): the hook that reports progress and stops an abandoned or overlong
    analysis between windows."""
    job = copy.copy(predictor)
    if predictor.native_resolution:
        job.batch_size = 1  # such models run one window at a time anyway: a hook call per window
    run_maps = type(predictor).maps

    def maps(crops):
        on_windows(0)
        out = run_maps(job, crops)
        on_windows(len(crops))
        return out

    job.maps = maps
    return job


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """``Host`` header values naming a server bound to ``host:port`` (None: any, for a wildcard bind)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        return None
    names = {host}
    if host == "localhost" or (ip is not None and ip.is_loopback):
        names |= {"localhost", "127.0.0.1", "::1"}
    return {f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names} | (
        {f"[{n}]" if ":" in n else n for n in names} if port == 80 else set())


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
    max_seconds: float = DEFAULT_MAX_SECONDS
    queue: InferenceQueue = field(default_factory=InferenceQueue)
    #: the session token a POST must carry (written into the page)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _predictors: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: OrderedDict = field(default_factory=OrderedDict)
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self) -> bytes:
        """``index.html`` with this session's token."""
        return self.static["index.html"][0].replace(TOKEN_PLACEHOLDER, self.token.encode("ascii"))

    def log(self, line: str) -> None:
        print(f"tamperscope serve: {line}", file=sys.stderr, flush=True)

    # -- progress of the analyses, by the job id the page chose --------------------------------------
    def track(self, job: str | None, **state) -> None:
        if job is None:
            return
        with self._jobs_lock:
            self._jobs[job] = state
            self._jobs.move_to_end(job)
            while len(self._jobs) > MAX_TRACKED_JOBS:
                self._jobs.popitem(last=False)

    def progress(self, job: str, ticket: object | None = None) -> dict:
        with self._jobs_lock:
            state = dict(self._jobs.get(job) or {"state": "unknown"})
        if state.get("state") == "queued" and state.get("ticket") is not None:
            state["position"] = self.queue.position(state["ticket"])
        state.pop("ticket", None)
        return state

    def predictor(self, model_id: str):
        from ..engine.predict import load_predictor

        if model_id not in self.models:
            raise UserError(f"unknown model id {model_id!r}")
        if model_id in self._predictors:
            self._predictors[model_id] = self._predictors.pop(model_id)  # most recently used goes last
        else:
            while len(self._predictors) >= MAX_LOADED_MODELS:
                self._predictors.pop(next(iter(self._predictors)))  # least recently used
            try:
                self._predictors[model_id] = load_predictor(self.models[model_id][1], device=self.device)
            except UserError as exc:  # e.g. its files were deleted: the full message (with paths) stays here
                self.log(f"model {model_id}: {exc}")
                raise UserError(f"model '{self.models[model_id][0]}' cannot be loaded (its files were moved, "
                                "removed or damaged; the server's log says more)") from None
        return self._predictors[model_id]

    def model_list(self) -> dict:
        return {"models": [{"id": k, "label": label} for k, (label, _) in self.models.items()],
                "default": self.default_id, "noiseprint": self.noiseprint is not None,
                "threshold": self.threshold, "max_upload_bytes": self.max_upload_bytes,
                "max_pixels": self.max_pixels}

    def analyse(self, data: bytes, model_id: str, tiles: bool, want_noiseprint: bool, raw_map: bool = False, *,
                ticket: object | None = None, job: str | None = None, cancelled=lambda: False) -> dict:
        """Decode an uploaded image (type checked by content), wait for its turn (``ticket``: its place in
        :attr:`queue`, or None to join now) and return the JSON answer. Raises :class:`RequestStopped` when the
        wait or the analysis runs out of time or ``cancelled()`` says the client has gone."""
        from ..engine.predict import check_finite
        from ..report.visualize import stretch_to_uint8

        if model_id not in self.models:
            raise UserError(f"unknown model id {model_id!r}")
        if want_noiseprint and self.noiseprint is None:
            raise UserError("the Noiseprint++ view needs the server to be started with --noiseprint-weights FILE")
        if ticket is None:
            ticket = object()
            if not self.queue.join(ticket):
                raise RequestStopped("the server is busy (too many analyses waiting); try again in a minute")
        try:
            self.track(job, state="queued", ticket=ticket)
            # the header now (a wrong file or size is refused at once), the pixels in its turn: a waiting request
            # holds only its upload
            check_image_bytes(data, name="uploaded file", max_pixels=self.max_pixels)
            if not self.queue.wait(ticket, cancelled):
                if cancelled():
                    raise RequestStopped("client closed the connection while queued", abandoned=True)
                raise RequestStopped(f"the server is busy (waited {self.queue.timeout:g} s for the analyses before "
                                     "this one); try again later")
            rgb = read_image_bytes(data, name="uploaded file", max_pixels=self.max_pixels)
            with self._lock:
                predictor = self.predictor(model_id)
            pred, noise = self._run(predictor, rgb, tiles, raw_map, want_noiseprint, job, cancelled, ticket)
        finally:
            self.queue.leave(ticket)
            self.track(job, state="finishing")
        check_finite(pred, "uploaded file")
        images = {"original": png_data_url(rgb), "heatmap": png_data_url(pred.heatmap()),
                  "mask": png_data_url(pred.mask_png()), "overlay": png_data_url(pred.overlay())}
        if noise is not None:
            images["noiseprint"] = png_data_url(stretch_to_uint8(noise))
        return {**pred.to_dict(), "model_id": model_id, "images": images}

    def _run(self, predictor, rgb, tiles, raw_map, want_noiseprint, job, cancelled, ticket=None):
        """The analysis itself, in windows: progress reported, the turn shared with waiting requests and the work
        stopped between windows (module docstring)."""
        h, w = rgb.shape[:2]
        tile_size = None
        if predictor.native_resolution and h * w > TILE_ABOVE_PIXELS:
            tiles, tile_size = True, SERVE_TILE  # bounded memory whatever the photo's size
        total = window_count(predictor, h, w, tile_size or predictor.image_size) if tiles else 1
        start, done = time.monotonic(), 0

        def on_windows(n: int) -> None:
            nonlocal done
            done += n
            self.track(job, state="running", done=min(done, total), total=total)
            if n == 0 and ticket is not None and not self.queue.pause(ticket, cancelled):
                raise RequestStopped("client closed the connection while paused; analysis stopped", abandoned=True)
            if cancelled():
                raise RequestStopped("client closed the connection; analysis stopped", abandoned=True)
            if n == 0 and time.monotonic() - start > self.max_seconds:
                raise RequestStopped(f"analysis stopped after {self.max_seconds:g} s ({done} of {total} windows "
                                     "done); try a smaller photo, or `tamperscope predict` on the command line")

        on_windows(0)
        pred = watched(predictor, on_windows).predict_array(rgb, threshold=self.threshold, raw_map=raw_map,
                                                            tiles=tiles, tile_size=tile_size)
        if not want_noiseprint:
            return pred, None
        from ..backbones.dncnn import photo_noise_map

        return pred, photo_noise_map(self.noiseprint, rgb, self.device)


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
        if status >= 400:
            self.close_connection = True  # the rest of a refused request may still be on the wire
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

    def _host_refused(self) -> bool:
        """Answer 403 (True) unless the ``Host`` header names this server (module docstring: DNS rebinding)."""
        allowed = self.server.allowed_hosts
        host = (self.headers.get("Host") or "").strip().lower()
        if allowed is None or host in allowed:
            return False
        self._error(403, "this server answers only requests addressed to "
                    f"{sorted(allowed)[0] if allowed else 'its own address'} (Host header {host or 'missing'})")
        return True

    def _post_refused(self) -> bool:
        """Answer 403 (True) to a cross-site POST or one without this session's token."""
        origin = self.headers.get("Origin")
        host = (self.headers.get("Host") or "").strip().lower()
        if origin is not None and origin.strip().lower() not in (f"http://{host}", f"https://{host}"):
            self._error(403, f"cross-site request refused (Origin {origin})")
            return True
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            self._error(403, "cross-site request refused")
            return True
        token = self.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(token.encode("utf-8", "replace"), self.app.token.encode("ascii")):
            self._error(403, f"missing or wrong session token (the {TOKEN_HEADER} header); reload the page")
            return True
        return False

    def do_GET(self):  # noqa: N802 (http.server naming)
        if self._host_refused():
            return None
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            return self._send(200, self.app.page(), self.app.static["index.html"][1])
        if path == "/api/models":
            return self._json(200, self.app.model_list())
        if path == "/api/progress":
            job = parse_qs(url.query).get("job", [""])[0]
            if not _JOB_ID.fullmatch(job):
                return self._error(400, "job must be 8-64 letters, digits, '-' or '_'")
            return self._json(200, self.app.progress(job))
        if path.startswith("/static/") and path[len("/static/"):] in self.app.static:
            body, ctype = self.app.static[path[len("/static/"):]]
            return self._send(200, body, ctype, cache=True)
        return self._error(404, "not found")

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        if self._host_refused():
            return None
        url = urlsplit(self.path)
        if url.path != "/api/predict":
            return self._error(404, "not found")
        if self._post_refused():
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None:  # every answer of 400 or more closes the connection (_send)
            return self._error(HTTPStatus.LENGTH_REQUIRED, "send the image as the request body with a Content-Length")
        try:
            length = int(length_text)
        except ValueError:
            return self._error(400, "invalid Content-Length")
        limit = self.app.max_upload_bytes
        if length > limit:  # the body is not read
            return self._error(413, f"file too large ({length / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB)")
        if length <= 0:
            return self._error(400, "empty upload")
        query = parse_qs(url.query)
        model_id = query.get("model", [self.app.default_id])[0]
        flags = {k: query.get(k, ["0"])[0] in ("1", "true", "on") for k in ("tiles", "noiseprint", "raw_map")}
        job = query.get("job", [None])[0]
        if job is not None and not _JOB_ID.fullmatch(job):
            return self._error(400, "job must be 8-64 letters, digits, '-' or '_'")
        ticket = object()
        if not self.app.queue.join(ticket):  # before reading the body: waiting requests hold no upload
            return self._error(503, "the server is busy (too many analyses waiting); try again in a minute")
        try:
            data = self.rfile.read(length)
            if len(data) < length:
                raise ConnectionError("upload cut short")
            answer = self.app.analyse(data, model_id, flags["tiles"], flags["noiseprint"], flags["raw_map"],
                                      ticket=ticket, job=job, cancelled=lambda: client_gone(self.connection))
        except RequestStopped as exc:
            if exc.abandoned:
                self.close_connection = True
                return self.log_message("%s", f"POST {url.path}: {exc}")
            return self._error(503, str(exc))
        except UserError as exc:
            return self._error(400, str(exc))
        except MemoryError:
            return self._error(413, "not enough memory for this image")
        except (ConnectionError, TimeoutError):  # the client went away while sending: nobody to answer
            self.close_connection = True
            return None
        except Exception as exc:  # a model failure must still answer the page, and is logged in full here
            traceback.print_exc(file=sys.stderr)
            return self._error(500, f"internal error while analysing the image ({type(exc).__name__}: {exc})")
        finally:
            self.app.queue.leave(ticket)
        return self._json(200, answer)


def build_app(*, checkpoint: str | None = None, models_dir: str | None = None, noiseprint_weights: str | None = None,
              device: str = "cpu", threshold: float = 0.5, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
              quiet: bool = False, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
              max_seconds: float = DEFAULT_MAX_SECONDS, queue_size: int = DEFAULT_QUEUE_SIZE,
              queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> ServeApp:
    """The model table and settings; checks every given file now, so mistakes show before the page does."""
    from ..checkpoint import read_checkpoint_config
    from ..engine.loading import default_model_available, names_default_model, resolve_checkpoint
    from ..engine.distributed import resolve_device

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {threshold}")
    for flag, value in (("--max-upload-mb", max_upload_mb), ("--max-megapixels", max_megapixels),
                        ("--max-seconds", max_seconds), ("--queue-timeout", queue_timeout)):
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if queue_size < 1:
        raise UserError(f"--queue-size must be at least 1, got {queue_size}")
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
                    max_pixels=int(max_megapixels * 1_000_000), noiseprint=noiseprint, quiet=quiet,
                    max_seconds=float(max_seconds), queue=InferenceQueue(queue_size, queue_timeout))


#: glibc malloc arenas the serving process keeps (module docstring, "Memory does not creep")
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX, arenas)``, as ``MALLOC_ARENA_MAX``
    does); True when glibc took it, False on another C library or platform, where nothing changes."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


class Server(ThreadingHTTPServer):
    """The threaded HTTP server: a client that disconnects is not an error worth a traceback, and any other
    failure of a connection is logged in one line."""

    daemon_threads = True
    app: ServeApp
    allowed_hosts: set[str] | None = None

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"tamperscope serve: error while answering {client_address[0]}: {type(exc).__name__}: {exc}",
              file=sys.stderr)


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A bound (not yet serving) threaded HTTP server; ``port=0`` picks a free port (``server.server_port``).
    Caps glibc's malloc arenas first (:func:`limit_malloc_arenas`), before any connection thread exists."""
    limit_malloc_arenas()
    try:
        server = Server((host, port), Handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    server.app = app
    server.allowed_hosts = allowed_hosts(host, server.server_port)
    return server
