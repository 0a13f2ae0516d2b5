"""Whole-string accuracy of `read_number`'s methods on the same validation rows rendered two ways: clean
(white on black at MNIST scale) and user-like (dark ink on paper, as half of the benchmark's rows are).
Rows come from the UCI digits or from the training digits both the reader and the digit model held out
(`--pool held-out`: with `--model best`, whose split is the reader's; see benchmarks/held_out.py), never
from the test set. It tells how much the user-like rendering itself costs, apart from the writers.

    python benchmarks/row_renderings.py --pool uci|held-out --rows 300 [--model distilled|best]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from held_out import held_out_pool  # benchmarks/ is on sys.path when this script runs
from reader_validation import uci_pool

from digitrec import checkpoint
from digitrec.data import load_dataset
from digitrec.errors import DigitrecError
from digitrec.reader import Reader
from digitrec.recognizer import Recognizer
from digitrec.synth import compose_number

METHODS = ("reader", "fused", "segment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", choices=["held-out", "uci"], default="uci",
                        help="digits to compose rows from (held-out: only with a digit model whose --val split "
                             "is the reader's, such as best)")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--first-seed", type=int, default=1000, help="row k is composed with seed FIRST_SEED + k")
    parser.add_argument("--model", default="distilled")
    args = parser.parse_args()
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    if args.pool == "uci":
        images, labels = uci_pool()
    rec = Recognizer.load(model=args.model)
    if args.pool == "held-out":  # digits neither the digit model nor the reader trained on
        train = load_dataset("mnist", "train")
        held, _ = held_out_pool(rec.checkpoint, len(train.images), checkpoint.read_card(Reader.load_card_path(None)))
        images, labels = train.images[held], train.labels[held]
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
