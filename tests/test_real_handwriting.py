"""Real handwriting from writers outside MNIST: the UCI digits scikit-learn ships (8x8, 17 grey levels).

They are tightly cropped and tiny, which MNIST digits never are; the bundled model must still read them
(`benchmarks/real_handwriting.py` prints the full table). Before preprocessing upsampled thumbnails and
gave tight crops a paper margin, no digit was found in most of them.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from digitrec import Recognizer


@pytest.fixture(scope="module")
def uci():
    digits = load_digits()
    return np.round(digits.images * (255 / 16)).astype(np.uint8), digits.target


@pytest.mark.parametrize("polarity", ["light ink on dark", "dark ink on white"])
def test_bundled_model_reads_uci_digits(uci, polarity):
    images, labels = uci
    inputs = list(images) if polarity == "light ink on dark" else [255 - a for a in images]
    preds = Recognizer.load().predict_many(inputs)
    got = np.array([-1 if p.digit is None else p.digit for p in preds])
    assert np.mean(got < 0) < 0.005  # a digit is found in (nearly) every one
    assert np.mean(got == labels) > 0.95
