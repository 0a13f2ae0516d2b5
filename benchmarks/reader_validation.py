"""Whole-string accuracy of `read_number`'s methods on validation rows: composed (as the benchmark's,
`synth.compose_number`, half user-like) from the MNIST *training* digits that both the reader and the digit
model held out (the reader card's `split`, by default the 1,000 of the bundled `best`'s `--val` draw, which
`--model best` shares; `train-reader --held-out N --held-out-split tail` the last N, mostly other writers, to
pair with a digit model trained with `--val N --val-split tail`, given as `--checkpoint`), never from the
test set. A digit model with another split (the default `distilled` is seed 3) trained on nearly all of the
reader's held-out digits, so that pool is refused for it: use `--pool uci` (benchmarks/held_out.py). For
choosing between readings; the test-set figures come from `user_like_accuracy.py`.

    python benchmarks/reader_validation.py --rows 400 [--reader runs/reader-s0] [--methods reader,fused,segment]
    python benchmarks/reader_validation.py --splits --rows 1000 [--reader runs/reader-s0]
    python benchmarks/reader_validation.py --pools --rows 1000 --methods reader,fused
    python benchmarks/reader_validation.py --rows 1000 --reader TAIL_READER --checkpoint TAIL_MODEL
    python benchmarks/reader_validation.py --pool uci --rows 1000 --methods fused --fuse-weights 0.5/1,1/2
    python benchmarks/reader_validation.py --pool fonts --rows 1000 --methods fused

`--splits` answers "does the reader generalise to new writers?": the main reader's greedy reading (no
test-time augmentation) of rows composed the same way from three pools of digits: the training digits
it learnt from, the held-out training digits (same writers) and the MNIST test digits (other writers).

`--pools` asks whether the 1,000 held-out digits stand in fairly for the test digits: the same rows,
composed from the held-out pool, from 1,000 training digits the models learnt from, and from three random
1,000-digit subsets of the test digits. It reads test digits, so it informs how far validation can be
trusted, never a choice.

`--pool uci` composes the rows from the 1,797 UCI digits scikit-learn ships (writers outside MNIST, see
`real_handwriting.py`), each first normalised to 28x28 as `predict` would: neither the digit model nor
the readers learnt from these writers, so this pool can rank choices, such as the fusion weights, that
trade the readers' knowledge of MNIST's writers against the digit model's (needs scikit-learn).

`--pool fonts` composes them from the held-out handwriting fonts' digits (`benchmarks/handwriting_fonts.py`:
pen-written digits of hands outside MNIST that no model trained with `--extra-digits` saw; 8 draws of each
digit of each font, normalised by `preprocess.to_mnist`; run `python tools/handwriting_fonts.py fetch` first).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from held_out import held_out_pool  # benchmarks/ is on sys.path when this script runs

from digitrec import checkpoint, recognizer
from digitrec.data import load_dataset
from digitrec.errors import DigitrecError, UsageError
from digitrec.preprocess import to_mnist_many
from digitrec.reader import Reader
from digitrec.reader_training import card_split, make_rows, read_rows, string_accuracy
from digitrec.recognizer import Recognizer
from digitrec.synth import compose_number


def _rows(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> list[tuple]:
    """`n` rows composed as the test benchmark's (half user-like), with boxes and the digits' indices."""
    rng = np.random.default_rng(seed)
    return [compose_number(images, labels, rng, user_like=bool(rng.random() < 0.5), return_boxes=True,
                           return_picks=True) for _ in range(n)]


def _evaluate(rec: Recognizer, method: str, rows: list[tuple], alone_wrong: np.ndarray) -> str:
    """One line: whole-string accuracy of `method` on `rows`, and why rows were misread."""
    t0 = time.perf_counter()
    read = [rec.read_number(image, method=method).text for image, *_ in rows]
    return _summary(read, rows, alone_wrong, time.perf_counter() - t0)


def _summary(read: list[str], rows: list[tuple], alone_wrong: np.ndarray, seconds: float | None) -> str:
    """Whole-string accuracy of the texts `read` from `rows`, and why rows were misread. `alone_wrong`
    marks the pool's digits the digit model misreads even on their own: few, but each is drawn into
    several rows, so they decide much of any comparison; rows without one are counted apart."""
    ok = [r == t for r, (_, t, *_) in zip(read, rows, strict=True)]
    hard = [bool(alone_wrong[picks].any()) for *_, picks in rows]
    touching = [any(b[0] <= a[2] for a, b in zip(bx[:-1], bx[1:], strict=True)) for _, _, bx, _ in rows]
    wrong_count = sum(len(r) != len(t) for r, (_, t, *_) in zip(read, rows, strict=True))
    hard_misread = sum(h and not o for h, o in zip(hard, ok, strict=True))
    on_touching = np.mean([o for o, t in zip(ok, touching, strict=True) if t])
    speed = f"; {len(rows) / seconds:.1f} rows/s" if seconds else ""
    return (f"{100 * np.mean(ok):.2f} % of {len(rows)} rows (rows with a touching pair: {100 * on_touching:.2f} %; "
            f"wrong digit count {wrong_count}; misread: {hard_misread} of the {sum(hard)} rows holding a digit "
            f"misread alone, {len(rows) - sum(ok) - hard_misread} other rows){speed}")


def _parse_fuse_weights(parser: argparse.ArgumentParser, text: str | None) -> list[tuple[float, float]]:
    """--fuse-weights 'W[/D],...' as (FUSE_WEIGHT, FUSE_PER_DIGIT) pairs; a bad value is a usage error."""
    if not text:
        return []
    try:
        # a bare W keeps the library's per-digit term, as read_number uses it
        return [(float(w), float(d) if d else recognizer.FUSE_PER_DIGIT)
                for w, _, d in (spec.partition("/") for spec in text.split(","))]
    except ValueError:
        parser.error(f"--fuse-weights: expected numbers like 0.5/1.0,1.0/2.0, got {text!r}")


def _fuse_weight_sweep(rec: Recognizer, weights: list[tuple[float, float]], rows: list[tuple],
                       alone_wrong: np.ndarray) -> None:
    """Fused reading under each (FUSE_WEIGHT, FUSE_PER_DIGIT) in `weights`: the candidates of each row are
    found once (`Recognizer.fused_candidates`) and only their choice is repeated."""
    fused = [rec.fused_candidates(image) for image, *_ in rows]
    for w, d in weights:
        read = [f.text if isinstance(f, recognizer.NumberReading) else f.best_text(w, d) for f in fused]
        print(f"fused, FUSE_WEIGHT = {w}, FUSE_PER_DIGIT = {d}: {_summary(read, rows, alone_wrong, None)}",
              flush=True)


def uci_pool() -> tuple[np.ndarray, np.ndarray]:
    """The UCI digits as MNIST-like uint8 [N, 28, 28] (ink bright), through `preprocess.to_mnist`."""
    from real_handwriting import uci_digits  # benchmarks/ is on sys.path when this script runs

    try:
        images, labels = uci_digits()
    except ImportError:
        raise UsageError("--pool uci needs scikit-learn (pip install -e '.[test]')") from None
    prepared = to_mnist_many(list(images))
    return np.stack([np.round(p.image * 255).astype(np.uint8) for p in prepared]), labels


def fonts_pool() -> tuple[np.ndarray, np.ndarray]:
    """The held-out handwriting fonts' digits as MNIST-like uint8 [N, 28, 28] (see handwriting_fonts.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from handwriting_fonts import font_files, font_pool, held_out, mnist_like

    fonts = font_files()
    unseen = [f for f, held in zip(fonts, held_out(fonts), strict=True) if held]
    if not unseen:
        raise UsageError("--pool fonts: no handwriting fonts found; run `python tools/handwriting_fonts.py fetch`")
    pages, labels, _ = font_pool(unseen, per_glyph=8, seed=0)
    return mnist_like(pages), labels


def _misread_alone(rec: Recognizer, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([p.digit for p in rec.predict_array(images)]) != labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400, help="rows to compose per pool (at least 1)")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--reader", default="bundled")
    parser.add_argument("--model", default="best")
    parser.add_argument("--checkpoint", default=None,
                        help="digit model checkpoint instead of a bundled --model (e.g. one trained with "
                             "--val N --val-split tail, beside a reader trained with --held-out-split tail)")
    parser.add_argument("--methods", default="reader,fused,segment")
    parser.add_argument("--fuse-weights", default=None,
                        help="FUSE_WEIGHT[/FUSE_PER_DIGIT] values to try for fused, comma-separated")
    parser.add_argument("--pool", choices=["held-out", "uci", "fonts"], default="held-out",
                        help="digits to compose the rows from: the reader's held-out training digits, the "
                             "UCI digits or the held-out handwriting fonts' digits (writers outside MNIST)")
    parser.add_argument("--splits", action="store_true",
                        help="the main reader's greedy reading of rows from training, held-out and test digits, "
                             "then stop (the reader alone: --model, --checkpoint, --methods and --pool do not apply)")
    parser.add_argument("--pools", action="store_true",
                        help="--methods on rows from 1,000-digit pools: the held-out digits, training digits "
                             "the models learnt from and three random subsets of the test digits, then stop "
                             "(instead of --pool)")
    args = parser.parse_args()
    weights = _parse_fuse_weights(parser, args.fuse_weights)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    unknown = sorted(set(args.methods.split(",")) - {"reader", "fused", "segment", "auto"})
    if unknown:
        parser.error(f"--methods: unknown {', '.join(map(repr, unknown))}; choose from reader, fused, segment, auto")

    train = load_dataset("mnist", "train")
    # the held-out digits are the ones the reader's card says it kept out (the default: best's --val draw)
    card_path = Reader.load_card_path(None if args.reader == "bundled" else args.reader)
    reader_card = checkpoint.read_card(card_path)  # the split only; the weights load once, below
    fit, held = card_split(reader_card, len(train.images))
    if args.splits:
        reader = Reader.load_single(card_path)
        test = load_dataset("mnist", "test")
        pools = {"training digits it learnt from": (train.images[fit], train.labels[fit]),
                 "held-out training digits": (train.images[held], train.labels[held]),
                 "MNIST test digits": (test.images, test.labels)}
        print(f"reader {reader.path}: greedy whole-string accuracy, {args.rows} rows per pool (seed {args.seed})")
        for name, (images, labels) in pools.items():
            rows = make_rows(images, labels, args.rows, seed=args.seed)
            print(f"  {name}: {100 * string_accuracy(read_rows(reader, rows), rows.texts):.2f} %")
        return
    rec = Recognizer.load(args.checkpoint, model=None if args.checkpoint else args.model, reader=args.reader)
    methods = args.methods.split(",")
    if args.pools:
        # Is a 1,000-digit validation pool a fair stand-in for the test digits? Same size, same rows,
        # pools of other writers' digits beside it. Not for choosing: it reads test digits.
        test = load_dataset("mnist", "test")
        learnt = fit[np.random.default_rng(5).choice(len(fit), len(held), replace=False)]
        both, _ = held_out_pool(rec.checkpoint, len(train.images), reader_card)
        pools = {"held-out training digits (the validation pool)": (train.images[both], train.labels[both]),
                 "1,000 training digits the models learnt from": (train.images[learnt], train.labels[learnt])}
        for k in range(3):
            pick = np.random.default_rng(k).choice(len(test.images), len(held), replace=False)
            pools[f"1,000 random MNIST test digits (subset {k})"] = (test.images[pick], test.labels[pick])
        for name, (images, labels) in pools.items():
            rows, alone_wrong = _rows(images, labels, args.rows, args.seed), _misread_alone(rec, images, labels)
            for method in methods:
                print(f"{name}, {method}: {_evaluate(rec, method, rows, alone_wrong)}", flush=True)
        return
    if args.pool == "uci":
        images, labels = uci_pool()
        pool = "UCI digits (sklearn load_digits, normalised by preprocess.to_mnist)"
    elif args.pool == "fonts":
        images, labels = fonts_pool()
        pool = "held-out handwriting fonts' digits (normalised by preprocess.to_mnist)"
    else:
        both, which = held_out_pool(rec.checkpoint, len(train.images), reader_card)
        images, labels = train.images[both], train.labels[both]
        pool = f"training digits {which}, {reader_card.get('split', {}).get('held_out_split', 'random')} split"
    rows, alone_wrong = _rows(images, labels, args.rows, args.seed), _misread_alone(rec, images, labels)
    print(f"{len(images)} {pool}; the digit model misreads {int(alone_wrong.sum())} of them alone")
    for method in methods:
        if method == "fused" and weights:
            _fuse_weight_sweep(rec, weights, rows, alone_wrong)
        else:
            print(f"{method}: {_evaluate(rec, method, rows, alone_wrong)}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as exc:  # a bad --reader/--checkpoint or data folder: one line, exit 1
        raise SystemExit(f"{Path(__file__).name}: error: {exc}") from None
