"""`tamperscope serve`: the HTTP API (limits, content checks, no file paths), the model table, the Noiseprint++
view, and an end-to-end run of the page in headless Chromium (skipped when Chromium is absent)."""
import base64
import io
import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import tamperscope
from tamperscope.backbones.dncnn import DnCNN
from tamperscope.checkpoint import save_checkpoint
from tamperscope.errors import UserError
from tamperscope.serve.server import build_app, find_checkpoints, load_static, make_server

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-proxy-server"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = tamperscope.create_model("segformer-b0")
    return save_checkpoint(model, tmp_path_factory.mktemp("models") / "tiny-run", extra={"train": {"image_size": 64}})


@pytest.fixture(scope="module")
def server(run_dir):
    app = build_app(checkpoint=str(run_dir), models_dir=str(run_dir.parent), device="cpu", quiet=True)
    srv = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv, path):
    return f"http://127.0.0.1:{srv.server_port}{path}"


def _request(srv, path, data=None, headers=None):
    """GET, or POST ``data`` with the server's session token (as the page sends it) unless ``headers`` say."""
    headers = dict(headers or {})
    if data is not None:
        headers.setdefault("X-Tamperscope-Token", srv.app.token)
    req = urllib.request.Request(_url(srv, path), data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _png_bytes(h=40, w=56, seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _decode_data_url(url):
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_page_and_static_files(server):
    status, headers, body = _request(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="status"' in body and "script-src 'self'" in headers["Content-Security-Policy"]
    for name in ("app.js", "style.css", "sample.jpg"):
        assert _request(server, f"/static/{name}")[0] == 200
    assert set(load_static()) >= {"index.html", "app.js", "style.css", "sample.jpg"}


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py", "/static/",
                                  "/static//etc/passwd", "/etc/passwd", "/static/server.py"])
def test_no_path_reaches_the_file_system(server, path):
    status, _, body = _request(server, path)
    assert status == 404 and json.loads(body) == {"error": "not found"}


def test_model_table(server, run_dir):
    status, _, body = _request(server, "/api/models")
    info = json.loads(body)
    ids = [m["id"] for m in info["models"]]
    assert status == 200 and info["default"] == "checkpoint"
    assert "checkpoint" in ids and f"dir:{run_dir.name}" in ids and "ela" in ids
    assert info["noiseprint"] is False and info["max_upload_bytes"] > 0


def test_predict_upload(server):
    status, _, body = _request(server, "/api/predict?model=checkpoint", _png_bytes())
    assert status == 200
    result = json.loads(body)
    assert (result["width"], result["height"]) == (56, 40)
    assert result["verdict"] in ("tampered", "inconclusive", "authentic") and 0 <= result["score"] <= 1
    assert result["confidence"] == "no validation scores stored with this model" and result["raw_map"] is False
    assert set(result["images"]) == {"original", "heatmap", "mask", "overlay"}
    assert _decode_data_url(result["images"]["heatmap"]).size == (56, 40)
    assert np.array_equal(np.asarray(_decode_data_url(result["images"]["original"])),
                          np.asarray(Image.open(io.BytesIO(_png_bytes()))))


def test_no_region_on_an_authentic_verdict_unless_raw_map(run_dir, tmp_path):
    """A calibration that flags every pixel but never the image: authentic, nothing drawn unless ``raw_map=1``,
    and the confidence read from the stored validation scores."""
    model = tamperscope.load_checkpoint(run_dir)
    model.calibration = {"mode": "absolute", "threshold": 1e-6,
                         "image": {"threshold": 0.999999, "inconclusive_from": 0.999999, "max_false_alarm": 0.1,
                                   "authentic_scores": [0.1, 0.2], "tampered_scores": [0.999999, 1.0]}}
    path = save_checkpoint(model, tmp_path / "calibrated.safetensors", extra={"train": {"image_size": 64}})
    srv = make_server(build_app(checkpoint=str(path), quiet=True), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        answers = {flag: json.loads(_request(srv, f"/api/predict?raw_map={flag}", _png_bytes())[2]) for flag in "01"}
    finally:
        srv.shutdown()
        srv.server_close()
    for flag, result in answers.items():
        assert result["verdict"] == "authentic" and result["raw_map"] is (flag == "1")
        assert result["confidence"] == "0 % of tampered validation photos score this low"
        mask = np.asarray(_decode_data_url(result["images"]["mask"]))
        assert bool(mask.all()) == bool(mask.any()) == (flag == "1")
        assert result["tampered_area_pct"] == (100.0 if flag == "1" else 0.0)


def test_switch_model_and_tiles(server, run_dir):
    status, _, body = _request(server, "/api/predict?model=ela&tiles=1", _png_bytes(70, 90))
    assert status == 200 and json.loads(body)["model"] == "ela"
    status, _, body = _request(server, f"/api/predict?model=dir:{run_dir.name}&tiles=1", _png_bytes(70, 150))
    assert status == 200 and json.loads(body)["tiles"] > 1
    assert list(server.app._predictors) == ["ela", f"dir:{run_dir.name}"]  # at most two models stay loaded


def test_type_checked_by_content(server):
    status, _, body = _request(server, "/api/predict", b"<html>not an image</html>",
                               headers={"Content-Type": "image/png"})
    assert status == 400 and "not an image" in json.loads(body)["error"]
    status, _, body = _request(server, "/api/predict", _png_bytes()[:200])
    assert status == 400 and "uploaded file" in json.loads(body)["error"]


def test_unknown_model_and_missing_noiseprint(server):
    status, _, body = _request(server, "/api/predict?model=../../etc/passwd", _png_bytes())
    assert status == 400 and "unknown model id" in json.loads(body)["error"]
    status, _, body = _request(server, "/api/predict?noiseprint=1", _png_bytes())
    assert status == 400 and "--noiseprint-weights" in json.loads(body)["error"]


def test_upload_limit(server):
    limit = server.app.max_upload_bytes
    server.app.max_upload_bytes = 1000
    try:
        status, _, body = _request(server, "/api/predict", _png_bytes(64, 64))
    finally:
        server.app.max_upload_bytes = limit
    assert status == 413 and "too large" in json.loads(body)["error"]


def test_noiseprint_view(tmp_path):
    weights = tmp_path / "noiseprint++.th"
    torch.save({"network": DnCNN().state_dict(), "global_step": 0}, weights)
    srv = make_server(build_app(noiseprint_weights=str(weights), quiet=True), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert json.loads(_request(srv, "/api/models")[2])["noiseprint"] is True
        status, _, body = _request(srv, "/api/predict?model=ela&noiseprint=1", _png_bytes(24, 32))
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 200
    assert _decode_data_url(json.loads(body)["images"]["noiseprint"]).size == (32, 24)


def test_bad_inputs_at_start(tmp_path):
    (tmp_path / "junk.th").write_bytes(b"not torch")
    with pytest.raises(UserError, match="junk.th"):
        build_app(noiseprint_weights=str(tmp_path / "junk.th"))
    with pytest.raises(UserError, match="not a folder"):
        build_app(models_dir=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="checkpoint not found"):
        build_app(checkpoint=str(tmp_path / "nope"))


def test_find_checkpoints_skips_non_checkpoints(tmp_path, run_dir, capsys):
    shutil.copytree(run_dir, tmp_path / "good")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    (tmp_path / "readme.txt").write_text("hi")
    assert list(find_checkpoints(tmp_path)) == ["good"]
    assert "skipping" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_page_in_headless_chromium(server, tmp_path):
    """The page loads the bundled sample through the same upload code as a dropped file and shows the result."""
    cmd = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=60000",
           "--dump-dom", _url(server, "/?sample=1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = re.search(r'<p id="status" data-state="(\w+)"[^>]*>([^<]*)</p>', dom)
    assert status is not None and status.group(1) == "done", status and status.group(2)
    assert re.search(r'<p id="score" class="(tampered|inconclusive|authentic)">\1 \(score [01]\.\d{3}\)</p>', dom)
    assert '<p id="confidence">no validation scores stored with this model</p>' in dom
    for name in ("original", "heatmap", "overlay"):
        assert re.search(rf'<img id="img-{name}"[^>]*src="data:image/png;base64,', dom)
    assert re.search(r'<a href="data:image/png;base64,[^"]+" download="sample\.heatmap\.png"', dom)
    assert "300×200 px" in dom  # the bundled sample's size, read back from the server's answer


def test_serve_command_binds_localhost_and_stops(tmp_path):
    """`tamperscope serve --port 0` prints its URL on 127.0.0.1 and answers; Ctrl+C stops it cleanly."""
    import os
    import signal
    import sys

    # a test suite started in the background of a non-interactive shell ignores SIGINT, and a child inherits
    # that (Python then installs no KeyboardInterrupt handler): give the server the default disposition
    proc = subprocess.Popen([sys.executable, "-m", "tamperscope.cli", "serve", "--port", "0", "--quiet",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None, proc.stderr.read()
        with urllib.request.urlopen(url + "api/models", timeout=60) as resp:
            assert "ela" in [m["id"] for m in json.loads(resp.read())["models"]]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_model_failure_answers_500(server, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(server.app, "analyse", broken)
    status, _, body = _request(server, "/api/predict", _png_bytes())
    assert status == 500 and "RuntimeError: boom" in json.loads(body)["error"]
    assert "Traceback" in capsys.readouterr().err


# ------------------------------------------------------------------ hardening (issue 18): one upload cannot stall it


def _serve(app):
    srv = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _stop(srv):
    srv.shutdown()
    srv.server_close()


def _post_thread(srv, path, data, results, key):
    thread = threading.Thread(target=lambda: results.__setitem__(key, _request(srv, path, data)), daemon=True)
    thread.start()
    return thread


class _Held:
    """Holds the running analysis inside the window hook until released; records the windows it ran."""

    def __init__(self, monkeypatch, pause_after=1):
        from tamperscope.serve import server as server_mod

        self.started, self.release, self.windows, self.log = threading.Event(), threading.Event(), [], []
        real = server_mod.watched

        def watched(predictor, on_windows):
            def hook(n):
                self.windows.append(n)
                self.log.append((threading.get_ident(), n))
                on_windows(n)
                if n and sum(self.windows) >= pause_after and not self.release.is_set():
                    self.started.set()
                    assert self.release.wait(120)
            return real(predictor, hook)

        monkeypatch.setattr(server_mod, "watched", watched)


def test_host_and_origin_checks_and_session_token(server):
    """DNS rebinding (a foreign Host) and cross-site POSTs (foreign Origin, no token, text/plain) are refused."""
    port = server.server_port
    status, _, body = _request(server, "/", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and "Host" in json.loads(body)["error"]
    assert _request(server, "/api/models", headers={"Host": f"localhost:{port}"})[0] == 200
    status, _, page = _request(server, "/")
    assert server.app.token.encode() in page and b"__TAMPERSCOPE_TOKEN__" not in page
    calls = []
    real = server.app.analyse
    server.app.analyse = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        cross = _request(server, "/api/predict", _png_bytes(), headers={
            "Origin": "http://evil.example", "Content-Type": "text/plain", "X-Tamperscope-Token": server.app.token})
        no_token = _request(server, "/api/predict", _png_bytes(), headers={"X-Tamperscope-Token": "guess"})
        same_origin = _request(server, "/api/predict", _png_bytes(),
                               headers={"Origin": f"http://127.0.0.1:{port}"})
    finally:
        del server.app.analyse
    assert cross[0] == 403 and "cross-site" in json.loads(cross[2])["error"]
    assert no_token[0] == 403 and "token" in json.loads(no_token[2])["error"]
    assert same_origin[0] == 200 and len(calls) == 1  # only the same-origin request with the token ran


def test_a_waiting_request_is_refused_after_the_queue_timeout_and_a_full_queue_at_once(run_dir, monkeypatch):
    held = _Held(monkeypatch)
    app = build_app(checkpoint=str(run_dir), quiet=True, queue_size=1, queue_timeout=0.2)
    srv = _serve(app)
    results = {}
    try:
        first = _post_thread(srv, "/api/predict?model=ela&tiles=1&job=first-job", _png_bytes(600, 1100), results, "a")
        assert held.started.wait(120)  # the first analysis runs, and is held after one window
        status, _, body = _request(srv, "/api/predict?model=ela", _png_bytes())
        assert status == 503 and "waited 0.2 s" in json.loads(body)["error"]
        app.queue.timeout = 120.0
        second = _post_thread(srv, "/api/predict?model=ela", _png_bytes(), results, "b")
        while not app.queue._waiting:
            threading.Event().wait(0.01)  # until the second request has taken the one waiting place
        status, _, body = _request(srv, "/api/predict?model=ela", _png_bytes())
        assert status == 503 and "too many analyses waiting" in json.loads(body)["error"]
        progress = json.loads(_request(srv, "/api/progress?job=first-job")[2])
        assert progress["state"] == "running" and 1 <= progress["done"] < progress["total"]
        held.release.set()
        first.join(120)
        second.join(120)
    finally:
        held.release.set()
        _stop(srv)
    assert results["a"][0] == 200 and results["b"][0] == 200


def test_an_analysis_stops_when_its_client_has_gone(run_dir, monkeypatch, capsys):
    """A large photo for a native-resolution model runs in windows; closing the connection stops it."""
    import socket

    from tamperscope.serve.server import SERVE_TILE, window_count

    held = _Held(monkeypatch)
    app = build_app(checkpoint=str(run_dir), quiet=False)
    srv = _serve(app)
    data = _png_bytes(2100, 1100)
    try:
        sock = socket.create_connection(("127.0.0.1", srv.server_port), timeout=60)
        sock.sendall(b"POST /api/predict?model=ela&job=gone-client HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     b"X-Tamperscope-Token: %s\r\nContent-Length: %d\r\n\r\n"
                     % (srv.server_port, app.token.encode(), len(data)) + data)
        assert held.started.wait(120)
        sock.close()
        held.release.set()
        while json.loads(_request(srv, "/api/progress?job=gone-client")[2])["state"] != "finishing":
            threading.Event().wait(0.02)
    finally:
        held.release.set()
        _stop(srv)
    predictor = app.predictor("ela")
    total = window_count(predictor, 2100, 1100, SERVE_TILE)
    assert total > 2 and 0 < sum(held.windows) < total  # stopped between windows, not run to the end
    err = capsys.readouterr().err
    assert "client closed the connection" in err and "Traceback" not in err


def test_large_photos_run_in_windows_with_a_time_limit_and_a_pixel_flag(run_dir):
    from tamperscope.serve.server import SERVE_TILE, window_count

    app = build_app(checkpoint=str(run_dir), quiet=True, max_megapixels=3)
    srv = _serve(app)
    try:
        status, _, body = _request(srv, "/api/predict?model=ela", _png_bytes(1500, 1500))
        assert status == 200
        assert json.loads(body)["tiles"] == window_count(app.predictor("ela"), 1500, 1500, SERVE_TILE) > 1
        status, _, body = _request(srv, "/api/predict?model=ela", _png_bytes(1800, 1800))
        assert status == 400 and "the limit is 3,000,000" in json.loads(body)["error"]
        app.max_seconds = 1e-9
        status, _, body = _request(srv, "/api/predict?model=ela", _png_bytes(1500, 1500))
        assert status == 503 and "analysis stopped after" in json.loads(body)["error"]
    finally:
        _stop(srv)


def test_a_dropped_connection_prints_no_traceback(server, capsys):
    """Errors of connections whose client has gone are not logged; other errors take one line."""
    import socket

    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        server.handle_error(None, ("127.0.0.1", 5))
    try:
        raise ValueError("odd")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 5))
    data = _png_bytes(300, 300)
    for cut in (10, len(data)):  # an upload cut short, and a client gone before the answer
        sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=60)
        sock.sendall(b"POST /api/predict?model=ela HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Tamperscope-Token: %s\r\n"
                     b"Content-Length: %d\r\n\r\n" % (server.server_port, server.app.token.encode(), len(data))
                     + data[:cut])
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    assert _request(server, "/api/predict?model=ela", _png_bytes())[0] == 200  # still answering
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "tamperscope serve: error while answering 127.0.0.1: ValueError: odd"


def test_errors_never_show_model_paths(tmp_path, run_dir, capsys):
    models = tmp_path / "models"
    shutil.copytree(run_dir, models / "mine")
    app = build_app(models_dir=str(models), quiet=True)
    srv = _serve(app)
    try:
        shutil.rmtree(models / "mine")
        status, _, body = _request(srv, "/api/predict?model=dir:mine", _png_bytes())
    finally:
        _stop(srv)
    message = json.loads(body)["error"]
    assert status == 400 and "cannot be loaded" in message and str(tmp_path) not in message and "/" not in message
    assert str(models / "mine") in capsys.readouterr().err  # the full story is in the server's log


def test_malformed_model_entries_are_skipped_with_a_warning(tmp_path, run_dir, capsys):
    shutil.copytree(run_dir, tmp_path / "good")
    (tmp_path / "listy").mkdir()
    (tmp_path / "listy" / "config.json").write_text("[1, 2, 3]")
    (tmp_path / "nameless").mkdir()
    (tmp_path / "nameless" / "config.json").write_text(json.dumps({"format": "tamperscope-checkpoint"}))
    (tmp_path / "alien").mkdir()
    (tmp_path / "alien" / "config.json").write_text(json.dumps(
        {"format": "tamperscope-checkpoint", "model": "no-such-model", "config": {}}))
    app = build_app(models_dir=str(tmp_path), quiet=True)
    assert [k for k in app.models if k.startswith("dir:")] == ["dir:good"]
    err = capsys.readouterr().err
    for name in ("listy", "nameless", "alien"):
        assert f"warning: skipping {tmp_path / name}" in err
    assert "Traceback" not in err


def test_progress_ids_are_checked(server):
    assert _request(server, "/api/progress?job=../../x")[0] == 400
    assert json.loads(_request(server, "/api/progress?job=never-started")[2]) == {"state": "unknown"}


def test_a_small_request_runs_between_the_windows_of_a_large_one(run_dir, monkeypatch):
    """The running analysis gives its turn to the waiting ones between two windows: the small photo sent while the
    large one runs is answered before the large one has finished."""
    held = _Held(monkeypatch)
    app = build_app(checkpoint=str(run_dir), quiet=True)
    srv = _serve(app)
    results = {}
    try:
        large = _post_thread(srv, "/api/predict?model=ela&tiles=1", _png_bytes(600, 1100), results, "large")
        assert held.started.wait(120)
        small = _post_thread(srv, "/api/predict?model=ela", _png_bytes(), results, "small")
        while not app.queue._waiting:
            threading.Event().wait(0.01)
        held.release.set()
        small.join(120)
        large.join(120)
    finally:
        held.release.set()
        _stop(srv)
    assert results["small"][0] == 200 and results["large"][0] == 200
    threads = [t for t, _ in held.log]
    big, little = threads[0], next(t for t in threads if t != threads[0])
    first_small, last_small = threads.index(little), len(threads) - 1 - threads[::-1].index(little)
    assert set(threads[first_small:last_small + 1]) == {little}  # the small one ran in one piece...
    assert big in threads[last_small + 1:]  # ...while the large one still had windows to run


def test_the_page_explains_its_colours_and_the_score(server):
    page = _request(server, "/")[2].decode()
    assert 'class="legend"' in page and "0 (authentic)" in page and "1 (tampered)" in page
    assert "<b>Score</b>: the model's probability, from 0 to 1, that the photo was manipulated" in page
    css = _request(server, "/static/style.css")[2].decode()
    assert "linear-gradient(to right, #000004" in css  # the heat map's colour map (inferno)


def test_the_server_caps_malloc_arenas_before_serving(monkeypatch):
    """glibc takes the arena cap (the load benchmark's memory creep); elsewhere it is a no-op that says so; the
    server sets it when it is made, before any connection thread exists."""
    import platform
    from tamperscope.serve import server as server_mod

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert server_mod.limit_malloc_arenas() is True
    monkeypatch.setattr(server_mod.sys, "platform", "darwin")
    assert server_mod.limit_malloc_arenas() is False
    calls = []
    monkeypatch.setattr(server_mod, "limit_malloc_arenas", lambda: calls.append(1) or True)
    srv = make_server(build_app(quiet=True), "127.0.0.1", 0)
    srv.server_close()
    assert calls == [1]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_page_lists_what_each_fired_expert_found(double_jpeg, tmp_path):
    """The page's text lines (static/format.js, run under Node) on predict's own results: a line per expert that
    fired, with its finding; none, and no region drawn, on an authentic verdict."""
    from tamperscope.engine.experts import attach_experts
    from tamperscope.engine.predict import load_predictor
    from tamperscope.registry import create_model

    torch.manual_seed(0)
    learned = create_model("ela-unet", widths=[4, 8])
    learned.calibration = {"mode": "absolute", "threshold": 0.5,  # it never calls a photo tampered
                           "image": {"threshold": 0.999999, "inconclusive_from": 0.999999, "max_false_alarm": 0.1,
                                     "authentic_scores": [0.1, 0.2], "tampered_scores": [0.999999, 1.0]}}
    plain = save_checkpoint(learned, tmp_path / "plain.safetensors")
    attach_experts(plain, tmp_path / "fused.safetensors", {"jpeglattice": {}})
    predictor = load_predictor(tmp_path / "fused.safetensors")
    edited = predictor.predict_array(double_jpeg.lossless_edit()[0]).to_dict()
    authentic = predictor.predict_array(double_jpeg.jpeg(double_jpeg.photo_like(4), 75)).to_dict()
    script = tmp_path / "lines.js"
    script.write_text(f"const f = require({json.dumps(str(load_static_path('format.js')))});\n"
                      "for (const r of JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'))) {\n"
                      "  console.log(JSON.stringify([f.firedLines(r), f.detailsLine(r)]));\n}\n")
    (tmp_path / "results.json").write_text(json.dumps([edited, authentic]))
    out = subprocess.run(["node", str(script), str(tmp_path / "results.json")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    (fired, details), (fired_none, details_none) = (json.loads(line) for line in out.stdout.splitlines())
    assert edited["verdict"] == "tampered" and edited["fired"] == ["jpeglattice"]
    assert fired == [f"fired: jpeglattice — {edited['findings']['jpeglattice']}"] and "decoded from a JPEG" in fired[0]
    assert details.startswith(f"{edited['tampered_area_pct']:.2f}% of pixels above")
    assert authentic["verdict"] == "authentic" and fired_none == []
    assert details_none.startswith("no region drawn (authentic); 256×256 px")


def load_static_path(name):
    """The packaged static file ``name`` on disk."""
    from importlib import resources
    return resources.files("tamperscope.serve").joinpath("static", name)
