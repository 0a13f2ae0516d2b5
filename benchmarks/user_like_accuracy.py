"""Accuracy on user-like renderings of MNIST *test* digits (synth.user_like_set: dark ink on paper, photos
with uneven light, thick/thin pens, rotation, blur, JPEG, coloured ink, canvas exports, ...), read through
the same path as `digitrec predict`. Also: whole-string accuracy of `--multi` on composed numbers.

    python benchmarks/user_like_accuracy.py --n 2000 --numbers 300 [--model best|ensemble|fast]
                                            [--method auto|reader|fused|segment] [--reader CARD]
                                            [--digits test|held-out]

`--digits held-out` uses training digits the models held out instead of the test digits, for choosing
between models without reading the test set: single digits from the digit model's own `--val` split, and
composed numbers from the digits both it and the row reader held out (benchmarks/held_out.py; refused when
the two splits share too few, as for the default `distilled`, seed 3, beside the reader's seed-0 split).

The composed-numbers line also prints per-digit accuracy, reading speed and why rows were misread (too
few / too many digits, or the right count with a digit misread; and whether the row has touching pairs).
"""

from __future__ import annotations

import collections
import time

import numpy as np
from _cli import json_output, make_parser, model_identity, nonnegative_int, positive_int, run, write_json
from held_out import MIN_POOL, digit_model_held_out, held_out_pool

from digitrec import Recognizer, checkpoint
from digitrec.data import load_dataset
from digitrec.errors import UsageError
from digitrec.reader import Reader
from digitrec.synth import compose_number, user_like_set


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=positive_int, default=2000, help="user-like single digits (default: 2000)")
    parser.add_argument("--numbers", type=nonnegative_int, default=300,
                        help="composed numbers for --multi; 0 skips them (default: 300)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the renderings and rows (default: 2024)")
    parser.add_argument("--model", default=None, help="bundled model (default: the Recognizer's default)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file to test instead of a bundled model")
    parser.add_argument("--reader", default="bundled", help="row reader card for the numbers (default: bundled)")
    parser.add_argument("--json", default=None, help="also write the results here (JSON)")
    parser.add_argument("--method", default="auto", choices=["auto", "reader", "fused", "segment"],
                        help="read_number's method for the composed numbers (auto: fused when a reader is bundled)")
    parser.add_argument("--add-effect", action="append", default=[],
                        choices=["box", "ring", "underline", "shadow", "highlight", "sheet", "glare", "ruled", "frame"],
                        help="draw this effect on every digit that is not a canvas export (repeatable)")
    parser.add_argument("--digits", choices=["test", "held-out"], default="test",
                        help="render MNIST's test digits (final figures) or the held-out training digits (choosing)")
    args = parser.parse_args()

    if args.checkpoint and args.model:
        parser.error("give --checkpoint or --model, not both")
    json_path = json_output(args.json)  # checked before the long work
    rec = Recognizer.load(args.checkpoint, model=args.model, reader=args.reader)
    if args.digits == "held-out":
        train = load_dataset("mnist", "train")
        held = digit_model_held_out(rec.checkpoint, len(train.images))
        if len(held) < MIN_POOL:
            raise UsageError(f"--digits held-out: {rec.name} held out {len(held)} training digits (--val), "
                             f"under the {MIN_POOL} a pool needs")
        images, labels = train.images[held], train.labels[held]
        row_images, row_labels = images, labels
        if args.numbers:
            reader_card = checkpoint.read_card(Reader.load_card_path(None if args.reader == "bundled" else args.reader))
            rows_held, pool = held_out_pool(rec.checkpoint, len(train.images), reader_card)
            row_images, row_labels = train.images[rows_held], train.labels[rows_held]
            print(f"numbers: composed from the training digits {pool}")
    else:
        test = load_dataset("mnist", "test")
        images, labels = row_images, row_labels = test.images, test.labels
    items = user_like_set(images, labels, args.n, seed=args.seed, add=tuple(args.add_effect))
    t0 = time.perf_counter()
    preds = rec.predict_many([data for data, _, _ in items], errors="return")
    seconds = time.perf_counter() - t0
    correct = np.array([getattr(p, "digit", None) == label for p, (_, label, _) in zip(preds, items, strict=True)])
    singles_flagged = sum(bool(getattr(p, "several_digits", False)) for p in preds)  # one digit taken for several
    per_style: dict[str, list[bool]] = collections.defaultdict(list)
    for ok, (_, _, style) in zip(correct, items, strict=True):
        for part in style.split(":")[0].split("+"):
            per_style[part].append(bool(ok))

    # The digits the digit model misreads even alone, MNIST-clean: no row holding one is easy.
    alone_wrong = np.array([p.digit for p in rec.predict_array(row_images)]) != row_labels
    rng = np.random.default_rng(args.seed + 1)
    strings_ok, digits_ok, digits_total, number_seconds = 0, 0, 0, 0.0
    hard_rows, hard_rows_misread, rows_flagged = 0, 0, 0
    causes: collections.Counter[str] = collections.Counter()  # why a row was misread
    for _ in range(args.numbers):
        image, text, boxes, picks = compose_number(row_images, row_labels, rng,
                                                   user_like=bool(rng.random() < 0.5), return_boxes=True,
                                                   return_picks=True)
        t0 = time.perf_counter()
        read = rec.read_number(image, method=args.method).text
        number_seconds += time.perf_counter() - t0
        rows_flagged += rec.predict(image).several_digits  # the row given to the one-digit reader: flagged?
        strings_ok += read == text
        digits_ok += sum(a == b for a, b in zip(read, text, strict=False)) if len(read) == len(text) else 0
        digits_total += len(text)
        hard = bool(alone_wrong[picks].any())
        hard_rows += hard
        hard_rows_misread += hard and read != text
        if read != text:
            touching = any(b[0] <= a[2] for a, b in zip(boxes[:-1], boxes[1:], strict=True))
            count = "too few digits" if len(read) < len(text) else "too many digits" if len(read) > len(text) else ""
            causes[f"{count or 'right count, misread'}{' (touching pair in row)' if touching else ''}"] += 1

    result = dict(**model_identity(rec), digits=args.digits, added_effects=args.add_effect, method=args.method,
                  n=args.n, seed=args.seed,
                  accuracy=float(correct.mean()), singles_flagged_several_digits=singles_flagged,
                  rows_flagged_several_digits=rows_flagged,
                  images_per_second=args.n / seconds,
                  per_style={k: dict(n=len(v), accuracy=float(np.mean(v))) for k, v in sorted(per_style.items())},
                  numbers=args.numbers, number_accuracy=strings_ok / max(args.numbers, 1),
                  number_digit_accuracy=digits_ok / max(digits_total, 1),
                  numbers_per_second=args.numbers / max(number_seconds, 1e-9), number_errors=dict(causes),
                  digits_misread_alone=int(alone_wrong.sum()), rows_holding_one=hard_rows,
                  rows_holding_one_misread=hard_rows_misread,
                  other_rows_misread=args.numbers - strings_ok - hard_rows_misread)
    print(f"model: {rec.name}; digits: {'MNIST test' if args.digits == 'test' else 'held-out training'}")
    added = "".join(f" +{e}" for e in args.add_effect)
    print(f"user-like single digits{added}: {100 * result['accuracy']:.2f} % of {args.n} (seed {args.seed}); "
          f"flagged several_digits: {singles_flagged}")
    if args.numbers:  # --numbers 0: single digits only
        print(f"composed numbers (4-10 digits, --multi): {100 * result['number_accuracy']:.2f} % whole-string "
              f"of {args.numbers}")
        print(f"  read_number method: {args.method}; rows flagged several_digits when read as one digit: "
              f"{rows_flagged} of {args.numbers}")
        print(f"  per digit (a row read with the wrong count counts all its digits wrong): "
              f"{100 * result['number_digit_accuracy']:.2f} %, {result['numbers_per_second']:.1f} numbers/s")
        for cause, n in causes.most_common():
            print(f"  misread rows, {cause}: {n}")
        print(f"  rows holding one of the {result['digits_misread_alone']} digits the digit model "
              f"misreads alone: {hard_rows} ({hard_rows_misread} misread); other rows misread: "
              f"{result['other_rows_misread']}")
    print("| style element | n | accuracy |\n|---|---|---|")
    for k, v in result["per_style"].items():
        print(f"| {k} | {v['n']} | {100 * v['accuracy']:.2f} % |")
    if json_path:
        write_json(json_path, result)


if __name__ == "__main__":
    run(main)  # a bad --reader/--checkpoint or data folder: one line, exit 1 or 2
