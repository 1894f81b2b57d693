"""`tamperscope serve`: a local web page to analyse photos (see :mod:`tamperscope.serve.server`).

Binds to 127.0.0.1 by default; another ``--host`` (e.g. 0.0.0.0) exposes the page to the network and prints a
warning, since the page has no authentication."""
from __future__ import annotations

import sys

NAME = "serve"
HELP = "local web page: drop an image, see heat map, overlay and score, switch models, download the outputs"


def add_arguments(p):
    from ..serve.server import (DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_SECONDS, DEFAULT_MAX_UPLOAD_MB, DEFAULT_QUEUE_SIZE,
                                DEFAULT_QUEUE_TIMEOUT)

    p.add_argument("--checkpoint", metavar="RUN_OR_FILE", default=None,
                   help="model offered first: a run folder, .safetensors checkpoint, 'default' or 'ela' (default: the "
                        "bundled default model when installed)")
    p.add_argument("--models", metavar="DIR", default=None,
                   help="folder of run folders / .safetensors checkpoints to choose from in the page")
    p.add_argument("--noiseprint-weights", metavar="FILE", default=None,
                   help="TruFor's noiseprint++.th, to offer the Noiseprint++ map view")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability above which a pixel counts as tampered (default 0.5)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"upload size limit in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                   help=f"largest photo accepted, in millions of pixels, checked before decoding "
                        f"(default {DEFAULT_MAX_MEGAPIXELS:g})")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help=f"stop an analysis that runs longer than this (default {DEFAULT_MAX_SECONDS:g})")
    p.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                   help=f"analyses that may wait while one runs; more are refused as busy (default "
                        f"{DEFAULT_QUEUE_SIZE})")
    p.add_argument("--queue-timeout", type=float, default=DEFAULT_QUEUE_TIMEOUT,
                   help=f"seconds an analysis may wait for its turn before it is refused as busy (default "
                        f"{DEFAULT_QUEUE_TIMEOUT:g})")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--no-request-log", action="store_true", help="do not log each request on stderr")
    p.add_argument("--quiet", action="store_true", dest="no_request_log",
                   help="deprecated name of --no-request-log")


def run(args) -> int:
    from ..serve.server import build_app, make_server

    app = build_app(checkpoint=args.checkpoint, models_dir=args.models, noiseprint_weights=args.noiseprint_weights,
                    device=args.device, threshold=args.threshold, max_upload_mb=args.max_upload_mb,
                    quiet=args.no_request_log, max_megapixels=args.max_megapixels, max_seconds=args.max_seconds,
                    queue_size=args.queue_size, queue_timeout=args.queue_timeout)
    server = make_server(app, args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"tamperscope serve: warning: listening on {args.host}, reachable from other machines; the page has "
              "no authentication", file=sys.stderr)
    host = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"tamperscope serve: models: {', '.join(label for label, _ in app.models.values())}")
    print(f"tamperscope serve: open http://{host}:{server.server_port}/ (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("tamperscope serve: stopped")
    finally:
        server.server_close()
    return 0
