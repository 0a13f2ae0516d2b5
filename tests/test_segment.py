"""segment: rows of MNIST digits (synth.compose_number) split into one MNIST-normalised crop per digit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitrec.data import load_dataset
from digitrec.errors import DataError, ImageError
from digitrec.preprocess import to_mnist
from digitrec.segment import segment_with_scores, split_digits
from digitrec.synth import compose_number


@pytest.fixture(scope="module")
def mnist_test():
    try:
        return load_dataset("mnist", "test", offline=True, progress=False)
    except DataError as e:  # no MNIST here: set DIGITREC_DATA to a folder holding mnist/
        pytest.skip(f"MNIST not available: {e}")


def _centres(boxes) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2 for b in boxes])


def test_composed_numbers(mnist_test):
    """200 fixed rows of 4-10 digits, a quarter of neighbours touching or overlapping, half of them drawn
    user-like (dark on light, 2-5x larger, uneven light, noise)."""
    rng = np.random.default_rng(0)
    right, placed = 0, 0
    for i in range(200):
        image, text, truth = compose_number(mnist_test.images, mnist_test.labels, rng, user_like=i % 2 == 1,
                                            return_boxes=True)
        crops = split_digits(image)
        centres = _centres(c.box for c in crops)
        assert np.all(np.diff(centres) > 0), "left to right"
        for crop in crops:
            assert crop.image.shape == (28, 28) and crop.image.dtype == np.float32
            assert 0 <= crop.image.min() and crop.image.max() <= 1 and crop.image.any()
        if len(crops) == len(text):
            right += 1
            # each crop sits on its digit: its centre inside that digit's true box
            placed += all(x0 <= c < x1 for c, (x0, _, x1, _) in zip(centres, truth, strict=True))
    # Measured 0.94: the misses are touching pairs that look like one digit and open digits (4, 6, 0)
    # that look like two; geometry alone cannot tell them apart.
    assert right / 200 >= 0.9
    assert placed / right >= 0.98


def test_separate_digits_are_all_found(mnist_test):
    rng = np.random.default_rng(1)
    for _ in range(30):
        picks = rng.integers(0, len(mnist_test), int(rng.integers(2, 8)))
        row = np.concatenate([np.pad(mnist_test.images[i], ((4, 4), (2, 2))) for i in picks], axis=1)
        crops = split_digits(row)
        assert len(crops) == len(picks)
        assert np.all(np.diff(_centres(c.box for c in crops)) > 0)


def test_single_digit_matches_to_mnist(mnist_test):
    """One normalisation for both paths: a lone digit comes out of split_digits as to_mnist makes it."""
    for i in range(20):
        digit = mnist_test.images[i]
        crops = split_digits(digit)
        assert len(crops) == 1
        assert np.abs(crops[0].image - to_mnist(digit).image).mean() < 0.01


def test_blank_has_no_digits():
    assert split_digits(np.full((60, 300), 255, dtype=np.uint8)) == []
    with pytest.raises(ImageError):
        split_digits(b"not an image")


def test_read_number_recognition_guided(mnist_test):
    """Recognizer.read_number (segment_with_scores + the bundled best model) on 100 fixed composed rows of
    4-10 digits, a quarter of neighbours touching, half user-like: whole strings read exactly."""
    from digitrec import Recognizer

    rec = Recognizer.load(model="best")
    rng = np.random.default_rng(0)
    right = 0
    for i in range(100):
        image, text = compose_number(mnist_test.images, mnist_test.labels, rng, user_like=i % 2 == 1)
        reading = rec.read_number(image)
        assert all(p.box is not None for p in reading.digits)
        right += reading.text == text
    # Measured 98/100 (with candidate cuts as wiggly as `split_digits`'s: 96; before the lattice across groups
    # and the logit evidence: 89; split_digits + classify: 87); misses: touching pairs without a clean cut
    # path, digits the classifier misreads even alone.
    assert right >= 95


def test_segment_with_scores_blank_and_single(mnist_test):
    def uniform(images):
        return np.full((len(images), 10), 0.1)

    assert segment_with_scores(np.full((60, 300), 255, dtype=np.uint8), uniform) == []
    crops = segment_with_scores(mnist_test.images[0], uniform)
    assert len(crops) == 1
    assert np.abs(crops[0].image - to_mnist(mnist_test.images[0]).image).mean() < 0.01


@pytest.fixture(scope="module")
def best():
    from digitrec import Recognizer

    return Recognizer.load(model="best")


def _row(digits: list[np.ndarray], gaps: list[int]) -> np.ndarray:
    """MNIST digits side by side (trimmed to their ink columns), `gaps` px apart (<= 0: touching)."""
    pieces = [d[:, np.flatnonzero(d.any(axis=0))[0]:np.flatnonzero(d.any(axis=0))[-1] + 1] for d in digits]
    width = sum(p.shape[1] for p in pieces) + sum(gaps) + 12
    row = np.zeros((36, width), dtype=np.uint8)
    x = 6
    for piece, gap in zip(pieces, [*gaps, 0], strict=True):
        np.maximum(row[4:32, x:x + piece.shape[1]], piece, out=row[4:32, x:x + piece.shape[1]])
        x += piece.shape[1] + gap
    return row


def test_touching_pairs_are_split(mnist_test, best):
    """Two digits overlapping by 1 px (their ink merges into one component), a 1 among them: the classic
    failure is one confident digit read from the pair. Fixed picks; most pairs must come out right."""
    rng = np.random.default_rng(5)
    ones = np.flatnonzero(mnist_test.labels == 1)
    right = 0
    for _ in range(30):
        a, b = int(rng.choice(ones)), int(rng.integers(len(mnist_test)))
        if rng.random() < 0.5:
            a, b = b, a
        image = _row([mnist_test.images[a], mnist_test.images[b]], [-1])
        right += best.read_number(image).text == f"{mnist_test.labels[a]}{mnist_test.labels[b]}"
    assert right >= 21  # measured 23/30 (before the lattice across groups: 22)


def test_broken_strokes_are_one_digit(mnist_test, best):
    """A digit broken by a 2 px gap across its middle (two ink groups, one above the other, or a 7's
    stem apart from its bar) between two whole neighbours is still one digit."""
    rng = np.random.default_rng(6)
    right = 0
    for _ in range(20):
        i, j, k = rng.integers(len(mnist_test), size=3)
        broken = mnist_test.images[j].copy()
        rows = np.flatnonzero(broken.any(axis=1))
        cut = int(rng.integers(rows[0] + 6, rows[-1] - 5))
        broken[cut:cut + 2] = 0
        image = _row([mnist_test.images[i], broken, mnist_test.images[k]], [6, 6])
        right += best.read_number(image).text == "".join(str(mnist_test.labels[n]) for n in (i, j, k))
    assert right >= 14  # measured 16/20; the misses are mostly digits the gap makes unreadable


def test_read_number_bad_input(best):
    """Blank pages give an empty, unsure reading; noise gives some reading; unreadable input an ImageError."""
    blank = best.read_number(np.full((80, 400), 255, np.uint8))
    assert blank.text == "" and blank.unsure and blank.digits == []
    noise = best.read_number(np.random.default_rng(0).integers(0, 256, (120, 500), dtype=np.uint8))
    assert isinstance(noise.text, str) and all(c.isdigit() for c in noise.text)
    for bad in (b"not an image", np.zeros((1, 1), np.uint8)):  # a clear one-line error
        with pytest.raises(ImageError):
            best.read_number(bad)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list[tuple[float, float]]:
    t = np.radians(np.linspace(a0, a1, 40))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True))


# Pen strokes of a few digits in a 100x140 box, as a drawing program or a new user's script draws them.
_GLYPHS = {
    "0": [_arc(50, 70, 38, 62, 0, 360)],
    "4": [[(70, 10), (10, 95), (92, 95)], [(70, 10), (70, 135)]],
    "7": [[(12, 12), (90, 12), (40, 135)]],
    "2": [_arc(50, 45, 35, 35, 200, 380)[:-8] + [(15, 132), (88, 132)]],
}


@pytest.mark.parametrize("pen", [6, 10])
def test_crisp_pen_strokes_read_as_drawn(best, pen):
    """Strokes drawn without anti-aliasing cross the same ink along whole stretches of columns, so the cut
    cost zig-zags between two values; every other column once became a candidate cut, a digit had more
    candidates than a piece may span, and a lone 0 read "12", 40 read "610" (a new user's drawings)."""
    from PIL import Image, ImageDraw

    for text in ("0", "4", "40", "04", "2047", "7420"):
        page = Image.new("L", (60 + 120 * len(text), 240), 240)
        draw = ImageDraw.Draw(page)
        for i, ch in enumerate(text):
            for line in _GLYPHS[ch]:
                draw.line([(40 + 120 * i + x, 45 + y) for x, y in line], fill=30, width=pen, joint="curve")
        assert best.read_number(page).text == text, (text, pen)


def _page_of(rows: list[str], pen: int = 8, width: int | None = None, at: int = 40) -> np.ndarray:
    """`rows` of `_GLYPHS` digits drawn crisply one under another on grey paper, `at` px from the left of a
    page `width` px wide."""
    from PIL import Image, ImageDraw

    width = width or 80 + 120 * max(map(len, rows))
    page = Image.new("L", (width, 60 + 180 * len(rows)), 235)
    draw = ImageDraw.Draw(page)
    for r, text in enumerate(rows):
        for i, ch in enumerate(text):
            for line in _GLYPHS[ch]:
                draw.line([(at + 120 * i + x, 30 + 180 * r + y) for x, y in line], fill=30, width=pen, joint="curve")
    return np.asarray(page)


def test_two_rows_read_the_top_one_and_say_the_rest_was_left_out(best):
    """Two rows of equal length put the medians of the digits' tops and bottoms between the rows, and the
    line kept no digit at all: a ValueError from every method (a new user's two-line image)."""
    for method in ("fused", "segment", "reader"):
        reading = best.read_number(_page_of(["2047", "7420"]), method=method)
        assert reading.ink_left_out and reading.unsure, method
        assert method == "reader" or reading.text == "2047", (method, reading.text)
    assert split_digits(_page_of(["40", "72"]))  # the lower level: digits, not an exception


def test_a_row_in_a_wide_image_is_read_closer(best, mnist_test, tmp_path):
    """The whole image is read at 800 px, so a row pasted into a 3,000 px wide page came out a third of its
    size and 4 of these 10 rows were misread (session 35). Its own region is now read again at full working
    resolution: 9 of 10, the boxes still in the page's pixels."""
    from PIL import Image

    place = np.random.default_rng(5)
    right = 0
    for k in range(10):
        strip, text = compose_number(mnist_test.images, mnist_test.labels, np.random.default_rng(k), user_like=True)
        h, w = strip.shape
        page = np.full((200, 3000), int(np.median(strip)), np.uint8)
        x, y = int(place.integers(0, 3000 - w)), int(place.integers(0, 200 - h))
        page[y:y + h, x:x + w] = strip
        reading = best.read_number(page)
        right += reading.text == text
        found = np.array([d.box for d in reading.digits]).reshape(-1, 4)
        assert (found[:, 0] >= x - 5).all() and (found[:, 2] <= x + w + 5).all()  # page pixels, on the row
        assert (found[:, 1] >= y - 5).all() and (found[:, 3] <= y + h + 5).all()
    assert right >= 8
    path = tmp_path / "wide.png"  # an open file is read once, though the zoom decodes the image twice
    Image.fromarray(page).save(path)
    with open(path, "rb") as f:
        assert len(split_digits(f)) == len(split_digits(page))


def _with_separator(mnist, rng: np.random.Generator, text: str) -> np.ndarray:
    """MNIST test digits for the digits of `text`, a pen's separator at MNIST scale for the rest, 4 px apart,
    dark on white and enlarged 3x (as a new user's rows with a dash or a colon were)."""
    from PIL import Image, ImageDraw

    cells = []
    for ch in text:
        if ch.isdigit():
            digit = mnist.images[int(rng.choice(np.flatnonzero(mnist.labels == int(ch))))]
            cols = np.flatnonzero(digit.max(axis=0) > 30)
            cells.append(digit[:, cols[0]:cols[-1] + 1])
            continue
        mark = Image.new("L", (8 if ch == "." else 14, 28), 0)
        draw = ImageDraw.Draw(mark)
        if ch == "-":
            draw.line([(1, 15), (12, 14)], fill=255, width=3)
        for y in {":": (8, 19), ".": (21,)}.get(ch, ()):
            draw.ellipse([2 if ch == "." else 4, y, 6 if ch == "." else 8, y + 4], fill=255)
        cells.append(np.asarray(mark))
    row = np.zeros((52, sum(c.shape[1] for c in cells) + 4 * (len(cells) - 1) + 24), np.uint8)
    x = 12
    for cell in cells:
        np.maximum(row[12:40, x:x + cell.shape[1]], cell, out=row[12:40, x:x + cell.shape[1]])
        x += cell.shape[1] + 4
    page = Image.fromarray(255 - row)
    return np.asarray(page.resize((page.width * 3, page.height * 3), Image.BICUBIC))


@pytest.mark.parametrize("separator", ["-", ":"])
def test_separators_are_left_out_not_read_as_digits(best, mnist_test, separator):
    """The readers know only digits: a dash between digits was read as 5 and a colon as 2 (joined to the
    digit beside it, or its two dots to each other), with confidence. Short marks that stand clear of every
    digit are dropped as specks are, so "838-5127" reads "8385127" and "36:15" "3615": 6 of 6 each, against
    0 and 0 before (session 35). Decimal points were dropped already."""
    rng = np.random.default_rng(14)
    right = 0
    for _ in range(6):
        digits = "".join(str(d) for d in rng.integers(0, 10, 7))
        text = digits[:3] + separator + digits[3:] if separator != ":" else digits[:2] + ":" + digits[2:4]
        page = _with_separator(mnist_test, rng, text)
        right += best.read_number(page).text == text.replace(separator, "")
    assert right >= 5


def test_a_thumbnail_row_is_enlarged_before_reading(best, mnist_test):
    """A row 14 px tall (its digits about 10 px) read 10 of 20 right in a reviewer's check: strokes merge and
    the gaps between digits vanish in the threshold. Such rows are enlarged first (`segment._enlarged`):
    these 10 read 9 right, against 4 before (bundled `best`, session 35)."""
    from PIL import Image

    rng = np.random.default_rng(100)
    right = 0
    for _ in range(10):
        picks = rng.choice(len(mnist_test.images), int(rng.integers(4, 9)), replace=False)
        inks = [img[:, cols[0]:cols[-1] + 1] for img in mnist_test.images[picks]
                for cols in [np.flatnonzero(img.max(axis=0) > 30)]]
        gap = np.zeros((28, 4), np.uint8)
        row = np.pad(np.concatenate([part for ink in inks for part in (ink, gap)][:-1], axis=1), 6)
        page = Image.fromarray(255 - row)
        small = page.resize((round(page.width * 14 / page.height), 14), Image.LANCZOS)
        reading = best.read_number(small)
        right += reading.text == "".join(str(d) for d in mnist_test.labels[picks])
        assert all(0 <= d.box[0] < d.box[2] <= small.width for d in reading.digits)  # boxes in its own pixels
    assert right >= 8


def _dots(size: tuple[int, int], centres: list[tuple[int, int]], radius: int) -> Image.Image:
    page = Image.new("L", size, 235)
    for cx, cy in centres:
        ImageDraw.Draw(page).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=20)
    return page


@pytest.mark.parametrize("page", [_dots((160, 120), [(80, 60)], 3), _dots((400, 240), [(200, 120)], 8),
                                  _dots((400, 240), [(133, 120), (266, 120)], 6)], ids=["speck", "tap", "two-taps"])
def test_dots_alone_are_no_number(best, page):
    """A tap or a speck is no digit in a row either, as `to_mnist` says for one digit: every method read
    them as '0', '4' or '00' at confidence 1.0."""
    for method in ("auto", "reader", "fused", "segment"):
        reading = best.read_number(page, method=method)
        assert reading.text == "" and reading.unsure, (method, reading.text)
    assert split_digits(page) == []


def test_boxes_of_a_tiny_image_lie_inside_it(best):
    """An image under 24 px is enlarged when decoded and again as a thumbnail row: the boxes were in the
    enlarged pixels, up to 2.5x outside the image."""
    icon = Image.new("L", (16, 16), 235)
    ImageDraw.Draw(icon).line([(4, 2), (12, 2), (6, 13)], fill=30, width=1)
    for method in ("auto", "reader", "segment"):
        reading = best.read_number(icon, method=method)
        assert reading.digits, method
        assert all(0 <= d.box[0] < d.box[2] <= 16 and 0 <= d.box[1] < d.box[3] <= 16 for d in reading.digits), (
            method, [d.box for d in reading.digits])
