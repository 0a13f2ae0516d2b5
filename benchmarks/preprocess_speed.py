"""How fast is preprocessing of phone photos? Images/s of load + to_mnist on one process.

Writes N phone-size (about 1000x800) user-like JPEGs of MNIST test digits to a temporary folder, then
times digitrec.preprocess.to_mnist on the file paths (decode included), single process, and prints a
markdown table. Usage:

    DIGITREC_DATA=... python benchmarks/preprocess_speed.py [--n 1000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _cli import json_output, make_parser, positive_int, run, write_json

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


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def blas_threads() -> int | None:
    """The size of NumPy's BLAS thread pool (threadpoolctl, if installed), else None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(pools) if pools else None


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=positive_int, default=1000, help="number of photos (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the digits and their rendering (default: 0)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed passes; the best one counts (default: 3)")
    parser.add_argument("--json", help="also write the result here (JSON)")
    args = parser.parse_args()
    json_path = json_output(args.json)
    with tempfile.TemporaryDirectory(prefix="digitrec-bench-") as tmp:
        paths = write_photos(Path(tmp), args.n, args.seed)
        size_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        result = measure(paths, args.repeats)
    # One process calls to_mnist on one image at a time (PIL decoding and scipy.ndimage run in that thread);
    # only NumPy's BLAS may use a pool of its own, for the few small matrix products. Recorded as such, with
    # the machine's CPU count under its own name.
    result.update(seed=args.seed, repeats=args.repeats, jpeg_kb_mean=size_kb, cpu=cpu_name(),
                  python=platform.python_version(), processes=1,
                  calling_threads=1, blas_threads=blas_threads(), machine_cpus=os.cpu_count())
    print(f"{result['cpu']}, 1 process, seed {args.seed}, best of {args.repeats}")
    print("| images | size | images/s (1 process) | mean ms | median ms | p95 ms |")
    print("|---:|---|---:|---:|---:|---:|")
    print(f"| {result['images']} | ~1000x800 JPEG q85, {size_kb:.0f} kB | {result['images_per_s']:.0f} | "
          f"{result['ms_mean']:.2f} | {result['ms_median']:.2f} | {result['ms_p95']:.2f} |")
    if json_path:
        write_json(json_path, result, indent=2)


if __name__ == "__main__":
    run(main)
