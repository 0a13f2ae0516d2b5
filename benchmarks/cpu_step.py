"""Where a `best` training step's time goes on the CPU: milliseconds per part (batch gather, augmentation,
forward + backward, optimiser, EMA) and per whole step, for bf16 autocast and channels_last on/off, then
the share of each kind of op in a torch-profiler run of the recipe's configuration. Random data, batch 128,
the recipe's augmentation, optimiser and EMA, built from the training module's own pieces.

    python benchmarks/cpu_step.py [--widths 32,64] [--threads 2] [--compile] [--json out.json]

Each figure is the fastest of `--repeats` timed runs of `--steps` calls (this VM's speed drifts by 10-20 %
between runs; the minimum is the most repeatable). The last column is an estimate, not a measurement: the
whole step's time multiplied by the recipe's 40 epochs of (60,000 - `--val`) // 128 steps (18,400 with the
default --val 1000, as `best` is trained), leaving out evaluation and start-up. Why it exists: `best`'s
15-minute CPU budget is those 18,400 steps, so a millisecond per step is 18 s of training; this says which
millisecond to go after.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _cli import json_output, make_parser, positive_int, run, write_json

from digitrec.augment import augment_batch
from digitrec.models import MODELS, build_model
from digitrec.training import EMA, bf16_is_fast, make_optimizer

RECIPE = MODELS["best"].recipe
BATCH = int(RECIPE["batch_size"])
EPOCHS = int(RECIPE["epochs"])
MNIST_TRAIN = 60000


def ms_per_call(fn: Callable[[], object], steps: int, repeats: int) -> float:
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t0) / steps * 1e3)
    return best


def make_parts(width: int, bf16: bool, channels_last: bool, compile_model: bool = False
               ) -> dict[str, Callable[[], object]]:
    """The step's parts as closures over one model, optimiser and EMA, as `training.train` builds them."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model("best", width=width)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, RECIPE, device)
    ema = EMA(model, float(RECIPE["ema"]))
    forward = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(1)
    x_all = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8)
    y_all = torch.randint(0, 10, (60000,))
    idx = torch.randint(0, len(x_all), (BATCH,))
    smoothing = float(RECIPE["label_smoothing"])
    spec = RECIPE["augment"]
    counter = [0]

    def gather() -> torch.Tensor:
        return x_all[idx].float().div_(255)

    fixed = gather()

    def augment(x: torch.Tensor = fixed) -> torch.Tensor:
        x = augment_batch(x, spec, gen)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    augmented = augment()

    def forward_backward(x: torch.Tensor = augmented) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y_all[idx], label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def optimizer_step() -> None:
        optimizer.step()

    def ema_update() -> None:
        counter[0] += 1
        ema.update(model, counter[0])

    def whole_step() -> None:
        forward_backward(augment(gather()))
        optimizer_step()
        ema_update()

    return {"gather": gather, "augment": augment, "forward+backward": forward_backward,
            "optimiser": optimizer_step, "EMA": ema_update, "whole step": whole_step}


OP_KINDS = {"convolution": "convolution", "batch_norm": "BatchNorm", "threshold": "ReLU", "relu": "ReLU",
            "clamp_min": "ReLU", "grid_sampler": "augmentation", "upsample": "augmentation",
            "affine_grid": "augmentation", "adam": "optimiser", "lerp": "EMA"}


def op_shares(width: int, steps: int = 20) -> dict[str, float]:
    """Self CPU time per kind of op, as a share of the profiled steps (recipe configuration)."""
    from torch.profiler import ProfilerActivity, profile

    step = make_parts(width, bf16_is_fast(torch.device("cpu")), True)["whole step"]
    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares: dict[str, float] = {}
    total = 0.0
    for event in prof.key_averages():
        if not event.key.startswith("aten::") and not event.key.startswith("torch::"):
            continue
        kind = next((k for pattern, k in OP_KINDS.items() if pattern in event.key), "other")
        shares[kind] = shares.get(kind, 0.0) + event.self_cpu_time_total
        total += event.self_cpu_time_total
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--widths", default="32", help="comma-separated `best` widths (default: 32)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--steps", type=positive_int, default=30, help="calls per timed run (default: 30)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs; the fastest counts (default: 3)")
    parser.add_argument("--val", type=int, default=1000,
                        help="validation digits held out of MNIST's 60,000, for the epoch estimate (default: 1000)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) on bf16 NHWC")
    parser.add_argument("--json", default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    if not 0 <= args.val < MNIST_TRAIN - BATCH:
        parser.error(f"--val must be between 0 and {MNIST_TRAIN - BATCH - 1}, got {args.val}")
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        parser.error(f"--widths must be comma-separated whole numbers, got {args.widths!r}")
    if min(widths) < 2 or min(widths) % 2:
        parser.error(f"--widths must be even and at least 2, got {args.widths!r}")
    json_path = json_output(args.json)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    native_bf16 = bf16_is_fast(torch.device("cpu"))
    print(f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, native bf16: {native_bf16}")
    rows: list[dict[str, object]] = []
    parts = ["gather", "augment", "forward+backward", "optimiser", "EMA", "whole step"]
    steps_per_epoch = (MNIST_TRAIN - args.val) // BATCH  # as training.train counts them (last partial batch dropped)
    steps_total = EPOCHS * steps_per_epoch
    print("| width | bf16 | channels_last | " + " | ".join(f"{p} ms" for p in parts)
          + f" | {EPOCHS} epochs, s (estimate*) |")
    print("|---" * (len(parts) + 4) + "|")
    configs = [(True, True), (False, True), (True, False), (False, False)]
    for width in widths:
        for bf16, channels_last in configs:
            fns = make_parts(width, bf16, channels_last)
            ms = {p: ms_per_call(fns[p], args.steps, args.repeats) for p in parts}
            rows.append(dict(width=width, bf16=bf16, channels_last=channels_last, ms=ms))
            print(f"| {width} | {bf16} | {channels_last} | " + " | ".join(f"{ms[p]:.2f}" for p in parts)
                  + f" | {ms['whole step'] * steps_total / 1e3:.0f} |", flush=True)
        if args.compile:
            t0 = time.perf_counter()
            fns = make_parts(width, True, True, compile_model=True)
            fns["whole step"]()
            compile_s = time.perf_counter() - t0
            ms_c = ms_per_call(fns["whole step"], args.steps, args.repeats)
            rows.append(dict(width=width, bf16=True, channels_last=True, compiled=True, compile_seconds=compile_s,
                             ms={"whole step": ms_c}))
            print(f"torch.compile, width {width}: {ms_c:.2f} ms per whole step after {compile_s:.1f} s compiling",
                  flush=True)
    print(f"* estimate, not measured: whole step ms x {EPOCHS} epochs x {steps_per_epoch} steps "
          f"(({MNIST_TRAIN:,} - --val {args.val}) // batch {BATCH}); evaluation and start-up left out")
    shares = {str(w): op_shares(w) for w in widths}
    for width, share in shares.items():
        print(f"op shares of a recipe step, width {width}: "
              + ", ".join(f"{k} {100 * v:.0f} %" for k, v in share.items()))
    if json_path:
        estimate = dict(epochs=EPOCHS, train_images=MNIST_TRAIN - args.val, batch=BATCH,
                        steps_per_epoch=steps_per_epoch, note="whole step ms x epochs x steps_per_epoch: an estimate")
        write_json(json_path, dict(cpu=cpu, threads=torch.get_num_threads(), torch=torch.__version__,
                                   native_bf16=native_bf16, rows=rows, op_shares=shares,
                                   training_time_estimate=estimate))


if __name__ == "__main__":
    run(main)
