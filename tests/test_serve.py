"""The HTTP API over a real uvicorn server on 127.0.0.1: answers, agreement with the Python API, bad input."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from digitrec import Recognizer  # noqa: E402
from digitrec.data import load_dataset  # noqa: E402
from digitrec.serve import create_app  # noqa: E402
from digitrec.serve.app import MAX_BATCH_FILES  # noqa: E402

UPLOAD_LIMIT = 2 * 2**20  # the fixture's server refuses files over 2 MB, so the 413 test sends little


class _Server:
    """uvicorn in a thread on a free 127.0.0.1 port; stopped when the module's tests end."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[self.sock]), daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.load()


@pytest.fixture(scope="module")
def api(rec):
    with _Server(create_app(rec, max_upload_bytes=UPLOAD_LIMIT)) as server, \
            httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def test_digits():
    d = load_dataset("mnist", "test")
    return d.images[:64], d.labels[:64]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def on_paper(digit: np.ndarray, scale: int = 4) -> bytes:
    """An MNIST digit as a user would send it: dark ink on white paper, larger, as a JPEG."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.BICUBIC)
    page = Image.new("L", (28 * scale + 60, 28 * scale + 40), 255)
    page.paste(big, (40, 15))
    buf = io.BytesIO()
    page.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_health_and_model(api, rec):
    assert api.get("/api/v1/health").json() == {"status": "ok", "version": __import__("digitrec").__version__}
    info = api.get("/api/v1/model").json()
    assert info["name"] == Path(rec.name).stem
    assert info["test_accuracy"] == rec.checkpoint.card["metrics"]["test_accuracy"]
    assert info["classes"] == [str(d) for d in range(10)] and info["reads_numbers"] is True


def test_predict_matches_the_python_api(api, rec, test_digits):
    images, labels = test_digits
    data = on_paper(images[0])
    r = api.post("/api/v1/predict", params=dict(top_k=3, include_image="true"),
                 files={"file": ("seven.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    local = rec.predict(data)
    assert body["digit"] == local.digit == labels[0]
    np.testing.assert_allclose(body["probabilities"], local.probabilities, atol=1e-6)
    assert body["confidence"] == pytest.approx(local.confidence, abs=1e-6)
    assert [t["digit"] for t in body["top_k"]] == [d for d, _ in local.top_k(3)]
    assert np.asarray(body["image"]).shape == (28, 28)
    np.testing.assert_allclose(body["image"], local.image, atol=1e-4)
    assert body["box"] == list(local.box)
    assert api.post("/api/v1/predict", files={"file": ("a.jpg", data)}).json()["image"] is None


def test_batch_reads_user_like_digits(api, test_digits):
    images, labels = test_digits
    files = [("files", (f"d{i}.jpg", on_paper(img, scale=2 + i % 4), "image/jpeg")) for i, img in enumerate(images)]
    r = api.post("/api/v1/predict-batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["file"] for x in results] == [f"d{i}.jpg" for i in range(len(images))]
    assert all(x["error"] is None for x in results)
    read = np.array([x["result"]["digit"] for x in results])
    assert (read == labels).mean() >= 0.96, (read, labels)


def test_batch_reports_bad_files_in_place(api, test_digits):
    good = on_paper(test_digits[0][1])
    files = [("files", ("ok.jpg", good)), ("files", ("notes.txt", b"not an image")), ("files", ("empty.png", b""))]
    results = api.post("/api/v1/predict-batch", files=files).json()["results"]
    assert results[0]["result"]["digit"] == test_digits[1][1] and results[0]["error"] is None
    assert results[1]["result"] is None and results[1]["error"].startswith("file 'notes.txt': not an image")
    assert results[2]["error"] == "file 'empty.png': empty image data"


def test_read_number(api, rec, test_digits):
    images, labels = test_digits
    row = np.concatenate([255 - images[i] for i in range(6)], axis=1)
    row = np.pad(row, ((10, 10), (10, 10)), constant_values=255)
    data = png(row)
    body = api.post("/api/v1/read-number", files={"file": ("row.png", data, "image/png")}).json()
    assert body["text"] == rec.read_number(data).text == "".join(map(str, labels[:6]))
    assert len(body["digits"]) == 6 and all(len(d["box"]) == 4 for d in body["digits"])
    xs = [d["box"][0] for d in body["digits"]]
    assert xs == sorted(xs)


def test_a_number_sent_to_predict_says_it_looks_like_several_digits(api, test_digits):
    images, _ = test_digits
    row = np.concatenate([images[k] for k in range(4)], axis=1)
    body = api.post("/api/v1/predict", files={"file": ("row.png", png(row))}).json()
    assert body["several_digits"] is True and body["unsure"] is True
    one = api.post("/api/v1/predict", files={"file": ("one.png", png(images[0]))}).json()
    assert one["several_digits"] is False


def test_blank_page_is_unsure_not_an_error(api):
    blank = png(np.full((200, 300), 255))
    body = api.post("/api/v1/predict", files={"file": ("blank.png", blank)}).json()
    assert body["digit"] is None and body["unsure"] is True and body["top_k"] == []
    assert api.post("/api/v1/read-number", files={"file": ("blank.png", blank)}).json()["text"] == ""


def test_concurrent_requests_get_their_own_answers(api, test_digits):
    images, labels = test_digits
    datas = [on_paper(img) for img in images[:16]]

    def ask(data: bytes) -> int:
        return api.post("/api/v1/predict", files={"file": ("d.jpg", data)}).json()["digit"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, datas))
    assert answers == [ask(d) for d in datas]


def _truncated_jpeg(test_digits) -> bytes:
    data = on_paper(test_digits[0][0])
    return data[: len(data) // 2]


def _bomb() -> bytes:
    """A 30000x30000 PNG (900 MP) that compresses to under 1 MB: must be refused before decoding. Written
    row by row, so making it never holds the 900 MB of pixels either."""
    width = height = 30000
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # a filter byte and one grey byte per pixel
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, data, message", [
    ("notes.txt", b"just text",
     "file 'notes.txt': not an image in a format read here (PNG, JPEG, GIF, BMP, TIFF, WebP)"),
    ("empty.png", b"", "file 'empty.png': empty image data"),
    ("half.jpg", "truncated", "file 'half.jpg': "),
    ("bomb.png", "bomb", "file 'bomb.png': image too large"),
])
def test_bad_images_are_400_naming_the_file(api, test_digits, name, data, message):
    data = {"truncated": lambda: _truncated_jpeg(test_digits), "bomb": _bomb}.get(data, lambda: data)()
    for endpoint in ("/api/v1/predict", "/api/v1/read-number"):
        start = time.monotonic()
        r = api.post(endpoint, files={"file": (name, data)})
        assert r.status_code == 400, (endpoint, r.text)
        detail = r.json()["detail"]
        assert detail.startswith(message) and "\n" not in detail, detail
        assert time.monotonic() - start < 10


@pytest.mark.parametrize("request_kwargs, status, message", [
    (dict(files={"image": ("x.png", b"x")}), 422, "file: no uploaded file (send it as multipart/form-data"),
    (dict(params={"topk": 5}, files={"file": ("x.png", b"x")}), 422,
     "topk: unknown query parameter for /api/v1/predict (it takes top_k, include_image)"),
    (dict(params={"top_k": 0}, files={"file": ("x.png", b"x")}), 422, "top_k: Input should be greater than"),
    (dict(params={"top_k": "many"}, files={"file": ("x.png", b"x")}), 422, "top_k: Input should be a valid integer"),
    (dict(data={"file": "not a file"}), 422, "file: "),
    (dict(files={"file": ("big.png", b"\0" * (UPLOAD_LIMIT + 1))}), 413,
     "file 'big.png': upload too large (limit 2 MB)"),
])
def test_bad_requests_are_4xx_with_one_line(api, request_kwargs, status, message):
    r = api.post("/api/v1/predict", **request_kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(message) and "\n" not in detail, detail


def test_unknown_query_parameters_are_refused_per_endpoint(api, test_digits):
    """Each endpoint names what it takes: a parameter another endpoint takes is no exception."""
    png_bytes = png(test_digits[0][0])
    r = api.post("/api/v1/predict-batch", params={"include_image": "true"}, files=[("files", ("a.png", png_bytes))])
    assert r.status_code == 422 and r.json()["detail"] == (
        "include_image: unknown query parameter for /api/v1/predict-batch (it takes top_k)")
    r = api.post("/api/v1/read-number", params={"top_k": 3}, files={"file": ("a.png", png_bytes)})
    assert r.status_code == 422 and r.json()["detail"] == (
        "top_k: unknown query parameter for /api/v1/read-number (it takes none)")
    assert api.post("/api/v1/predict", params={"top_k": 2, "include_image": "true"},
                    files={"file": ("a.png", png_bytes)}).status_code == 200


def test_a_multipart_body_cut_short_is_a_4xx_that_says_so(api, test_digits):
    """A client that stops before the file part's closing boundary: the parser finds no file, and the answer
    must say what to send, not blame a field the client did send with a bare "Field required"."""
    png_bytes = png(test_digits[0][0])
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n\r\n" + png_bytes[:100]
    r = api.post("/api/v1/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert "Field required" not in detail and "\n" not in detail, detail


def test_oversized_request_is_refused_from_its_header(api):
    """A client announcing a terabyte gets its 413 before sending any of it (a raw socket: httpx will not lie)."""
    host, port = api.base_url.host, api.base_url.port
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                  b"Content-Length: 1000000000000\r\n\r\n")
        reply = b""
        while not reply.endswith(b"}") and (chunk := s.recv(4096)):
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and '"detail":"request too large (1000000000000 bytes' in reply


def test_chunked_upload_is_cut_off_at_the_limit(api):
    """Without a Content-Length the body is counted as it arrives: refused once past the limit, not spooled."""
    limit = max(64 * 2**20, UPLOAD_LIMIT + 2**20)
    chunk = b"\0" * 2**20
    host, port = api.base_url.host, api.base_url.port
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        s.sendall(b"%x\r\n" % len(head) + head + b"\r\n")
        sent = 0
        try:
            while sent <= limit + 8 * 2**20:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:  # the server answered and closed while we were still sending
            pass
        reply = b""
        while not reply.endswith(b"}") and (part := s.recv(4096)):
            reply += part
    assert reply.startswith(b"HTTP/1.1 413") and b"request too large (over 64 MB)" in reply, reply[:200]
    assert sent <= limit + 8 * 2**20 + len(chunk)


def test_a_stalled_body_is_answered_408_and_a_slow_one_is_not(rec, test_digits):
    """A client that stops sending its body mid-way gets a 408 once the idle limit passes (here 1 s), so it
    cannot hold a connection for good; one that sends slowly, but keeps sending, is read as usual."""
    body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png(test_digits[0][0]) + b"\r\n--x--\r\n")
    head = (b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with _Server(create_app(rec, body_idle_seconds=1.0)) as server:
        host, port = server.sock.getsockname()
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(head + body[:100])
            start, reply = time.monotonic(), b""
            while not reply.endswith(b"}") and (part := s.recv(4096)):
                reply += part
            waited = time.monotonic() - start
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b'"detail":"request body stalled (nothing received for 1 s)"' in reply
        assert 0.9 < waited < 20
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(head)
            for i in range(0, len(body), len(body) // 4 + 1):  # four parts, 0.4 s apart: 1.2 s in all
                time.sleep(0.4)
                s.sendall(body[i:i + len(body) // 4 + 1])
            reply = b""
            while not reply.endswith(b"}") and (part := s.recv(4096)):
                reply += part
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["digit"] == int(test_digits[1][0])


def test_too_many_batch_files(api):
    files = [("files", (f"{i}.png", b"x")) for i in range(MAX_BATCH_FILES + 1)]
    r = api.post("/api/v1/predict-batch", files=files)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"files: {MAX_BATCH_FILES + 1} uploads")


def test_one_oversized_file_in_a_batch_is_its_own_error(api, test_digits):
    files = [("files", ("big.png", b"\0" * (UPLOAD_LIMIT + 1))), ("files", ("ok.jpg", on_paper(test_digits[0][2])))]
    results = api.post("/api/v1/predict-batch", files=files).json()["results"]
    assert results[0]["error"] == "file 'big.png': upload too large (limit 2 MB)" and results[0]["result"] is None
    assert results[1]["result"]["digit"] == test_digits[1][2]


def test_two_files_where_one_is_expected(api, test_digits):
    data = on_paper(test_digits[0][0])
    for endpoint in ("/api/v1/predict", "/api/v1/read-number"):
        r = api.post(endpoint, files=[("file", ("a.jpg", data)), ("file", ("b.jpg", data))])
        assert r.status_code == 422 and r.json()["detail"] == "file: one file expected, got 2"


def test_a_text_field_where_a_file_belongs(api):
    r = api.post("/api/v1/predict", files={"file": (None, b"hello")})
    assert r.status_code == 422
    assert r.json()["detail"] == ("file: expected an uploaded file (multipart/form-data with a filename), "
                                  "got a text field")


def test_nan_pixels_are_a_bad_image_not_a_crash(api, test_digits):
    grey = np.full((60, 60), 0.9, np.float32)
    grey[10:50, 28:32] = 0.1
    grey[0, 0] = np.nan
    buf = io.BytesIO()
    Image.fromarray(grey, "F").save(buf, "TIFF")
    r = api.post("/api/v1/predict", files={"file": ("nan.tiff", buf.getvalue())})
    assert r.status_code == 400 and r.json()["detail"] == "file 'nan.tiff': pixels contain NaN or infinity"
    files = [("files", ("nan.tiff", buf.getvalue())), ("files", ("ok.jpg", on_paper(test_digits[0][0])))]
    results = api.post("/api/v1/predict-batch", files=files).json()["results"]
    assert results[0]["error"].startswith("file 'nan.tiff': pixels contain NaN")
    assert results[1]["result"]["digit"] == test_digits[1][0]


def test_an_unexpected_failure_is_a_json_500_without_the_traceback(rec, monkeypatch):
    app = create_app(rec)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(rec, "predict", broken)
    with _Server(app) as server:
        r = httpx.post(f"{server.url}/api/v1/predict", files={"file": ("a.png", b"x")}, trust_env=False)
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (RuntimeError); the server log has the details"}


def test_wrong_method_and_path(api):
    assert api.get("/api/v1/predict").status_code == 405
    assert api.get("/api/v1/nothing").status_code == 404
    assert api.get("/docs").status_code == 404  # Swagger UI would come from a CDN
    assert api.head("/").status_code == 200 and api.head("/api/v1/health").status_code == 200


def test_the_schema_describes_the_errors_as_they_are_sent(api):
    schema = api.get("/openapi.json").json()
    for path in ("/api/v1/predict", "/api/v1/predict-batch", "/api/v1/read-number"):
        responses = schema["paths"][path]["post"]["responses"]
        for status in ("400", "413", "422"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorDetail"}, (path, status)
    assert schema["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"


def test_a_trained_card_is_named_by_its_folder(rec, tmp_path):
    from digitrec import checkpoint

    run = tmp_path / "my-run"
    run.mkdir()
    for name in ("best.json", "best.safetensors"):  # the card names its weights file
        (run / name.replace("best.json", "model.json")).write_bytes((checkpoint.bundled_dir() / name).read_bytes())
    with _Server(create_app(Recognizer.load(run / "model.json"))) as server:
        assert httpx.get(f"{server.url}/api/v1/model", trust_env=False).json()["name"] == "my-run"


def test_the_row_reader_loads_once_under_concurrent_first_use(monkeypatch):
    from digitrec import recognizer

    calls = []
    real = recognizer.Reader.load

    def counted(*args, **kwargs):
        calls.append(1)
        time.sleep(0.2)  # widen the window in which a second thread could start a second load
        return real(*args, **kwargs)

    monkeypatch.setattr(recognizer.Reader, "load", counted)
    fresh = Recognizer.load(model="best")
    with ThreadPoolExecutor(6) as pool:
        readers = list(pool.map(lambda _: fresh.reader, range(6)))
    assert len(calls) == 1 and all(r is readers[0] for r in readers)


def test_page_and_assets_are_served_without_any_cdn(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = api.get(asset)
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text
    assert "http://" not in page.text and "https://" not in page.text
    assert api.get("/openapi.json").json()["paths"].keys() >= {"/api/v1/predict", "/api/v1/read-number"}
    assert 'href="/openapi.json"' in page.text


# ---------------------------------------------------------------------------- `digitrec serve`, the command
def _start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    """`digitrec serve --port 0 ...` in its own process; returns it and the URL it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", "0", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert line.startswith("digitrec: serving "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split(" at ")[1].split("/ ")[0]


def _wait_for(url: str, proc: subprocess.Popen) -> dict:
    """The model info of the server at `url`, once it answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(f"{url}/api/v1/model", timeout=5, trust_env=False).json()
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)


def test_cli_serves_until_ctrl_c():
    proc, url = _start_cli("--model", "best")
    try:
        assert _wait_for(url, proc)["name"] == "best"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_cli_warns_when_other_machines_can_reach_it():
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", "0", "--quiet", "--host", "0.0.0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("digitrec: serving distilled at http://0.0.0.0:")
        assert proc.stderr.readline().startswith("digitrec: warning: reachable from other machines, with no "
                                                 "authentication")
        port = line.split("0.0.0.0:")[1].split("/")[0]
        _wait_for(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_cli_port_taken_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "digitrec", "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"digitrec: error: cannot listen on 127.0.0.1:{port} (Address already in use)"


@pytest.mark.parametrize("args, code, message", [
    (["--model", "best", "--checkpoint", "x.json"], 2, "(--model), not both"),
    (["--model", "nope"], 2, "no bundled model 'nope'"),
    (["--checkpoint", "missing/model.json"], 1, "missing/model.json"),
    (["--port", "70000"], 2, "Invalid value for '--port'"),
    (["--host", "no-such-host.invalid"], 2, "--host 'no-such-host.invalid': cannot resolve"),
])
def test_cli_bad_options(capsys, args, code, message):
    from digitrec.cli import main

    assert main(["serve", "--port", "0", *args] if "--port" not in args else ["serve", *args]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_without_the_serve_extra(capsys, monkeypatch):
    from digitrec.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == \
        "digitrec: error: digitrec serve needs the 'serve' extra: pip install 'digitrec[serve]'"
