"""Whole-string accuracy of `read_number`'s methods on validation rows: composed (as the benchmark's,
`synth.compose_number`, half user-like) from the MNIST *training* digits that the reader and the
bundled `best` held out (`reader_training.validation_split`), never from the test set. For choosing
between readings; the test-set figures come from `user_like_accuracy.py`.

    python benchmarks/reader_validation.py --rows 400 [--reader runs/reader-s0] [--methods reader,fused,segment]
    python benchmarks/reader_validation.py --splits --rows 1000 [--reader runs/reader-s0]

`--splits` answers "does the reader generalise to new writers?": the main reader's greedy reading (no
test-time augmentation) of rows composed the same way from three pools of digits: the training digits
it learnt from, the held-out training digits (same writers) and the MNIST test digits (other writers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from digitrec import recognizer
from digitrec.data import load_dataset
from digitrec.errors import DigitrecError
from digitrec.reader import Reader
from digitrec.reader_training import make_rows, read_rows, string_accuracy, validation_split
from digitrec.recognizer import Recognizer
from digitrec.synth import compose_number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--reader", default="bundled")
    parser.add_argument("--model", default="best")
    parser.add_argument("--methods", default="reader,fused,segment")
    parser.add_argument("--fuse-weights", default=None,
                        help="FUSE_WEIGHT[/FUSE_PER_DIGIT] values to try for fused, comma-separated")
    parser.add_argument("--splits", action="store_true",
                        help="greedy reading of rows from training, held-out and test digits, then stop")
    args = parser.parse_args()

    train = load_dataset("mnist", "train")
    if args.splits:
        reader = Reader.load_single(Reader.load_card_path(None if args.reader == "bundled" else args.reader))
        fit, held = validation_split(len(train.images))
        test = load_dataset("mnist", "test")
        pools = {"training digits it learnt from": (train.images[fit], train.labels[fit]),
                 "held-out training digits": (train.images[held], train.labels[held]),
                 "MNIST test digits": (test.images, test.labels)}
        print(f"reader {reader.path}: greedy whole-string accuracy, {args.rows} rows per pool (seed {args.seed})")
        for name, (images, labels) in pools.items():
            rows = make_rows(images, labels, args.rows, seed=args.seed)
            print(f"  {name}: {100 * string_accuracy(read_rows(reader, rows), rows.texts):.2f} %")
        return
    held = validation_split(len(train.images))[1]
    images, labels = train.images[held], train.labels[held]
    rng = np.random.default_rng(args.seed)
    rows = [compose_number(images, labels, rng, user_like=bool(rng.random() < 0.5), return_boxes=True)
            for _ in range(args.rows)]
    rec = Recognizer.load(model=args.model, reader=args.reader)
    methods = args.methods.split(",")
    if args.fuse_weights:
        methods = [m for m in methods if m != "fused"] + [f"fused@{w}" for w in args.fuse_weights.split(",")]
    for method in methods:
        if "@" in method:
            method, weights = method.split("@")
            weight, _, per_digit = weights.partition("/")
            recognizer.FUSE_WEIGHT = float(weight)
            recognizer.FUSE_PER_DIGIT = float(per_digit or 0.0)
            print(f"FUSE_WEIGHT = {weight}, FUSE_PER_DIGIT = {per_digit or 0.0}")
        t0 = time.perf_counter()
        read = [rec.read_number(image, method=method).text for image, _, _ in rows]
        seconds = time.perf_counter() - t0
        ok = [r == t for r, (_, t, _) in zip(read, rows, strict=True)]
        touching = [any(b[0] <= a[2] for a, b in zip(bx[:-1], bx[1:], strict=True)) for _, _, bx in rows]
        wrong_count = sum(len(r) != len(t) for r, (_, t, _) in zip(read, rows, strict=True))
        on_touching = np.mean([o for o, t in zip(ok, touching, strict=True) if t])
        print(f"{method}: {100 * np.mean(ok):.2f} % of {args.rows} validation rows "
              f"(rows with a touching pair: {100 * on_touching:.2f} %; "
              f"wrong digit count {wrong_count}); {args.rows / seconds:.1f} rows/s")


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as exc:  # a bad --reader/--checkpoint or data folder: one line, exit 1
        raise SystemExit(f"{Path(__file__).name}: error: {exc}") from None
