"""Accuracy on real handwriting from writers outside MNIST: the UCI optical-recognition digits that
scikit-learn ships (`sklearn.datasets.load_digits`: 1,797 digits, 8x8 pixels of 17 grey levels, each pixel
the ink count of a 4x4 block of a 32x32 scan; written by people who are not MNIST's writers).

    python benchmarks/real_handwriting.py [--model best] [--json out.json]

Each digit goes through the same path as `digitrec predict` in three forms a user could hand in: the 8x8
array as it is (light ink on dark), the same as dark ink on white paper, and a 64x64 bicubic enlargement
saved as a JPEG (a blurry scan). Prints one table row per form, with per-class accuracy.
Needs scikit-learn (`pip install -e '.[test]'` installs it).
"""

from __future__ import annotations

import time

import numpy as np
from _cli import json_output, make_parser, model_identity, run, write_json
from PIL import Image

from digitrec import Recognizer
from digitrec.errors import UsageError
from digitrec.synth import encode


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 UCI digits as uint8 [N, 8, 8] (ink bright, 0-255) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * (255 / 16)).astype(np.uint8), digits.target.astype(np.int64)


def forms(images: np.ndarray) -> dict[str, list]:
    return {
        "8x8 as shipped (light ink on dark)": list(images),
        "8x8 dark ink on white": [255 - a for a in images],
        "64x64 bicubic enlargement, dark on white, JPEG q90": [
            encode(255 - np.asarray(Image.fromarray(a).resize((64, 64), Image.BICUBIC)), "JPEG", 90)
            for a in images],
    }


def main() -> None:
    parser = make_parser(__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="bundled model (default: the Recognizer's default)")
    which.add_argument("--checkpoint", default=None, help="a checkpoint file to test instead of a bundled model")
    parser.add_argument("--json", default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    json_path = json_output(args.json)

    rec = Recognizer.load(args.checkpoint, model=args.model)
    try:
        images, labels = uci_digits()
    except ImportError:
        raise UsageError("needs scikit-learn (pip install -e '.[test]')") from None
    rows = []
    print(f"model: {rec.name}; {len(labels)} UCI digits (sklearn load_digits)")
    print("| form | accuracy | no digit found | per class 0-9 | s |\n|---|---|---|---|---|")
    for name, inputs in forms(images).items():
        t0 = time.perf_counter()
        preds = rec.predict_many(inputs)
        seconds = time.perf_counter() - t0
        got = np.array([-1 if p.digit is None else p.digit for p in preds])
        per_class = [float(np.mean(got[labels == c] == c)) for c in range(10)]
        row = dict(form=name, n=len(labels), accuracy=float(np.mean(got == labels)),
                   no_digit=float(np.mean(got < 0)), per_class=per_class, seconds=seconds)
        rows.append(row)
        print(f"| {name} | {100 * row['accuracy']:.2f} % | {100 * row['no_digit']:.1f} % | "
              f"{' '.join(f'{100 * a:.0f}' for a in per_class)} | {seconds:.1f} |")
    if json_path:
        write_json(json_path, dict(**model_identity(rec), rows=rows))


if __name__ == "__main__":
    run(main)
