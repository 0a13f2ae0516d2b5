"""Training speed and accuracy of each model, mean ± sd over seeds, measured in one run.

Every model row is measured by this script through `digitrec train` (in-process, same code path):
`train_seconds` is the training command's own monotonic clock (model creation to final weights, IDX reading
excluded). One row is quoted, not measured: on CPU runs the table ends with the seed's Keras notebook
(97.41 %, 26.4 s, from the project's issue; TensorFlow is not a dependency, so it is not re-run here), marked
"quoted" in the table and left out of the JSON. Usage:
    python benchmarks/train_speed.py                          # mlp and fast, 5 seeds each, CPU
    python benchmarks/train_speed.py --models best --seeds 1  # the 40-epoch model (about 15 min on 2 cores)
    python benchmarks/train_speed.py --device cuda            # GPU rows
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _cli import json_output, make_parser, positive_int, run, write_json

from digitrec.errors import UsageError
from digitrec.inference import pick_device
from digitrec.models import get_spec
from digitrec.training import TrainConfig, train

# The seed's own Keras notebook, as measured on this 2-core machine and quoted in the project's issue:
# not re-run here (TensorFlow is not a dependency). Shown for reference only, marked as quoted.
SEED_KERAS = dict(model="seed (Keras), quoted", test_accuracy=0.9741, train_seconds=26.4)
DEFAULT_JSON = Path(__file__).resolve().parent / "train_speed.json"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--models", default="mlp,fast", help="comma-separated models to train (default: mlp,fast)")
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds 0..N-1 per model (default: 5)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ... (default: cpu)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=str(DEFAULT_JSON),
                        help="where to write the results (default: train_speed.json beside this script)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        parser.error(f"--models {args.models!r}: name at least one model (e.g. mlp,fast)")
    for name in models:
        get_spec(name)  # an unknown name fails now, not after the models before it have trained
    try:
        torch_device = pick_device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r}: not a torch device (e.g. cpu, cuda)") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA GPU is available")
    json_path = json_output(args.json)  # checked before the long work

    if args.threads:
        torch.set_num_threads(args.threads)
    device = (torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda"
              else f"{cpu_name()}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            runs = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                r = train(TrainConfig(model=name, seed=seed, device=args.device, threads=args.threads,
                                      out=f"{tmp}/{name}-{seed}", progress=False))
                r["wall_seconds"] = time.perf_counter() - t0
                runs.append(r)
                print(f"  {name} seed {seed}: {r['test_accuracy']:.4f} in {r['train_seconds']:.2f} s", flush=True)
            acc = [r["test_accuracy"] for r in runs]
            sec = [r["train_seconds"] for r in runs]
            rows.append(dict(model=name, seeds=len(runs), epochs=runs[0]["epochs"],
                             acc_mean=statistics.mean(acc), acc_sd=statistics.stdev(acc) if len(acc) > 1 else 0.0,
                             sec_mean=statistics.mean(sec), sec_median=statistics.median(sec),
                             sec_sd=statistics.stdev(sec) if len(sec) > 1 else 0.0, runs=runs))
    print(f"\nMachine: {device}; torch {torch.__version__}")
    print("| model | epochs | seeds | test accuracy (mean ± sd) | train seconds (mean ± sd) | median s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['epochs']} | {r['seeds']} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_sd']:.2f} % "
              f"| {r['sec_mean']:.2f} ± {r['sec_sd']:.2f} | {r['sec_median']:.2f} |")
    if torch_device.type == "cpu":
        print(f"| {SEED_KERAS['model']} | 10 | 1 | {100 * SEED_KERAS['test_accuracy']:.2f} % (quoted) "
              f"| {SEED_KERAS['train_seconds']:.1f} (quoted) | |")
        print("\nThe Keras row is quoted from the project's issue (the seed's notebook on a 2-core machine), "
              "not measured by this script; every other row is.")
    write_json(json_path, dict(device=device, torch=torch.__version__, rows=rows))


if __name__ == "__main__":
    run(main)
