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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from digitrec.preprocess import ImageSource, InkMap, crop_soft, ink_map, normalise, source_box, stroke_width

__all__ = ["DigitCrop", "segment_with_scores", "split_digits"]

_SEGMENT_SIDE = 800  # working resolution: a row of ten digits still gets ~80 px per digit
_FRAGMENT = 0.6  # a component shorter than this fraction of the text height is part of a digit
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


def _groups(ink: InkMap) -> tuple[list[np.ndarray], float]:
    """Components grouped into digit candidates (left to right), and the text height in working pixels.

    A component shorter than `_FRAGMENT` of the text height is part of a digit: fragments stacked on each
    other (a stroke broken in two) join up, then join the whole component nearest in pixels (within 0.4
    of the height: the bar of a 5 may float); what stays alone and short is a speck."""
    live = np.flatnonzero(ink.mass > 0)
    boxes = ink.boxes[live].astype(np.float64)
    heights = boxes[:, 3] - boxes[:, 1]
    tall = heights >= 0.5 * heights.max()
    height = float(np.median(heights[tall]))
    top, bottom = np.median(boxes[tall, 1]), np.median(boxes[tall, 3])
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    size = np.maximum(heights, boxes[:, 2] - boxes[:, 0])
    on_line = (centre_y > top - 0.3 * height) & (centre_y < bottom + 0.3 * height) & (size >= 0.1 * height)
    live, boxes, heights = live[on_line], boxes[on_line], heights[on_line]

    root = np.arange(len(live))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    whole = heights >= _FRAGMENT * height
    pieces = np.flatnonzero(~whole)
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
    groups.sort(key=lambda g: ink.boxes[g, 0].min())
    spans = np.array(spans)  # the text height again, now of whole digits (a 5 with its floating bar)
    return groups, float(np.median(spans[spans >= 0.5 * spans.max()]))


def _paths(soft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each bottom column, the ink crossed by the cheapest top-to-bottom path ending there (plus a
    little per sideways step), and that path's column in every row. Such a path slips between touching
    digits where a straight cut would slice both."""
    cost = soft[0].astype(np.float64)
    moves = np.zeros(soft.shape, dtype=np.intp)  # 0 from straight above, 1 from the left, 2 from the right
    for y in range(1, soft.shape[0]):
        options = np.stack([cost, np.concatenate(([np.inf], cost[:-1])) + _DRIFT,
                            np.concatenate((cost[1:], [np.inf])) + _DRIFT])
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
    cost, columns = _paths(soft)
    cost = cost / stroke
    margin = max(1, int((_DENSE_MARGIN if dense else 0.15) * height))
    window = ndi.minimum_filter1d(cost, int(_DENSE_WINDOW) if dense else 5)
    limit = _DENSE_COST if dense else 3.0
    candidates = [c for c in range(margin, width - margin) if cost[c] <= window[c] and cost[c] < limit]
    if dense:  # plateaus of equal minima: one candidate per run of adjacent columns
        candidates = [c for k, c in enumerate(candidates) if k == 0 or c - candidates[k - 1] > 1]
    bounds = np.stack([np.zeros(rows, dtype=np.intp), *(columns[:, c] for c in candidates),
                       np.full(rows, width, dtype=np.intp)])
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
    return bounds, piece, np.concatenate(([0.0], cost[candidates], [0.0]))


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
    ink = ink_map(source, max_side=_SEGMENT_SIDE)
    if not ink.has_ink:
        return []
    groups, height = _groups(ink)
    crops = [crop_soft(ink, g) for g in groups]
    crops = [(soft, box) for soft, box in crops if soft.size]
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


# Recognition-guided segmentation (`segment_with_scores`), tuned on compose_number rows (seeds 5-6).
_DENSE_COST, _DENSE_MARGIN, _DENSE_WINDOW = 3.0, 0.15, 5  # candidate cuts for the recogniser: strokes, height, px
_SPAN = 8  # a digit covers at most this many consecutive over-segments (cut candidates are dense)
_CONFIDENCE = 1.0  # weight of -log(max probability) against the geometric costs of `_cuts`
_MERGE_GAP = 0.12  # whole groups at most this far apart (of the text height) may be one digit (an open 4)


def _shape_cost(digit: np.ndarray, height: float, typical: float) -> float:
    """The geometric penalty of `_cuts` for one tightly cropped piece, minus the per-digit reward."""
    inked_rows = np.flatnonzero((digit > 0.5).any(axis=1))
    inked_cols = np.flatnonzero((digit > 0.5).any(axis=0))
    tall = (inked_rows[-1] - inked_rows[0] + 1) / height if inked_rows.size else 0.0
    wide = (inked_cols[-1] - inked_cols[0] + 1) / height if inked_cols.size else 0.0
    light = digit.sum() / typical
    return float(_penalty(np.array(tall), _TALL, np.inf, 0.15) + _penalty(np.array(wide), _NARROW, _WIDE, 0.08)
                 + _penalty(np.array(light), _LIGHT, np.inf, 0.1)) - _REWARD


def segment_with_scores(source: ImageSource, score: Callable[[np.ndarray], np.ndarray]) -> list[DigitCrop]:
    """The digits of a one-line number, left to right, segmented with the help of a classifier.

    `score` maps MNIST-normalised crops [N, 28, 28] to class probabilities [N, C]; it is called once.
    Each ink group is over-segmented at its cheap cut paths; every run of up to `_SPAN` consecutive
    segments (and every pair of whole neighbouring groups close enough to be one open digit) becomes a
    candidate digit. A dynamic programme over the cut points picks the reading minimising, per digit,
    -log(max probability) plus the shape penalties of `split_digits`, plus the strokes each cut crosses."""
    ink = ink_map(source, max_side=_SEGMENT_SIDE)
    if not ink.has_ink:
        return []
    groups, height = _groups(ink)
    crops = [(g, *crop_soft(ink, g)) for g in groups]
    crops = [(g, soft, box) for g, soft, box in crops if soft.size]
    if not crops:
        return []
    stroke = max(1.0, float(np.median([stroke_width(soft) for _, soft, _ in crops])))
    typical = float(np.median([soft.sum() for _, soft, _ in crops]))
    # nodes: every cut point of the row; node 0 is the row's left edge, group edges are shared
    images: list[np.ndarray] = []
    edges: list[tuple[int, int, float, tuple[int, int, int, int]]] = []  # from, to, geometric cost, box
    cut_cost: list[float] = [0.0]
    starts: list[int] = []
    for _, soft, (gx, gy, _, _) in crops:
        plan = _plan(soft, height, stroke, typical, dense=True)
        if plan is None:  # too narrow for two digits
            edge = np.array([0, soft.shape[1]])[:, None].repeat(soft.shape[0], axis=1)
            plan = edge, np.full((2, 2), _shape_cost(soft, height, typical)), np.zeros(2)
        bounds, geometry, costs = plan
        first = len(cut_cost) - 1
        starts.append(first)
        cut_cost.extend(costs[1:].tolist())
        for i in range(len(bounds) - 1):
            for j in range(i + 1, min(i + _SPAN, len(bounds) - 1) + 1):
                piece = _piece(soft, bounds[i], bounds[j])
                if piece is None:
                    continue
                digit, (x0, y0, x1, y1) = piece
                if j - i > 1 and x1 - x0 > 1.6 * height:
                    continue
                images.append(normalise(digit))
                edges.append((first + i, first + j, float(geometry[i, j]),
                              source_box(ink, (gx + x0, gy + y0, gx + x1, gy + y1))))
    starts.append(len(cut_cost) - 1)
    for k in range(len(crops) - 1):  # two whole groups as one digit: an open 4, 6 or 0
        (ga, _, a), (gb, _, b) = crops[k], crops[k + 1]
        if b[0] - a[2] > _MERGE_GAP * height or max(a[2], b[2]) - min(a[0], b[0]) > _WIDE * height:
            continue
        soft, box = crop_soft(ink, np.concatenate([ga, gb]))
        if not soft.size:
            continue
        images.append(normalise(soft))
        edges.append((starts[k], starts[k + 2], _shape_cost(soft, height, typical), source_box(ink, box)))
    if not edges:
        return []
    probs = np.asarray(score(np.stack(images)), dtype=np.float64)
    confidence = -np.log(np.clip(probs.max(axis=1), 1e-9, 1.0))
    nodes = len(cut_cost)
    best = np.full(nodes, np.inf)
    best[0] = 0.0
    back = np.full(nodes, -1, dtype=np.intp)
    order = sorted(range(len(edges)), key=lambda e: (edges[e][1], edges[e][0]))
    for e in order:
        i, j, geometric, _ = edges[e]
        total = best[i] + geometric + _CONFIDENCE * confidence[e] + cut_cost[j]
        if total < best[j]:
            best[j], back[j] = total, e
    if not np.isfinite(best[-1]):  # a gap the programme cannot cross (no ink between two cuts)
        return split_digits(source)
    out: list[DigitCrop] = []
    j = nodes - 1
    while j > 0 and back[j] >= 0:
        e = int(back[j])
        out.append(DigitCrop(edges[e][3], images[e]))
        j = edges[e][0]
    return out[::-1]
