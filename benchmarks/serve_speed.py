"""HTTP speed: `digitrec serve` as a user runs it, measured from a client on the same machine.

    python benchmarks/serve_speed.py [--n 200] [--model distilled] [--json benchmarks/serve_speed.json]

Starts `digitrec serve --port 0 --quiet` in its own process, then measures over 127.0.0.1 (httpx, keep-alive):
(1) the round trip of one digit drawn on the page's 280x280 canvas (a PNG, as the page sends it) to
/api/v1/predict, median and 95th percentile (numpy's, linear interpolation); (2) phone-size user-like
1000x800 JPEGs to /api/v1/predict one at a time and from 4 client threads at once (images/s); (3) the same
JPEGs 64 per /api/v1/predict-batch request; (4) a row of six digits to /api/v1/read-number. Every answer's
status is checked, and every answer is checked against its label, so the table also says how many were read
right. Client and server share the machine's cores.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import httpx
import numpy as np
from _cli import json_output, make_parser, positive_int, run, write_json
from PIL import Image, ImageDraw

from digitrec.data import load_dataset
from digitrec.errors import DigitrecError, UsageError
from digitrec.synth import encode, render_user_like


def start_server(model: str, log: IO[bytes]) -> tuple[subprocess.Popen, str]:
    """`digitrec serve` on a free port, its stderr into `log`; on failure, the server's last stderr line."""
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", "0", "--quiet", "--model", model],
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if not line.startswith("digitrec: serving "):
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.seek(0)
        lines = [x.strip() for x in log.read().decode(errors="replace").splitlines() if x.strip()]
        why = lines[-1] if lines else (line.strip() or "no message")
        raise (UsageError if code == 2 else DigitrecError)(f"server did not start (exit {code}): {why}")
    return proc, line.split(" at ")[1].split("/ ")[0]


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def checked(r: httpx.Response) -> dict:
    """The JSON answer of a 2xx response; otherwise an error naming the endpoint, the status and the detail."""
    if not r.is_success:
        try:
            detail = str(r.json().get("detail", r.text))
        except ValueError:
            detail = r.text
        detail = " ".join(detail.split())[:300] or "no detail"
        raise DigitrecError(f"{r.request.url.path} answered {r.status_code}: {detail}")
    return r.json()


def drawn_seven() -> bytes:
    """A 7 as the page sends it: black strokes 18 px wide on a white 280x280 canvas, PNG."""
    pad = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(pad).line([(70, 60), (210, 60), (120, 230)], fill="black", width=18, joint="curve")
    buf = io.BytesIO()
    pad.save(buf, "PNG")
    return buf.getvalue()


def phone_jpegs(n: int, seed: int = 0) -> list[tuple[bytes, int]]:
    test = load_dataset("mnist", "test")
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(test), n):
        style = str(rng.choice(["paper", "paper+lighting", "colour+lighting", "paper+noise+rotate"]))
        out.append((encode(render_user_like(test.images[i], rng, style, size=(800, 1000)), "JPEG", 85),
                    int(test.labels[i])))
    return out


def digit_of(client: httpx.Client, data: bytes) -> int | None:
    return checked(client.post("/api/v1/predict", files={"file": ("x", data)}))["digit"]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=positive_int, default=200,
                        help="phone-size JPEGs (and drawn-digit round trips) (default: 200)")
    parser.add_argument("--model", default="distilled", help="bundled model the server loads (default: distilled)")
    parser.add_argument("--json", default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    json_path = json_output(args.json)

    with tempfile.TemporaryFile() as server_log:
        proc, url = start_server(args.model, server_log)  # first, so a model it cannot load fails at once
        try:
            jpegs = phone_jpegs(args.n)
            test = load_dataset("mnist", "test")
            row = np.pad(np.concatenate([255 - test.images[i] for i in range(6)], axis=1), 12, constant_values=255)
            row_png = encode(np.asarray(Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4))), "PNG")
            row_text = "".join(str(d) for d in test.labels[:6])
            results = measure(url, args.model, args.n, jpegs, drawn_seven(), row_png, row_text)
        except httpx.TransportError as exc:
            raise DigitrecError(f"lost the server at {url}: {exc}") from None
        finally:
            stop_server(proc)
    report(results, args.model, args.n)
    if json_path:
        write_json(json_path, results, indent=2)


def measure(url: str, model: str, n: int, jpegs: list[tuple[bytes, int]], seven: bytes, row_png: bytes,
            row_text: str) -> dict:
    """The four measurements against the server at `url`; every answer's status is checked."""
    results: dict = dict(model=model, n=n, cpus=os.cpu_count())
    with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
        for _ in range(100):  # wait until it answers, then warm up
            try:
                client.get("/api/v1/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        for _ in range(10):
            digit_of(client, seven)

        times, right = [], 0
        for _ in range(n):
            t0 = time.perf_counter()
            right += digit_of(client, seven) == 7
            times.append(time.perf_counter() - t0)
        results["drawn_ms_median"] = 1000 * float(np.median(times))
        results["drawn_ms_p95"] = 1000 * float(np.percentile(times, 95))  # linear interpolation
        results["drawn_right"] = right

        t0 = time.perf_counter()
        read = [digit_of(client, data) for data, _ in jpegs]
        results["jpeg_serial_per_s"] = len(jpegs) / (time.perf_counter() - t0)
        results["jpeg_serial_right"] = sum(r == y for r, (_, y) in zip(read, jpegs, strict=True))

        with ThreadPoolExecutor(4) as pool:
            t0 = time.perf_counter()
            read = list(pool.map(lambda item: digit_of(client, item[0]), jpegs))
            results["jpeg_4_clients_per_s"] = len(jpegs) / (time.perf_counter() - t0)
        results["jpeg_4_clients_right"] = sum(r == y for r, (_, y) in zip(read, jpegs, strict=True))

        t0 = time.perf_counter()
        read = []
        for i in range(0, len(jpegs), 64):
            files = [("files", (f"{k}.jpg", data)) for k, (data, _) in enumerate(jpegs[i:i + 64])]
            answer = checked(client.post("/api/v1/predict-batch", files=files))
            read += [x["result"]["digit"] if x["result"] else None for x in answer["results"]]
        results["jpeg_batch64_per_s"] = len(jpegs) / (time.perf_counter() - t0)
        results["jpeg_batch64_right"] = sum(r == y for r, (_, y) in zip(read, jpegs, strict=True))

        times, right = [], 0
        for _ in range(20):
            t0 = time.perf_counter()
            r = client.post("/api/v1/read-number", files={"file": ("row.png", row_png)})
            times.append(time.perf_counter() - t0)
            right += checked(r)["text"] == row_text
        results["row_ms_median"] = 1000 * float(np.median(times))
        results["row_right"] = right
    return results


def report(results: dict, model: str, n: int) -> None:
    print(f"digitrec serve --model {model}, client on the same {results['cpus']}-CPU machine")
    print("| request | speed | read right |")
    print("|---|---|---|")
    print(f"| one drawn 280x280 PNG to /predict | {results['drawn_ms_median']:.1f} ms median, "
          f"{results['drawn_ms_p95']:.1f} ms p95 | {results['drawn_right']}/{n} |")
    print(f"| 1000x800 JPEGs to /predict, one at a time | {results['jpeg_serial_per_s']:.0f} images/s | "
          f"{results['jpeg_serial_right']}/{n} |")
    print(f"| the same from 4 client threads | {results['jpeg_4_clients_per_s']:.0f} images/s | "
          f"{results['jpeg_4_clients_right']}/{n} |")
    print(f"| the same, 64 per /predict-batch | {results['jpeg_batch64_per_s']:.0f} images/s | "
          f"{results['jpeg_batch64_right']}/{n} |")
    print(f"| a row of 6 digits (4x MNIST) to /read-number | {results['row_ms_median']:.0f} ms median | "
          f"{results['row_right']}/20 |")


if __name__ == "__main__":
    run(main)
