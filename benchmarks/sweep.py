"""Run many training configurations in parallel processes and print one table (for tuning on --val).

Each config is a JSON object: {"name", "model", "seed", "val", "device", "threads", "model_kwargs": {...},
"overrides": {...}}. Usage:
    python benchmarks/sweep.py configs.json --parallel 4 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

RUNNER = r"""
import json, sys
from digitrec.training import TrainConfig, train
c = json.loads(sys.argv[1])
r = train(TrainConfig(
    model=c["model"], dataset=c.get("dataset", "mnist"), seed=c.get("seed", 0), val=c.get("val", 0),
    device=c.get("device", "auto"), out=c["out"], threads=c.get("threads"), progress=False,
    tta=c.get("tta", False), model_kwargs=c.get("model_kwargs", {}), overrides=c.get("overrides", {})))
print("RESULT " + json.dumps(r))
"""


def run_one(config: dict, out_root: str, slots: queue.Queue | None) -> dict:
    config = dict(config, out=os.path.join(out_root, config["name"]))
    cmd = [sys.executable, "-c", RUNNER, json.dumps(config)]
    slot = slots.get() if slots is not None else None
    if slot:  # pin to a free set of cores, so parallel runs don't time each other's contention
        cmd = ["taskset", "-c", slot, *cmd]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        if slots is not None:
            slots.put(slot)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return dict(name=config["name"], error=(proc.stderr or proc.stdout).strip().splitlines()[-3:], wall=wall)
    result = json.loads(lines[-1][7:])
    card = json.load(open(result["checkpoint"]))
    return dict(name=config["name"], wall=round(wall, 1), history=card["history"], **result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--json", default=None)
    parser.add_argument("--cpu-slots", default=None, help="e.g. '0,1 2,3': each run is pinned to a free slot")
    args = parser.parse_args()
    configs = json.load(open(args.configs))
    print(f"| {'config':28s} | val acc | test acc | train s | wall s |")
    print("|" + "-" * 30 + "|---------|----------|---------|--------|", flush=True)
    results = []
    slots: queue.Queue | None = None
    if args.cpu_slots:
        slots = queue.Queue()
        for slot in args.cpu_slots.split():
            slots.put(slot)
    with ThreadPoolExecutor(args.parallel) as pool:
        for r in pool.map(lambda c: run_one(c, args.out, slots), configs):  # rows appear in config order
            results.append(r)
            if "error" in r:
                print(f"| {r['name']:28s} | ERROR {r['error']}", flush=True)
            else:
                val = "-" if r.get("val_accuracy") is None else f"{r['val_accuracy']:.4f}"
                print(f"| {r['name']:28s} | {val:>7} | {r['test_accuracy']:.4f}   "
                      f"| {r['train_seconds']:7.2f} | {r['wall']:6.1f} |", flush=True)
            if args.json:  # rewritten after every run: a killed sweep keeps what it finished
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
