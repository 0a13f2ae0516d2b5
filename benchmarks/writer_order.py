"""Does the MNIST training set keep each writer's digits together? (Why `--val-split tail` exists.)

    python benchmarks/writer_order.py [--dataset mnist] [--split train] [--queries 1000]

Two measurements, neither using labels beyond the class:
- style autocorrelation: each digit's ink weight and mean ink intensity, standardised within its class,
  correlated with the same for the digit `lag` places on. Writers differ in pen and pressure, so digits of
  one writer side by side correlate; a shuffled set would give ~0 at every lag.
- nearest neighbour: for `--queries` random digits, the most similar other digit of the same class (cosine
  of pixels); how often it lies within w places, against the 2w/N a shuffled set would give.
"""

from __future__ import annotations

import numpy as np
import torch
from _cli import make_parser, positive_int, run

from digitrec.data import load_dataset


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--dataset", default="mnist", help="dataset to look at: mnist, fashion-mnist (default: mnist)")
    parser.add_argument("--split", default="train", choices=["train", "test"], help="which split (default: train)")
    parser.add_argument("--queries", type=positive_int, default=1000,
                        help="random digits whose nearest neighbour is found (default: 1000)")
    args = parser.parse_args()
    data = load_dataset(args.dataset, args.split)
    x = data.images.astype(np.float32) / 255
    mass = x.sum((1, 2))
    features = np.stack([mass, mass / np.maximum(1, (x > 0.1).sum((1, 2)))], 1)  # ink weight, mean intensity
    for c in np.unique(data.labels):
        m = data.labels == c
        features[m] = (features[m] - features[m].mean(0)) / features[m].std(0)
    print(f"{args.dataset} {args.split}: {len(x)} digits")
    print("| lag | ink weight | mean intensity |\n|---|---|---|")
    for lag in (1, 2, 5, 10, 50, 100, 500, 1000, 5000):
        a, b = features[:-lag], features[lag:]
        r = [np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(2)]
        print(f"| {lag} | {r[0]:.3f} | {r[1]:.3f} |")

    flat = torch.from_numpy(x.reshape(len(x), -1))
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-6)
    queries = np.random.default_rng(0).choice(len(x), min(args.queries, len(x)), replace=False)
    offsets = []
    for i in queries:
        same = np.flatnonzero(data.labels == data.labels[i])
        same = same[same != i]
        j = same[int((flat[same] @ flat[i]).argmax())]
        offsets.append(abs(int(j) - int(i)))
    offsets = np.array(offsets)
    print(f"\nnearest same-class neighbour of {len(queries)} random digits:")
    print("| within w places | measured | shuffled set |\n|---|---|---|")
    for w in (10, 100, 500, 1000):
        print(f"| {w} | {100 * np.mean(offsets <= w):.1f} % | {100 * min(1.0, 2 * w / len(x)):.1f} % |")
    near = offsets[offsets <= 500]
    if len(near):
        # 50 % is what no interleaving gives; say "two interleaved streams" only when the measurement shows it
        even = 100 * np.mean(near % 2 == 0)
        print(f"even offsets among those within 500: {even:.0f} % of {len(near)} (50 % if the order had no parity)")


if __name__ == "__main__":
    run(main)
