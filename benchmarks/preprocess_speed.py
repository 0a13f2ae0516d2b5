"""How fast is preprocessing of phone photos? Images/s of load + to_mnist on one process.

Writes N phone-size (about 1000x800) user-like JPEGs of MNIST test digits to a temporary folder, then
times digitrec.preprocess.to_mnist on the file paths (decode included), single process, and prints a
markdown table. Usage:

    DIGITREC_DATA=... python benchmarks/preprocess_speed.py [--n 1000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from digitrec.data import load_dataset
from digitrec.preprocess import to_mnist
from digitrec.synth import encode, random_style, render_user_like


def write_photos(folder: Path, n: int, seed: int) -> list[Path]:
    """N user-like JPEGs, 1000x800 give or take 10%, quality 85 as phones save them."""
    test = load_dataset("mnist", "test", offline=True, progress=False)
    rng = np.random.default_rng(seed)
    paths = []
    for k, i in enumerate(rng.integers(0, len(test), n)):
        style = random_style(rng).replace("canvas", "paper")  # a photo, not a canvas export
        size = (int(rng.integers(720, 880)), int(rng.integers(900, 1100)))
        pixels = render_user_like(test.images[i], rng, style, size=size)
        path = folder / f"{k:05d}.jpg"
        path.write_bytes(encode(pixels, "JPEG", 85))
        paths.append(path)
    return paths


def measure(paths: list[Path], repeats: int) -> dict[str, float]:
    """Best-of-`repeats` throughput over all paths (the OS file cache is warm after the first pass)."""
    for p in paths[:20]:
        to_mnist(p)  # warm-up: imports, allocator
    totals, per_image = [], []
    for _ in range(repeats):
        times = []
        start = time.perf_counter()
        for p in paths:
            t = time.perf_counter()
            to_mnist(p)
            times.append(time.perf_counter() - t)
        totals.append(time.perf_counter() - start)
        per_image.append(times)
    best = int(np.argmin(totals))
    times = per_image[best]
    return {
        "images": len(paths),
        "images_per_s": len(paths) / totals[best],
        "ms_mean": 1000 * statistics.fmean(times),
        "ms_median": 1000 * statistics.median(times),
        "ms_p95": 1000 * float(np.percentile(times, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best one counts")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digitrec-bench-") as tmp:
        paths = write_photos(Path(tmp), args.n, args.seed)
        size_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        result = measure(paths, args.repeats)
    result.update(jpeg_kb_mean=size_kb, cpu=platform.processor() or platform.machine(),
                  python=platform.python_version(), threads=os.cpu_count() or 1)
    print("| images | size | images/s (1 process) | mean ms | median ms | p95 ms |")
    print("|---:|---|---:|---:|---:|---:|")
    print(f"| {result['images']} | ~1000x800 JPEG q85, {size_kb:.0f} kB | {result['images_per_s']:.0f} | "
          f"{result['ms_mean']:.2f} | {result['ms_median']:.2f} | {result['ms_p95']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
