"""preprocess: any image of a digit -> MNIST's 28x28, checked against MNIST itself.

With no trained model here, fidelity is judged by proxies: MNIST digits pass through nearly unchanged, and
a k-nearest-neighbour classifier built from MNIST *train* digits is about as accurate on preprocessed
user-like renderings (synth) as on the raw test digits they were made from.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitrec import preprocess, synth
from digitrec.data import load_dataset
from digitrec.errors import DataError, ImageError
from digitrec.preprocess import load_image, stroke_width, to_mnist, to_mnist_many
from digitrec.synth import encode, render_user_like, user_like_set


def _mnist(split: str):
    try:
        return load_dataset("mnist", split, offline=True, progress=False)
    except DataError as e:  # no MNIST here: set DIGITREC_DATA to a folder holding mnist/
        pytest.skip(f"MNIST not available: {e}")


@pytest.fixture(scope="module")
def mnist_test():
    return _mnist("test")


@pytest.fixture(scope="module")
def knn():
    """Cosine 3-NN over 300 MNIST train digits per class: a stand-in for a trained model."""
    train = _mnist("train")
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:300] for c in range(10)])
    bank = train.images[pick].reshape(len(pick), -1).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = train.labels[pick]

    def predict(images: np.ndarray) -> np.ndarray:
        q = images.reshape(len(images), -1).astype(np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
        nearest = np.argsort(-(q @ bank.T), axis=1)[:, :3]
        return np.array([np.bincount(v, minlength=10).argmax() for v in labels[nearest]])

    return predict


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _canvas(digit: np.ndarray, scale: int, x: int, y: int, size: tuple[int, int] = (300, 400)) -> np.ndarray:
    """Dark ink on white paper: `digit` (MNIST) upscaled `scale`x with its 28x28 field's corner at (x, y)."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BILINEAR))
    page = np.zeros(size, dtype=np.uint8)
    page[y:y + big.shape[0], x:x + big.shape[1]] = big
    return 255 - page


# ------------------------------------------------------------------------------------------ MNIST itself


def test_mnist_digits_pass_nearly_unchanged(mnist_test):
    raw = mnist_test.images[:500]
    prepared = to_mnist_many(list(raw))
    assert all(p.has_ink for p in prepared)
    out = np.stack([p.image for p in prepared])
    assert out.dtype == np.float32 and out.shape == (500, 28, 28) and 0 <= out.min() and out.max() <= 1
    diff = np.abs(out - raw / 255.0).mean(axis=(1, 2))
    assert diff.mean() < 0.01 and np.median(diff) < 0.003
    com = np.array([ndi.center_of_mass(o) for o in out])
    assert np.abs(com - 14).max() < 0.6  # MNIST pastes the centre of mass at pixel (14, 14)


def test_mnist_predictions_unchanged(mnist_test, knn):
    raw = mnist_test.images[:1000]
    prepared = np.stack([to_mnist(d).image for d in raw])
    assert (knn(prepared) == knn(raw / 255.0)).mean() > 0.99


# ------------------------------------------------------------------------------------ user-like renderings


def test_user_like_accuracy_close_to_raw(mnist_test, knn):
    n, seed = 300, 11
    items = user_like_set(mnist_test.images, mnist_test.labels, n, seed)
    prepared = to_mnist_many([data for data, _, _ in items])
    labels = np.array([label for _, label, _ in items])
    picked = np.random.default_rng(0).integers(0, len(mnist_test), 2000)
    raw_accuracy = (knn(mnist_test.images[picked] / 255.0) == mnist_test.labels[picked]).mean()
    accuracy = (knn(np.stack([p.image for p in prepared])) == labels).mean()
    assert np.mean([p.has_ink for p in prepared]) >= 0.98
    assert accuracy >= raw_accuracy - 0.06, (accuracy, raw_accuracy)  # measured: 0.925 vs 0.95


def test_renderings_look_like_the_preprocessed_original(mnist_test):
    rng = np.random.default_rng(3)
    plain, mixed = [], []
    for i in range(60):
        reference = to_mnist(mnist_test.images[i]).image
        plain.append(_corr(to_mnist(render_user_like(mnist_test.images[i], rng, "paper")).image, reference))
        mixed.append(_corr(to_mnist(render_user_like(mnist_test.images[i], rng)).image, reference))
    assert np.mean(plain) > 0.9 and np.mean(mixed) > 0.78


@pytest.mark.parametrize("style", ["paper+ruled", "paper+frame+lighting", "chalk+lighting+noise",
                                   "colour+jpeg", "paper+hairline", "paper+thick+blur", "canvas+thin",
                                   "paper+box", "colour+box+jpeg", "paper+box+ruled+lighting"])
def test_hard_styles(mnist_test, style):
    rng = np.random.default_rng(4)
    scores = [_corr(to_mnist(render_user_like(mnist_test.images[i], rng, style)).image,
                    to_mnist(mnist_test.images[i]).image) for i in range(20)]
    assert np.median(scores) > 0.75, style


def test_hairline_is_thickened_to_mnist_weight(mnist_test):
    rng = np.random.default_rng(5)
    widths = [stroke_width(to_mnist(render_user_like(mnist_test.images[i], rng, "paper+hairline",
                                                     size=(900, 900))).image) for i in range(10)]
    assert 1.3 < np.median(widths) < 3.0  # MNIST: median 2.0 px


def test_small_digit_in_big_photo(mnist_test):
    page = np.full((2000, 3000), 230, dtype=np.uint8)
    digit = 255 - np.asarray(Image.fromarray(mnist_test.images[0]).resize((84, 84), Image.BILINEAR))
    page[1500:1584, 400:484] = np.minimum(page[1500:1584, 400:484], digit)
    out = to_mnist(encode(page, "JPEG", 90))
    assert out.has_ink and _corr(out.image, to_mnist(mnist_test.images[0]).image) > 0.85
    x0, y0, x1, y1 = out.box
    assert 390 <= x0 and x1 <= 494 and 1490 <= y0 and y1 <= 1594


def test_box_is_in_source_pixels(mnist_test):
    digit = mnist_test.images[7]
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    out = to_mnist(_canvas(digit, 10, 50, 20, size=(400, 700)))
    expected = (50 + 10 * cols[0], 20 + 10 * rows[0], 50 + 10 * (cols[-1] + 1), 20 + 10 * (rows[-1] + 1))
    assert np.abs(np.subtract(out.box, expected)).max() <= 12


def _tight(digit: np.ndarray, height: int) -> np.ndarray:
    """`digit` cropped to its ink (no margin at all), as dark ink on white, `height` px tall."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    crop = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    return 255 - np.asarray(Image.fromarray(crop).resize((width, height), Image.BICUBIC))


def test_tightly_cropped_digits(mnist_test, knn):
    """A digit cropped to its ink (a form cell, a user's crop) touches every edge: it must not be taken for
    a photo's dark frame or leave too little paper to read (once 40 % of these came out blank)."""
    idx = np.arange(300)
    raw = knn(mnist_test.images[idx].astype(np.float32) / 255)
    outs = [to_mnist(_tight(mnist_test.images[i], 80)) for i in idx]
    assert np.mean([o.has_ink for o in outs]) > 0.98
    tight = knn(np.stack([o.image for o in outs]))
    assert np.mean(tight == mnist_test.labels[idx]) > np.mean(raw == mnist_test.labels[idx]) - 0.03
    # the box is in the source's pixels: the whole (tight) image, not the added margin
    x0, y0, x1, y1 = outs[0].box
    h, w = _tight(mnist_test.images[0], 80).shape
    assert x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h and (x1 - x0) > 0.8 * w and (y1 - y0) > 0.8 * h


@pytest.mark.parametrize("side", [8, 12, 16])
def test_thumbnails(mnist_test, knn, side):
    """Digits shrunk to a few pixels (icons, 8x8 digit sets) are upsampled before they are read."""
    idx = np.arange(300)
    thumbs = [np.asarray(Image.fromarray(mnist_test.images[i]).resize((side, side), Image.BOX)) for i in idx]
    outs = [to_mnist(t) for t in thumbs]
    assert all(o.has_ink for o in outs)
    accuracy = np.mean(knn(np.stack([o.image for o in outs])) == mnist_test.labels[idx])
    assert accuracy > {8: 0.6, 12: 0.85, 16: 0.9}[side]


# --------------------------------------------------------------------------------- invariance properties


def _shifts(a: np.ndarray) -> list[np.ndarray]:
    """`a` moved by up to 1 px: like MNIST, the centre of mass is pasted at a whole pixel, and sub-pixel
    differences in the source can round it either way."""
    return [np.roll(a, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


@settings(max_examples=25, deadline=None)
@given(index=st.integers(0, 9999), x=st.integers(0, 120), y=st.integers(0, 20))
def test_translation_invariance(mnist_test, index, x, y):
    digit = mnist_test.images[index]
    a = to_mnist(_canvas(digit, 6, x, y)).image
    b = to_mnist(_canvas(digit, 6, 60, 10)).image
    # sub-pixel offsets change the anti-aliasing a little: typically 0.007, worst seen 0.046 (digits of
    # one class differ by ~0.15)
    assert min(np.abs(s - b).mean() for s in _shifts(a)) < 0.06


@settings(max_examples=25, deadline=None)
@given(index=st.integers(0, 9999), scale=st.integers(2, 12))
def test_scale_invariance(mnist_test, index, scale):
    """Resampling blurs a 1-px MNIST stroke a little: correlation typically 0.96, worst seen 0.82."""
    digit = mnist_test.images[index]
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BILINEAR))
    reference = to_mnist(digit).image
    assert max(_corr(s, reference) for s in _shifts(to_mnist(big).image)) > 0.8


def test_scale_invariance_on_average(mnist_test):
    rng = np.random.default_rng(8)
    scores = []
    for index, scale in zip(rng.integers(0, 10000, 60), rng.integers(2, 13, 60), strict=True):
        digit = mnist_test.images[index]
        big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BILINEAR))
        scores.append(_corr(to_mnist(big).image, to_mnist(digit).image))
    assert np.mean(scores) > 0.9


@settings(max_examples=25, deadline=None)
@given(index=st.integers(0, 9999), scale=st.integers(1, 8))
@example(index=614, scale=2)  # once 0.044 apart: the paper fit broke a tie by which half it started from
def test_polarity_invariance(mnist_test, index, scale):
    digit = np.asarray(Image.fromarray(mnist_test.images[index]).resize((28 * scale, 28 * scale)))
    a, b = to_mnist(digit).image, to_mnist(255 - digit).image
    assert np.abs(a - b).mean() < 0.01


# ------------------------------------------------------------------------------- boxes drawn around digits


def _in_box(digit: np.ndarray, sides: str = "tblr", margin: int = 20, thick: int = 3, tone: int = 40,
            scale: int = 6) -> np.ndarray:
    """Dark ink on white paper, the digit inside a form's cell (`sides`: which of top, bottom, left, right
    are drawn; `margin` px between the digit's ink and the box, 0 or less: touching or crossing it)."""
    page = _canvas(digit, scale, 60, 20)
    rows, cols = np.flatnonzero((page < 128).any(axis=1)), np.flatnonzero((page < 128).any(axis=0))
    top, bottom, left, right = rows[0] - margin, rows[-1] + margin, cols[0] - margin, cols[-1] + margin
    out = page.copy()
    if "t" in sides:
        out[top - thick:top, left - thick:right + thick] = tone
    if "b" in sides:
        out[bottom:bottom + thick, left - thick:right + thick] = tone
    if "l" in sides:
        out[top - thick:bottom + thick, left - thick:left] = tone
    if "r" in sides:
        out[top - thick:bottom + thick, right:right + thick] = tone
    return np.minimum(out, page)


@pytest.mark.parametrize("sides", ["tblr", "tbl", "blr", "tl", "br"])
def test_a_box_around_the_digit_is_dropped(mnist_test, sides):
    """A form's cell, or the two or three sides a tight crop of it leaves, is not part of the digit."""
    scores = []
    for index in range(10):
        digit = mnist_test.images[index]
        reference = to_mnist(_canvas(digit, 6, 60, 20)).image
        scores.append(max(_corr(s, reference) for s in _shifts(to_mnist(_in_box(digit, sides)).image)))
    # measured: median 0.99-1.0, worst 0.949 (a 1, its fit moved a little); kept, the box: 0.47-0.72
    assert np.median(scores) > 0.97 and min(scores) > 0.93, scores


def test_a_box_the_digit_touches_is_cut_away(mnist_test):
    """Digit and box are one component then: only the box's straight sides go, the digit stays."""
    scores = []
    for index in range(10):
        digit = mnist_test.images[index]
        reference = to_mnist(_canvas(digit, 6, 60, 20)).image
        scores.append(max(_corr(s, reference) for s in _shifts(to_mnist(_in_box(digit, margin=-2)).image)))
    # measured: median 0.88, worst 0.77; with the box kept: median 0.80 (the box is the digit's own frame)
    assert np.median(scores) > 0.85 and min(scores) > 0.7, scores


def _page(draw, size: int = 200) -> np.ndarray:
    """White paper on which `draw(ImageDraw)` has drawn pen strokes."""
    page = Image.new("L", (size, size), 255)
    draw(ImageDraw.Draw(page))
    return np.array(page)


def _strokes(segments: list[tuple[int, int, int, int]], size: int = 200, width: int = 10) -> np.ndarray:
    """Dark straight pen strokes (x0, y0, x1, y1) on white paper."""
    return _page(lambda draw: [draw.line(seg, fill=20, width=width) for seg in segments], size)


@pytest.mark.parametrize("name, segments", [
    ("7 with a straight bar and stem", [(50, 40, 150, 40), (150, 40, 150, 170)]),
    ("open 4 of straight strokes", [(60, 30, 60, 110), (60, 110, 160, 110), (130, 30, 130, 180)]),
    ("squared 0", [(60, 30, 140, 30), (140, 30, 140, 170), (140, 170, 60, 170), (60, 170, 60, 30)]),
    ("2 with a flat base", [(60, 50, 140, 50), (140, 50, 60, 170), (60, 170, 150, 170)]),
])
def test_digits_of_straight_strokes_are_not_boxes(name, segments, monkeypatch):
    """The box rule must not take a digit for a box: each reads the same with and without it, even with a
    speck of dirt inside."""
    page = _strokes(segments)
    page[95:99, 95:99] = 30  # a speck
    with_rule = to_mnist(page).image
    monkeypatch.setattr(preprocess, "_drawn_boxes", lambda *args: None)
    assert np.array_equal(with_rule, to_mnist(page).image), name


def test_squared_paper_is_not_a_box(mnist_test, monkeypatch):
    page = _canvas(mnist_test.images[3], 6, 60, 20).copy()
    page[::16, :] = np.minimum(page[::16, :], 150)
    page[:, ::16] = np.minimum(page[:, ::16], 150)
    with_rule = to_mnist(page).image
    monkeypatch.setattr(preprocess, "_drawn_boxes", lambda *args: None)
    assert np.array_equal(with_rule, to_mnist(page).image)


@pytest.mark.parametrize("tone", [30, 90])
def test_a_line_the_digit_is_written_on_is_dropped(mnist_test, tone):
    """A digit sitting on a ruled line (or a form's baseline) as dark as its ink: line and digit touch, so
    they were one structure and the line was kept (82 of 200 read right in a throwaway check, all 200 now)."""
    scores = []
    for index in range(12):
        page = _canvas(mnist_test.images[index], 6, 60, 20).copy()
        reference = to_mnist(page).image
        rows = np.flatnonzero((page < 128).any(axis=1))
        page[rows[-1] - 2:rows[-1] + 1, 20:-20] = tone
        scores.append(max(_corr(s, reference) for s in _shifts(to_mnist(page).image)))
    assert np.median(scores) > 0.95 and min(scores) > 0.85, scores


def test_lines_under_ink_needs_a_line_that_runs_on_past_the_digit():
    """The rule for lines a digit touches takes a line that reaches past the digit on both sides, and not a
    digit's own bar that spans a tight crop (a thin-penned 7's): straight on the ink masks."""
    seven = np.zeros((200, 200), dtype=bool)
    seven[8:11, 5:190] = True  # the bar, 92 % of the width
    for y in range(11, 196):  # the stem, down to the left
        x = int(190 - (y - 11) * 110 / 185)
        seven[y, x - 1:x + 2] = True
    assert not preprocess._lines_under_ink(seven).any()
    on_a_line = np.zeros((200, 200), dtype=bool)
    on_a_line[40:150, 95:101] = True  # a 1
    on_a_line[148:151, 10:190] = True  # the line it stands on
    found = preprocess._lines_under_ink(on_a_line)
    assert found[149, 10:90].all() and found[149, 106:190].all()  # the line, beside the 1
    assert not found[40:140].any() and not found[149, 96:100].any()  # the 1 (and where it crosses)


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, 9999), sides=st.sampled_from(["tblr", "tbl", "tlr", "tr", "bl"]),
       margin=st.integers(8, 60), thick=st.integers(1, 6), tone=st.integers(0, 120))
def test_box_property(mnist_test, index, sides, margin, thick, tone):
    digit = mnist_test.images[index]
    reference = to_mnist(_canvas(digit, 6, 60, 20)).image
    boxed = to_mnist(_in_box(digit, sides, margin, thick, tone)).image
    assert max(_corr(s, reference) for s in _shifts(boxed)) > 0.9


# ------------------------------------------------------------------ rings and lines drawn around digits


def _ringed(digit: np.ndarray, grow: float = 1.3, thick: int = 4, tone: int = 30) -> np.ndarray:
    """Dark ink on white paper, the digit circled: an ellipse `grow` times the ink's half-height and
    half-width (at least two thirds of the half-height) from its centre. Under about 1.25 it touches the
    digit's corners."""
    page = _canvas(digit, 6, 60, 20)
    rows, cols = np.flatnonzero((page < 128).any(axis=1)), np.flatnonzero((page < 128).any(axis=0))
    cy, cx = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    ry = grow * (rows[-1] - rows[0]) / 2
    rx = grow * max((cols[-1] - cols[0]) / 2, (rows[-1] - rows[0]) / 3)
    ring = Image.new("L", (page.shape[1], page.shape[0]), 255)
    ImageDraw.Draw(ring).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=tone, width=thick)
    return np.minimum(page, np.asarray(ring))


@pytest.mark.parametrize("grow", [1.35, 1.15])
def test_a_ring_around_the_digit_is_dropped(mnist_test, grow):
    """A circled digit, the ring apart from the digit (1.35) or touching it (1.15): the ring has more ink
    than the digit, so it was kept as the digit and read as a 0 (51 of 200 held-out digits in a throwaway
    check with rings of both kinds, 197 now)."""
    scores = []
    for index in range(12):
        digit = mnist_test.images[index]
        reference = to_mnist(_canvas(digit, 6, 60, 20)).image
        scores.append(max(_corr(s, reference) for s in _shifts(to_mnist(_ringed(digit, grow)).image)))
    # measured: apart, median 0.98 and worst 0.96 (the ring kept: median 0.66); touching, where a narrow
    # digit can also cross the ring, median 0.92 and worst 0.77 (the ring kept: median 0.75)
    low, median = (0.93, 0.95) if grow > 1.3 else (0.7, 0.88)
    assert np.median(scores) > median and min(scores) > low, (grow, scores)


def test_a_speck_inside_a_touching_ring_does_not_hide_it(mnist_test):
    """A speck of dirt inside the ring is separate ink inside it, but no digit: the touching ring is still cut."""
    plain, specked = [], []
    for index in range(12):
        digit = mnist_test.images[index]
        reference = to_mnist(_canvas(digit, 6, 60, 20)).image
        page = _ringed(digit, 1.15)
        plain.append(max(_corr(s, reference) for s in _shifts(to_mnist(page).image)))
        ys, xs = np.nonzero(page < 128)
        free = np.argwhere(page[min(ys):max(ys), min(xs):max(xs)] > 250)  # paper inside the ring's bounds
        free = free[(np.abs(free - free.mean(axis=0)) < 0.25 * np.ptp(free, axis=0)).all(axis=1)]
        cy, cx = free[len(free) // 2] + (min(ys), min(xs))
        page = page.copy()
        page[cy - 4:cy + 4, cx - 4:cx + 4] = 30
        specked.append(max(_corr(s, reference) for s in _shifts(to_mnist(page).image)))
    assert np.median(specked) > np.median(plain) - 0.03, (plain, specked)


def _mask(size: tuple[int, int], draw) -> np.ndarray:
    page = Image.new("1", (size[1], size[0]), 0)
    draw(ImageDraw.Draw(page))
    return np.array(page, dtype=bool)


def test_surrounds_takes_rings_not_touching_digits():
    """In a row, a 7 touching an 8 can surround the 8's broken loop as a ring would (a --multi benchmark
    row lost a digit that way in development); a stroke crossing the middle tells them apart."""
    inner = np.array([[26, 20, 38, 44]])  # (x0, y0, x1, y1) of the ink inside
    ring = _mask((64, 64), lambda d: d.ellipse((4, 4, 60, 60), outline=1, width=4))
    assert preprocess._surrounds(ring, inner, 0.2)
    with_bar = _mask((64, 64), lambda d: (d.ellipse((4, 4, 60, 60), outline=1, width=4),
                                          d.line((40, 8, 30, 18), fill=1, width=4)))  # a 5's bar touching it
    assert preprocess._surrounds(with_bar, inner, 0.2)
    seven_and_eight = _mask((64, 64), lambda d: (d.line((2, 10, 44, 6), fill=1, width=6),
                                                 d.line((40, 8, 8, 60), fill=1, width=6),
                                                 d.line((44, 6, 50, 36), fill=1, width=3),
                                                 d.ellipse((36, 34, 62, 62), outline=1, width=3)))
    assert not preprocess._surrounds(seven_and_eight, inner, 0.2)


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, 9999), grow=st.floats(1.3, 1.6), thick=st.integers(2, 8), tone=st.integers(0, 120))
def test_ring_property(mnist_test, index, grow, thick, tone):
    digit = mnist_test.images[index]
    reference = to_mnist(_canvas(digit, 6, 60, 20)).image
    assert max(_corr(s, reference) for s in _shifts(to_mnist(_ringed(digit, grow, thick, tone)).image)) > 0.9


@pytest.mark.parametrize("name, draw", [
    ("0 with a dot inside", lambda d: (d.ellipse((60, 30, 140, 170), outline=20, width=10),
                                      d.ellipse((94, 94, 106, 106), fill=20))),
    ("8 with both loops closed", lambda d: (d.ellipse((65, 25, 135, 95), outline=20, width=10),
                                           d.ellipse((55, 90, 145, 175), outline=20, width=10),
                                           d.line((75, 110, 125, 150), fill=20, width=10))),
    ("6 with a closed loop", lambda d: (d.ellipse((55, 90, 145, 175), outline=20, width=10),
                                       d.line((60, 130, 120, 25), fill=20, width=10))),
    ("crossed 7 with a detached bar", lambda d: (d.line((50, 40, 150, 40), fill=20, width=10),
                                                d.line((150, 40, 90, 170), fill=20, width=10),
                                                d.line((85, 105, 150, 105), fill=20, width=10))),
    ("2 whose base meets its curve", lambda d: (d.arc((55, 30, 145, 110), 180, 40, fill=20, width=10),
                                               d.line((138, 90, 60, 165), fill=20, width=10),
                                               d.line((60, 168, 150, 168), fill=20, width=10))),
])
def test_digits_are_not_rings_or_underlines(name, draw, monkeypatch):
    """The ring and underline rules must leave digits alone: each reads the same with and without them."""
    page = _page(draw)
    with_rules = to_mnist(page).image
    monkeypatch.setattr(preprocess, "_drawn_rings", lambda *args: None)
    monkeypatch.setattr(preprocess, "_underlines", lambda *args: None)
    assert np.array_equal(with_rules, to_mnist(page).image), name


@pytest.mark.parametrize("name, draw", [
    ("a lone line", lambda d: d.line((20, 100, 180, 100), fill=20, width=6)),
    ("a flat loop round a dash", lambda d: (d.ellipse((10, 90, 190, 110), outline=20, width=3),
                                            d.line((60, 100, 140, 100), fill=20, width=2))),
    ("a line under a speck", lambda d: (d.line((20, 150, 180, 150), fill=20, width=6),
                                        d.rectangle((98, 60, 101, 63), fill=20))),
])
def test_marks_without_a_digit_do_not_break_the_rules(name, draw):
    """Shapes the ring and underline rules look at, with no digit to keep: an answer, never an error."""
    out = to_mnist(_page(draw))
    assert out.image.shape == (28, 28) and np.isfinite(out.image).all(), name


@pytest.mark.parametrize("reach", [0.2, 1.0])
def test_a_line_under_the_digit_is_dropped(mnist_test, reach):
    """An underline apart from the digit, short (20 % of the digit's width past it on each side) or long:
    near the digit and as heavy as a stroke, it was kept as a detached part (164 of 200 test digits read
    right with the short one in session 26's check, 199 now)."""
    scores = []
    for index in range(12):
        page = _canvas(mnist_test.images[index], 6, 60, 20).copy()
        reference = to_mnist(page).image
        rows, cols = np.flatnonzero((page < 128).any(axis=1)), np.flatnonzero((page < 128).any(axis=0))
        past = int(reach * (cols[-1] - cols[0]))
        page[rows[-1] + 8:rows[-1] + 12, max(cols[0] - past, 5):min(cols[-1] + past, 395)] = 30
        scores.append(max(_corr(s, reference) for s in _shifts(to_mnist(page).image)))
    assert np.median(scores) > 0.95 and min(scores) > 0.9, (reach, scores)


# ---------------------------------------------------------------------------- a hard shadow across the page


def _shadowed(page: np.ndarray, angle: float, dark: float, through: tuple[float, float] | None = None,
              blur: float = 1.0) -> np.ndarray:
    """`page` under a hard-edged shadow (a phone's): light times (1 - `dark`) on one side of a line at
    `angle` degrees through `through` (y, x; default the ink's centre), with a penumbra of `blur` px."""
    ys, xs = np.nonzero(page < 128)
    cy, cx = through if through is not None else ((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2)
    y, x = np.mgrid[0:page.shape[0], 0:page.shape[1]].astype(np.float32)
    a = np.radians(angle)
    side = ndi.gaussian_filter(((x - cx) * np.cos(a) + (y - cy) * np.sin(a) > 0).astype(np.float32), blur)
    return np.round(page * (1.0 - dark * side)).astype(np.uint8)


def test_a_shadow_across_the_digit_is_flattened(mnist_test, monkeypatch):
    """A shadow's edge through the digit: one smooth paper surface cannot follow it, so the shadowed side
    was read as ink (a blob, or a 'photo border' cut away with the digit in it): 138 of 200 held-out digits
    in session 28's throwaway check, 195 with `_shadowed_paper`."""
    pages, references = [], []
    for index in range(12):
        page = _canvas(mnist_test.images[index], 6, 60, 20)
        references.append(to_mnist(page).image)
        pages.append(_shadowed(page, angle=30 * index, dark=0.3 + 0.02 * index))
    scores = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(scores) > 0.95 and min(scores) > 0.85, scores
    monkeypatch.setattr(preprocess, "_shadowed_paper", lambda *args: None)
    without = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(without) < np.median(scores) - 0.1, without  # the rule is what reads them


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, 9999), angle=st.floats(0, 360), dark=st.floats(0.3, 0.6),
       dy=st.floats(-0.3, 0.3), dx=st.floats(-0.3, 0.3), blur=st.floats(0.5, 3.0))
def test_shadow_property(mnist_test, index, angle, dark, dy, dx, blur):
    """Wherever a shadow's edge crosses the digit, and however dark and soft it is, the 28x28 is the
    unshadowed one's."""
    page = _canvas(mnist_test.images[index], 6, 60, 20)
    reference = to_mnist(page).image
    ys, xs = np.nonzero(page < 128)
    through = ((ys.min() + ys.max()) / 2 + dy * np.ptp(ys), (xs.min() + xs.max()) / 2 + dx * np.ptp(xs))
    out = to_mnist(_shadowed(page, angle, dark, through, blur)).image
    assert max(_corr(s, reference) for s in _shifts(out)) > 0.85


def test_a_shadow_on_a_blank_page_is_no_digit():
    """Half a blank page in shadow is paper, not ink: nothing to read, and no error. (In development the
    shadow's edge, where it met the image's border, came out as a speck read as a digit.)"""
    page = _shadowed(np.full((300, 400), 230, dtype=np.uint8), 20, 0.45, through=(150, 200))
    assert not to_mnist(page).has_ink


def _split_check(image: np.ndarray) -> bool:
    """Whether `_shadowed_paper` takes `image` (grey, 0-255) for a shadowed page."""
    grey, _, _ = preprocess._decode(image, preprocess._WORK_SIDE)
    medians, b = preprocess._block_medians(grey)
    step = max(1, int(np.sqrt(grey.size / 3000)))
    return preprocess._shadowed_paper(grey, medians, b, step, preprocess._paper(grey, step)[1]) is not None


def test_pages_without_a_shadow_keep_one_paper_level(mnist_test):
    """What a shadow must not be taken for: a light ramp, a dark table edge, chalk on a board, a bold
    digit, MNIST itself. These pages keep the one-surface fit (and their 28x28, bit for bit)."""
    digit = mnist_test.images[0]
    page = _canvas(digit, 6, 60, 20)
    ramp = np.round(page * np.linspace(0.55, 1.0, page.shape[1])[None, :]).astype(np.uint8)
    table = page.copy()
    table[:, :70] = 25  # a dark table edge along one side
    chalk = 255 - np.round(_canvas(digit, 6, 60, 20) * 0.75).astype(np.uint8)  # light strokes on a dark board
    bold = np.asarray(Image.fromarray(page).filter(__import__("PIL.ImageFilter").ImageFilter.MinFilter(15)))
    for name, image in [("plain", page), ("ramp", ramp), ("table edge", table), ("chalk", chalk),
                        ("bold", bold), ("MNIST", digit)]:
        assert not _split_check(image), name
    assert _split_check(_shadowed(page, 30, 0.4))


# ------------------------------------------------------------------------ a highlighter across the digit

_DYES = {"yellow": (1.0, 0.95, 0.25), "green": (0.55, 1.0, 0.45), "pink": (1.0, 0.55, 0.8),
         "orange": (1.0, 0.75, 0.3), "blue": (0.55, 0.85, 1.0)}
_PENS = {"black": (0.05, 0.05, 0.08), "blue": (0.1, 0.15, 0.6), "red": (0.7, 0.1, 0.1), "green": (0.1, 0.45, 0.15)}
_SAME_COLOUR = {("green", "green"), ("red", "orange")}  # pen and dye of one hue: no channel parts them


def _inked(digit: np.ndarray, pen: tuple[float, float, float], paper: tuple[float, float, float] = (0.95,) * 3,
           ) -> np.ndarray:
    """`digit` in `pen`'s colour on `paper` (RGB float, 0-1), 6x on a 300x400 page."""
    ink = 1.0 - _canvas(digit, 6, 60, 20).astype(np.float32)[..., None] / 255.0
    return np.asarray(paper, np.float32) * (1.0 - ink) + np.asarray(pen, np.float32) * ink


def _highlighted(page: np.ndarray, dye: tuple[float, float, float], at: float = 0.5, thick: float = 0.3,
                 tilt: float = 0.0) -> np.ndarray:
    """`page` (RGB float) with a highlighter's band across its ink: `at` of the way down the digit, `thick`
    of its height, `tilt` degrees off level, from well before the digit to well past it; uint8."""
    ys, xs = np.nonzero(page.min(axis=2) < 0.5)
    height = np.ptp(ys) + 1
    y, x = np.mgrid[0:page.shape[0], 0:page.shape[1]].astype(np.float32)
    centre = ys.min() + at * height + (x - xs.mean()) * np.tan(np.radians(tilt))
    band = (np.abs(y - centre) <= thick * height / 2) & (x >= xs.min() - 40) & (x <= xs.max() + 40)
    band = ndi.gaussian_filter(band.astype(np.float32), 1.0)[..., None]
    return np.round(page * (1.0 - band * (1.0 - np.asarray(dye, np.float32))) * 255).astype(np.uint8)


def test_a_highlighter_across_the_digit_is_cleared(mnist_test, monkeypatch):
    """A highlighter's band through the digit, in five dyes and four pens: the grey channel showed it as a
    broad stroke, kept as part of the digit (a 7 with a bar read as 2): 169 of 200 held-out digits in
    session 28's throwaway check, 195 with `_without_highlighter`. (A band in the pen's own colour, green
    on green, has no channel that clears it and keeps the pen: a known limit, left out here.)"""
    pages, references = [], []
    pairs = [(pen, dye) for pen in _PENS for dye in _DYES if (pen, dye) not in _SAME_COLOUR]
    for index in range(12):
        pen, dye = pairs[(7 * index) % len(pairs)]
        page = _inked(mnist_test.images[index], _PENS[pen])
        references.append(to_mnist(np.round(page * 255).astype(np.uint8)).image)
        pages.append(_highlighted(page, _DYES[dye], at=0.3 + 0.04 * index))
    scores = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(scores) > 0.95 and min(scores) > 0.85, scores
    monkeypatch.setattr(preprocess, "_without_highlighter", lambda *args: None)
    without = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(without) < np.median(scores) - 0.1, without  # the rule is what reads them


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, 9999), dye=st.sampled_from(sorted(_DYES)), pen=st.sampled_from(sorted(_PENS)),
       at=st.floats(0.15, 0.85), thick=st.floats(0.2, 0.45), tilt=st.floats(-10, 10))
def test_highlighter_property(mnist_test, index, dye, pen, at, thick, tilt):
    """Wherever the band crosses the digit, whatever its dye and the pen's colour, the 28x28 is the
    unmarked one's."""
    assume((pen, dye) not in _SAME_COLOUR)
    page = _inked(mnist_test.images[index], _PENS[pen])
    reference = to_mnist(np.round(page * 255).astype(np.uint8)).image
    out = to_mnist(_highlighted(page, _DYES[dye], at, thick, tilt)).image
    assert max(_corr(s, reference) for s in _shifts(out)) > 0.85


def test_coloured_pens_without_a_highlighter_keep_their_grey(mnist_test):
    """What must not pass for a highlighter: a coloured pen on white or tinted paper (each pen lets one
    channel through, as a dye does), a grey photo stored as RGB. The grey channel stays the one chosen."""
    digit = mnist_test.images[0]
    papers = [(0.95, 0.95, 0.95), (1.0, 0.95, 0.6), (0.75, 0.9, 1.0), (0.95, 0.75, 0.8)]
    for pen_name, pen in _PENS.items():
        for paper in papers:
            rgb = _inked(digit, pen, paper)
            grey = preprocess._grey(rgb, None)
            step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 5000)))
            assert preprocess._without_highlighter(rgb, grey, step) is None, (pen_name, paper)
    grey_photo = np.repeat(_inked(digit, _PENS["black"])[..., :1], 3, axis=2)
    grey_photo += np.random.default_rng(0).normal(0, 0.03, grey_photo.shape).astype(np.float32)
    assert preprocess._without_highlighter(grey_photo, grey_photo.mean(axis=2), 2) is None


def test_a_digit_drawn_with_a_marker_is_not_cleared(mnist_test):
    """A digit written with a highlighter or a light felt-tip itself: there is no dark ink for a band to
    cross, so the rule leaves it, and the digit is read from the channel that shows it."""
    digit = mnist_test.images[0]
    for name, dye in _DYES.items():
        page = _inked(digit, dye)
        assert preprocess._without_highlighter(page, page.min(axis=2), 2) is None, name
        out = to_mnist(np.round(page * 255).astype(np.uint8))
        assert out.has_ink and _corr(out.image, to_mnist(digit).image) > 0.85, name


# ------------------------------------------------------------------------------- a note lying on a desk


def _on_desk(page: np.ndarray, angle: float, desk: float, spare: float = 1.4, shift: float = 0.0) -> np.ndarray:
    """`page` (grey, 0-255) cut down to a note round its ink (`spare` times the ink's half-size, at least 70 %
    as long on one side as the other, moved `shift` of the room it has to spare), turned `angle` degrees,
    on a desk of level `desk` (0-1) with a grain."""
    ys, xs = np.nonzero(page < 128)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    y, x = np.mgrid[0:page.shape[0], 0:page.shape[1]].astype(np.float32)
    a = np.radians(angle)
    u, v = (x - cx) * np.cos(a) + (y - cy) * np.sin(a), (y - cy) * np.cos(a) - (x - cx) * np.sin(a)
    reach_u, reach_v = np.abs(u[ys, xs]).max(), np.abs(v[ys, xs]).max()
    side = 0.7 * max(reach_u, reach_v)
    half_u, half_v = max(reach_u, side) * spare, max(reach_v, side) * spare
    inside = (np.abs(u - shift * (half_u - reach_u)) <= half_u) & (np.abs(v - shift * (half_v - reach_v)) <= half_v)
    note = ndi.gaussian_filter(inside.astype(np.float32), 0.7)
    grain = ndi.gaussian_filter(np.random.default_rng(0).standard_normal(page.shape).astype(np.float32), (1, 12))
    wood = 255 * desk * (1 + 0.1 * grain / grain.std())
    return np.round(np.clip(page * note + wood * (1 - note), 0, 255)).astype(np.uint8)


def test_a_note_on_a_desk_is_read_as_paper(mnist_test, monkeypatch):
    """A digit on a sticky note or a card lying on a darker desk: the desk was most of the picture's paper,
    so the note passed for light ink and the digit for a hole in it (23 of 100 held-out digits read right
    in session 29's throwaway check, 198 of 200 with `_sheet`)."""
    pages, references = [], []
    for index in range(12):
        page = _canvas(mnist_test.images[index], 6, 120, 60)
        references.append(to_mnist(page).image)
        pages.append(_on_desk(page, angle=-20 + 3.5 * index, desk=0.2 + 0.03 * index, spare=1.2 + 0.05 * index,
                              shift=(-1) ** index * 0.7))
    scores = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(scores) > 0.95 and min(scores) > 0.85, scores
    monkeypatch.setattr(preprocess, "_sheet", lambda *args: None)
    without = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(without) < np.median(scores) - 0.1, without  # the rule is what reads them


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, 9999), angle=st.floats(-20, 20), desk=st.floats(0.15, 0.55), spare=st.floats(1.2, 1.8),
       shift=st.floats(-0.7, 0.7))
def test_note_on_a_desk_property(mnist_test, index, angle, desk, spare, shift):
    """However the note is turned and placed round the digit (with some paper round the ink: a stroke that
    runs into the note's edge cuts the note's outline, a known limit), on a darker desk the 28x28 is the
    one the digit gives on a page that fills the photo."""
    page = _canvas(mnist_test.images[index], 6, 120, 60)
    out = to_mnist(_on_desk(page, angle, desk, spare, shift)).image
    assert max(_corr(s, to_mnist(page).image) for s in _shifts(out)) > 0.85


def _sheet_check(image: np.ndarray) -> bool:
    """Whether `_sheet` takes `image` (grey, 0-255) for a sheet on a desk."""
    grey, _, _ = preprocess._decode(image, preprocess._WORK_SIDE)
    return preprocess._sheet(grey, max(1, int(np.sqrt(grey.size / 3000)))) is not None


def test_pages_that_are_no_sheet_on_a_desk(mnist_test):
    """What a sheet must not be taken for: a page that fills the photo, a dark table edge along it, a hard
    shadow across it (its lit side is bounded by the photo's edge and the digit crosses into the dark
    side), chalk on a board (a ring of chalk, a bold stroke), MNIST itself."""
    digit = mnist_test.images[0]
    page = _canvas(digit, 6, 120, 60)
    table = page.copy()
    table[:, :90] = 40
    board = np.full((300, 400), 40, dtype=np.uint8)
    ring = board.copy()
    yy, xx = np.mgrid[0:300, 0:400]
    ring[np.abs(np.hypot((yy - 150) / 90, (xx - 200) / 60) - 1) < 0.12] = 230  # a chalk 0
    stroke = board.copy()
    stroke[60:240, 180:215] = 230  # a bold chalk 1
    for name, image in [("plain", page), ("table edge", table), ("shadow", _shadowed(page, 0, 0.55)),
                        ("diagonal shadow", _shadowed(page, 30, 0.5)), ("chalk 0", ring), ("chalk 1", stroke),
                        ("MNIST", digit)]:
        assert not _sheet_check(image), name
    assert _sheet_check(_on_desk(page, 10, 0.3))


# ---------------------------------------------------------------------------------- glare on glossy paper


def _glared(page: np.ndarray, at: tuple[float, float] = (0.5, 0.5), radius: float = 0.25, strength: float = 0.6,
            paper: float = 0.75) -> np.ndarray:
    """`page` (grey, 0-255) photographed with its paper at `paper` of white, under a lamp's reflection: a
    round spot `at` (y, x) of the way across the ink's box, `radius` of its height, lifting what lies under
    it `strength` of its way to white at the centre (a screen blend: not how `synth` draws glare)."""
    ys, xs = np.nonzero(page < 128)
    cy, cx = ys.min() + at[0] * np.ptp(ys), xs.min() + at[1] * np.ptp(xs)
    y, x = np.mgrid[0:page.shape[0], 0:page.shape[1]].astype(np.float32)
    spot = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (radius * (np.ptp(ys) + 1)) ** 2))
    lit = page.astype(np.float32) / 255 * paper
    return np.round((lit + (1 - lit) * strength * spot) * 255).astype(np.uint8)


def test_glare_on_the_digit_is_taken_off(mnist_test, monkeypatch):
    """A lamp's reflection over part of the digit: paper turns white and ink light grey there, the fitted
    paper level cannot bend up into the spot, and the strokes under it fell under the threshold (191 of 200
    held-out digits read right in session 28's throwaway check, 199 with `_without_glare`)."""
    pages, references = [], []
    for index in range(12):
        page = _canvas(mnist_test.images[index], 6, 120, 60)
        references.append(to_mnist(page).image)
        pages.append(_glared(page, at=(0.2 + 0.06 * index, 0.8 - 0.05 * index), radius=0.2 + 0.01 * index,
                             strength=0.5 + 0.02 * index))
    scores = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(scores) > 0.93 and min(scores) > 0.85, scores
    monkeypatch.setattr(preprocess, "_without_glare", lambda *args, **kwargs: None)
    without = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.mean(without) < np.mean(scores) - 0.1, without  # the rule is what reads them


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, 9999), y=st.floats(0, 1), x=st.floats(0, 1), radius=st.floats(0.15, 0.35),
       strength=st.floats(0.2, 0.7), paper=st.floats(0.6, 0.85))
def test_glare_property(mnist_test, index, y, x, radius, strength, paper):
    """Wherever the spot falls on the digit, however wide and strong, taking the glare off does no harm:
    the 28x28 is at least as close to the unglared one's as without the rule (0.05 for rounding). How much
    it helps is the test above's; a spot can also wash out a stroke entirely, or a stray mark that the
    unglared page keeps."""
    page = _canvas(mnist_test.images[index], 6, 120, 60)
    reference = to_mnist(page).image
    image = _glared(page, (y, x), radius, strength, paper)
    score = max(_corr(s, reference) for s in _shifts(to_mnist(image).image))
    real = preprocess._without_glare
    try:
        preprocess._without_glare = lambda *args, **kwargs: None
        without = max(_corr(s, reference) for s in _shifts(to_mnist(image).image))
    finally:
        preprocess._without_glare = real
    assert score >= without - 0.05, (score, without)


def _fine_pen(digit: np.ndarray) -> np.ndarray:
    """`digit` written with a fine pen (`synth`'s hairline: the stroke's centre line, 1-3 px) on a white
    300x400 page, 8x MNIST's size."""
    layer = synth._ink_layer(digit, 8.0, 0.0, "hairline", np.random.default_rng(0))
    page = np.full((300, 400), 255, np.uint8)
    page[40:40 + layer.shape[0], 100:100 + layer.shape[1]] = np.round(255 * (1 - 0.9 * layer)).astype(np.uint8)
    return page


def test_glare_over_a_fine_pen_is_not_taken_for_light_ink(mnist_test, monkeypatch):
    """A fine pen's strokes weigh little, so a bright spot outweighed them: the page passed for light ink on
    dark paper and the spot was read as the digit (a 0 or an 8; fine pens under glare read 42 % right in
    development on held-out renderings). With the glare taken off, dark ink outweighs what is left."""
    pages, references = [], []
    for index in range(12):
        page = _fine_pen(mnist_test.images[index])
        references.append(to_mnist(np.uint8(page * 0.75)).image)
        pages.append(_glared(page, at=(0.3 + 0.04 * index, 0.7 - 0.04 * index), radius=0.3, strength=0.6))
    scores = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert min(scores) > 0.95, scores
    monkeypatch.setattr(preprocess, "_without_glare", lambda *args, **kwargs: None)
    without = [max(_corr(s, r) for s in _shifts(to_mnist(p).image)) for p, r in zip(pages, references, strict=True)]
    assert np.median(without) < 0.7, without  # the spot was the digit


def test_light_ink_keeps_its_polarity(mnist_test, monkeypatch):
    """Chalk on a board and white-on-black digits are light ink, which the glare rule must not turn dark:
    the closing bridges light strokes as it bridges a glare spot, so on such pages the rule asks for a region
    that is mostly lit paper, and for dark ink to outweigh the rest once the glare is off. Their 28x28s stay
    bit for bit what they are without the rule."""
    board = np.full((300, 400), 40, dtype=np.uint8)
    yy, xx = np.mgrid[0:300, 0:400]
    ring = board.copy()
    ring[np.abs(np.hypot((yy - 150) / 90, (xx - 200) / 60) - 1) < 0.12] = 230  # a chalk 0
    pages = [ring, 255 - _canvas(mnist_test.images[1], 6, 120, 60) // 2, 255 - _fine_pen(mnist_test.images[2])]
    pages += [np.uint8(np.asarray(Image.fromarray(d).resize((28 * k, 28 * k), Image.BILINEAR)))
              for d, k in zip(mnist_test.images[3:6], (3, 5, 10), strict=True)]
    with_rule = [to_mnist(page).image for page in pages]
    monkeypatch.setattr(preprocess, "_without_glare", lambda *args, **kwargs: None)
    for page, image in zip(pages, with_rule, strict=True):
        assert np.array_equal(to_mnist(page).image, image)


def _glare_check(image: np.ndarray) -> bool:
    """Whether `_without_glare` finds glare on `image` (grey, 0-255) with dark ink."""
    grey, _, _ = preprocess._decode(image, preprocess._WORK_SIDE)
    step = max(1, int(np.sqrt(grey.size / 3000)))
    paper, sign, _ = preprocess._paper(grey, step)
    return sign < 0 and preprocess._without_glare(grey, paper, step) is not None


def test_pages_without_glare_are_left_alone(mnist_test):
    """What glare must not be taken for: paper at any level, white paper, light falling off across the page
    or towards its corners, noise, JPEG's ringing along the strokes, ruled lines, a bold digit."""
    page = _canvas(mnist_test.images[0], 6, 120, 60).astype(np.float32)
    y, x = np.mgrid[0:300, 0:400].astype(np.float32)
    vignette = 1 - 0.3 * (((y - 150) / 150) ** 2 + ((x - 200) / 200) ** 2)
    ruled = page * np.where(np.mod(y, 30) < 2, 0.7, 1.0)
    noisy = page * 0.7 + np.random.default_rng(0).normal(0, 12, page.shape)
    bold = ndi.minimum_filter(page, 15)
    jpeg = np.asarray(Image.open(io.BytesIO(_save(Image.fromarray(np.uint8(page * 0.75)), "JPEG", quality=30))))
    pages = {"grey": page * 0.7, "white": page, "ramp": page * np.linspace(0.5, 0.9, 400)[None, :],
             "vignette": page * 0.8 * vignette, "noisy": noisy, "jpeg": jpeg, "ruled": ruled * 0.75,
             "bold": bold * 0.75}
    for name, image in pages.items():
        assert not _glare_check(np.uint8(np.clip(image, 0, 255))), name
    assert _glare_check(_glared(np.uint8(page)))


# ---------------------------------------------------------------------------------------- file formats


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def page(mnist_test):
    """A digit as dark ink on a 168x168 white page, and the 28x28 it should become."""
    digit = mnist_test.images[3]
    return _canvas(digit, 4, 28, 28, size=(168, 168)), to_mnist(digit).image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_formats(page, fmt):
    pixels, expected = page
    out = to_mnist(_save(Image.fromarray(pixels), fmt))
    assert out.has_ink and _corr(out.image, expected) > 0.9


def test_paths_pil_images_and_arrays(page, tmp_path):
    pixels, expected = page
    path = tmp_path / "digit.png"
    path.write_bytes(_save(Image.fromarray(pixels), "PNG"))
    sources = [path, str(path), Image.fromarray(pixels), pixels, pixels.astype(np.float32) / 255,
               pixels.astype(np.uint16) * 257, np.stack([pixels] * 3, axis=-1), pixels > 128]
    for source in sources:
        out = to_mnist(source)
        assert out.has_ink and _corr(out.image, expected) > 0.9, type(source)


def test_16_bit_png(page):
    pixels, expected = page
    data = _save(Image.fromarray(pixels.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert _corr(to_mnist(data).image, expected) > 0.9
    assert load_image(data).max() <= 1.0


def test_palette_png(page):
    pixels, expected = page
    rgb = Image.fromarray(np.stack([pixels, pixels // 2 + 100, pixels], axis=-1))
    data = _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert _corr(to_mnist(data).image, expected) > 0.9


def test_transparent_canvas_export(page):
    """A drawing app's PNG: black strokes on a fully transparent background whose RGB is black too."""
    pixels, expected = page
    rgba = np.zeros(pixels.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = 255 - pixels
    out = to_mnist(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.has_ink and _corr(out.image, expected) > 0.9


def test_coloured_ink_on_coloured_paper(page):
    pixels, expected = page
    ink = (255 - pixels)[..., None] / 255.0
    paper, pen = np.array([240, 220, 90]), np.array([40, 60, 200])  # blue ink on yellow paper
    rgb = (paper * (1 - ink) + pen * ink).astype(np.uint8)
    assert _corr(to_mnist(rgb).image, expected) > 0.9


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg(page, orientation):
    pixels, expected = page
    upright = Image.fromarray(pixels)
    # what a phone stores: the sensor's pixels, plus the tag saying how to turn them upright
    stored = upright.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                                8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = to_mnist(_save(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert _corr(out.image, expected) > 0.9


# ------------------------------------------------------------------------------------------ bad input


def test_blank_and_noise_have_no_ink():
    rng = np.random.default_rng(6)
    blanks = [np.full((300, 400), 255, np.uint8), np.zeros((50, 50), np.uint8),
              (np.linspace(80, 250, 400)[None, :] * np.ones((300, 1))).astype(np.uint8),  # a lighting ramp
              (rng.random((300, 400)) * 255).astype(np.uint8),  # uniform noise
              np.clip(128 + 30 * rng.standard_normal((200, 200)), 0, 255).astype(np.uint8),
              (rng.random((28, 28)) * 255).astype(np.uint8),
              (rng.random((400, 300, 3)) * 255).astype(np.uint8)]
    for blank in blanks:
        out = to_mnist(blank)
        assert not out.has_ink and out.box is None and not out.image.any()
    assert not to_mnist(_save(Image.fromarray(blanks[0]), "JPEG")).has_ink


def _forged_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb for the price of 70 bytes."""
    data = _save(Image.new("1", (1, 1)), "PNG")
    header = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + header
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


@pytest.mark.parametrize("size", [(30000, 30000), (7000, 7000)])
def test_decompression_bomb_is_refused_fast(size):
    data = _forged_png(*size)
    if size[0] * size[1] < 2 * Image.MAX_IMAGE_PIXELS:  # Pillow itself refuses the bigger one on open
        assert Image.open(io.BytesIO(data)).size == size
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large"):
        to_mnist(data)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20_000_000


def test_bad_inputs_raise_image_error(tmp_path, page):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_bytes(b"this is not an image, just some text\n" * 10)
    truncated = _save(Image.fromarray(page[0]), "JPEG")
    cases = {
        "empty file": empty, "not an image": text, "No such file": tmp_path / "missing.png",
        "directory": tmp_path, "empty image data": b"", "not an image in a format": b"hello world",
        "truncated": truncated[: len(truncated) // 2],
    }
    for message, source in cases.items():
        with pytest.raises(ImageError, match=message) as info:
            to_mnist(source)
        if not isinstance(source, bytes):
            assert str(source) in str(info.value)  # names the file
        assert "\n" not in str(info.value)
    for array in [np.zeros((2, 2)), np.zeros((10, 10, 5)), np.full((20, 20), np.nan), np.zeros(5)]:
        with pytest.raises(ImageError):
            to_mnist(array)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_corrupt_png_is_an_error_not_a_partial_digit(page):
    """A PNG whose pixel stream breaks half-way used to be read from its partial pixels (getexif() loaded it
    and swallowed the error): it must be an ImageError, for the API and for rows as well."""
    grey = page[0]
    raw = b"".join(b"\0" + grey[y].tobytes() for y in range(grey.shape[0]))
    z = zlib.compress(raw, 9)
    broken = z[: len(z) // 2] + b"\xde\xad\xbe\xef" * 8 + z[len(z) // 2 + 32:]
    header = struct.pack(">IIBBBBB", grey.shape[1], grey.shape[0], 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", broken) + _png_chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="truncated or corrupt image"):
        to_mnist(data)
    from digitrec.segment import split_digits
    with pytest.raises(ImageError, match="truncated or corrupt image"):
        split_digits(data)


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PPM", "PDF", "EPS"])
def test_formats_outside_the_documented_ones_are_refused(tmp_path, fmt):
    """Pillow opens many formats, EPS and PDF through Ghostscript (a program run on the input): only the
    documented six are read, whatever the file's name."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).line((32, 10, 32, 54), fill="black", width=6)
    if fmt == "EPS":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    else:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        data = buffer.getvalue()
    path = tmp_path / "digit.png"  # a misleading name changes nothing
    path.write_bytes(data)
    for source in (data, path):
        with pytest.raises(ImageError, match=r"not an image in a format read here \(PNG, JPEG, GIF, BMP, TIFF, WebP\)"):
            to_mnist(source)
    if fmt != "PDF":  # a caller's own PIL image is refused too, an EPS before Ghostscript runs (Pillow opens no PDF)
        with Image.open(io.BytesIO(data)) as opened, pytest.raises(ImageError, match="not an image in a format"):
            to_mnist(opened)


def test_phone_photo_speed(mnist_test):
    """A loose guard against a 10x slowdown (the benchmark measures properly): ~2.5 ms expected."""
    photo = encode(render_user_like(mnist_test.images[0], np.random.default_rng(7), "paper+lighting+noise",
                                    size=(800, 1000)), "JPEG", 85)
    to_mnist(photo)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        to_mnist(photo)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.025


@pytest.mark.parametrize("side", [28, 100, 280, 1000, 3000])
def test_a_dot_or_speck_is_no_digit(side):
    """A tap on the page leaves a filled dot, and a photo may hold only a speck: a digit model reads either
    as a confident 0 or 4. No MNIST digit is a solid blob (`_DOT`), so these are "no digit", as blank pages
    are; digits drawn with a pen as fat are still read."""
    for diameter in (0.012, 0.065, 0.2):
        image = Image.new("L", (side, side), 255)
        c, r = side / 2, max(1.0, diameter * side / 2)
        ImageDraw.Draw(image).ellipse((c - r, c - r, c + r, c + r), fill=17)
        out = to_mnist(image)
        assert not out.has_ink or side == 28 and diameter == 0.2, (side, diameter)
    pen = max(1, int(0.06 * side))
    one, zero = Image.new("L", (side, side), 255), Image.new("L", (side, side), 255)
    ImageDraw.Draw(one).line((side / 2, side / 4, side / 2, 3 * side / 4), fill=17, width=pen)
    ImageDraw.Draw(zero).ellipse((0.35 * side, side / 4, 0.65 * side, 3 * side / 4), outline=17, width=pen)
    assert to_mnist(one).has_ink and to_mnist(zero).has_ink


@pytest.mark.parametrize("size, radius, where", [((400, 240), 3, "centre"), ((800, 600), 1, "centre"),
                                                 ((800, 600), 3, "centre"), ((1600, 1200), 4, "centre"),
                                                 ((400, 240), 3, "corner"), ((800, 600), 3, "far corner")])
def test_a_small_dot_on_a_photo_sized_page_is_no_digit(size, radius, where):
    """Ink far smaller than the page is read again, closer (`_refine`). A region of a few source pixels was
    enlarged smoothly there, and the soft edges passed the dot for a stroke: a confident 0 or 4. At the page's
    edge the region is shifted inside, not cut to a few pixels."""
    page = Image.new("L", size, 235)
    c = {"centre": (size[0] // 2, size[1] // 2), "corner": (8, 8),
         "far corner": (size[0] - 7, size[1] - 7)}[where]
    ImageDraw.Draw(page).ellipse((c[0] - radius, c[1] - radius, c[0] + radius, c[1] + radius), fill=20)
    assert not to_mnist(page).has_ink
    if size[0] <= 800 and where == "centre":  # a 7 20 px tall beside it is still a digit (larger pages: faded)
        ImageDraw.Draw(page).line([(c[0] + 40, c[1] - 10), (c[0] + 52, c[1] - 10), (c[0] + 43, c[1] + 10)],
                                  fill=20, width=2)
        assert to_mnist(page).has_ink


def test_no_mnist_digit_is_taken_for_a_dot(mnist_test):
    """The dot rule's margin, on the digits it was measured on (the training set) and the test set."""
    assert all(to_mnist(img).has_ink for img in mnist_test.images[:2000])


@pytest.mark.parametrize("region", [(1000, 1000, 2000, 2000), (10, 10, 10, 10), (-50, -50, 100, 100),
                                    (-300, 0, 400, 240)])
def test_ink_map_refuses_a_region_outside_the_image(region):
    """A region outside the image was a ZeroDivisionError; one starting at a negative column silently read
    numpy's wrapped-around columns."""
    page = np.full((240, 400), 235, np.uint8)
    page[100:140, 100:110] = 20
    for source in (page, Image.fromarray(page)):
        with pytest.raises(ImageError, match="is not inside the 400x240 image"):
            preprocess.ink_map(source, region=region)
    assert preprocess.ink_map(page, region=(50, 50, 200, 200)).has_ink
