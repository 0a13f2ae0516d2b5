"""synth: user-like renderings are deterministic, well-formed, and look the way each style says."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitrec import synth
from digitrec.data import load_dataset
from digitrec.errors import DataError
from digitrec.preprocess import stroke_width
from digitrec.synth import BASES, EFFECTS, compose_number, random_style, render_user_like, user_like_set


@pytest.fixture(scope="module")
def mnist_test():
    try:
        return load_dataset("mnist", "test", offline=True, progress=False)
    except DataError as e:  # no MNIST here: set DIGITREC_DATA to a folder holding mnist/
        pytest.skip(f"MNIST not available: {e}")


def test_render_is_deterministic(mnist_test):
    digit = mnist_test.images[0]
    for seed in range(5):
        a = render_user_like(digit, np.random.default_rng(seed))
        b = render_user_like(digit, np.random.default_rng(seed))
        assert a.dtype == np.uint8 and np.array_equal(a, b)


@pytest.mark.parametrize("base", BASES)
def test_bases_shape_and_polarity(mnist_test, base):
    image = render_user_like(mnist_test.images[1], np.random.default_rng(0), base, size=(300, 240))
    if base == "canvas":  # a drawing app's export: ink only in alpha, RGB black
        assert image.shape == (300, 240, 4)
        assert not image[..., :3].any() and image[..., 3].max() == 255
        return
    assert image.shape == ((300, 240, 3) if base == "colour" else (300, 240))
    paper = np.median(image)
    assert (paper < 100) if base == "chalk" else (paper > 150)


def test_every_effect_renders(mnist_test):
    rng = np.random.default_rng(1)
    for effect in EFFECTS:
        image = render_user_like(mnist_test.images[2], rng, f"paper+{effect}", size=(200, 200))
        shape = (200, 200, 3) if effect == "highlight" else (200, 200)  # a highlighter's colour is the point
        assert image.shape == shape and image.std() > 5


@pytest.mark.parametrize("effect", ["ring", "underline"])
def test_ring_and_underline_are_drawn_around_the_digit(mnist_test, effect):
    """The ring surrounds the digit's ink, the underline lies under it, and neither is bolder than the
    digit's own strokes (the same pen)."""
    rng = np.random.default_rng(6)
    for index in range(4, 8):
        ink = synth._place(synth._ink_layer(mnist_test.images[index], 8.0, 0.0, "", rng), 400, 400, rng, 0.15)
        drawn = (synth._ring if effect == "ring" else synth._underline)(ink, rng) > 0.5
        (iy0, ix0), (iy1, ix1) = np.argwhere(ink > 0.5).min(axis=0), np.argwhere(ink > 0.5).max(axis=0)
        ys, xs = np.nonzero(drawn)
        if effect == "ring":
            assert ys.min() < iy0 and ys.max() > iy1 and xs.min() < ix0 and xs.max() > ix1
        else:
            assert ys.min() > iy1 and xs.min() < ix0 and xs.max() > ix1
        assert stroke_width(drawn.astype(np.float32)) <= 1.2 * stroke_width(ink) + 1


def test_shadow_darkens_one_side_of_an_edge_through_the_digit(mnist_test):
    """The shadow is a factor on the light: 1 on one side, 0.45-0.75 on the other, its edge crossing the
    digit's box (so the digit is partly in it)."""
    rng = np.random.default_rng(8)
    for index in range(4):
        ink = synth._place(synth._ink_layer(mnist_test.images[index], 8.0, 0.0, "", rng), 300, 400, rng)
        light = synth._shadow(ink, rng)
        assert light.max() > 0.99 and 0.44 < light.min() < 0.76
        ys, xs = np.nonzero(ink > 0.5)
        box = light[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.max() > 0.99 and box.min() < 0.8


def test_highlight_is_a_coloured_band_across_the_digit(mnist_test):
    """The highlighter is a colour factor: 1 off the band; on it, one channel passes nearly whole and
    another is cut; the band crosses the digit's box. The image comes out in colour, even on grey paper,
    and a board (chalk) is never highlighted."""
    rng = np.random.default_rng(8)
    for index in range(5):
        ink = synth._place(synth._ink_layer(mnist_test.images[index], 8.0, 0.0, "", rng), 300, 400, rng)
        light = synth._highlight(ink, rng)
        assert light.shape == (300, 400, 3) and light.max() > 0.99
        ys, xs = np.nonzero(ink > 0.5)
        box = light[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        darkest = box.reshape(-1, 3)[box.min(axis=2).argmin()]
        assert darkest.max() > 0.9 and darkest.min() < 0.6, darkest
    paper = render_user_like(mnist_test.images[0], np.random.default_rng(1), "paper+highlight", size=(200, 200))
    assert paper.ndim == 3 and np.ptp(paper.astype(int), axis=2).max() > 60
    chalk = render_user_like(mnist_test.images[0], np.random.default_rng(1), "chalk+highlight", size=(200, 200))
    plain = render_user_like(mnist_test.images[0], np.random.default_rng(1), "chalk", size=(200, 200))
    assert np.array_equal(chalk, plain)
    styles = [style for _, _, style in user_like_set(mnist_test.images, mnist_test.labels, 60, 3, ("highlight",))]
    assert all(("highlight" in s) == s.startswith(("paper", "colour")) for s in styles), styles


def test_sheet_lies_round_the_digit_on_a_darker_desk(mnist_test):
    """The sheet holds all the digit's ink with room to spare, the desk round it is 15-60 % of white, and
    chalk boards are never laid on a desk."""
    rng = np.random.default_rng(9)
    for index in range(5):
        ink = synth._place(synth._ink_layer(mnist_test.images[index], 6.0, 0.0, "", rng), 300, 400, rng, 0.25)
        sheet, desk = synth._sheet(ink, rng)
        assert sheet[ink > 0.05].min() > 0.9 and 0.05 < sheet.mean() < 0.95  # within its edge's blur
        assert 0.1 < float(np.median(desk)) < 0.65
    chalk = render_user_like(mnist_test.images[0], np.random.default_rng(1), "chalk+sheet", size=(200, 200))
    assert np.array_equal(chalk, render_user_like(mnist_test.images[0], np.random.default_rng(1), "chalk",
                                                  size=(200, 200)))


def test_glare_lightens_round_the_digit(mnist_test):
    """The glare adds light (0.15-0.5 of white at its peak, in linear light) in a spot centred on the digit's
    box, so a rendering with it is nowhere darker than without, and lighter on the digit; the image stays
    grey on grey paper, and a board (chalk) never has it."""
    rng = np.random.default_rng(10)
    for index in range(5):
        ink = synth._place(synth._ink_layer(mnist_test.images[index], 6.0, 0.0, "", rng), 300, 400, rng)
        light = synth._glare(ink, rng)
        ys, xs = np.nonzero(ink > 0.5)
        assert 0.15 <= light.max() <= 0.5 and light.min() >= 0
        peak = np.unravel_index(light.argmax(), light.shape)
        assert ys.min() <= peak[0] <= ys.max() and xs.min() <= peak[1] <= xs.max()
    digit = mnist_test.images[0]
    plain = render_user_like(digit, np.random.default_rng(1), "paper", size=(200, 200)).astype(int)
    glared = render_user_like(digit, np.random.default_rng(1), "paper+glare", size=(200, 200)).astype(int)
    assert glared.ndim == 2 and (glared >= plain).all() and (glared - plain)[plain < 128].max() > 40
    chalk = render_user_like(digit, np.random.default_rng(1), "chalk+glare", size=(200, 200))
    assert np.array_equal(chalk, render_user_like(digit, np.random.default_rng(1), "chalk", size=(200, 200)))


def test_hairline_is_thin(mnist_test):
    digit = mnist_test.images[3]
    normal = render_user_like(digit, np.random.default_rng(2), "paper", size=(800, 800))
    hair = render_user_like(digit, np.random.default_rng(2), "paper+hairline", size=(800, 800))
    assert (hair < 128).sum() < 0.5 * (normal < 128).sum()


def test_unknown_style_is_refused(mnist_test):
    with pytest.raises(ValueError, match="unknown style"):
        render_user_like(mnist_test.images[0], np.random.default_rng(0), "paper+sparkles")


def test_random_styles_are_consistent():
    rng = np.random.default_rng(3)
    for _ in range(300):
        base, *effects = random_style(rng).split("+")
        assert base in BASES and set(effects) <= set(EFFECTS)
        assert len({"thick", "thin", "hairline"} & set(effects)) <= 1
        if base == "canvas":
            assert set(effects) <= {"rotate", "thick", "thin"}


def test_user_like_set_is_fixed_and_decodable(mnist_test):
    a = user_like_set(mnist_test.images, mnist_test.labels, 12, seed=5)
    b = user_like_set(mnist_test.images, mnist_test.labels, 12, seed=5)
    assert len(a) == 12
    for (data_a, label_a, style_a), (data_b, label_b, style_b) in zip(a, b, strict=True):
        assert (label_a, style_a) == (label_b, style_b) and 0 <= label_a <= 9
        if isinstance(data_a, bytes):
            assert data_a == data_b
            fmt = style_a.rsplit(":", 1)[1]
            assert Image.open(io.BytesIO(data_a)).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
        else:
            assert np.array_equal(data_a, data_b) and style_a.endswith(":array")


def test_compose_number(mnist_test):
    rng = np.random.default_rng(4)
    for i in range(20):
        image, text, boxes = compose_number(mnist_test.images, mnist_test.labels, rng, user_like=i % 2 == 1,
                                            return_boxes=True)
        assert image.dtype == np.uint8 and image.ndim == 2
        assert 4 <= len(text) <= 10 and text.isdigit() and len(boxes) == len(text)
        assert all(a[0] < b[0] for a, b in zip(boxes, boxes[1:], strict=False))  # left to right
        assert all(0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0] for x0, y0, x1, y1 in boxes)
        assert (np.median(image) > 128) == (i % 2 == 1)  # user-like: dark on light; else MNIST's white on black
    image, text = compose_number(mnist_test.images, mnist_test.labels, rng, n_digits=7)
    assert len(text) == 7


def test_compose_number_picks_name_the_digits_used(mnist_test):
    """`return_picks` draws the very same row (same random stream) and names the digits in it."""
    plain, text = compose_number(mnist_test.images, mnist_test.labels, np.random.default_rng(9))
    image, text2, boxes, picks = compose_number(mnist_test.images, mnist_test.labels, np.random.default_rng(9),
                                                return_boxes=True, return_picks=True)
    assert np.array_equal(plain, image) and text == text2 and len(picks) == len(boxes) == len(text)
    assert "".join(str(int(mnist_test.labels[i])) for i in picks) == text
    _, _, only_picks = compose_number(mnist_test.images, mnist_test.labels, np.random.default_rng(9),
                                      return_picks=True)
    assert np.array_equal(only_picks, picks)
