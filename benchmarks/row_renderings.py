"""Whole-string accuracy of `read_number`'s methods on the same validation rows rendered two ways: clean
(white on black at MNIST scale) and user-like (dark ink on paper, as half of the benchmark's rows are).
Rows come from the reader's held-out training digits or the UCI digits, never from the test set. It
tells how much the user-like rendering itself costs, apart from the writers.

    python benchmarks/row_renderings.py --pool held-out|uci --rows 300 [--model distilled]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from reader_validation import uci_pool  # benchmarks/ is on sys.path when this script runs

from digitrec import checkpoint
from digitrec.data import load_dataset
from digitrec.errors import DigitrecError
from digitrec.reader import Reader
from digitrec.reader_training import card_split
from digitrec.recognizer import Recognizer
from digitrec.synth import compose_number

METHODS = ("reader", "fused", "segment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", choices=["held-out", "uci"], default="held-out")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--first-seed", type=int, default=1000, help="row k is composed with seed FIRST_SEED + k")
    parser.add_argument("--model", default="distilled")
    args = parser.parse_args()
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    if args.pool == "uci":
        images, labels = uci_pool()
    else:
        train = load_dataset("mnist", "train")
        _, held = card_split(checkpoint.read_card(Reader.load_card_path(None)), len(train.images))
        images, labels = train.images[held], train.labels[held]
    rec = Recognizer.load(model=args.model)
    right = {(user_like, m): 0 for user_like in (False, True) for m in METHODS}
    for k in range(args.rows):
        for user_like in (False, True):  # the same digits and gaps; only the rendering differs
            image, text = compose_number(images, labels, np.random.default_rng(args.first_seed + k),
                                         user_like=user_like)
            for m in METHODS:
                right[user_like, m] += rec.read_number(image, method=m).text == text
    print(f"{args.rows} rows of {args.pool} digits, clean / user-like, model {args.model}")
    for m in METHODS:
        print(f"  {m}: {100 * right[False, m] / args.rows:.2f} % / {100 * right[True, m] / args.rows:.2f} %")


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as exc:
        raise SystemExit(f"{Path(__file__).name}: error: {exc}") from None
