"""Milliseconds per `best` training step on a CUDA GPU: eager vs one replayed CUDA graph, for channels_last
on/off, bf16 autocast on/off and augmentation on/off (batch 128 unless --batch, random data), then a
kernel-time profile.

    python benchmarks/gpu_step.py [--batch 128] [--steps 100] [--profile-steps 20]

Why it exists: at MNIST's batch sizes a GPU step is hundreds of tiny kernels; this shows how much of the
step is launch overhead, which `training.CudaGraphStep` removes.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from _cli import make_parser, nonnegative_int, positive_int, run

from digitrec.augment import augment_batch
from digitrec.errors import DigitrecError
from digitrec.models import MODELS, best


def make_step(x_all, y_all, channels_last: bool, bf16: bool, augment: bool, batch: int = 128):
    model = best().cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), torch.tensor(2e-3, device="cuda"), fused=True, capturable=True)
    idx = torch.randint(0, len(x_all), (batch,), device="cuda")
    spec = MODELS["best"].recipe["augment"]

    def step() -> None:
        x = x_all[idx].float().div_(255)
        if augment:
            x = augment_batch(x, spec)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            out = model(x)
        loss = F.cross_entropy(out.float(), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def ms_per_call(fn, n: int = 100) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--batch", type=positive_int, default=128, help="batch size of a step (default: 128)")
    parser.add_argument("--steps", type=positive_int, default=100,
                        help="timed steps per configuration, after 10 warm-up steps (default: 100)")
    parser.add_argument("--profile-steps", type=nonnegative_int, default=20,
                        help="steps in the kernel-time profile; 0 skips it (default: 20)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise DigitrecError("needs a CUDA GPU (torch.cuda.is_available() is False)")
    torch.backends.cudnn.benchmark = True
    x_all = torch.randint(0, 255, (60000, 1, 28, 28), dtype=torch.uint8, device="cuda")
    y_all = torch.randint(0, 10, (60000,), device="cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| channels_last | bf16 | augment | eager ms/step | CUDA graph ms/step |\n|---|---|---|---|---|")
    for channels_last in (True, False):
        for bf16 in (True, False):
            for augment in (True, False):
                step = make_step(x_all, y_all, channels_last, bf16, augment, args.batch)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up off the capture stream, as capture requires
                    for _ in range(5):
                        step()
                torch.cuda.current_stream().wait_stream(side)
                eager = ms_per_call(step, args.steps)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                replayed = ms_per_call(graph.replay, args.steps)
                print(f"| {channels_last} | {bf16} | {augment} | {eager:.2f} | {replayed:.2f} |", flush=True)
    if not args.profile_steps:
        return
    from torch.profiler import ProfilerActivity, profile

    step = make_step(x_all, y_all, True, True, True, args.batch)
    for _ in range(10):
        step()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.profile_steps):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    run(main)
