"""Training speed and accuracy of each model, mean ± sd over seeds, measured in one run.

Every figure printed here is measured by this script through `digitrec train` (in-process, same code path):
`train_seconds` is the training command's own monotonic clock (model creation to final weights, IDX reading
excluded). Usage:
    python benchmarks/train_speed.py                          # mlp and fast, 5 seeds each, CPU
    python benchmarks/train_speed.py --models best --seeds 1  # the 40-epoch model (about 15 min on 2 cores)
    python benchmarks/train_speed.py --device cuda            # GPU rows
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch

from digitrec.training import TrainConfig, train

# The seed's own Keras notebook, as measured on this 2-core machine and quoted in the project's issue:
# not re-run here (TensorFlow is not a dependency). Shown for reference only.
SEED_KERAS = dict(model="seed (Keras, quoted)", test_accuracy=0.9741, train_seconds=26.4)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,fast")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/train_speed.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = (torch.cuda.get_device_name() if args.device == "cuda"
              else f"{cpu_name()}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
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
    if args.device == "cpu":
        print(f"| {SEED_KERAS['model']} | 10 | 1 | {100 * SEED_KERAS['test_accuracy']:.2f} % "
              f"| {SEED_KERAS['train_seconds']:.1f} (not measured by this script) | |")
    with open(args.json, "w") as f:
        json.dump(dict(device=device, torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
