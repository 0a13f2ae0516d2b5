"""Run many training configurations in parallel processes and print one table (for tuning on --val).

Each config is a JSON object: {"name", "model", "seed", "val", "device", "threads", "model_kwargs": {...},
"overrides": {...}}. Usage:
    python benchmarks/sweep.py configs.json --parallel 4 --json results.json

The table shows validation accuracy only: the test set is for final numbers, not for choosing between
configs. --show-test adds each run's test accuracy to the table, and to the JSON under "test_not_for_tuning";
without it the JSON holds no test figures either.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _cli import json_output, make_parser, positive_int, run, write_json

from digitrec.errors import DigitrecError, UsageError
from digitrec.models import get_spec

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


def run_one(config: dict, out_root: str, slots: queue.Queue | None, show_test: bool) -> dict:
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
        last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
        return dict(name=config["name"], error=last.removeprefix("digitrec.errors.UsageError: "), wall=wall)
    result = json.loads(lines[-1][7:])
    test = dict(accuracy=result.pop("test_accuracy", None), loss=result.pop("test_loss", None))
    if show_test:  # kept apart, under a name that says what it is for
        result["test_not_for_tuning"] = test
    card = json.loads(Path(result["checkpoint"]).read_text())
    return dict(name=config["name"], wall=round(wall, 1), history=card["history"], **result)


def load_configs(path: str) -> list[dict]:
    """The configs file as a list of objects, each with a unique "name" and a "model"."""
    try:
        configs = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(configs, list) or not configs:
        raise UsageError(f"{path}: expected a non-empty JSON list of config objects")
    names = set()
    for k, c in enumerate(configs):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("model"), str):
            raise UsageError(f"{path}: config {k} is not an object with a \"name\" and a \"model\"")
        get_spec(c["model"])  # an unknown model is a usage error now, not a traceback in the table later
        if c["name"] in names:
            raise UsageError(f"{path}: config name {c['name']!r} appears twice (each run needs its own folder)")
        names.add(c["name"])
    return configs


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("configs", help="JSON file: a list of config objects (see above)")
    parser.add_argument("--parallel", type=positive_int, default=1, help="runs at once (default: 1)")
    parser.add_argument("--out", default="runs/sweep", help="folder for the runs' checkpoints (default: runs/sweep)")
    parser.add_argument("--json", default=None, help="also write the results here, rewritten after every run")
    parser.add_argument("--cpu-slots", default=None, help="e.g. '0,1 2,3': each run is pinned to a free slot")
    parser.add_argument("--show-test", action="store_true",
                        help="also show (and record) each run's test accuracy: for final numbers, not tuning")
    args = parser.parse_args()
    configs = load_configs(args.configs)
    json_path = json_output(args.json)
    test_head, test_rule = (" test acc |", "----------|") if args.show_test else ("", "")
    print(f"| {'config':28s} | val acc |{test_head} train s | wall s |")
    print("|" + "-" * 30 + f"|---------|{test_rule}---------|--------|", flush=True)
    results = []
    slots: queue.Queue | None = None
    if args.cpu_slots:
        slots = queue.Queue()
        for slot in args.cpu_slots.split():
            slots.put(slot)
    with ThreadPoolExecutor(args.parallel) as pool:
        # rows appear in config order
        for r in pool.map(lambda c: run_one(c, args.out, slots, args.show_test), configs):
            results.append(r)
            if "error" in r:
                print(f"| {r['name']:28s} | ERROR {r['error']}", flush=True)
            else:
                val = "-" if r.get("val_accuracy") is None else f"{r['val_accuracy']:.4f}"
                test = ""
                if args.show_test:
                    acc = r["test_not_for_tuning"]["accuracy"]
                    test = f" {'-' if acc is None else f'{acc:.4f}':>8} |"
                print(f"| {r['name']:28s} | {val:>7} |{test} {r['train_seconds']:7.2f} | {r['wall']:6.1f} |",
                      flush=True)
            if json_path:  # rewritten (atomically) after every run: a killed sweep keeps what it finished
                write_json(json_path, results)
    failed = [r["name"] for r in results if "error" in r]
    if failed:
        raise DigitrecError(f"{len(failed)} of {len(results)} runs failed: {', '.join(failed)}")


if __name__ == "__main__":
    run(main)
