"""Prediction speed: a folder of phone-size JPEGs through `digitrec predict`, and single-digit latency.

    python benchmarks/predict_speed.py [--n 1000] [--model best] [--repeat 3]

Writes N user-like 1000x800 JPEGs (MNIST test digits rendered by synth) to a temp folder, then measures
(1) `digitrec predict FOLDER --json` end to end in a subprocess (start-up and model loading included),
(2) Recognizer.predict_many over the same files in-process, and (3) the in-process latency of one 28x28
array (Recognizer.predict_array) and one 28x28 image through preprocessing (Recognizer.predict).
(1) and (2) run --repeat times and report the median: on a shared machine single runs vary by a second.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _cli import json_output, make_parser, model_identity, positive_int, run, write_json

from digitrec import Recognizer
from digitrec.data import load_dataset
from digitrec.errors import DigitrecError
from digitrec.synth import encode, render_user_like


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[tuple[Path, int]]:
    test = load_dataset("mnist", "test")
    rng = np.random.default_rng(seed)
    files = []
    for k, i in enumerate(rng.integers(0, len(test), n)):
        style = str(rng.choice(["paper", "paper+lighting", "colour+lighting", "paper+noise+rotate"]))
        pixels = render_user_like(test.images[i], rng, style, size=(800, 1000))
        path = folder / f"img{k:05d}.jpg"
        path.write_bytes(encode(pixels, "JPEG", 85))
        files.append((path, int(test.labels[i])))
    return files


def latency(fn, repeats: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=positive_int, default=1000, help="number of JPEGs (default: 1000)")
    parser.add_argument("--model", default="best", help="bundled model to time (default: best)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="runs of (1) and (2); the median is reported (default: 3)")
    parser.add_argument("--json", default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    json_path = json_output(args.json)

    rec = Recognizer.load(model=args.model)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_jpegs(Path(tmp), args.n)
        cli_runs, api_runs = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "digitrec", "predict", tmp, "--json", "--model", args.model],
                                  capture_output=True, text=True)
            cli_runs.append(time.perf_counter() - t0)
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                raise DigitrecError(f"`digitrec predict` failed (exit {proc.returncode}): {last}")
            records = [json.loads(line) for line in proc.stdout.splitlines()]
            truth = {str(p): y for p, y in files}
            cli_accuracy = float(np.mean([r["digit"] == truth[r["file"]] for r in records]))

            t0 = time.perf_counter()
            rec.predict_many([str(p) for p, _ in files])
            api_runs.append(time.perf_counter() - t0)
        cli_seconds, api_seconds = statistics.median(cli_runs), statistics.median(api_runs)

    digit = load_dataset("mnist", "test").images[0]
    array_ms = 1000 * latency(lambda: rec.predict_array(digit))
    image_ms = 1000 * latency(lambda: rec.predict(digit))
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    machine = dict(cpu=cpu, threads=torch.get_num_threads(), torch=torch.__version__, jpeg_seed=0)
    result = dict(**model_identity(rec), **machine, n=args.n, cli_images_per_second=args.n / cli_seconds,
                  cli_seconds=cli_seconds, cli_accuracy=cli_accuracy,
                  api_images_per_second=args.n / api_seconds, array_latency_ms=array_ms,
                  image_latency_ms=image_ms, tta=rec.tta, repeat=args.repeat, cli_runs_seconds=cli_runs,
                  api_runs_seconds=api_runs)
    print(f"machine: {cpu}, {machine['threads']} threads, torch {torch.__version__}")
    print(f"| measurement ({args.model}, TTA {'on' if rec.tta else 'off'}, median of {args.repeat} runs) | value |")
    print("|---|---|")
    print(f"| `digitrec predict` on {args.n} 1000x800 JPEGs, end to end | {result['cli_images_per_second']:.0f} "
          f"images/s ({cli_seconds:.1f} s, accuracy {100 * cli_accuracy:.1f} %) |")
    print(f"| Recognizer.predict_many, same files, in-process | {result['api_images_per_second']:.0f} images/s |")
    print(f"| one 28x28 array, Recognizer.predict_array | {array_ms:.2f} ms |")
    print(f"| one 28x28 image through preprocessing, Recognizer.predict | {image_ms:.2f} ms |")
    if json_path:
        write_json(json_path, result)


if __name__ == "__main__":
    run(main)
