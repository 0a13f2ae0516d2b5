"""One image with several digits in a row (a year, a phone number, a meter reading) -> one MNIST-normalised
28x28 per digit, left to right.

Digits start as the connected components of the cleaned ink (`preprocess.ink_map`). Short fragments (the
bar of a 5, a broken stroke) join the digit nearest in pixels. A component may hold several touching
digits: candidate cuts are the cheapest top-to-bottom paths through it, and a small dynamic programme
chooses how many pieces and where, trading the strokes a cut crosses against how MNIST-like each piece
is (height, width, weight relative to the row). Each piece is normalised by `preprocess.normalise`, so
it matches `to_mnist` exactly.

Geometry alone cannot tell every pair of touching digits from one digit with a gap (an open 4 looks like
a touching "L1"); on `synth.compose_number` rows (a quarter of neighbours touching) about 94% of rows of
4-10 digits come out with the right count. `segment_with_scores` lets a classifier take part: it scores
every candidate piece (runs of consecutive cut candidates, and pairs of close whole groups) in one batch
and the same programme adds -log(max probability) per digit; on those rows it reads about 1 point more
whole strings than `split_digits` followed by the classifier (e.g. 89% vs 87% on seed 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from PIL import Image

from digitrec.preprocess import (
    ImageSource,
    InkMap,
    crop_soft,
    digit_ink_left_out,
    ink_map,
    is_dot,
    load_image,
    normalise,
    readable,
    source_box,
    stroke_width,
)

__all__ = ["DigitCrop", "ink_left_out", "row_components", "row_ink", "segment_readings", "segment_with_scores",
           "split_digits"]

_SEGMENT_SIDE = 800  # working resolution: a row of ten digits still gets ~80 px per digit
_ZOOM = 2.0  # read the row's own region again when that gains at least this factor in resolution
_SMALL_TEXT = 14  # digits shorter than this (source px, in an image read at full size) are enlarged first
_FRAGMENT = 0.6  # a component shorter than this fraction of the text height is part of a digit
_MARK, _MARK_CLEAR = 0.35, 0.05  # a separator is at most this tall, and this far from any digit (of the height)
_DOT = 0.3  # a colon's dot is at most this big each way (of the height), and round
_DRIFT = 0.2  # ink cost of one sideways step of a cut path
# The cut programme, tuned on compose_number rows (seeds 1-2; tests use seed 0). Sizes are fractions of
# the text height, weights of the row's typical digit; a piece outside them is penalised.
_REWARD = 0.7  # per digit, in strokes cut: a cut between two digit-like pieces may cross this much
_TALL = 0.7  # shorter pieces are parts of a digit
_NARROW, _WIDE = 0.18, 1.0  # MNIST digits are rarely narrower (a thin 1) or wider
_LIGHT = 0.3  # lighter pieces are parts of a digit


@dataclass
class DigitCrop:
    """One digit of a row: `box` (x0, y0, x1, y1, end-exclusive) in source pixels, and `image`, float32
    [28, 28] in [0, 1], white on black, normalised exactly as `preprocess.to_mnist` does."""

    box: tuple[int, int, int, int]
    image: np.ndarray


def row_ink(source: ImageSource) -> InkMap:
    """The cleaned ink of a row at working resolution. Why a second look: the whole image is read at
    `_SEGMENT_SIDE`, so a number on a wide form or a large photo (a 120 px row in an 8,000 px strip) comes
    out a few pixels tall and its digits blur together. Where the ink fills only part of a large image,
    its region (with half a row's height of paper around it) is read again at full working resolution,
    as `preprocess.to_mnist` does for a small digit; where no ink is found at all, the image is first
    read at three times the resolution (a small row's strokes fade when a large image is shrunk)."""
    source = readable(source)  # an open file is read once: the image may be decoded up to three times
    ink = ink_map(source, max_side=_SEGMENT_SIDE)
    if not ink.has_ink and max(ink.scale) >= 2.5:
        ink = ink_map(source, max_side=3 * _SEGMENT_SIDE)
    live = np.flatnonzero(ink.mass > 0) if ink.has_ink else np.empty(0, np.intp)
    if live.size and max(ink.scale) <= 1.0:
        return _enlarged(source, ink, live)
    if live.size == 0 or max(ink.scale) < _ZOOM:
        return ink
    boxes = ink.boxes[live]
    x0, y0, x1, y1 = source_box(ink, (int(boxes[:, 0].min()), int(boxes[:, 1].min()),
                                      int(boxes[:, 2].max()), int(boxes[:, 3].max())))
    pad = 0.5 * (y1 - y0)
    full_w = round(ink.labels.shape[1] * ink.scale[0])
    full_h = round(ink.labels.shape[0] * ink.scale[1])
    region = (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(full_w, math.ceil(x1 + pad)),
              min(full_h, math.ceil(y1 + pad)))
    side = max(region[2] - region[0], region[3] - region[1])
    if max(ink.scale) < _ZOOM * max(1.0, side / _SEGMENT_SIDE):
        return ink
    closer = ink_map(source, region, max_side=_SEGMENT_SIDE)
    return closer if closer.has_ink and np.any(closer.mass > 0) else ink


def row_components(ink: InkMap) -> tuple[np.ndarray, bool]:
    """The labels of the row's digits (the text line's groups; stray specks and far-off marks stay out), and
    whether digit-sized ink was left off it (a second row, digits stacked in a column): a digit's worth of
    ink is the average kept component's. `ink` must hold some live ink."""
    groups, _ = _groups(ink)
    digits = _without_dots(ink, groups)
    if groups and not digits:  # only filled dots (a tap, a speck): no digit, as for one digit (`to_mnist`)
        return np.empty(0, np.intp), False
    keep = np.concatenate(digits) if digits else np.flatnonzero(ink.mass > 0)
    return keep, digit_ink_left_out(ink, keep, float(ink.mass[keep].sum()) / max(1, len(keep)))


def _without_dots(ink: InkMap, groups: list[np.ndarray]) -> list[np.ndarray]:
    """The groups that are not a filled dot or a speck (`preprocess.is_dot`), which the digit model and the
    readers read as a confident 0 or 4."""
    return [g for g in groups if not is_dot(crop_soft(ink, g)[0])]


def ink_left_out(ink: InkMap) -> bool:
    """`row_components`' verdict for a row's ink: whether a reading of the row leaves digit-sized ink unread."""
    return bool(ink.has_ink and np.any(ink.mass > 0) and row_components(ink)[1])


def _enlarged(source: ImageSource, ink: InkMap, live: np.ndarray) -> InkMap:
    """`ink`, or, when the row's digits are under `_SMALL_TEXT` source pixels tall in an image read at full
    size (a thumbnail, a row cropped from a small scan: at most `_SEGMENT_SIDE` px, so at most 4x that here),
    the ink of the image enlarged smoothly so that they are about 28 px: at 10 px, strokes merge and thin
    gaps between digits vanish in the threshold (rows 14 px tall read 10 of 20 right, enlarged 18 of 20;
    throwaway check, session 35)."""
    heights = ink.boxes[live, 3] - ink.boxes[live, 1]
    text = float(np.median(heights[heights >= 0.5 * heights.max()])) * ink.scale[1]  # in source pixels
    if text >= _SMALL_TEXT or all(is_dot(crop_soft(ink, np.array([c]))[0]) for c in live):
        return ink  # (dots only: enlarged smoothly, their soft edges pass them for strokes)
    k = min(4, math.ceil(28 / max(text, 1.0)))
    grey = load_image(source)
    big = Image.fromarray(np.ascontiguousarray(grey, np.float32), "F").resize(
        (grey.shape[1] * k, grey.shape[0] * k), Image.BICUBIC)
    pixels = np.clip(np.asarray(big), 0.0, 1.0)
    enlarged = ink_map(pixels, max_side=max(pixels.shape))
    if not enlarged.has_ink or not np.any(enlarged.mass > 0):
        return ink
    # source pixels per enlarged pixel: `load_image` has itself upsampled a thumbnail under 24 px
    enlarged.scale = (ink.labels.shape[1] * ink.scale[0] / pixels.shape[1],
                      ink.labels.shape[0] * ink.scale[1] / pixels.shape[0])
    return enlarged


def _groups(ink: InkMap) -> tuple[list[np.ndarray], float]:
    """Components grouped into digit candidates (left to right), and the text height in working pixels.

    A component shorter than `_FRAGMENT` of the text height is part of a digit: fragments stacked on each
    other (a stroke broken in two) join up, then join the whole component nearest in pixels (within 0.4
    of the height: the bar of a 5 may float); what stays alone and short is a speck."""
    live = np.flatnonzero(ink.mass > 0)
    boxes = ink.boxes[live].astype(np.float64)
    heights = boxes[:, 3] - boxes[:, 1]
    tall = heights >= 0.5 * heights.max()
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    top, bottom = np.median(boxes[tall, 1]), np.median(boxes[tall, 3])
    if np.count_nonzero(tall & (centre_y > top) & (centre_y < bottom)) < 0.5 * np.count_nonzero(tall):
        # The medians fell between two rows of digits, and the band kept neither (a crash, once). The line is
        # then the tall components level with the one that has most of them level with it (the top row on a
        # tie); the other row is ink left out (`digit_ink_left_out`).
        t = np.flatnonzero(tall)
        level = (centre_y[t][None, :] >= boxes[t, 1][:, None]) & (centre_y[t][None, :] <= boxes[t, 3][:, None])
        best = max(range(len(t)), key=lambda k: (int(level[k].sum()), -boxes[t[k], 1]))
        tall = np.zeros(len(live), dtype=bool)
        tall[t[level[best]]] = True
        top, bottom = np.median(boxes[tall, 1]), np.median(boxes[tall, 3])
    height = float(np.median(heights[tall]))
    size = np.maximum(heights, boxes[:, 2] - boxes[:, 0])
    on_line = (centre_y > top - 0.3 * height) & (centre_y < bottom + 0.3 * height) & (size >= 0.1 * height)
    live, boxes, heights = live[on_line], boxes[on_line], heights[on_line]

    root = np.arange(len(live))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    whole = heights >= _FRAGMENT * height
    # A separator (a dash, a decimal point, each dot of a colon) is short and stands clear of every digit;
    # joined to the digit beside it, or to the other dot of a colon, it was read as a digit (a dash as 5,
    # a colon as 2). Left alone it is dropped with the specks. The bar of a 5 or a 7 lies over its digit.
    # Clear means of everything taller than a mark (a 5's body can itself be a fragment) and, for a mark over
    # another small one, both round dots: a colon's, not the pieces of a broken stroke.
    pad = _MARK_CLEAR * height
    widths = boxes[:, 2] - boxes[:, 0]
    small = (heights <= _MARK * height) & (widths <= height)
    beside = (boxes[:, 0][None, :] < boxes[:, 2:3] + pad) & (boxes[:, 2][None, :] > boxes[:, 0:1] - pad)
    np.fill_diagonal(beside, False)
    longer = np.maximum(heights, widths)
    dot = (longer <= _DOT * height) & (longer <= 1.6 * np.minimum(heights, widths))
    mark = (small & ~(beside & ~small[None, :]).any(axis=1) & ~(beside & ~(dot[:, None] & dot[None, :])).any(axis=1)
            & whole.any())
    pieces = np.flatnonzero(~whole & ~mark)
    for n, i in enumerate(pieces):
        for j in pieces[n + 1:]:
            overlap = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            if overlap >= 0.5 * min(boxes[i, 2] - boxes[i, 0], boxes[j, 2] - boxes[j, 0]):
                root[find(j)] = find(i)
    if whole.any() and pieces.size:
        lut = np.zeros(ink.count + 1, dtype=bool)
        lut[live[whole]] = True
        distance, (near_y, near_x) = ndi.distance_transform_edt(~lut[ink.labels], return_indices=True)
        index = {int(label): k for k, label in enumerate(live)}
        for i in pieces:
            x0, y0, x1, y1 = ink.boxes[live[i]]
            own = ink.labels[y0:y1, x0:x1] == live[i]
            d = np.where(own, distance[y0:y1, x0:x1], np.inf)
            k = np.unravel_index(int(np.argmin(d)), d.shape)
            if d[k] <= 0.4 * height:
                target = index[int(ink.labels[near_y[y0 + k[0], x0 + k[1]], near_x[y0 + k[0], x0 + k[1]]])]
                root[find(i)] = find(target)
    roots = np.array([find(i) for i in range(len(live))])
    groups, spans = [], []
    for r in np.unique(roots):
        members = np.flatnonzero(roots == r)
        span = boxes[members, 3].max() - boxes[members, 1].min()
        if whole[members].any() or span >= 0.4 * height:
            groups.append(live[members])
            spans.append(span)
    if not groups:  # nothing digit-sized on the line: no digits, as for a blank page
        return [], height
    groups.sort(key=lambda g: ink.boxes[g, 0].min())
    spans = np.array(spans)  # the text height again, now of whole digits (a 5 with its floating bar)
    return groups, float(np.median(spans[spans >= 0.5 * spans.max()]))


def _paths(soft: np.ndarray, drift: float = _DRIFT) -> tuple[np.ndarray, np.ndarray]:
    """For each bottom column, the ink crossed by the cheapest top-to-bottom path ending there (plus `drift`
    per sideways step), and that path's column in every row. Such a path slips between touching digits
    where a straight cut would slice both."""
    cost = soft[0].astype(np.float64)
    moves = np.zeros(soft.shape, dtype=np.intp)  # 0 from straight above, 1 from the left, 2 from the right
    for y in range(1, soft.shape[0]):
        options = np.stack([cost, np.concatenate(([np.inf], cost[:-1])) + drift,
                            np.concatenate((cost[1:], [np.inf])) + drift])
        moves[y] = np.argmin(options, axis=0)
        cost = np.take_along_axis(options, moves[y][None], axis=0)[0] + soft[y]
    columns = np.empty(soft.shape, dtype=np.intp)
    x = np.arange(soft.shape[1])
    for y in range(soft.shape[0] - 1, -1, -1):  # trace all paths back at once
        columns[y] = x
        x = x + np.array([0, -1, 1])[moves[y, x]]
    return cost, columns


def _penalty(ratio: np.ndarray, low: float, high: float, scale: float) -> np.ndarray:
    """Quadratic penalty outside [low, high], in units of `scale`."""
    return (np.maximum(low - ratio, 0.0) ** 2 + np.maximum(ratio - high, 0.0) ** 2) / scale ** 2


def _dense_bounds(soft: np.ndarray, height: float, stroke: float) -> tuple[np.ndarray, np.ndarray]:
    """Over-segmentation for a recogniser to choose from: the bounds [K + 2, rows] (group edges first and
    last) and the strokes each crosses [K + 2]. Candidates are the locally cheapest paths ending at a
    bottom column and those starting at a top column (a slanted pair of digits often leaves only one
    of the two clean), near-duplicates dropped."""
    rows, width = soft.shape
    margin = max(1, int(_DENSE_MARGIN * height))
    size = max(3, int(_DENSE_WINDOW * height) | 1)
    found: list[tuple[float, np.ndarray]] = []
    for flip in (False, True):
        cost, columns = _paths(soft[::-1] if flip else soft, _DENSE_DRIFT)
        if flip:
            columns = columns[::-1]
        cost = cost / stroke
        window = ndi.minimum_filter1d(cost, size)
        for c in range(margin, width - margin):
            # the cheapest in its window, and the first of that cost in the window's left half: one
            # candidate per stretch of equal minima, not one at every other column
            if (cost[c] <= window[c] + _DENSE_TIE and cost[c] < _DENSE_COST
                    and (c == 0 or cost[max(0, c - size // 2):c].min() > cost[c] + _DENSE_TIE)):
                found.append((float(cost[c]), columns[:, c]))
    found.sort(key=lambda f: float(f[1].mean()))
    kept: list[tuple[float, np.ndarray]] = []
    for cost_c, path in found:
        if kept and np.abs(path - kept[-1][1]).max() <= 1:
            if cost_c < kept[-1][0]:
                kept[-1] = (cost_c, path)
            continue
        kept.append((cost_c, path))
    bounds = np.stack([np.zeros(rows, dtype=np.intp), *(p for _, p in kept), np.full(rows, width, dtype=np.intp)])
    return bounds, np.array([0.0, *(c for c, _ in kept), 0.0])


def _plan(soft: np.ndarray, height: float, stroke: float, typical: float, dense: bool = False,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The cut programme's inputs (see `_cuts`): candidate bounds [K + 2, rows] (the group's edges first
    and last), the geometric cost of the piece between any two bounds [K + 2, K + 2] (minus `_REWARD`),
    and the strokes each bound cuts [K + 2]; None when the group is too narrow to hold two digits.
    `dense` over-segments (more, dearer candidates, nearer the edges) for a recogniser to choose from."""
    rows, width = soft.shape
    core = np.flatnonzero((soft > 0.5).any(axis=0))  # widths without the anti-aliased fringe, like heights
    if core.size == 0 or core[-1] - core[0] + 1 < 0.45 * height:
        return None
    if dense:
        bounds, cuts = _dense_bounds(soft, height, stroke)
    else:
        cost, columns = _paths(soft)
        cost = cost / stroke
        margin = max(1, int(0.15 * height))
        window = ndi.minimum_filter1d(cost, 5)
        candidates = [c for c in range(margin, width - margin) if cost[c] <= window[c] and cost[c] < 3.0]
        bounds = np.stack([np.zeros(rows, dtype=np.intp), *(columns[:, c] for c in candidates),
                           np.full(rows, width, dtype=np.intp)])
        cuts = np.concatenate(([0.0], cost[candidates], [0.0]))
    cumulative = np.concatenate([np.zeros((rows, 1)), np.cumsum(soft, axis=1)], axis=1)
    at = np.take_along_axis(cumulative, bounds.T, axis=1).T  # [bound, row]: ink left of each bound
    row_mass = at[None, :, :] - at[:, None, :]  # [left bound, right bound, row]
    inked = row_mass > 0.5
    first = np.argmax(inked, axis=2)
    last = rows - 1 - np.argmax(inked[:, :, ::-1], axis=2)
    tall = np.where(inked.any(axis=2), last - first + 1, 0) / height
    middle = np.median(bounds, axis=1)
    middle[0], middle[-1] = core[0], core[-1] + 1
    wide = (middle[None, :] - middle[:, None]) / height
    piece = (_penalty(tall, _TALL, np.inf, 0.15) + _penalty(wide, _NARROW, _WIDE, 0.08)
             + _penalty(row_mass.sum(axis=2) / typical, _LIGHT, np.inf, 0.1) - _REWARD)
    return bounds, piece, cuts


def _cuts(soft: np.ndarray, height: float, stroke: float, typical: float) -> list[np.ndarray]:
    """How to cut a group into digits: the per-row columns of the cut paths, left to right.

    Candidate cuts are the cheapest paths (local minima of the ink they cross). A dynamic programme picks
    the set of cuts minimising: strokes crossed by the cuts, minus `_REWARD` per digit, plus penalties
    for pieces unlike an MNIST digit in this row (too short, narrow, wide or light). So touching digits
    split where a cheap cut leaves two full-height pieces, and a too wide group splits even at a dearer
    cut."""
    plan = _plan(soft, height, stroke, typical)
    if plan is None:
        return []
    bounds, piece, cut = plan
    best = np.full(len(bounds), np.inf)
    best[0] = 0.0
    back = np.zeros(len(bounds), dtype=np.intp)
    for j in range(1, len(bounds)):
        total = best[:j] + piece[:j, j] + cut[j]
        back[j] = int(np.argmin(total))
        best[j] = total[back[j]]
    chosen, j = [], len(bounds) - 1
    while back[j] > 0:
        j = int(back[j])
        chosen.append(bounds[j])
    return chosen[::-1]


def _piece(soft: np.ndarray, left: np.ndarray, right: np.ndarray,
           ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The digit between two cut paths (per-row columns [left, right)), without small slivers of its
    neighbours along the cuts, tightly cropped, and its box within `soft`."""
    columns = np.arange(soft.shape[1])[None, :]
    inside = (columns >= left[:, None]) & (columns < right[:, None])
    soft = np.where(inside, soft, 0.0).astype(np.float32)
    labels, count = ndi.label(soft > 0, np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    mass = np.bincount(labels.ravel(), weights=soft.ravel(), minlength=count + 1)
    on_cut = np.zeros(count + 1, dtype=bool)  # the group's own edges (0, width) are no cuts
    on_cut[labels[((columns == left[:, None]) & (left[:, None] > 0))
                  | ((columns == right[:, None] - 1) & (right[:, None] < soft.shape[1]))]] = True
    sliver = on_cut & (mass < 0.15 * mass[1:].max())
    sliver[0] = False
    if sliver.any():
        soft[sliver[labels]] = 0.0
    rows, cols = np.flatnonzero(soft.any(axis=1)), np.flatnonzero(soft.any(axis=0))
    if rows.size == 0:
        return None
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return soft[box[1]:box[3], box[0]:box[2]], box


def split_digits(source: ImageSource) -> list[DigitCrop]:
    """The digits of a one-line number, left to right (empty when there is no ink). Raises ImageError
    on bad input."""
    ink = row_ink(source)
    if not ink.has_ink:
        return []
    groups, height = _groups(ink)
    crops = [(soft, box) for soft, box in (crop_soft(ink, g) for g in groups) if soft.size and not is_dot(soft)]
    if not crops:
        return []
    stroke = max(1.0, float(np.median([stroke_width(soft) for soft, _ in crops])))
    typical = float(np.median([soft.sum() for soft, _ in crops]))
    out: list[DigitCrop] = []
    for soft, (gx, gy, _, _) in crops:
        bounds = [np.zeros(soft.shape[0], dtype=np.intp), *_cuts(soft, height, stroke, typical),
                  np.full(soft.shape[0], soft.shape[1])]
        for left, right in zip(bounds[:-1], bounds[1:], strict=True):
            piece = _piece(soft, left, right)
            if piece is None:
                continue
            digit, (x0, y0, x1, y1) = piece
            out.append(DigitCrop(source_box(ink, (gx + x0, gy + y0, gx + x1, gy + y1)), normalise(digit)))
    return out


# Recognition-guided segmentation (`segment_with_scores`). The weights were fitted (coordinate search on
# whole-string accuracy) on 1,500 compose_number rows of the benchmark's recipe, seeds 11-13, with the
# bundled best model; the benchmark's seeds (2024, 7) and the tests' (0) were held out. They were fitted
# before `_DENSE_DRIFT` (then 0.2), which was chosen alone afterwards on seeds 11-15.
_DENSE_COST, _DENSE_MARGIN, _DENSE_WINDOW = 4.0, 0.08, 0.1  # candidate cuts for the recogniser: strokes, heights
# Ink cost of one sideways step of a candidate cut. Dearer than `_DRIFT`: a path that wanders far round a
# stroke clips the curl of an overlapping neighbour (two 0s) or shaves a touching 1; straighter cuts read
# better (seeds 11-15, 1,500 rows: 0.2 -> 92.1 %, 0.6 -> 93.2 %, 0.75 -> 94.0 %, 1.0 and 1.2 -> 93.7 %).
_DENSE_DRIFT = 0.75
# Costs closer than this (strokes) are a tie. A crisp pen (strokes drawn without anti-aliasing) makes the
# cut cost zig-zag between two exact values along a slanted stroke, one sideways step or none, and every
# other column was a "minimum": a 4 got 17 candidate cuts, more than `_SPAN`, so no piece held the whole
# digit and the row read "611" (a new user's drawings, session 34).
_DENSE_TIE = 1e-3
_SPAN = 8  # a digit covers at most this many consecutive over-segments (cut candidates are dense)
_CONFIDENCE = 4.5  # weight of -log(max probability) against the geometric features
_GROUPS = 3  # a digit spans at most this many ink groups (a 5 with a floating bar, an open 4, a broken 7)
_MERGE_WIDE = 1.1  # nor is it wider than this (of the text height)


@dataclass
class _Lattice:
    """Every candidate digit of a row as an edge between two cut points (nodes, left to right): its
    crop, its box in source pixels and the geometric features the programme weighs (`_FEATURES`)."""

    nodes: int
    start: np.ndarray  # int [E]
    end: np.ndarray  # int [E]
    features: np.ndarray  # float [E, len(_FEATURES)]
    images: np.ndarray  # float32 [E, 28, 28]
    boxes: list[tuple[int, int, int, int]]


# What the programme weighs per candidate digit: shape penalties of `split_digits` (tall, wide, light),
# strokes crossed by its right cut, the gaps inside it (of the text height: a floating bar, an open 4),
# how much wider or narrower it is than the row's median digit (squared log ratios), and 1 (a per-digit
# reward when weighted negatively).
_FEATURES = ("short", "width", "light", "cut", "gap", "wider", "narrower", "one")


def _shape(digit: np.ndarray, height: float, typical: float) -> tuple[float, float, float]:
    """The shape penalties of `_plan` for one tightly cropped piece: too short, too narrow or wide, too
    light."""
    inked_rows = np.flatnonzero((digit > 0.5).any(axis=1))
    inked_cols = np.flatnonzero((digit > 0.5).any(axis=0))
    tall = (inked_rows[-1] - inked_rows[0] + 1) / height if inked_rows.size else 0.0
    wide = (inked_cols[-1] - inked_cols[0] + 1) / height if inked_cols.size else 0.0
    return (float(_penalty(np.array(tall), _TALL, np.inf, 0.15)), float(_penalty(np.array(wide), _NARROW, _WIDE, 0.08)),
            float(_penalty(np.array(digit.sum() / typical), _LIGHT, np.inf, 0.1)))


def _lattice(ink: InkMap) -> _Lattice | None:
    """The candidate digits of a row (see `segment_with_scores`); None when there are none."""
    groups, height = _groups(ink)
    crops = [(soft, box) for soft, box in (crop_soft(ink, g) for g in groups) if soft.size and not is_dot(soft)]
    if not crops:
        return None
    stroke = max(1.0, float(np.median([stroke_width(soft) for soft, _ in crops])))
    typical = float(np.median([soft.sum() for soft, _ in crops]))
    plans = []
    for soft, _ in crops:
        plan = _plan(soft, height, stroke, typical, dense=True)
        if plan is None:  # too narrow for two digits
            plan = np.array([0, soft.shape[1]])[:, None].repeat(soft.shape[0], axis=1), None, np.zeros(2)
        plans.append(plan)
    # nodes: every cut point of the row, left to right; the end of one group is the start of the next
    first = np.cumsum([0] + [len(p[0]) - 1 for p in plans])
    cut_cost = np.concatenate([[0.0], *(p[2][1:] for p in plans)])
    pieces: dict[tuple[int, int, int], tuple[np.ndarray, tuple[int, int, int, int]] | None] = {}

    def part(k: int, i: int, j: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        """Group k's ink between its bounds i and j, and its box in working pixels."""
        if (k, i, j) not in pieces:
            soft, (gx, gy, _, _) = crops[k]
            got = _piece(soft, plans[k][0][i], plans[k][0][j])
            pieces[k, i, j] = None if got is None else (got[0], (gx + got[1][0], gy + got[1][1],
                                                                 gx + got[1][2], gy + got[1][3]))
        return pieces[k, i, j]

    images: list[np.ndarray] = []
    starts: list[int] = []
    ends: list[int] = []
    features: list[tuple[float, ...]] = []
    boxes: list[tuple[int, int, int, int]] = []
    widths: list[float] = []
    for k in range(len(crops)):
        last_k = len(plans[k][0]) - 1
        for i in range(last_k):
            for m in range(k, min(k + _GROUPS, len(crops))):
                last_m = len(plans[m][0]) - 1
                for j in range(i + 1 if m == k else 1, last_m + 1):
                    if first[m] + j - (first[k] + i) > _SPAN:
                        break
                    parts = ([part(k, i, j)] if m == k else
                             [part(k, i, last_k), *(part(n, 0, len(plans[n][0]) - 1) for n in range(k + 1, m)),
                              part(m, 0, j)])
                    parts = [q for q in parts if q is not None]
                    if not parts:
                        continue
                    x0 = min(q[1][0] for q in parts)
                    x1 = max(q[1][2] for q in parts)
                    if x1 - x0 > (1.6 if m == k else _MERGE_WIDE) * height and (m > k or j - i > 1):
                        break
                    if len(parts) == 1:
                        digit, box = parts[0]
                        gap = 0.0
                    else:
                        box = (x0, min(q[1][1] for q in parts), x1, max(q[1][3] for q in parts))
                        digit = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=np.float32)
                        for piece, (px0, py0, px1, py1) in parts:
                            view = digit[py0 - box[1]:py1 - box[1], px0 - box[0]:px1 - box[0]]
                            np.maximum(view, piece, out=view)
                        spans = sorted((q[1][0], q[1][2]) for q in parts)
                        reach, gap = spans[0][1], 0.0
                        for left, right in spans[1:]:
                            gap += max(0, left - reach) / height
                            reach = max(reach, right)
                    images.append(normalise(digit))
                    starts.append(first[k] + i)
                    ends.append(first[m] + j)
                    features.append((*_shape(digit, height, typical), cut_cost[first[m] + j], gap))
                    boxes.append(source_box(ink, box))
                    widths.append((box[2] - box[0]) / height)
    if not images:
        return None
    widths_ = np.array(widths)
    single = np.array(ends) - np.array(starts) == 1
    typical_width = float(np.median(widths_[single])) if single.any() else float(np.median(widths_))
    relative = np.log(np.maximum(widths_, 1e-3) / max(typical_width, 1e-3))
    table = np.column_stack([np.array(features), np.maximum(relative, 0.0) ** 2, np.maximum(-relative, 0.0) ** 2,
                             np.ones(len(images))])
    return _Lattice(int(first[-1]) + 1, np.array(starts), np.array(ends), table, np.stack(images), boxes)


def _solve(lattice: _Lattice, cost: np.ndarray) -> list[int] | None:
    """The cheapest path of edges from the row's left edge to its right edge (edge indices, left to
    right), or None when a gap cannot be crossed."""
    best = np.full(lattice.nodes, np.inf)
    best[0] = 0.0
    back = np.full(lattice.nodes, -1, dtype=np.intp)
    for e in np.lexsort((lattice.start, lattice.end)):
        i, j = lattice.start[e], lattice.end[e]
        total = best[i] + cost[e]
        if total < best[j]:
            best[j], back[j] = total, e
    if not np.isfinite(best[-1]):
        return None
    path, j = [], lattice.nodes - 1
    while j > 0 and back[j] >= 0:
        path.append(int(back[j]))
        j = lattice.start[back[j]]
    return path[::-1]


def _solve_count(lattice: _Lattice, cost: np.ndarray, count: int) -> list[int] | None:
    """`_solve` with exactly `count` edges (digits), or None when no such path exists."""
    best = np.full((lattice.nodes, count + 1), np.inf)
    best[0, 0] = 0.0
    back = np.full((lattice.nodes, count + 1), -1, dtype=np.intp)
    for e in np.lexsort((lattice.start, lattice.end)):
        i, j = lattice.start[e], lattice.end[e]
        total = best[i, :-1] + cost[e]
        better = total < best[j, 1:]
        best[j, 1:][better] = total[better]
        back[j, 1:][better] = e
    if not np.isfinite(best[-1, count]):
        return None
    path, j, k = [], lattice.nodes - 1, count
    while k > 0:
        e = int(back[j, k])
        path.append(e)
        j, k = int(lattice.start[e]), k - 1
    return path[::-1]


# per `_FEATURES`; "gap" and "narrower" tuned to 0 (the cut programme's seeds 1-2), kept for sweeps to weigh
_WEIGHTS = np.array([1.5, 0.5, 0.5, 1.25, 0.0, 0.425, 0.0, -_REWARD])
# A model trained with label smoothing gives two merged digits or a fragment the same saturated probability
# as a clean digit; its top logit still drops. Weight per calibrated logit below the row's 75th percentile.
_EVIDENCE = 0.57


def _costs(lattice: _Lattice, probs: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    """Each candidate digit's cost: -log(max probability) plus its weighted features, plus (given
    calibrated logits) how far its top logit falls below the row's usual (`_EVIDENCE`)."""
    cost = _CONFIDENCE * -np.log(np.clip(probs.max(axis=1), 1e-9, 1.0)) + lattice.features @ _WEIGHTS
    if logits is not None and len(logits):
        top = logits.max(axis=1)
        cost += _EVIDENCE * np.maximum(np.percentile(top, 75) - top, 0.0)
    return cost


Scores = np.ndarray | tuple[np.ndarray, np.ndarray]


def segment_with_scores(source: ImageSource, score: Callable[[np.ndarray], Scores], count: int | None = None,
                        ) -> list[DigitCrop]:
    """The digits of a one-line number, left to right, segmented with the help of a classifier.

    `score` maps MNIST-normalised crops [N, 28, 28] to class probabilities [N, C], or to a pair
    (probabilities, calibrated logits = logits / temperature); it is called once, on every candidate.
    Each ink group is over-segmented at its cheap cut paths (from the top and from the bottom); every run
    of up to `_SPAN` consecutive segments, also across up to `_GROUPS` ink groups (a 5's floating bar, a
    broken 7, an open 4), becomes a candidate digit. A dynamic programme over the cut points picks the
    reading minimising, per digit, `_CONFIDENCE` x -log(max probability), the weighted shape features
    (`_FEATURES`), and, given logits, the shortfall of its top logit from the row's usual.
    `count` (e.g. from the sequence reader) forces that many digits when the lattice allows it."""
    return segment_readings(source, score, [count])[0]


def segment_readings(source: ImageSource, score: Callable[[np.ndarray], Scores], counts: list[int | None],
                     ink: InkMap | None = None) -> list[list[DigitCrop]]:
    """`segment_with_scores` for several digit counts (None: the programme's own choice) at the cost of
    one: the lattice and its scores are shared. A count the lattice cannot give falls back to None's.
    `ink`: the row's `row_ink(source)`, when the caller has it already."""
    ink = row_ink(source) if ink is None else ink
    if not ink.has_ink:
        return [[] for _ in counts]
    lattice = _lattice(ink)
    if lattice is None:
        return [[] for _ in counts]
    scores = score(lattice.images)
    probs, logits = scores if isinstance(scores, tuple) else (scores, None)
    probs = np.asarray(probs, dtype=np.float64)
    cost = _costs(lattice, probs, None if logits is None else np.asarray(logits, np.float64))
    free = _solve(lattice, cost)
    fallback: list[DigitCrop] | None = None
    out: list[list[DigitCrop]] = []
    for count in counts:
        path = (_solve_count(lattice, cost, count) if count else None) or free
        if path is None:  # a gap the programme cannot cross (no ink between two cuts): split once
            fallback = split_digits(source) if fallback is None else fallback
            out.append(fallback)
        else:
            out.append([DigitCrop(lattice.boxes[e], lattice.images[e]) for e in path])
    return out
