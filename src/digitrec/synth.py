"""User-like renderings of MNIST digits: what people actually upload, made reproducibly from test digits.

A model (and `preprocess`) is judged on these instead of on MNIST itself: dark ink on light or coloured
paper, big and off-centre, rotated, thick or hair-thin strokes, uneven light, noise, blur, JPEG, ruled
paper, a dark photo edge, chalk on a board, transparent canvas exports. A style is a '+'-joined string,
a base look then effects, e.g. "paper+rotate+lighting+jpeg"; everything is drawn from the caller's rng.
`box` (a form's cell drawn around the digit), `ring` (the digit circled), `underline` (a line drawn
under it), `shadow` (a hard-edged shadow across the page), `highlight` (a highlighter stroke across the
digit, not on chalk; the image comes out in colour), `sheet` (the page a note or card lying on a darker
desk) and `glare` (a lamp's reflection on glossy paper over part of the digit; none of these three on
chalk) are never drawn by `random_style`, so the fixed sets
that the README's figures come from stay as they were; ask for them by name.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import scipy.ndimage as ndi
from PIL import Image

__all__ = ["BASES", "EFFECTS", "compose_number", "random_style", "render_user_like", "user_like_set"]

BASES = ("paper", "colour", "chalk", "canvas")
EFFECTS = ("rotate", "thick", "thin", "hairline", "lighting", "noise", "blur", "jpeg", "ruled", "frame", "box",
           "ring", "underline", "shadow", "highlight", "sheet", "glare")
_STROKES = ("thick", "thin", "hairline")  # at most one of these
_DIGITAL = ("rotate", "thick", "thin")  # the only effects a canvas export can have

# highlighter dyes as light transmitted in R, G, B: each passes at least one channel nearly whole
_HIGHLIGHTERS = np.array([[1.0, 0.95, 0.25], [0.55, 1.0, 0.45], [1.0, 0.55, 0.8], [1.0, 0.75, 0.3],
                          [0.55, 0.85, 1.0]], dtype=np.float32)
_INKS = np.array([[0.05, 0.05, 0.08], [0.1, 0.15, 0.6], [0.1, 0.2, 0.75], [0.7, 0.1, 0.1],
                  [0.1, 0.45, 0.15], [0.35, 0.1, 0.45], [0.25, 0.25, 0.25]], dtype=np.float32)


def random_style(rng: np.random.Generator) -> str:
    """A plausible mix: one base look plus independent effects (one stroke change at most)."""
    base = str(rng.choice(BASES, p=[0.45, 0.2, 0.15, 0.2]))
    odds = {"rotate": 0.7, "lighting": 0.5, "noise": 0.5, "blur": 0.4, "jpeg": 0.4, "ruled": 0.15,
            "frame": 0.1}
    effects = [e for e, p in odds.items() if rng.random() < p]
    stroke = rng.random()
    if stroke < 0.15:
        effects.append("thick")
    elif stroke < 0.3:
        effects.append("thin")
    elif stroke < 0.4:
        effects.append("hairline")
    if base == "canvas":
        effects = [e for e in effects if e in _DIGITAL]
    return "+".join([base, *sorted(effects)])


def _parse(style: str) -> tuple[str, set[str]]:
    base, *effects = style.split("+")
    unknown = {base} - set(BASES) | set(effects) - set(EFFECTS)
    if unknown:
        raise ValueError(f"unknown style part(s) {sorted(unknown)}; bases {BASES}, effects {EFFECTS}")
    return base, _drawable(base, set(effects))


def _drawable(base: str, effects: set[str]) -> set[str]:
    """`effects` less those that make no sense on `base`: nobody highlights a blackboard or lays it on a desk,
    and glare on a board (light strokes going lighter still) is left out with them: `preprocess` takes glare
    off dark ink only, a known limit."""
    return effects - {"highlight", "sheet", "glare"} if base == "chalk" else effects


def _ink_layer(digit: np.ndarray, scale: float, angle: float, stroke: str, rng: np.random.Generator,
               ) -> np.ndarray:
    """The digit's 28x28 field drawn at `scale` px per MNIST px, rotated, as a pen would: sharp-edged
    strokes whose weight follows `stroke`."""
    side = max(8, round(28 * scale))
    a = math.radians(angle)
    c, s = math.cos(a) / scale, math.sin(a) / scale
    centre = side / 2
    # output (x, y) -> input: rotate about the centre, then shrink into the 28x28 field
    matrix = (c, s, 14 - c * centre - s * centre, -s, c, 14 + s * centre - c * centre)
    field = Image.fromarray(digit.astype(np.float32) / 255.0, "F")
    up = np.asarray(field.transform((side, side), Image.AFFINE, matrix, Image.BICUBIC), dtype=np.float32)
    if stroke == "hairline":  # a fine pen on a big digit: the stroke's centre line, 0.6-2% of its height
        inside = up > 0.45
        depth = ndi.distance_transform_edt(inside)
        ridge = inside & (depth >= ndi.maximum_filter(depth, 3) - 0.5)
        width = max(1.0, rng.uniform(0.12, 0.4) * scale)
        return np.clip(width / 2 + 0.5 - ndi.distance_transform_edt(~ridge), 0.0, 1.0).astype(np.float32)
    level = {"thick": 0.2, "thin": 0.72}.get(stroke, 0.45)
    return np.clip((up - level) / 0.12 + 0.5, 0.0, 1.0)


def _place(layer: np.ndarray, height: int, width: int, rng: np.random.Generator, margin: float = 0.04,
           ) -> np.ndarray:
    """Paste the ink layer somewhere on an empty page, off-centre, with a margin of 4% of the page (or
    `margin`, as far as the page allows)."""
    page = np.zeros((height, width), dtype=np.float32)
    rows, cols = np.flatnonzero(layer.any(axis=1)), np.flatnonzero(layer.any(axis=0))
    ink = layer[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1][:height, :width]
    my = min(int(margin * height), (height - ink.shape[0]) // 2)
    mx = min(int(margin * width), (width - ink.shape[1]) // 2)
    y = int(rng.integers(my, height - ink.shape[0] - my + 1))
    x = int(rng.integers(mx, width - ink.shape[1] - mx + 1))
    page[y:y + ink.shape[0], x:x + ink.shape[1]] = ink
    return page


def _lighting(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Uneven light: a linear fall-off in a random direction times a vignette."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = (x / width - 0.5) * math.cos(a) + (y / height - 0.5) * math.sin(a)
    r2 = ((x / width - 0.5) ** 2 + (y / height - 0.5) ** 2) * 2
    return (1.0 - rng.uniform(0.2, 0.5) * (ramp + 0.5)) * (1.0 - rng.uniform(0.0, 0.3) * r2)


def _ruled(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage of a notebook's ruled lines, slightly tilted."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    spacing = rng.uniform(0.07, 0.14) * height
    thick = rng.uniform(1.0, 2.5)
    pos = np.mod(y + x * math.tan(math.radians(rng.uniform(-2, 2))) - rng.uniform(0, spacing), spacing)
    return np.clip(thick / 2 + 0.5 - np.abs(pos - spacing / 2), 0.0, 1.0)


def _box(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage of a form's cell around the ink: all four sides, or the three or two (adjacent) that a
    tight crop of the cell leaves, a margin of 5-25 % of the digit's size away from it."""
    height, width = ink.shape
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    margin = rng.uniform(0.05, 0.25) * max(rows[-1] - rows[0], cols[-1] - cols[0])
    top, bottom = max(rows[0] - margin, 1.0), min(rows[-1] + margin, height - 2.0)
    left, right = max(cols[0] - margin, 1.0), min(cols[-1] + margin, width - 2.0)
    thick = rng.uniform(1.0, 3.0) * max(1.0, max(height, width) / 400)
    kept = rng.random()
    sides = np.ones(4, dtype=bool)  # top, bottom, left, right
    if kept > 0.6:
        sides[rng.integers(4)] = False
        if kept > 0.8:  # two adjacent sides: drop one of the other pair too
            sides[int(rng.integers(2, 4)) if not sides[0] or not sides[1] else int(rng.integers(0, 2))] = False
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    within_x = (x >= left - thick / 2) & (x <= right + thick / 2)
    within_y = (y >= top - thick / 2) & (y <= bottom + thick / 2)
    out = np.zeros((height, width), dtype=np.float32)
    for keep, dist, span in ((sides[0], np.abs(y - top), within_x), (sides[1], np.abs(y - bottom), within_x),
                             (sides[2], np.abs(x - left), within_y), (sides[3], np.abs(x - right), within_y)):
        if keep:
            out = np.maximum(out, np.clip(thick / 2 + 0.5 - dist, 0.0, 1.0) * span)
    return out


def _pen_width(ink: np.ndarray, size: float, rng: np.random.Generator) -> float:
    """The width of a ring or line drawn after the digit: 2-5 % of the digit's `size` plus a pixel, as a
    pen writes a digit of that size, but never bolder than the digit's own strokes (their area over half
    their outline): a hairline digit is circled with the same fine pen. MNIST's own strokes (about a tenth
    of the digit) are bolder than a pen's, an effect of its size normalisation."""
    outline = np.abs(np.diff(ink, axis=0)).sum() + np.abs(np.diff(ink, axis=1)).sum()
    stroke = 2.0 * float(ink.sum()) / max(float(outline), 1.0)
    return max(1.0, min(rng.uniform(0.02, 0.05) * size + 1.0, stroke))


def _ring(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage of a ring drawn around the ink with the same pen: an ellipse 15-40 % taller and 20-60 %
    wider than the digit (a narrow digit gets a rounder ring), kept on the page, so it may touch the
    digit's corners, as a quick circle does."""
    height, width = ink.shape
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    cy, cx = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    half_h, half_w = (rows[-1] - rows[0]) / 2, (cols[-1] - cols[0]) / 2
    thick = _pen_width(ink, rows[-1] - rows[0], rng)
    ry = min(half_h * rng.uniform(1.15, 1.4), cy - thick, height - 1 - thick - cy)
    rx = min(max(half_w, half_h * 2 / 3) * rng.uniform(1.2, 1.6), cx - thick, width - 1 - thick - cx)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (x - cx) / rx, (y - cy) / ry
    r = np.sqrt(u * u + v * v) + 1e-6
    slope = np.sqrt((u / rx) ** 2 + (v / ry) ** 2) / r + 1e-9  # |grad r|: distance ~ |r - 1| / slope
    return np.clip(thick / 2 + 0.5 - np.abs(r - 1) / slope, 0.0, 1.0)


def _underline(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage of a line drawn under the ink with the same pen, 5-15 % of the digit's height below it
    (closer where the page ends) and reaching 10-50 % of its width past it on either side."""
    height, width = ink.shape
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    size = rows[-1] - rows[0]
    thick = _pen_width(ink, size, rng)
    level = min(rows[-1] + rng.uniform(0.05, 0.15) * size + thick / 2, height - 1 - thick / 2)
    reach = rng.uniform(0.1, 0.5, 2) * (cols[-1] - cols[0])
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (x >= cols[0] - reach[0]) & (x <= cols[-1] + reach[1])
    return np.clip(thick / 2 + 0.5 - np.abs(y - level), 0.0, 1.0) * along


def _frame(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage of a dark table edge entering the photo from one side."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    side = int(rng.integers(4))
    depth = rng.uniform(0.03, 0.1)
    tilt = rng.uniform(-0.05, 0.05)
    d = {0: x / width - tilt * y / height, 1: 1 - x / width + tilt * y / height,
         2: y / height - tilt * x / width, 3: 1 - y / height + tilt * x / width}[side]
    return np.clip((depth - d) * max(height, width), 0.0, 1.0)


def _shadow(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hard-edged shadow (a phone's or a hand's, cast from outside the picture) as a factor on the light:
    a half-plane whose edge crosses the digit's box in a random direction, 25-55 % darker, with a penumbra
    of 0.5-3 px per 400 px of image."""
    height, width = ink.shape
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    cy, cx = rng.uniform(rows[0], rows[-1]), rng.uniform(cols[0], cols[-1])
    a = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    side = ((x - cx) * math.cos(a) + (y - cy) * math.sin(a) > 0).astype(np.float32)
    soft = ndi.gaussian_filter(side, rng.uniform(0.5, 3.0) * max(height, width) / 400)
    return 1.0 - rng.uniform(0.25, 0.55) * soft


def _sheet(ink: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A sheet of paper (a sticky note, a card) smaller than the photo, lying on a desk: its mask (HxW, 1
    on the sheet), a rectangle round the digit with 15-80 % of the ink's half-size to spare on each axis
    (and at least 70 % as long on one as on the other),
    shifted within that room, turned up to 20 degrees, often cut by the photo's edge; and the desk's light
    (HxW), 15-60 % of white with a wood grain."""
    height, width = ink.shape
    ys, xs = np.nonzero(ink > 0.05)
    cy, cx = float(ys.mean()), float(xs.mean())
    a = math.radians(rng.uniform(-20, 20))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)  # the sheet's own axes
    v = (y - cy) * math.cos(a) - (x - cx) * math.sin(a)
    reach_u, reach_v = float(np.abs(u[ys, xs]).max()), float(np.abs(v[ys, xs]).max())
    side = 0.7 * max(reach_u, reach_v)  # a note is not a strip, even round a 1
    half_u, half_v = max(reach_u, side) * rng.uniform(1.15, 1.8), max(reach_v, side) * rng.uniform(1.15, 1.8)
    shift_u, shift_v = rng.uniform(-1, 1) * (half_u - reach_u), rng.uniform(-1, 1) * (half_v - reach_v)
    inside = (np.abs(u - shift_u) <= half_u) & (np.abs(v - shift_v) <= half_v)
    mask = ndi.gaussian_filter(inside.astype(np.float32), max(0.5, max(height, width) / 500))
    grain = ndi.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32),
                                (max(height, width) / 400, max(height, width) / 30))
    desk = rng.uniform(0.15, 0.6) * (1.0 + 0.1 * grain / max(float(grain.std()), 1e-6))
    return mask, desk.astype(np.float32)


def _highlight(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A highlighter stroke across the digit as a colour factor on the page (HxWx3): a band 20-45 % of the
    digit's height, within 10 degrees of level, from before the digit to past it, in one of five dyes."""
    height, width = ink.shape
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    tall = rows[-1] - rows[0] + 1
    cy = rng.uniform(rows[0] + 0.1 * tall, rows[-1] - 0.1 * tall)
    half = rng.uniform(0.1, 0.225) * tall
    x0 = cols[0] - rng.uniform(0.1, 1.0) * tall
    x1 = cols[-1] + rng.uniform(0.1, 1.0) * tall
    slope = math.tan(math.radians(rng.uniform(-10, 10)))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    band = ((np.abs(y - cy - (x - (x0 + x1) / 2) * slope) <= half) & (x >= x0) & (x <= x1)).astype(np.float32)
    band = ndi.gaussian_filter(band, max(0.5, max(height, width) / 400))[..., None]
    dye = _HIGHLIGHTERS[rng.integers(len(_HIGHLIGHTERS))] * rng.uniform(0.95, 1.0)
    return 1.0 - band * (1.0 - dye)


def _glare(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lamp's or a window's reflection on glossy paper (HxW): light added to the page in linear light,
    peaking at 0.15-0.5 of white, an ellipse with semi-axes of 15-45 % of the digit's height, turned at
    random, centred on the digit's box, with a soft shoulder. Added before the camera's gamma, it washes
    out what lies under it: paper turns white and ink light grey."""
    height, width = ink.shape
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    tall = rows[-1] - rows[0] + 1
    cy, cx = rng.uniform(rows[0], rows[-1]), rng.uniform(cols[0], cols[-1])
    ry, rx = rng.uniform(0.15, 0.45, 2) * tall
    a = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = ((x - cx) * math.cos(a) + (y - cy) * math.sin(a)) / rx
    v = ((y - cy) * math.cos(a) - (x - cx) * math.sin(a)) / ry
    return (rng.uniform(0.15, 0.5) * np.exp(-((u * u + v * v) ** 1.5))).astype(np.float32)


def render_user_like(digit: np.ndarray, rng: np.random.Generator, style: str | None = None,
                     size: tuple[int, int] | None = None) -> np.ndarray:
    """Turn an MNIST digit (uint8 28x28, white on black) into what a user might upload: uint8 HxW (grey),
    HxWx3 (colour) or HxWx4 (canvas export: ink only in alpha, RGB black). `size` is (height, width);
    by default 100-1000 px on the long side. Deterministic given the rng state and style."""
    base, effects = _parse(style or random_style(rng))
    if size is None:
        long = math.exp(rng.uniform(math.log(150 if base == "canvas" else 100), math.log(
            600 if base == "canvas" else 1000)))
        aspect = 1.0 if base == "canvas" else rng.uniform(0.7, 1.4)
        size = (max(16, round(long / max(aspect, 1))), max(16, round(long * min(aspect, 1))))
    height, width = size
    # MNIST's 20 px box -> this many px; a digit that is circled or underlined leaves room on the page
    scale = rng.uniform(0.35, 0.5 if "sheet" in effects else 0.6 if effects & {"ring", "underline"} else 0.8
                        ) * min(height, width) / 20
    angle = rng.uniform(-12, 12) if "rotate" in effects else 0.0
    stroke = next((e for e in _STROKES if e in effects), "")
    # a ring or an underline needs room around the digit: people draw them where there is some
    room = 0.25 if "sheet" in effects else 0.15 if effects & {"ring", "underline"} else 0.04
    ink = _place(_ink_layer(digit, scale, angle, stroke, rng), height, width, rng, room)
    for effect, draw in (("ring", _ring), ("underline", _underline)):
        if effect in effects:
            ink = np.maximum(ink, draw(ink, rng))
    if base == "canvas":
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., 3] = np.round(ink * 255)
        return rgba

    colour = base == "colour" or "highlight" in effects
    if base == "chalk":
        paper = np.full(3, rng.uniform(0.05, 0.3), dtype=np.float32) * (1, rng.uniform(1.0, 1.3), 1)
        pen = np.full(3, rng.uniform(0.75, 1.0), dtype=np.float32)
    elif base == "colour":
        paper = rng.uniform(0.6, 1.0, 3).astype(np.float32)
        pen = _INKS[rng.integers(len(_INKS))] * rng.uniform(0.7, 1.2)
    else:
        paper = np.full(3, rng.uniform(0.72, 1.0), dtype=np.float32)
        pen = np.full(3, rng.uniform(0.0, 0.35), dtype=np.float32)
    page = np.broadcast_to(paper, (height, width, 3)).copy()
    if "ruled" in effects:
        line = _ruled(height, width, rng)[..., None]
        page = page * (1 - 0.5 * line) + np.array([0.45, 0.55, 0.85], dtype=np.float32) * 0.5 * line
    if "box" in effects:
        cell = _box(ink, rng)[..., None]
        page = page * (1 - cell) + rng.uniform(0.05, 0.5) * cell
    ink3 = ink[..., None]
    page = page * (1 - ink3) + pen * ink3
    if "sheet" in effects:
        sheet, desk = _sheet(ink, rng)
        wood = np.array([1.0, 0.78, 0.55] if colour else [1.0, 1.0, 1.0], dtype=np.float32)
        page = page * sheet[..., None] + (desk[..., None] * wood) * (1.0 - sheet[..., None])
    if "frame" in effects:
        edge = _frame(height, width, rng)[..., None]
        page = page * (1 - edge) + rng.uniform(0.0, 0.25) * edge
    if "shadow" in effects:
        page *= _shadow(ink, rng)[..., None]
    if "highlight" in effects:
        page *= _highlight(ink, rng)
    if "lighting" in effects:
        page *= _lighting(height, width, rng)[..., None]
    if "glare" in effects:  # after the light falls on the page, before the camera's gamma (2.2)
        page = (np.clip(page, 0.0, 1.0) ** 2.2 + _glare(ink, rng)[..., None]) ** (1 / 2.2)
    if "blur" in effects:
        page = ndi.gaussian_filter(page, (rng.uniform(0.5, 1.5) * max(height, width) / 300,) * 2 + (0,))
    if "noise" in effects:
        page += rng.standard_normal(page.shape, dtype=np.float32) * rng.uniform(0.01, 0.06)
    out = np.round(np.clip(page if colour else page.mean(axis=2), 0.0, 1.0) * 255).astype(np.uint8)
    if "jpeg" in effects:
        out = np.asarray(Image.open(io.BytesIO(encode(out, "JPEG", int(rng.integers(30, 90))))))
    return out


def encode(pixels: np.ndarray, fmt: str, quality: int = 85) -> bytes:
    """Pixels as the bytes of an image file, the way a user's upload arrives."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, quality=quality)
    return buf.getvalue()


def user_like_set(images: np.ndarray, labels: np.ndarray, n: int, seed: int, add: tuple[str, ...] = (),
                  ) -> list[tuple[bytes | np.ndarray, int, str]]:
    """A fixed set of `n` user-like images of random `images`: (PNG/JPEG/WebP bytes or pixel array,
    label, "style:format"). Same seed, same set. `add` puts effects into every style that is not a
    canvas export (e.g. ("box",): each digit in a form's cell); the digits are the same as without it,
    the styles after the first such image are not (the effect takes its own random draws)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes | np.ndarray, int, str]] = []
    for i in rng.integers(0, len(images), n):
        style = random_style(rng)
        base, effects = _parse(style)
        if add and base != "canvas":
            effects = _drawable(base, effects | set(add))
            style = "+".join([base, *sorted(effects)])
        jpeg = "jpeg" in effects
        pixels = render_user_like(images[i], rng, "+".join([base, *sorted(effects - {"jpeg"})]))
        if jpeg:
            fmt, data = "jpeg", encode(pixels, "JPEG", int(rng.integers(30, 90)))
        else:
            fmt = str(rng.choice(["png", "webp", "array"], p=[0.5, 0.2, 0.3]))
            data = pixels if fmt == "array" else encode(pixels, fmt.upper(), 90)
        out.append((data, int(labels[i]), f"{style}:{fmt}"))
    return out


def compose_number(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                   n_digits: int | None = None, user_like: bool = False, *, return_boxes: bool = False,
                   return_picks: bool = False) -> tuple[Any, ...]:
    """A row of `n_digits` (default 4-10) random MNIST digits as one uint8 image, and its text. Spacing
    varies (2-8 MNIST px), and a quarter of neighbours abut or overlap by 1 px, so their ink often touches,
    as in quick handwriting.
    `user_like` draws it dark on light paper, 2-5x larger, with uneven light and noise; otherwise it stays
    white on black at MNIST scale. `return_boxes` adds each digit's ink box (x0, y0, x1, y1), for tests;
    `return_picks` adds the indices of the digits used (after the boxes), so a benchmark can tell which
    rows hold a digit the digit model misreads even on its own."""
    n = int(n_digits if n_digits is not None else rng.integers(4, 11))
    picks = rng.integers(0, len(images), n)
    pieces = []
    for i in picks:
        digit = images[i]
        cols = np.flatnonzero(digit.any(axis=0))
        pieces.append(digit[:, cols[0]:cols[-1] + 1])
    gaps = [int(rng.integers(-1, 1)) if rng.random() < 0.25 else int(rng.integers(2, 9)) for _ in pieces[1:]]
    margin = 6
    width = sum(p.shape[1] for p in pieces) + sum(gaps) + 2 * margin
    strip = np.zeros((28 + 8, width), dtype=np.uint8)
    boxes = []
    x = margin
    for piece, gap in zip(pieces, [*gaps, 0], strict=True):
        y = 4 + int(rng.integers(-2, 3))
        region = strip[y:y + 28, x:x + piece.shape[1]]
        np.maximum(region, piece, out=region)
        rows = np.flatnonzero(piece.any(axis=1))
        boxes.append((x, y + int(rows[0]), x + piece.shape[1], y + int(rows[-1]) + 1))
        x += piece.shape[1] + gap
    text = "".join(str(int(labels[i])) for i in picks)
    if user_like:
        f = rng.uniform(2.0, 5.0)
        big = Image.fromarray(strip).resize((round(strip.shape[1] * f), round(strip.shape[0] * f)),
                                            Image.BICUBIC)
        ink = np.clip((np.asarray(big, dtype=np.float32) / 255 - 0.45) / 0.12 + 0.5, 0.0, 1.0)
        paper, pen = rng.uniform(0.75, 1.0), rng.uniform(0.0, 0.3)
        page = (paper * (1 - ink) + pen * ink) * _lighting(*ink.shape, rng)
        page += rng.standard_normal(page.shape, dtype=np.float32) * rng.uniform(0.0, 0.04)
        strip = np.round(np.clip(page, 0.0, 1.0) * 255).astype(np.uint8)
        boxes = [(int(x0 * f), int(y0 * f), math.ceil(x1 * f), math.ceil(y1 * f)) for x0, y0, x1, y1 in boxes]
    return (strip, text, *([boxes] if return_boxes else []), *([picks] if return_picks else []))
