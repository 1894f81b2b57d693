"""Load on `tamperscope serve`: latency, memory and fairness under concurrent uploads (127.0.0.1 only).

Starts its own server (``tamperscope serve --host 127.0.0.1 --port 0``) as a child process, sends it
``--requests`` uploads of camera-sized JPEGs with ``--concurrency`` clients in parallel, then one large photo with a
small one sent while the large one runs, and stops the server (and itself) when done or after ``--time-limit``
seconds. It never contacts any other address.

Prints a Markdown block for docs/BENCHMARKS.md: p50/p95 latency, throughput, the answers by status, the server's
resident memory (RSS) at start, after a warm-up request and after the run, and the small request's latency while
the large one runs.

Run: .venv/bin/python benchmarks/load_serve.py [--requests 150] [--concurrency 8] [--checkpoint default]
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

HOST = "127.0.0.1"


def photo(h: int, w: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A smooth synthetic photo (gradients and blobs, so it compresses like a real one)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / (40 + 10 * c) + y / (70 + 5 * c) + rng.random() * 6) for c in range(3)], -1)
    img += rng.normal(0, 4, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def post(url: str, token: str, data: bytes, timeout: float = 600) -> tuple[int, float]:
    req = urllib.request.Request(url, data=data, method="POST", headers={"X-Tamperscope-Token": token})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        status = 0
    return status, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=150, help="uploads in the load run (default 150)")
    ap.add_argument("--concurrency", type=int, default=8, help="clients sending at once (default 8)")
    ap.add_argument("--size", default="1024x768", help="size of the load run's photos, WxH (default 1024x768)")
    ap.add_argument("--large", default="4000x3000", help="size of the large photo of the fairness run (default "
                                                         "4000x3000)")
    ap.add_argument("--checkpoint", default=None, help="model the server offers first (default: its default)")
    ap.add_argument("--device", default="cpu", help="the server's --device (default cpu)")
    ap.add_argument("--time-limit", type=float, default=1800, help="stop everything after this many seconds")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    lw, lh = (int(v) for v in args.large.split("x"))

    cmd = [sys.executable, "-m", "tamperscope.cli", "serve", "--host", HOST, "--port", "0", "--no-request-log",
           "--device", args.device]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(args.time_limit, lambda: server.send_signal(signal.SIGINT))
    watchdog.daemon = True
    watchdog.start()
    try:
        base = None
        for line in server.stdout:
            match = re.search(rf"open (http://{re.escape(HOST)}:\d+/)", line)
            if match:
                base = match.group(1)
                break
        if base is None:
            print(server.stderr.read(), file=sys.stderr)
            return 1
        page = urllib.request.urlopen(base, timeout=60).read().decode()
        token = re.search(r'name="tamperscope-token" content="([^"]+)"', page).group(1)
        models = json.loads(urllib.request.urlopen(base + "api/models", timeout=60).read())
        url = base + "api/predict"
        rss_start = rss_mb(server.pid)
        photos = [photo(h, w, seed) for seed in range(8)]
        warm_status, warm_s = post(url, token, photos[0])
        rss_warm = rss_mb(server.pid)

        def one(i: int) -> tuple[int, float]:
            return post(url, token, photos[i % len(photos)])

        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - start
        rss_end = rss_mb(server.pid)
        latencies = sorted(t for s, t in results if s == 200)
        statuses: dict[int, int] = {}
        for s, _ in results:
            statuses[s] = statuses.get(s, 0) + 1

        # fairness: a large photo, and a small one sent while it runs
        large = photo(lh, lw, 99, fmt="PNG")
        answers: dict[str, tuple[int, float]] = {}
        big = threading.Thread(target=lambda: answers.__setitem__("large", post(url, token, large)))
        big.start()
        time.sleep(2.0)  # let the large analysis start (a benchmark, not a test)
        answers["small"] = post(url, token, photos[1])
        big.join()
        rss_after_large = rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        watchdog.cancel()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(q * (len(latencies) - 1))))] if latencies else float("nan")

    import torch

    cpu = platform.processor() or platform.machine()
    print(f"Machine: {cpu}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
          f"torch {torch.__version__}; server device {args.device}; model {models['default']}.")
    print(f"Command: `{' '.join(['python', 'benchmarks/load_serve.py'] + sys.argv[1:])}`\n")
    print("| measure | value |\n|---|---|")
    print(f"| requests, concurrency | {args.requests}, {args.concurrency} ({w}×{h} JPEG uploads) |")
    print(f"| answers by status | {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))} |")
    print(f"| latency p50 / p95 / max | {statistics.median(latencies):.2f} s / {pct(0.95):.2f} s / "
          f"{latencies[-1]:.2f} s |" if latencies else "| latency | no successful request |")
    print(f"| throughput | {len(latencies) / wall:.2f} requests/s ({wall:.1f} s wall) |")
    print(f"| first request (model load) | {warm_s:.2f} s (status {warm_status}) |")
    print(f"| server RSS: start / after warm-up / after {args.requests} requests | {rss_start:.0f} / "
          f"{rss_warm:.0f} / {rss_end:.0f} MB |")
    print(f"| {lw}×{lh} PNG ({len(large) / 2**20:.1f} MB) | status {answers['large'][0]}, "
          f"{answers['large'][1]:.1f} s |")
    print(f"| small photo sent 2 s into the large one | status {answers['small'][0]}, {answers['small'][1]:.2f} s |")
    print(f"| server RSS after the large photo | {rss_after_large:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
