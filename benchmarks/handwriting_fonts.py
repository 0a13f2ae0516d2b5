"""Accuracy on digits in handwriting fonts: some 75 people's hands, digitised as fonts, none of them
MNIST's writers, drawn with pen-like strokes (the UCI digits of `real_handwriting.py` are 8x8 blurs).

    python tools/handwriting_fonts.py fetch            # once: the fonts, from npm (and Debian, if installed)
    python benchmarks/handwriting_fonts.py [--model distilled|best|ensemble] [--per-glyph 8] [--json out.json]

Each font's ten glyphs are drawn `--per-glyph` times, each time as a writer would vary: slant, rotation,
width, stroke weight and a gentle elastic wobble (`handwriting_fonts.font_digit`), dark on white paper,
then read the way `digitrec predict` reads a file. Prints the accuracy on the held-out fonts (every
third: no model trained with `--extra-digits` from `tools/handwriting_fonts.py digits` saw them) and on
all fonts, per class, the worst fonts and the commonest confusions, and the same digits after
`synth.user_like_set` re-renders them as photos of paper.

A font is one writer's one way of drawing each digit, so it is a narrower sample of a hand than real
handwriting, and a few fonts draw a digit in a style MNIST's American writers never use (a 1 with a long
flag, a crossed 7). It is the nearest thing to pen-written digits from outside MNIST that the package
registries ship; `reader_validation.py --pool fonts` composes rows from the same pool.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from _cli import json_output, make_parser, model_identity, positive_int, run, write_json
from handwriting_fonts import font_files, font_pool, held_out, mnist_like

from digitrec import Recognizer
from digitrec.errors import UsageError
from digitrec.synth import user_like_set


def _score(rec: Recognizer, inputs: list) -> tuple[np.ndarray, float]:
    """The digits read (-1 for none) and the seconds it took."""
    t0 = time.perf_counter()
    preds = rec.predict_many(inputs)
    got = np.array([-1 if p.digit is None else p.digit for p in preds])
    return got, time.perf_counter() - t0


def _check_unseen(rec: Recognizer, unseen: list[Path]) -> None:
    """A model trained with `--extra-digits FILE.npz` records the file; the fonts listed in it must not be
    among those this run calls held out (an older npz, or one drawn when other fonts were present)."""
    extra = rec.checkpoint.card.get("extra_digits") or {}
    path = Path(extra["path"]) if extra.get("path") else None
    if path is None or not path.is_file():
        if path is not None:
            print(f"note: cannot check the held-out fonts against {path} (the model's --extra-digits): not found")
        return
    with np.load(path) as data:
        trained = {str(name) for name in data["fonts"]} if "fonts" in data else set()
    seen = sorted(trained & {f.name for f in unseen})
    if seen:
        raise UsageError(f"{rec.name} trained on {len(seen)} of the fonts held out here ({', '.join(seen[:3])}"
                         f"{', ...' if len(seen) > 3 else ''}, from {path}): its held-out figure would not be one")


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model", default=None, help="bundled model (default: the Recognizer's default)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file to test instead of a bundled model")
    parser.add_argument("--fonts", default=None, help="font folder (default: tools/handwriting_fonts.py fetch's)")
    parser.add_argument("--per-glyph", type=positive_int, default=8, help="draws of each digit per font (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the writer's variations (default: 0)")
    parser.add_argument("--worst", type=positive_int, default=10, help="fonts to list, worst first (default: 10)")
    parser.add_argument("--json", default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    if args.checkpoint and args.model:
        parser.error("give --checkpoint or --model, not both")
    json_path = json_output(args.json)  # checked before the long work

    fonts = font_files(args.fonts)
    if not fonts:
        raise UsageError(f"no handwriting fonts in {args.fonts or 'the default font folder'} (nor Debian's); "
                         "run `python tools/handwriting_fonts.py fetch` first")
    rec = Recognizer.load(args.checkpoint, model=args.model)
    _check_unseen(rec, [f for f, held in zip(fonts, held_out(fonts), strict=True) if held])
    pages, labels, writers = font_pool(fonts, args.per_glyph, args.seed)
    unseen = held_out(fonts)[writers]
    print(f"model: {rec.name}; {len(fonts)} handwriting fonts ({int(held_out(fonts).sum())} held out) x 10 digits "
          f"x {args.per_glyph} draws = {len(labels)} digits (seed {args.seed})")
    got, seconds = _score(rec, pages)
    right = got == labels
    photos = user_like_set(mnist_like(pages), labels, len(labels), seed=args.seed + 1)
    photo_labels = np.array([label for _, label, _ in photos])
    got_photos, photo_seconds = _score(rec, [data for data, _, _ in photos])
    per_class = [float(np.mean(right[unseen & (labels == c)])) for c in range(10)]
    per_font = {fonts[k].stem: float(np.mean(right[writers == k])) for k in range(len(fonts))}
    pairs, counts = np.unique(np.stack([labels[~right], got[~right]], 1), axis=0, return_counts=True)
    result = dict(**model_identity(rec), fonts=len(fonts), held_out_fonts=int(held_out(fonts).sum()),
                  per_glyph=args.per_glyph, seed=args.seed, n=len(labels),
                  held_out_accuracy=float(right[unseen].mean()), accuracy=float(right.mean()),
                  user_like_accuracy=float(np.mean(got_photos == photo_labels)),
                  per_class_held_out=per_class, per_font=per_font, seconds=seconds + photo_seconds,
                  confusions={f"{t}->{g}": int(n) for (t, g), n in zip(pairs, counts, strict=True)})
    print(f"held-out fonts, drawn on white paper: {100 * result['held_out_accuracy']:.2f} % of {int(unseen.sum())}")
    print(f"all fonts, drawn on white paper: {100 * result['accuracy']:.2f} %; re-rendered user-like: "
          f"{100 * result['user_like_accuracy']:.2f} % ({2 * len(labels) / max(result['seconds'], 1e-9):.0f} images/s)")
    print("held-out fonts, per class 0-9: " + " ".join(f"{100 * a:.1f}" for a in per_class))
    worst = sorted(per_font.items(), key=lambda kv: kv[1])[:args.worst]
    print("worst fonts: " + ", ".join(f"{name} {100 * a:.0f} %" for name, a in worst))
    common = sorted(result["confusions"].items(), key=lambda kv: -kv[1])[:8]
    print("commonest confusions (true->read), all fonts: " + ", ".join(f"{k} x{n}" for k, n in common))
    if json_path:
        write_json(json_path, result)


if __name__ == "__main__":
    run(main)  # exit 2 for usage errors, 1 for the rest, one line each
