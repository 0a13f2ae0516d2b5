"""Any image of a handwritten digit -> the 28x28 MNIST-normalised array a model expects.

MNIST digits are white ink on black, size-normalised to fit a 20x20 box (aspect kept, anti-aliased) and
pasted into 28x28 with their centre of mass at the centre. Photos, scans and canvas drawings are none of
that, which is why a model at 99% on MNIST fails on them; this module redoes MNIST's normalisation on real
input: decode -> grey -> polarity -> flatten lighting (two paper levels across a hard shadow's edge) ->
threshold -> clean (specks, frames, ruled lines, boxes, rings and underlines drawn around the digit) ->
pick the digit -> fix stroke weight -> fit 20x20 -> paste by centre of mass.

Everything runs at a small working resolution (big JPEGs are DCT-scaled while decoding), so one phone
photo takes a few milliseconds; `segment.py` reuses `ink_map` and `normalise` for multi-digit images.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from scipy.spatial import ConvexHull

from digitrec.errors import ImageError

__all__ = ["FORMATS", "MAX_PIXELS", "ImageSource", "InkMap", "Prepared", "crop_soft", "ink_map", "load_image",
           "main_cluster", "normalise", "source_box", "stroke_width", "to_mnist", "to_mnist_many"]

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

MAX_PIXELS = 40_000_000  # refuse larger images before decoding: a decompression bomb must cost nothing
_WORK_SIDE = 200  # long side of the working image is between half this and this
_REFINE_SIDE = 256  # working side for the neighbourhood (2x the digit) of a small digit
_REFINE_BELOW = 24  # a digit shorter than this (working px) is re-read from the full-resolution source
_MIN_SIDE = 4
_TINY_SIDE = 24  # images with a shorter long side are upsampled before the analysis
_MARGIN = 0.15  # paper border added around a digit that reaches the image edge, as a fraction of the long side

# MNIST geometry and stroke weight, measured on the MNIST test set with `stroke_width`:
# median 2.0 px, 5th percentile 1.4 px, 95th 3.1 px, all at a 20 px long side.
_BOX, _SIZE, _CENTRE = 20, 28, 14.0
_STROKE_TARGET, _STROKE_MIN = 2.0, 1.4

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Prepared:
    """One digit ready for a model. `box` is (x0, y0, x1, y1), end-exclusive, in the (EXIF-rotated)
    source image's pixels; `has_ink` is False when nothing digit-like was found (then `image` is zeros)."""

    image: np.ndarray  # float32 [28, 28] in [0, 1], white ink on black
    has_ink: bool
    box: tuple[int, int, int, int] | None
    # the image looks like several digits (a row given to a one-digit reader): other digit-sized ink left
    # out, or a digit over twice as wide as tall (see `several_digits`)
    several_digits: bool = False


@dataclass
class InkMap:
    """The cleaned ink of one image at working resolution, shared by `to_mnist` and `segment`.

    `ink` is background-subtracted ink strength (paper ~0, ink > 0) whatever the input polarity;
    `labels` numbers the cleaned components (specks, frames, ruled lines and drawn marks already removed);
    `level` is the ink strength that counts as full black; `floor` the paper-noise level;
    `scale` maps working pixels to source pixels (x, y); `has_ink` is the contrast verdict; `margin` is
    the paper border (working px) added around the image before the analysis, 0 when none was;
    `shadowed` says a hard shadow's edge crosses the page (`_shadowed_paper`); `origin` is where the
    decoded region starts in the source (x, y), (0, 0) for the whole image."""

    ink: np.ndarray
    labels: np.ndarray
    count: int
    boxes: np.ndarray  # int [count + 1, 4] as (x0, y0, x1, y1) per label; row 0 unused
    mass: np.ndarray  # float [count + 1] smoothed ink per label; 0 for dropped labels
    lines: np.ndarray  # bool mask of removed ruled-line and drawn-mark (box, ring, underline) pixels
    level: float
    floor: float
    scale: tuple[float, float]
    has_ink: bool
    margin: int = 0
    shadowed: bool = False
    origin: tuple[int, int] = (0, 0)

    def soft(self, keep: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
        """Grey ink in [0, 1] of the labels in `keep` inside `window`, including their anti-aliased fringe
        (which lies below the threshold) but not specks or other digits further away."""
        lab = self.labels[window]
        lut = np.zeros(self.count + 1, dtype=bool)
        lut[keep] = True
        mine = lut[lab]
        region = ndi.binary_dilation(mine, _EIGHT, iterations=2) & (mine | (lab == 0))
        if self.lines.any():
            region &= ~ndi.binary_dilation(self.lines[window], _EIGHT)
        span = max(self.level - self.floor, 1e-6)
        soft = np.clip((self.ink[window] - self.floor) / span, 0.0, 1.0)
        soft[~region] = 0.0
        return soft.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- decoding


class _FileBytes(bytes):
    """The contents of an open file, read once by `readable`, keeping the file's name for error messages."""

    def __new__(cls, data: bytes, name: object) -> _FileBytes:
        self = super().__new__(cls, data)
        self.name = str(name)
        return self

    def __reduce__(self):  # pickle, copy and deepcopy call __new__ with the name too (bytes' own passes data only)
        return (_FileBytes, (bytes(self), self.name))


def _name(source: object) -> str:
    if isinstance(source, (_FileBytes, str, os.PathLike)):
        text = source.name if isinstance(source, _FileBytes) else os.fsdecode(source)
        return text if len(text) <= 200 else f"{text[:90]}...{text[-90:]}"  # errors stay one readable line
    return "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else "<image>"


def readable(source: object) -> ImageSource:
    """`source` as the decoders take it: an open file or any object with `read()` (a web framework's upload)
    is read once into bytes, since an image may be decoded more than once; anything that is not an image
    source is an ImageError, not a TypeError deep inside."""
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)):
        if isinstance(source, str) and "\0" in source:
            raise ImageError(f"{_name(source)!r}: not a file name (it holds a NUL character)")
        if isinstance(source, np.ndarray) and type(source) is not np.ndarray:
            source = np.asarray(np.ma.filled(source, 0) if np.ma.isMaskedArray(source) else source)
        return source
    if callable(getattr(source, "read", None)):
        name = getattr(source, "name", None)  # a file's path; a TemporaryFile's is its descriptor, no name
        name = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else None
        try:
            data = source.read()
        except (OSError, ValueError) as exc:  # closed, unreadable
            raise ImageError(f"{name or '<file>'}: cannot read ({exc})") from None
        if isinstance(data, memoryview):
            data = data.tobytes()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{name or '<file>'}: read() gave {type(data).__name__}, not bytes (a file opened in "
                             "text mode? open it with 'rb'; for an async upload, pass its .file or the bytes it gives)")
        if not data:
            raise ImageError(f"{name or '<file>'}: nothing to read (an empty file, or one already read to the end)")
        return _FileBytes(data, name) if name is not None else bytes(data)
    raise ImageError(f"<{type(source).__name__}>: not an image (give a path, bytes, an open file, a PIL image "
                     "or a numpy array)")


# What users send: photos, scans, canvas exports. Pillow opens many more (EPS and PDF through Ghostscript,
# a program run on the upload; ICO, TGA, JPEG 2000, ...): no file of those is read, whatever its name. (A
# phone's multi-picture JPEG, which Pillow calls MPO, is opened as JPEG.)
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
_FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP"


def _open(source: str | os.PathLike | bytes | bytearray | memoryview) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before any pixel is decoded."""
    name = _name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError(f"{name}: empty image data")
        fp: object = io.BytesIO(bytes(source))
    else:
        if not os.fspath(source):
            raise ImageError("'': an empty file name")
        path = Path(os.fsdecode(source))
        try:
            size = path.stat().st_size
        except (OSError, ValueError) as e:  # ValueError: a NUL character in a Path
            raise ImageError(f"{name}: cannot read ({getattr(e, 'strerror', None) or e})") from None
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image")
        if size == 0:
            raise ImageError(f"{name}: empty file")
        fp = path
    try:
        # Pillow itself refuses over 2x its MAX_IMAGE_PIXELS (~179 MP) here and only warns above ~89 MP;
        # our own limit below is lower still. (No warnings.catch_warnings: it is not thread-safe.)
        Image.init()  # registers the plugins FORMATS names (Pillow loads only five up front); quick when done
        im = Image.open(fp, formats=FORMATS)
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large (over {MAX_PIXELS // 1_000_000} megapixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a format read here ({_FORMAT_NAMES})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: cannot decode ({e})") from None
    try:
        _check_size(im.width, im.height, name)
    except ImageError:
        im.close()
        raise
    return im


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({width}x{height}, limit {MAX_PIXELS // 1_000_000} "
                         "megapixels)")
    if min(width, height) < _MIN_SIDE:
        raise ImageError(f"{name}: image too small ({width}x{height}; each side needs {_MIN_SIDE} px or more)")


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1-8; 1 = upright): phone photos are stored sideways and tagged."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001  a broken EXIF block must not make a readable image unreadable
        return 1


def _pil_channels(im: Image.Image, name: str = "<image>") -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels as float32 in [0, 1]: [H, W] or [H, W, 3], and alpha [H, W] when the image has one."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all():  # a float TIFF can hold them; no pixel value means anything then
            raise ImageError(f"{name}: pixels contain NaN or infinity")
        return np.clip(arr / _full_scale(float(arr.max(initial=0.0)), mode == "F"), 0.0, 1.0), None
    transparent = "transparency" in im.info
    if mode in ("LA", "La", "PA") or (mode == "L" and transparent):
        arr = np.asarray(im.convert("LA"), dtype=np.float32) / 255.0
        return arr[..., 0], arr[..., 1]
    if mode in ("RGBA", "RGBa") or (mode in ("P", "RGB") and transparent):
        arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return arr[..., :3], arr[..., 3]
    if mode not in ("L", "RGB"):
        im = im.convert("L" if mode == "1" else "RGB")
    return np.asarray(im, dtype=np.float32) / 255.0, None


def _full_scale(top: float, floating: bool) -> float:
    """The value of white, guessed from the brightest pixel, the same for numpy arrays and PIL's integer and
    float modes: a 0/1 mask (any type) is 1; floats up to 2 are 0..1 (a resize or sharpen overshoots 1 a
    little); then 8-bit, then 16-bit values; anything larger is scaled by its own maximum."""
    if top <= (2.0 if floating else 1.0):
        return 1.0
    return 255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else top


def _array_channels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A caller's numpy image (HxW, HxWx1..4; uint8, uint16, bool or float) as `_pil_channels` returns."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise ImageError(f"<array>: expected HxW or HxWx(1-4) pixels, got shape {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0], "<array>")
    if arr.dtype == np.bool_:
        data = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float32)
        if not np.isfinite(data).all():
            raise ImageError("<array>: pixels contain NaN or infinity")
        data = data / _full_scale(float(data.max(initial=0.0)), np.issubdtype(arr.dtype, np.floating))
    else:
        raise ImageError(f"<array>: unsupported pixel type {arr.dtype}")
    data = np.clip(data, 0.0, 1.0)
    if data.ndim == 2:
        return data, None
    if data.shape[2] == 2:
        return data[..., 0], data[..., 1]
    if data.shape[2] == 4:
        return data[..., :3], data[..., 3]
    return data, None


def _block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Shrink by an integer factor, averaging (anti-aliased, for the formats Image.reduce lacks). A side
    shorter than the factor keeps one row or column (a 4x100000 strip must not shrink to nothing)."""
    fy, fx = min(factor, arr.shape[0]), min(factor, arr.shape[1])
    h, w = arr.shape[0] // fy * fy, arr.shape[1] // fx * fx
    shape = (h // fy, fy, w // fx, fx) + arr.shape[2:]
    return arr[:h, :w].reshape(shape).mean(axis=(1, 3))


def _grey(pixels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """One grey channel, 1 = white. A mostly transparent image is a canvas export whose drawing is its
    alpha (the RGB under it is often black), so alpha becomes dark ink on white; otherwise transparency is
    composited over white. In colour the channel with the most contrast wins, so blue ink on yellow paper
    keeps its contrast where luminance would lose it; a highlighter's band across the digit is then cleared
    by the channels its dye lets through (`_without_highlighter`)."""
    if alpha is not None:
        if np.count_nonzero(alpha < 0.5) > alpha.size // 2:
            return (1.0 - alpha).astype(np.float32)
        if pixels.ndim == 3:
            alpha = alpha[..., None]
        pixels = pixels * alpha + (1.0 - alpha)
    if pixels.ndim == 2:
        return pixels.astype(np.float32, copy=False)
    step = max(1, int(math.sqrt(pixels.shape[0] * pixels.shape[1] / 5000)))
    sample = pixels[::step, ::step].reshape(-1, 3)
    sample = np.sort(np.concatenate([sample, sample.mean(axis=1, keepdims=True)], axis=1), axis=0)
    spread = sample[len(sample) - 1 - len(sample) // 100] - sample[len(sample) // 100]  # 1% to 99%
    if spread[3] >= 0.85 * spread[:3].max():
        grey = pixels.mean(axis=2, dtype=np.float32)
    else:
        grey = np.ascontiguousarray(pixels[..., int(spread[:3].argmax())], dtype=np.float32)
    clear = _without_highlighter(pixels, grey, step)
    return grey if clear is None else clear


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHANNEL_SETS = ((0, 1), (0, 2), (1, 2), (0, 1, 2))
_MARKED = 0.2  # a highlighter's band is this much darker than the paper in the grey channel...
_CLEARED = 0.2  # ...and within this of the paper in the brightest of the channels that let it through
_MARKED_AREA = 0.01  # share of the image such pixels must cover to count
_INK_LUMA = 0.5  # darker than this share of the paper's luminance is ink (a highlighter is 0.65-0.9)
_MARKED_INK = 0.002  # share of the image the dark ink must cover for a band to be taken off it
_INK_KEPT = (0.6, 0.8)  # the channels chosen keep this share of the ink's contrast on this share of it


def _brightest(pixels: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """Per pixel, the brightest of `channels` (np.maximum on slices: max(axis=2) is ~10x slower here)."""
    return functools.reduce(np.maximum, (pixels[..., c] for c in channels))


def _local_paper(img: np.ndarray) -> np.ndarray:
    """The paper's level near each pixel, under slow light: the upper quartile of blocks a tenth of the
    image wide, then the brightest of each 3x3 of blocks (a thick stroke can fill a block)."""
    h, w = img.shape
    b = max(2, min(h, w) // 10)
    gh, gw = h // b, w // b
    blocks = img[:gh * b, :gw * b].reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, b * b)
    k = (3 * b * b) // 4
    level = ndi.maximum_filter(np.partition(blocks, k, axis=2)[..., k], 3, mode="nearest")
    return level[np.minimum(np.arange(h) // b, gh - 1)][:, np.minimum(np.arange(w) // b, gw - 1)]


def _without_highlighter(pixels: np.ndarray, grey: np.ndarray, step: int) -> np.ndarray | None:
    """The brightest of two or three colour channels, where that clears a highlighter's band that `grey`
    shows as ink; None when there is no such band. A highlighter's dye passes at least one channel nearly
    whole, so the band is paper in that channel, while a pen darkens most channels: ink (by luminance)
    must keep its contrast in every channel used, and the band must cover 1 % of the image."""
    sample = np.ascontiguousarray(pixels[::step, ::step])
    grey_sample = grey[::step, ::step]
    if min(grey_sample.shape) < 8:
        return None
    paper = float(np.median(grey_sample))
    low, high = np.quantile(grey_sample, (0.002, 0.998))
    if paper - low < high - paper:
        return None  # light ink: nobody highlights a board
    luma = sample @ _LUMA
    lighter = _brightest(sample, (0, 1, 2)) - grey_sample > _MARKED * paper  # what another channel clears
    if np.mean(lighter & (luma > _INK_LUMA * float(np.median(luma)))) < _MARKED_AREA:
        return None  # nothing but ink that another channel would clear
    ink = luma < _INK_LUMA * _local_paper(luma)
    if np.count_nonzero(ink) < _MARKED_INK * ink.size:
        return None  # no dark ink for a band to be across: a digit drawn with a marker is the digit
    near_ink = ndi.binary_dilation(ink, iterations=2)
    grey_paper = _local_paper(grey_sample)
    marked = (grey_sample < (1.0 - _MARKED) * grey_paper) & ~near_ink
    papers = [_local_paper(sample[..., c]) for c in range(3)]
    # the ink's contrast in the channel that shows it best (a thin digit may not have set `grey`'s channel)
    ink_contrast = np.max([1.0 - sample[..., c][ink] / np.maximum(papers[c][ink], 1e-3) for c in range(3)], axis=0)
    best, best_area = None, _MARKED_AREA
    for channels in _CHANNEL_SETS:
        candidate = _brightest(sample, channels)
        level = _brightest(np.stack(papers, axis=2), channels)
        contrast = 1.0 - candidate[ink] / np.maximum(level[ink], 1e-3)
        if np.mean(contrast >= _INK_KEPT[0] * ink_contrast) < _INK_KEPT[1]:
            continue  # this set would wash out a coloured pen's strokes
        area = float(np.mean(marked & (candidate > (1.0 - _CLEARED) * level)))
        if area >= best_area:
            best, best_area = channels, area
    if best is None:
        return None
    return _brightest(pixels, best).astype(np.float32, copy=False)


def _pil_pixels(im: Image.Image, name: str, ours: bool, max_side: int | None,
                region: tuple[int, int, int, int] | None,
                ) -> tuple[tuple[np.ndarray, np.ndarray | None], tuple[int, int]]:
    """`_decode` for a PIL image: channels of the (oriented, cropped, reduced) pixels, and the oriented
    full size. Only an image we opened ourselves may be DCT-scaled: a caller's image is left untouched."""
    _check_size(im.width, im.height, name)
    if im.format is not None and im.format not in (*FORMATS, "MPO"):  # a caller's EPS would run Ghostscript
        raise ImageError(f"{name}: not an image in a format read here ({_FORMAT_NAMES})")
    width, height = im.size  # before a draft shrinks it
    if getattr(im, "tile", None) and getattr(im, "fp", None) is None:  # Pillow would fail an assert
        raise ImageError(f"{name}: the image was closed before its pixels were read (load() it first, or pass "
                         "its path)")
    try:  # loaded before the EXIF is read: for a PNG, getexif() loads the pixels and hides a decoding error
        if ours and max_side and im.format == "JPEG" and im.mode in ("L", "RGB"):
            span = max(im.size) if region is None else max(region[2] - region[0], region[3] - region[1])
            ratio = min(1.0, max_side / 2 / span)
            im.draft(im.mode, (max(1, math.ceil(im.width * ratio)), max(1, math.ceil(im.height * ratio))))
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: truncated or corrupt image ({e})") from None
    turn = _orientation(im)
    full_w, full_h = (height, width) if turn in (5, 6, 7, 8) else (width, height)
    if turn != 1:
        im = ImageOps.exif_transpose(im)
    if region is not None:
        _check_region(region, full_w, full_h, name)
        fx, fy = im.width / full_w, im.height / full_h
        x0, y0, x1, y1 = region
        im = im.crop((int(x0 * fx), int(y0 * fy), math.ceil(x1 * fx), math.ceil(y1 * fy)))
    if max_side and max(im.size) > max_side and im.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        im = im.reduce(math.ceil(max(im.size) / max_side))
    return _pil_channels(im, name), (full_w, full_h)


def _check_region(region: tuple[int, int, int, int], width: int, height: int, name: str) -> None:
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ImageError(f"{name}: region {tuple(region)} is not inside the {width}x{height} image")


def _decode(source: ImageSource, max_side: int | None, region: tuple[int, int, int, int] | None = None,
            ) -> tuple[np.ndarray, float, float]:
    """Grey float32 image of `region` (source pixels; default all) whose long side is at most `max_side`
    (None: full size), and the x/y factors from its pixels to source pixels. A JPEG we open ourselves is
    DCT-scaled while decoding (Image.draft), which makes a phone photo ~10x cheaper to read."""
    source = readable(source)
    if isinstance(source, np.ndarray):
        pixels, alpha = _array_channels(source)
        full_h, full_w = pixels.shape[:2]
        if region is not None:
            _check_region(region, full_w, full_h, "<array>")
            x0, y0, x1, y1 = region
            pixels = pixels[y0:y1, x0:x1]
            alpha = None if alpha is None else alpha[y0:y1, x0:x1]
    elif isinstance(source, Image.Image):
        (pixels, alpha), (full_w, full_h) = _pil_pixels(source, "<image>", False, max_side, region)
    else:
        with _open(source) as im:  # closes multi-frame files (GIF, TIFF) that load() leaves open
            (pixels, alpha), (full_w, full_h) = _pil_pixels(im, _name(source), True, max_side, region)
    if max_side and max(pixels.shape[:2]) > max_side:
        factor = math.ceil(max(pixels.shape[:2]) / max_side)
        pixels = _block_mean(pixels, factor)
        alpha = None if alpha is None else _block_mean(alpha, factor)
    grey = _grey(pixels, alpha)
    if max(grey.shape) < _TINY_SIDE:
        # A thumbnail (a 16-px icon, an 8x8 digit set): too few pixels for the statistics that follow,
        # and strokes one pixel wide. Upsample smoothly (bicubic) to a workable size first.
        k = math.ceil(2 * _TINY_SIDE / max(grey.shape))
        big = Image.fromarray(np.ascontiguousarray(grey, np.float32), "F").resize(
            (grey.shape[1] * k, grey.shape[0] * k), Image.BICUBIC)
        grey = np.clip(np.asarray(big), 0.0, 1.0)
    span_w, span_h = (full_w, full_h) if region is None else (region[2] - region[0], region[3] - region[1])
    return grey, span_w / grey.shape[1], span_h / grey.shape[0]


def load_image(source: ImageSource) -> np.ndarray:
    """Decode `source` (path, bytes, PIL image or numpy array) into a float32 grey image in [0, 1]
    (1 = white) at full resolution: EXIF orientation applied, transparency resolved (a mostly transparent
    canvas export becomes dark ink on white), colour reduced to its highest-contrast channel.
    Raises ImageError for anything that is not a usable image."""
    return _decode(source, None)[0]


# ------------------------------------------------------------------------------------------------- ink


def _otsu(values: np.ndarray, top: float) -> float:
    """Otsu's threshold of `values` on [0, top]; vectorised over a 256-bin histogram."""
    bins = 256
    idx = np.clip((values * (bins / top)).astype(np.int32), 0, bins - 1)
    hist = np.bincount(idx.ravel(), minlength=bins).astype(np.float64)
    centres = (np.arange(bins) + 0.5) * (top / bins)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * centres)
    total, mean_all = w0[-1], m0[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_all * w0 / total - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    return float(centres[int(between.argmax())] + top / bins / 2)


def _block_medians(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Medians of ~256 square blocks (at least 2 px a side), and the block side. A block's median is the
    paper's level unless ink fills most of it."""
    h, w = img.shape
    b = min(max(2, round(math.sqrt(h * w / 256))), h, w)
    gh, gw = h // b, w // b
    tiles = img[:gh * b, :gw * b].reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, b * b)
    return np.sort(tiles, axis=2)[:, :, b * b // 2], b  # a sort: np.median crawls on flat paper's ties


def _robust_fit(values: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """A robust polynomial surface (up to cubic) through the block values in `start` (a boolean grid):
    the 4x4 matrix of `_fit_surface`, the blocks it ends with, their median residual and the surface at
    every block. Outlying blocks are dropped after each fit; the first fits are planes, which cannot bend
    into a blob of ink, so the blob is gone before the higher degrees that follow vignetting."""
    terms, design = _design(*values.shape)
    vals = values.ravel().astype(np.float64)
    keep = start.ravel().copy()
    coef = np.zeros(len(terms))
    for degree in (1, 1, 2, 3):
        n = min((degree + 1) * (degree + 2) // 2, len(terms))
        if keep.sum() < 2 * n:
            break
        a = design[keep, :n]
        coef = np.zeros(len(terms))
        coef[:n] = np.linalg.solve(a.T @ a + 1e-9 * np.eye(n), a.T @ vals[keep])
        resid = np.abs(vals - design @ coef)
        keep = resid < 2.5 * 1.4826 * _quantiles(resid[keep], (0.5,))[0] + 0.005
    matrix = np.zeros((4, 4))
    for (i, j), c in zip(terms, coef, strict=True):
        matrix[j, i] = c
    fitted = design @ coef
    resid = np.abs(vals - fitted)
    spread = _quantiles(resid[keep], (0.5,))[0] if keep.any() else np.inf
    return matrix, keep.reshape(values.shape), float(spread), fitted.reshape(values.shape)


def _fit_surface(values: np.ndarray) -> np.ndarray:
    """Robust polynomial surface (up to cubic) through a grid of block values, as a 4x4 matrix C with
    value(x, y) = sum C[j, i] x^i y^j over coordinates in [-1, 1]. Outlying blocks (ink, frames) are
    dropped iteratively (`_robust_fit`), starting from the brighter half of the blocks and again from the
    darker half (ink of a bold digit can fill a third of them); the start that ends with more blocks on
    the surface found the paper."""
    order = np.argsort(values.ravel(), kind="stable")
    half = len(order) - len(order) // 2
    fits = []
    for start in (order[len(order) // 2:], order[:half]):  # brighter, darker half
        mask = np.zeros(values.size, dtype=bool)
        mask[start] = True
        matrix, _, spread, fitted = _robust_fit(values, mask.reshape(values.shape))
        fits.append((matrix, np.abs(values.astype(np.float64) - fitted).ravel(), spread))
    # paper covers more of the page than ink does: the fit with more blocks on it (same tolerance) wins;
    # on a tie the tighter fit does, whichever half it started from (so inverting the image changes nothing)
    limit = 2.5 * 1.4826 * min(spread for _, _, spread in fits) + 0.005
    return max(fits, key=lambda fit: (np.count_nonzero(fit[1] < limit), -fit[2]))[0]


@functools.lru_cache(maxsize=64)
def _design(gh: int, gw: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Monomials x^i y^j (ordered by total degree, up to what the grid supports) at the block centres."""
    top = 3 if min(gh, gw) >= 8 else 2 if min(gh, gw) >= 5 else 1 if min(gh, gw) >= 2 else 0
    terms = [(i, j) for d in range(top + 1) for j in range(d + 1) for i in (d - j,)]
    xs = np.vander((np.arange(gw) + 0.5) / gw * 2 - 1, 4, increasing=True)
    ys = np.vander((np.arange(gh) + 0.5) / gh * 2 - 1, 4, increasing=True)
    design = np.stack([np.outer(ys[:, j], xs[:, i]).ravel() for i, j in terms], axis=1)
    design.flags.writeable = False
    return terms, design


def _surface(matrix: np.ndarray, shape: tuple[int, int], cover: tuple[int, int], step: int = 1) -> np.ndarray:
    """Evaluate a `_fit_surface` matrix on every `step`-th pixel of an image of `shape` whose top-left
    `cover` pixels the fitted grid spanned."""
    xs = np.vander((np.arange(0, shape[1], step) + 0.5) / cover[1] * 2 - 1, 4, increasing=True)
    ys = np.vander((np.arange(0, shape[0], step) + 0.5) / cover[0] * 2 - 1, 4, increasing=True)
    return (ys @ matrix @ xs.T).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    """A round structuring element: an opening by it keeps regions, whatever their direction."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _border_share(mask: np.ndarray) -> float:
    """The share of the image's edge pixels that lie in `mask`."""
    on_edge = mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum()
    return float(on_edge) / (2 * (mask.shape[0] + mask.shape[1]))


# A hard shadow across the page (`_shadowed_paper`): shares of the blocks, pixels or image edge; the disk's
# radius is a fraction of the image's shorter side.
_SHADE_BLOCKS = 0.05  # each side of the shadow's edge holds at least this share of the paper blocks
_SHADE_PAPER = 0.6  # and the two sides together this share: the rest is ink
_SHADE_RATIO = (0.35, 0.9)  # shadowed paper against lit paper; a dark table edge or ink lies below
_SHADE_BRIGHT = 0.45  # lit paper at least this light: a chalkboard's strokes are no paper
_SHADE_REGION = 0.08  # radius of the disk that opens each side: strokes vanish, regions stay
_SHADE_KEPT = 0.5  # share of each side's pixels the opening keeps
_SHADE_EDGE = 0.05  # share of the image's edge each side reaches: a shadow is cast from outside
# A shadow is looked for only in photo-sized images: a thumbnail enlarged (an 8x8 digit set's, upsampled here
# or by the user to 64 px) has soft grey stroke edges that pass for a second paper level (47 and 69 of the
# 1,797 UCI digits in `benchmarks/real_handwriting.py`'s two dark-on-white forms were split, session 32).
_SHADE_SIDE = 70  # shorter side, working px; the smallest user-like page (100 px long, 1.4:1) keeps 71


def _shadowed_paper(grey: np.ndarray, medians: np.ndarray, b: int, step: int, sign: int) -> np.ndarray | None:
    """The paper's level when a hard-edged shadow (a phone's, a hand's) falls across the page, or None.

    One smooth surface cannot bend round a shadow's sharp edge, so the shadowed side came out as a huge
    dark blob, read as the digit or cut away with the digit in it as a photo border. Here the block
    medians split in two (Otsu; once more above the darker class when that was ink or a table edge), a
    surface is fitted to each side, and the page counts as shadowed only when it looks like it (the
    `_SHADE_*` limits): two broad paper regions, both reaching the image's edge, one 35-90 % as light as
    the other. Each pixel then takes its side's level; an ink pixel the side of the nearest paper pixel,
    so a bold stroke across the edge splits along it. Dark ink only: where the one-surface fit saw light
    ink (chalk), dark ink must stand out clearly more against the two levels."""
    low = 0.0
    for _ in range(2):
        upper = medians > low
        cut = _otsu(medians[upper], 1.0)
        lit_start, dim_start = medians > cut, upper & (medians <= cut)
        # a cheap look first: most pages have no second paper level reaching the edge at all
        if min(lit_start.mean(), dim_start.mean()) < _SHADE_BLOCKS or not (
                _border_share(lit_start) and _border_share(dim_start)):
            return None
        if np.median(medians[dim_start]) > 0.95 * np.median(medians[lit_start]):
            return None
        lit, lit_blocks, _, _ = _robust_fit(medians, lit_start)
        dim, dim_blocks, _, _ = _robust_fit(medians, dim_start)
        only_dim, only_lit = dim_blocks & ~lit_blocks, lit_blocks & ~dim_blocks
        if min(only_dim.mean(), only_lit.mean()) < _SHADE_BLOCKS or (dim_blocks | lit_blocks).mean() < _SHADE_PAPER:
            return None
        bright = float(np.median(medians[only_lit]))
        ratio = float(np.median(medians[only_dim])) / max(bright, 1e-3)
        if ratio >= _SHADE_RATIO[0]:
            break
        low = cut
    if not _SHADE_RATIO[0] <= ratio <= _SHADE_RATIO[1] or bright < _SHADE_BRIGHT:
        return None
    cover = (medians.shape[0] * b, medians.shape[1] * b)
    lit_level = _surface(lit, grey.shape, cover)
    dim_level = np.minimum(_surface(dim, grey.shape, cover), lit_level)
    smooth = ndi.uniform_filter(grey, 5)
    paper = smooth >= 0.85 * dim_level
    darker = smooth < (lit_level + dim_level) / 2
    if not paper.all():
        _, (near_y, near_x) = ndi.distance_transform_edt(~paper, return_indices=True)
        darker = darker[near_y, near_x]
    darker &= dim_level < 0.9 * lit_level  # not where the darker surface, far from its blocks, meets the other
    radius = max(2, round(_SHADE_REGION * min(grey.shape)))
    disk = _disk(radius)
    shade = ndi.binary_opening(np.pad(darker, radius, mode="edge"), disk)[radius:-radius, radius:-radius]
    light = ndi.binary_opening(np.pad(~darker, radius, mode="edge"), disk)[radius:-radius, radius:-radius]
    if (np.count_nonzero(shade & darker & paper) < _SHADE_KEPT * np.count_nonzero(darker & paper)
            or np.count_nonzero(light) < _SHADE_KEPT * np.count_nonzero(~darker)
            or min(_border_share(shade), _border_share(light)) < _SHADE_EDGE):
        return None
    shade = ndi.binary_dilation(shade)
    level = np.where(shade, dim_level, lit_level)
    # Along the edge the light ramps from one level to the other (the penumbra): there the level is the
    # image's own, kept between the two, so only what is darker than the shadowed paper counts as ink.
    band = ndi.binary_dilation(shade ^ ndi.binary_erosion(shade), iterations=3)
    level[band] = np.clip(grey, dim_level, lit_level)[band]
    if sign > 0:
        dark, light = _ink_tails(grey[::step, ::step] - level[::step, ::step], frames=False)
        if dark < 1.5 * light:
            return None
    return level.astype(np.float32)


# Glare on glossy paper (`_without_glare`): the closing's side is a share of the image's shorter side.
_GLARE_CLOSE = 0.15  # wider than a stroke of any digit that fits the image, so the closing fills the ink
_GLARE_OPEN = 3  # px at half size: an opening first takes off what is thin and bright (JPEG's ringing along a stroke)
_GLARE_VEIL = 0.15  # a veil lifts the paper at least this share of its way to white...
_GLARE_LIFT = 0.04  # ...and at least this much
_GLARE_ROOM = 0.05  # where the paper is this far from white at least: glare on white paper cannot be seen
_GLARE_AREA = (0.002, 0.4)  # share of the image the veiled paper covers
_GLARE_EDGE = 0.5  # share of a veiled region's outline on the image's edge at most: a lit side reaches it
_GLARE_FLOOR = 0.15  # the veil is taken off by 1 / this at most
_GLARE_INKED = 0.3  # where the glare was taken for light ink: share of the veiled region darker than veiled paper


def _without_glare(grey: np.ndarray, paper: np.ndarray, step: int, mostly_paper: bool = False,
                   ) -> np.ndarray | None:
    """`grey` with the glare of a lamp on glossy paper taken off, or None when there is none.

    Reflected light adds to the page before the camera's gamma, so under it paper turns white and the ink
    light grey: the fitted `paper` level cannot bend up into a small spot, the ink there fell under the
    threshold, and the digit lost the strokes under the spot (191 of 200 held-out digits read right in
    session 28's throwaway check). Glare is modelled as a veil v: what was darkness d (1 - grey) is now
    d (1 - v). The paper's own level near each pixel (an opening, then a closing wider than the strokes)
    against the fitted level gives v, and the darkness is divided by 1 - v where the veiled paper forms
    regions that lie inside the picture (the lit side of a soft shadow reaches its edge). With
    `mostly_paper` (the page looked like light ink), a region must also be mostly lit paper, as glare is:
    the closing bridges chalk strokes too, and between them lies dark board."""
    # The veil is smooth, so it is found at half size (a quarter of the cost on every page without glare).
    h, w = grey.shape[0] // 2, grey.shape[1] // 2
    small = (grey[0:2 * h:2, 0:2 * w:2] + grey[1::2, 1::2][:h, :w] + grey[0:2 * h:2, 1::2][:, :w]
             + grey[1::2, 0:2 * w:2][:h]) / 4  # slices: _block_mean's reshape costs 5x more here
    level = paper[0:2 * h:2, 0:2 * w:2]
    k = max(3, round(_GLARE_CLOSE * min(h, w)) | 1)
    near = ndi.minimum_filter(ndi.maximum_filter(ndi.maximum_filter(ndi.minimum_filter(
        small, _GLARE_OPEN), _GLARE_OPEN), k, mode="nearest"), k, mode="nearest")  # opening, then closing
    lift = ndi.uniform_filter(near, k) - level
    lift -= float(np.median(lift[::step, ::step]))  # the opening and closing lean towards the noise's peaks
    room = np.maximum(1.0 - level, 0.02)
    veil = np.clip(lift / room, 0.0, 0.95)
    glare = (veil > _GLARE_VEIL) & (lift > _GLARE_LIFT) & (room >= _GLARE_ROOM)
    if not glare.any():
        return None
    labels, count = ndi.label(glare)
    outline = labels[glare & ~ndi.binary_erosion(glare, border_value=0)]
    edge = np.zeros_like(glare)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    on_edge = np.bincount(labels[glare & edge], minlength=count + 1)
    inside = on_edge <= _GLARE_EDGE * np.bincount(outline, minlength=count + 1)
    inside[0] = False
    glare = inside[labels]
    if not _GLARE_AREA[0] <= glare.mean() <= _GLARE_AREA[1]:
        return None
    if mostly_paper and np.mean(small[glare] < (level + lift / 2)[glare]) > _GLARE_INKED:
        return None  # the closing bridged light strokes: between them lies dark board, not veiled paper
    veil = np.where(ndi.binary_dilation(glare), veil, 0.0).repeat(2, axis=0).repeat(2, axis=1)
    veil = ndi.gaussian_filter(np.pad(veil, [(0, grey.shape[0] - 2 * h), (0, grey.shape[1] - 2 * w)], mode="edge"), 2)
    return np.clip(1.0 - (1.0 - grey) / np.maximum(1.0 - veil, _GLARE_FLOOR), 0.0, 1.0).astype(np.float32)


def _ink_tails(resid: np.ndarray, frames: bool = True) -> tuple[float, float]:
    """How much darker and how much lighter ink a residual (image minus paper level) holds: the mass of
    each tail beyond 4 sigma of paper noise (+ 2.5 grey levels: DCT-scaled JPEGs can be noiseless). With
    `frames`, dark photo borders do not count, as they would outweigh thin strokes."""
    limit = 4.0 * _centre_spread(resid)[1] + 0.01
    tails = []
    for side in (resid < -limit, resid > limit):
        frame = _frames(side) if frames else None
        if frame is not None:
            side &= ~frame
        tails.append(float((np.abs(resid[side]) - limit).sum()))
    return tails[0], tails[1]


def _paper(grey: np.ndarray, step: int, shadows: bool = True) -> tuple[np.ndarray, int, bool]:
    """The paper's level under uneven lighting, the ink's side of it (-1 darker, +1 lighter), and whether
    a hard shadow splits the page.

    The level is a robust smooth surface through block medians: a block's median is paper unless ink
    fills it, and such blocks are outliers the fit drops. Ink is the heavier tail of the residual
    (`_ink_tails`). This
    works for strokes covering well under 1% of the image, where percentiles would see only unevenly lit
    paper. With `shadows`, a page with a hard shadow across it gets a level per side (`_shadowed_paper`)."""
    medians, b = _block_medians(grey)
    cover = (medians.shape[0] * b, medians.shape[1] * b)
    level = _surface(_fit_surface(medians), grey.shape, cover)
    dark, light = _ink_tails(grey[::step, ::step] - level[::step, ::step])
    sign = -1 if dark > light else 1
    shadowed = _shadowed_paper(grey, medians, b, step, sign) if shadows else None
    if shadowed is not None:
        return shadowed, -1, True
    return level, sign, False


def _thin_pixels(mask: np.ndarray, axis: int) -> np.ndarray:
    """Ink of `mask` that could belong to a line running along `axis` (0 vertical, 1 horizontal): away from
    anything thicker across it than 3 % of the image, which is a pen stroke, not a ruled line."""
    size = 2 * max(1, round(0.015 * mask.shape[1 - axis])) + 1
    thick = ndi.uniform_filter1d(mask.astype(np.float32), size, axis=1 - axis, mode="constant") > 0.999
    return mask & ~ndi.maximum_filter1d(thick, size, axis=1 - axis, mode="constant")


def _long_lines(mask: np.ndarray) -> np.ndarray:
    """Pixels of ruled lines: thin (a few px) structures running across 85% of the image, tilt and the
    gaps where strokes cross them tolerated. Digit strokes are thick relative to the digit, and a thin one
    that long would need a digit filling the frame; small images (no notebook photo) are left alone."""
    found = np.zeros_like(mask)
    if max(mask.shape) < 64:
        return found
    for axis in (0, 1):  # the axis a line runs along: 0 vertical, 1 horizontal
        across, along = mask.shape[1 - axis], mask.shape[axis]
        # Cheap test first: a line, tilted up to ~5 degrees, fills 85% of some 24-px band across.
        bands = mask[:across // 8 * 8].reshape(-1, 8, along) if axis == 1 else \
            mask[:, :across // 8 * 8].T.reshape(-1, 8, along)
        pooled = bands.any(axis=1)
        pooled = pooled[:-2] | pooled[1:-1] | pooled[2:]
        if pooled.size == 0 or pooled.sum(axis=1).max() < 0.85 * along:
            continue
        thin = _thin_pixels(mask, axis)
        bridged = ndi.maximum_filter1d(thin, max(3, along // 20), axis=axis)
        labels, count = ndi.label(bridged, _EIGHT)
        lines = [i for i, sl in enumerate(ndi.find_objects(labels), start=1)
                 if sl[axis].stop - sl[axis].start >= 0.85 * along
                 and sl[1 - axis].stop - sl[1 - axis].start <= 0.12 * along]
        if lines:
            found |= thin & np.isin(labels, lines)
    return found | _lines_under_ink(mask & ~found)


def _lines_under_ink(mask: np.ndarray) -> np.ndarray:
    """Level ruled lines the digit touches (a digit written on the line, a form's baseline), which
    `_long_lines` keeps: touching, line and digit are one structure there. A line here is ink covering 85 %
    of some row (give or take a row) and reaching past the rest of the ink by a tenth of the image on both
    sides, so a digit's own bar (a tightly cropped 7's) is never one; only its thin pixels go, so a stroke
    crossing it keeps its thick part."""
    found = np.zeros_like(mask)
    if max(mask.shape) < 64:
        return found
    for axis, view, out in ((1, mask, found), (0, mask.T, found.T)):  # rows, then columns, of the image
        w = view.shape[1]
        if view.mean(axis=1).max(initial=0.0) < 0.85:  # cheap: no row is mostly ink
            continue
        thin = _thin_pixels(mask, axis) if axis == 1 else _thin_pixels(mask, axis).T
        level = ndi.maximum_filter1d(ndi.maximum_filter1d(view, 3, axis=0).mean(axis=1) >= 0.85, 3)
        line = thin & level[:, None]
        rest = np.flatnonzero((view & ~line).any(axis=0))
        spans = np.flatnonzero(line.any(axis=0))
        if rest.size and spans.size and spans[0] <= rest[0] - 0.1 * w and spans[-1] >= rest[-1] + 0.1 * w:
            out |= line
    return found


_ROW_RUNS = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]])  # ndi.label structure: horizontal runs only


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Each pixel's horizontal run length in `mask` (0 off the mask)."""
    runs, _ = ndi.label(mask, _ROW_RUNS)
    return np.bincount(runs.ravel())[runs] * mask


def _straight_runs(own: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of `own` on horizontal / vertical runs at least `share` of its width / height long, one pixel
    of drift either way tolerated (a photo is rarely square to the page)."""
    h, w = own.shape
    rows = own & (_run_lengths(ndi.maximum_filter1d(own, 3, axis=0)) >= share * w)
    cols = own & (_run_lengths(ndi.maximum_filter1d(own, 3, axis=1).T).T >= share * h)
    return rows, cols


@dataclass
class _Components:
    """Connected components of an ink mask: labels, count, boxes (x0, y0, x1, y1; row 0 unused), pixel
    area and smoothed ink mass per label."""

    labels: np.ndarray
    count: int
    boxes: np.ndarray
    area: np.ndarray
    mass: np.ndarray


def _components(mask: np.ndarray, smooth: np.ndarray) -> _Components:
    labels, count = ndi.label(mask, _EIGHT)
    boxes = np.zeros((count + 1, 4), dtype=np.int64)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        boxes[i] = sl[1].start, sl[0].start, sl[1].stop, sl[0].stop
    flat = labels.ravel()
    area = np.bincount(flat, minlength=count + 1)
    mass = np.bincount(flat, weights=smooth.ravel(), minlength=count + 1)
    return _Components(labels, count, boxes, area, mass)


def _thin_lines(rows: np.ndarray, cols: np.ndarray) -> bool:
    """Whether horizontal runs `rows` and vertical runs `cols` (masks over one component's bounds) are thin
    lines for its size: a quarter of its height holds the former, a quarter of its width the latter. A
    box's printed lines are; the sides of a small, square-cut digit (a narrow 8 at 28 px) are not."""
    h, w = rows.shape
    return np.count_nonzero(rows.any(axis=1)) <= 0.25 * h and np.count_nonzero(cols.any(axis=0)) <= 0.25 * w


def _drawn_boxes(comp: _Components, smooth: np.ndarray, speck: float) -> np.ndarray | None:
    """Pixels of boxes drawn around the ink, or None: a form's cell, a comb of cells, or the two or three
    sides a tight crop of a cell leaves. Why: such a box has more ink than the digit inside it, so it would
    be kept as the digit.

    A component at least 20 px a side is a box when nearly all of it lies on straight runs at least 40 % of
    its width or height long, both horizontal and vertical ones, thin for its size (`_thin_lines`), on at
    most two horizontal lines (a ruled or squared page has more; `_long_lines` deals with those), and other
    ink lies inside it. Digits are safe: a digit built of straight strokes (a 4 of three strokes, a 7 with a
    vertical stem) has no other ink inside its own box, and a 1 or a detached bar is a single run.

    A digit that touches its box is one component with it. Then, if nothing else of its size is in the
    image (two touching digits in a row can frame each other) and it is 40 px or more long, only the box's
    sides are cut out: when three or four sides of the component's bounding box are thin straight runs
    90 % of that side long, and the ink off such runs is at least a quarter of theirs (a squared 0 has
    none). Two sides meeting in a corner are left alone: a 7 with a straight bar and stem looks the same."""
    labels, boxes, area, mass = comp.labels, comp.boxes, comp.area, comp.mass
    live = area >= speck
    live[0] = False
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    found = np.zeros(labels.shape, dtype=bool)
    for i in np.flatnonzero(live & (widths >= 20) & (heights >= 20) & (area < 0.8 * widths * heights)):
        x0, y0, x1, y1 = boxes[i]
        own = labels[y0:y1, x0:x1] == i
        inside = live & (boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1)
        inside[i] = False
        # a digit inside, not a speck: some ink (a hair-thin pen's can be little) spanning a third of the box
        tall = inside.any() and boxes[inside, 3].max() - boxes[inside, 1].min() >= 0.3 * (y1 - y0)
        if tall and mass[inside].sum() >= 0.03 * mass[i]:
            rows, cols = _straight_runs(own, 0.4)
            straight = np.count_nonzero(rows | cols)
            if (straight >= 0.85 * np.count_nonzero(own) and np.count_nonzero(rows) >= 0.1 * straight
                    and np.count_nonzero(cols) >= 0.1 * straight and ndi.label(rows.any(axis=1))[1] <= 2
                    and _thin_lines(rows, cols)):
                found[y0:y1, x0:x1] |= own
                continue
        # The digit touches the box: cut out the sides that run along the bounding box's edges. Only for
        # a lone component 40 px or more long: in a row two touching digits (a 1 beside a 2) can frame each
        # other, and at MNIST's 20 px a looped 2's curves pass for straight within a pixel of drift.
        if max(x1 - x0, y1 - y0) < 40 or np.count_nonzero(live & (mass >= 0.2 * mass[i])) > 1:
            continue
        rows, cols = _straight_runs(own, 0.9)
        band = max(3, round(0.08 * min(x1 - x0, y1 - y0)))
        edge_y, edge_x = np.arange(y1 - y0)[:, None], np.arange(x1 - x0)[None, :]
        sides = [rows & (edge_y < band), rows & (edge_y >= y1 - y0 - band),
                 cols & (edge_x < band), cols & (edge_x >= x1 - x0 - band)]
        if sum(bool(side.any()) for side in sides) < 3 or not _thin_lines(sides[0] | sides[1], sides[2] | sides[3]):
            continue
        cut = sides[0] | sides[1] | sides[2] | sides[3]
        weights = smooth[y0:y1, x0:x1]
        if weights[own & ~(rows | cols)].sum() >= 0.25 * weights[cut].sum():  # ink off the straight runs
            found[y0:y1, x0:x1] |= cut
    return found if found.any() else None


def _drawn_rings(comp: _Components, speck: float) -> np.ndarray | None:
    """Pixels of rings drawn around the ink (a circled digit, an answer circled on a form), or None. Why:
    like a box, the ring has more ink than the digit inside it, and was read as a 0.

    A component at least 20 px a side is a ring when other ink lies wholly inside its box, spans at least
    30 % of its height (a row of digits in a long oval: about a third) and has at least 3 % of its ink (a
    hair-thin pen's digit has little), and the component surrounds that ink: its pixels lie in at least 14
    of 16 directions from the inner ink's centre (a hand-drawn ring may not close). Where the ring is
    closed, only its band goes (`_ring_band`), so a digit's stroke that touches it stays. A digit's own
    parts are safe: a dotted 0's dot is small and short, a crossed 7's detached bar flat.

    A digit touching its ring is one component with it: see `_touching_ring`, tried only on a lone
    component 40 px or more long that is not itself inside another."""
    boxes, area, mass = comp.boxes, comp.area, comp.mass
    live = area >= speck
    live[0] = False
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    found = np.zeros(comp.labels.shape, dtype=bool)
    for i in np.flatnonzero(live & (widths >= 20) & (heights >= 20)):
        x0, y0, x1, y1 = boxes[i]
        own = comp.labels[y0:y1, x0:x1] == i
        inside = live & (boxes[:, 0] > x0) & (boxes[:, 1] > y0) & (boxes[:, 2] < x1) & (boxes[:, 3] < y1)
        if inside.any() and _surrounds(own, boxes[inside] - (x0, y0, x0, y0), mass[inside].sum() / mass[i]):
            peeled = _ring_band(own)  # a digit's stroke that touches the ring stays
            found[y0:y1, x0:x1] |= own if peeled is None else peeled[0]
            continue
        around = live & (boxes[:, 0] <= x0) & (boxes[:, 1] <= y0) & (boxes[:, 2] >= x1) & (boxes[:, 3] >= y1)
        if (max(x1 - x0, y1 - y0) >= 40 and np.count_nonzero(live & (mass >= 0.2 * mass[i])) == 1
                and np.count_nonzero(around) == 1):  # alone (specks aside), and not inside a ring or box
            ring = _touching_ring(own)
            if ring is not None:
                found[y0:y1, x0:x1] |= ring
    return found if found.any() else None


def _surrounds(own: np.ndarray, inner: np.ndarray, share: float) -> bool:
    """Whether component `own` is a ring round the ink whose boxes `inner` are (in `own`'s frame) and
    which has `share` of its ink: that ink spans 30 % of its height and has 3 % of its ink, and its pixels
    lie in 14 of 16 directions from the ink's centre."""
    iy0, iy1 = inner[:, 1].min(), inner[:, 3].max()
    if iy1 - iy0 < 0.3 * own.shape[0] or share < 0.03:
        return False
    ys, xs = np.nonzero(own)
    cx, cy = (inner[:, 0].min() + inner[:, 2].max()) / 2, (iy0 + iy1) / 2
    sector = ((np.arctan2(ys - cy, xs - cx) + math.pi) * (16 / (2 * math.pi))).astype(np.int64) % 16
    if np.count_nonzero(np.bincount(sector, minlength=16)) < 14:
        return False
    # and it is a band round its own convex hull: 70 % of its pixels lie within 15 % of the smaller side of
    # the hull's edge (a ring: all; with a 5's bar that touches it, 76 %). Two touching digits in a row can
    # surround a broken loop's fragments, but a stroke of theirs crosses the middle (a 7 and 8: 47 %).
    corners = _pixel_corners(ys, xs)
    hull = ConvexHull(corners)
    outline = Image.new("1", (own.shape[1] + 2, own.shape[0] + 2), 0)
    ImageDraw.Draw(outline).polygon([(float(x), float(y)) for x, y in corners[hull.vertices]], fill=1)
    inside_hull = np.asarray(outline, dtype=bool)[:own.shape[0], :own.shape[1]]
    depth = ndi.distance_transform_edt(np.pad(inside_hull, 1))[1:-1, 1:-1]
    return np.count_nonzero(depth[own] <= 0.15 * min(own.shape)) >= 0.7 * np.count_nonzero(own)


def _pixel_corners(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The four corners (x, y) of each pixel: a convex hull of these covers the pixels themselves, and is
    never degenerate, even for a straight row of them."""
    return np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])


def _ring_band(own: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(ring, enclosed, depth): the pixels of one component whose outline is a closed, thin, convex ring,
    its pixels inside the ring, and each pixel's layer; or None.

    Peeled from the outside: layer k is the pixels k steps (chessboard) inside the filled outline. The
    outline must enclose mostly paper (30 % of the filled shape or more). A ring drawn with a pen fills its
    outer layers all round (90 % ink or more) and, within two layers more, gives way to paper (under 40 %
    ink), all within 12 % of the smaller side; a digit's own loop thins out gradually, and a 0 running
    along the inside of a circle keeps the next layers half inked, so neither is taken. The shape must be
    convex: the outline covers 95 % of its convex hull (drawn circles measured 0.97-0.98; a flat 8 whose
    loops are both closed 0.89, for its waist). Strokes crossing the ring to the outside (a digit poking
    out of a hasty circle, a 6's or 9's tail) are opened away from the outline first: they are neither
    ring nor enclosed."""
    filled = ndi.binary_fill_holes(own)
    if np.count_nonzero(filled & ~own) < 0.3 * np.count_nonzero(filled):
        return None
    core = ndi.binary_opening(filled, iterations=max(2, round(0.06 * min(own.shape))))
    if np.count_nonzero(core) < 0.5 * np.count_nonzero(filled):  # mostly thin: a flat loop, no ring
        return None
    depth = ndi.distance_transform_cdt(np.pad(core, 1), metric="chessboard")[1:-1, 1:-1]
    limit = max(2, int(0.12 * min(own.shape)))
    layers = np.bincount(depth[core], minlength=limit + 2)[1:limit + 2]
    inked = np.bincount(depth[own & core], minlength=limit + 2)[1:limit + 2]
    share = inked / np.maximum(layers, 1)
    solid = int(np.argmin(share >= 0.9)) if (share < 0.9).any() else len(share)
    paper = np.flatnonzero(share[solid:solid + 2] < 0.4)
    if paper.size == 0:
        return None
    if np.count_nonzero(core) < 0.95 * ConvexHull(_pixel_corners(*np.nonzero(depth == 1))).volume:
        return None
    # down to the first mostly-paper layer (share[j] is layer j + 1's), whose ink is the ring's soft inner
    # edge; and what the opening shaved off the ring's outer corners, within the ring's width of it
    width = solid + int(paper[0]) + 1
    ring = own & core & (depth <= width)
    ring |= own & ~core & ndi.binary_dilation(ring, _EIGHT, iterations=width)
    return ring, own & core & ~ring, depth


def _touching_ring(own: np.ndarray) -> np.ndarray | None:
    """The ring's pixels of one component that is a ring (`_ring_band`) with a digit touching it, or None.

    What the ring encloses must look like a digit placed in it: it reaches 15 % of the smaller side deep
    (a loop's uneven stroke leaves only slivers along its inner edge), spans half the height, has a fifth
    as many pixels as the ring, and its box is centred within a fifth of the size. A 0 whose pen end
    hooks inside it fails the last three; an 8 whose loops are both closed is not convex."""
    peeled = _ring_band(own)
    if peeled is None:
        return None
    ring, inner, depth = peeled
    if not inner.any() or depth[inner].max() < 0.15 * min(own.shape):
        return None
    rows, cols = np.flatnonzero(inner.any(axis=1)), np.flatnonzero(inner.any(axis=0))
    h, w = own.shape
    if (rows[-1] - rows[0] < 0.5 * h or np.count_nonzero(inner) < 0.2 * np.count_nonzero(ring)
            or abs(rows[0] + rows[-1] - h) > 0.4 * h or abs(cols[0] + cols[-1] - w) > 0.4 * w):
        return None
    return ring


def _underlines(comp: _Components, speck: float) -> np.ndarray | None:
    """Pixels of lines drawn under the ink apart from it (a number underlined, the answer line of a form),
    or None. Why: near the digit and with much ink, such a line would be kept as a detached part of it.

    A component is an underline when it is flat (at most a fifth as tall as wide, 20 px or more wide) and
    straight (85 % of it on level runs 40 % of its width long), and the ink above it (wholly above, its
    middle over the line) is the image's main ink, no more than 1.7x as wide, and stands clear of it by at
    least 3 % of its own height, with nothing coming down beside the line. A digit's own flat parts are
    safe: a 7's or 5's bar has the rest of the digit below or beside it, a crossed 7's bar ink above and
    below, and a 2's base meets its curve (a 2 written in two strokes whose base stands clear of the curve
    is the one shape this rule misreads)."""
    boxes, area, mass = comp.boxes, comp.area, comp.mass
    live = area >= speck
    live[0] = False
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    found = np.zeros(comp.labels.shape, dtype=bool)
    for i in np.flatnonzero(live & (widths >= 20) & (heights <= 0.2 * widths)):
        x0, y0, x1, y1 = boxes[i]
        middle = (boxes[:, 0] + boxes[:, 2]) / 2
        above = live & (boxes[:, 3] <= y0) & (middle >= x0) & (middle <= x1) & (mass >= 0.05 * mass[i])
        if not above.any():
            continue
        others = live.copy()
        others[i] = False
        # the ink above is the image's main ink, and nothing over the line's span comes down beside it (a
        # hairline 2's broken curve ending at its detached base)
        beside = others & (boxes[:, 3] > y0) & (boxes[:, 0] < x1) & (boxes[:, 2] > x0)
        if mass[above].sum() < 0.5 * mass[others].sum() or beside.any():
            continue
        top, bottom = boxes[above, 1].min(), boxes[above, 3].max()
        span = boxes[above, 2].max() - boxes[above, 0].min()
        if y0 - bottom < max(2.0, 0.03 * (bottom - top)) or span > 1.7 * (x1 - x0):
            continue
        own = comp.labels[y0:y1, x0:x1] == i
        rows, _ = _straight_runs(own, 0.4)
        if np.count_nonzero(rows) >= 0.85 * np.count_nonzero(own):
            found[y0:y1, x0:x1] |= own
    return found if found.any() else None


def _frames(mask: np.ndarray) -> np.ndarray | None:
    """Dark photo borders (table, shadow, scanner lid), or None: ink covering over half of an image side
    is a frame. Only the band itself is returned, its depth a running median of the per-line run from the
    edge, so a digit touching the frame survives."""
    band = np.zeros_like(mask)
    found = False
    for view, out in ((mask, band), (mask[::-1], band[::-1]), (mask.T, band.T), (mask.T[::-1], band.T[::-1])):
        if np.count_nonzero(view[0]) <= view.shape[1] // 2:  # view[0]: the top, bottom, left, right edge
            continue
        depth = np.where(view.all(axis=0), view.shape[0], np.argmin(view, axis=0))
        # the frame's own edge is blurred and uneven: clear a margin of 3% of the image beyond it
        depth = ndi.median_filter(depth, size=max(3, view.shape[1] // 4) | 1, mode="nearest") + 2 + max(
            mask.shape) // 33
        out |= np.arange(view.shape[0])[:, None] < depth[None, :]
        found = True
    return band if found else None


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles of a few thousand values by a full sort: np.partition slows down tenfold on the many
    equal values of flat paper, and np.percentile adds overhead on arrays this small."""
    flat = np.sort(values, axis=None)
    return flat[[min(flat.size - 1, int(q * flat.size)) for q in qs]]


def _centre_spread(sample: np.ndarray) -> tuple[float, float]:
    """Median and robust standard deviation (median absolute deviation): paper's level and noise, blind
    to ink as long as it covers under half of the sample."""
    centre = float(_quantiles(sample, (0.5,))[0])
    return centre, 1.4826 * float(_quantiles(np.abs(sample - centre), (0.5,))[0])


_SHEET_SIDE = 48  # smaller images (MNIST's own, thumbnails) are never a photo of a sheet on a desk
_SHEET_SHARE = (0.05, 0.85)  # a sheet (a note, a card) covers this share of the photo; more is a frame
_SHEET_CONTRAST = 0.2  # its paper at least this much lighter than the desk around it
_SHEET_INK = (0.002, 0.5)  # share of the sheet its ink covers (a bold 8 on a small note: 0.35)
_SHEET_SOLID = 0.93  # area against its convex hull's: a sheet's outline is convex...
_SHEET_SQUARE = 0.88  # ...and straight: area against the smallest rotated rectangle round it (an ellipse: 0.79)
_DESK_EDGE = 0.5  # the desk covers this much of the image's edge at least, the sheet's outline at most
_DESK_EMPTY = (0.8, 0.002)  # at most this share of the desk is darker than it by this share of the contrast


def _rectangle_fill(outline: np.ndarray) -> tuple[float, float]:
    """(convex hull area, smallest rotated rectangle area) of a point set: rotating calipers over the hull."""
    from scipy.spatial import ConvexHull  # only for pages that got this far

    hull = ConvexHull(outline)
    corners = outline[hull.vertices]
    best = math.inf
    for edge in np.diff(np.vstack([corners, corners[:1]]), axis=0):
        length = math.hypot(*edge)
        if length > 0:
            u = edge / length
            along, across = corners @ u, corners @ np.array([-u[1], u[0]])
            best = min(best, float(np.ptp(along) * np.ptp(across)))
    return float(hull.volume), best


def _spans(mask: np.ndarray) -> np.ndarray:
    """`mask` filled between its first and last pixel along every row and along every column (both): a
    convex region with its holes and notches filled, even where ink meets its edge (hole filling leaks
    there)."""
    def along_rows(m: np.ndarray) -> np.ndarray:
        first = m.argmax(axis=1)
        last = m.shape[1] - 1 - m[:, ::-1].argmax(axis=1)
        index = np.arange(m.shape[1])
        return (index >= first[:, None]) & (index <= last[:, None]) & m.any(axis=1)[:, None]

    return along_rows(mask) & along_rows(mask.T).T


def _sheet(grey: np.ndarray, step: int) -> np.ndarray | None:
    """The pixels of a light sheet (a sticky note, a card, a slip of paper) lying on a darker desk that
    surrounds it, or None. The desk is then most of the picture's "paper" and the sheet passed for light
    ink, with the digit a hole in it (23 of 100 held-out digits on a note read right, in session 29's
    throwaway check). A sheet is the largest light region, filled (`_spans`: the ink inside it): 5 % to
    85 % of the image, clearly lighter than the desk, convex with straight sides, holding some ink but
    mostly paper; the desk covers half the image's edge, and holds no ink (the dark side of a shadow
    across a digit does)."""
    if min(grey.shape) < _SHEET_SIDE:
        return None
    sample = grey[::step, ::step]
    threshold = _otsu(sample, 1.0)
    if not _SHEET_SHARE[0] <= np.mean(sample > threshold) <= _SHEET_SHARE[1]:
        return None  # a page that fills the photo, nearly always: nothing more to look at
    light = grey > threshold
    if _border_share(~light) < _DESK_EDGE:
        return None
    if float(np.median(sample[sample > threshold]) - np.median(sample[sample <= threshold])) < _SHEET_CONTRAST:
        return None  # the two classes are lit and unlit paper, not a sheet and a desk
    labels, count = ndi.label(light)
    if count == 0:
        return None
    sheet = _spans(labels == int(np.bincount(labels.ravel())[1:].argmax()) + 1)
    if not _SHEET_SHARE[0] <= np.mean(sheet) <= _SHEET_SHARE[1]:
        return None
    desk = ~sheet
    paper, desk_level = float(np.median(grey[sheet & light])), float(np.median(grey[desk]))
    contrast = paper - desk_level
    if contrast < _SHEET_CONTRAST or not _SHEET_INK[0] <= np.mean(~light[sheet]) <= _SHEET_INK[1]:
        return None
    inked_desk = np.mean(grey[desk] < desk_level - _DESK_EMPTY[0] * contrast)
    if _border_share(desk) < _DESK_EDGE or inked_desk > _DESK_EMPTY[1]:
        return None
    ys, xs = np.nonzero(sheet & ~ndi.binary_erosion(sheet, border_value=0))
    h, w = grey.shape
    if len(ys) < 8 or np.mean((ys <= 1) | (xs <= 1) | (ys >= h - 2) | (xs >= w - 2)) > _DESK_EDGE:
        return None  # a region bounded mostly by the image's edge: the lit side of a shadow, not a sheet
    if (ys.min() <= 1 and ys.max() >= h - 2) or (xs.min() <= 1 and xs.max() >= w - 2):
        return None  # from edge to edge of the photo: no desk on either side, so more likely a lit band
    hull, rectangle = _rectangle_fill(np.stack([ys, xs], axis=1).astype(np.float64))
    area = float(np.count_nonzero(sheet))
    return sheet if area >= _SHEET_SOLID * hull and area >= _SHEET_SQUARE * rectangle else None


def _desk_cleared(grey: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """`grey` with the desk round `sheet` painted over by the sheet's paper: each desk pixel (and the
    sheet's outermost 2 px, where its edge blends into the desk) takes the value of the nearest pixel
    inside, after a 5x5 maximum that lifts ink from the sheet's edge, so the page looks like paper
    filling the photo."""
    inner = ndi.binary_erosion(sheet, iterations=2)
    lifted = ndi.maximum_filter(grey, size=5)
    rows, cols = ndi.distance_transform_edt(~inner, return_distances=False, return_indices=True)
    return np.where(inner, grey, lifted[rows, cols]).astype(np.float32)


def _ink_from_grey(grey: np.ndarray, scale: tuple[float, float]) -> InkMap:
    """Polarity, lighting, threshold and clean-up of a working-resolution grey image."""
    step = max(1, int(math.sqrt(grey.size / 3000)))  # statistics from a ~3000-pixel grid sample
    sheet = _sheet(grey, step) if min(scale) >= 1.0 else None  # an upsampled thumbnail is no photo
    if sheet is not None:
        grey = _desk_cleared(grey, sheet)
    paper, sign, shadowed = _paper(grey, step, shadows=min(scale) >= 1.0 and min(grey.shape) >= _SHADE_SIDE)
    if not shadowed and min(scale) >= 1.0 and min(grey.shape) >= _SHEET_SIDE:  # no thumbnails, as for sheets
        unveiled = _without_glare(grey, paper, step, mostly_paper=sign > 0)
        if unveiled is not None and sign > 0:
            # A bright spot outweighed faint dark ink (a fine pen) and passed for light ink: with the glare
            # off, dark ink must outweigh what is left of it.
            dark, light = _ink_tails(unveiled[::step, ::step] - paper[::step, ::step])
            unveiled, sign = (unveiled, -1) if dark > light else (None, sign)
        if unveiled is not None:
            grey = unveiled
    # Contrast over the range the ink has to move in: down to black from the paper for dark ink (light
    # multiplies paper and ink alike, so this is the same in shadow), up to white for light ink. Exact
    # inverses then give the same ink map, so polarity cannot change what follows.
    room = paper if sign < 0 else 1.0 - paper
    ink = (grey - paper) * (sign / np.maximum(room, 0.15))
    centre, spread = _centre_spread(ink[::step, ::step])
    ink -= centre
    floor = 2.0 * spread
    smooth = ndi.uniform_filter(ink, 3)
    noise = _centre_spread(smooth[::step, ::step])[1]
    top = float(smooth.max())
    threshold = max(_otsu(np.clip(smooth, 0.0, None), top) if top > 0 else 1.0, 4.0 * noise, 0.03)
    mask = smooth > threshold
    frame = _frames(mask)
    if frame is not None:  # the frame set that threshold; the ink on the page may be much fainter
        page = np.clip(smooth[~frame], 0.0, None)
        top = float(page.max(initial=0.0))
        threshold = max(_otsu(page, top) if top > 0 else 1.0, 4.0 * noise, 0.03)
        mask = (smooth > threshold) & ~frame
    speck = max(3, 1e-4 * grey.size)
    # Boxes before ruled lines (a tight crop's box sides span the image and would go as lines, leaving
    # the other sides behind) and after (a box crossed by ruled lines is one component with them).
    comp = _components(mask, smooth)
    drawn = _drawn_boxes(comp, smooth, speck)
    for marks in (_drawn_rings(comp, speck), _underlines(comp, speck)):
        if marks is not None:
            drawn = marks if drawn is None else drawn | marks
    if drawn is not None:
        mask &= ~drawn
    lines = _long_lines(mask)
    if lines.any():
        mask &= ~lines
        after = _drawn_boxes(_components(mask, smooth), smooth, speck)
        if after is not None:
            mask &= ~after
            lines |= after
    if drawn is not None:  # out of the ink, and like ruled lines kept out of a digit's fringe
        lines |= drawn
    if lines.any():  # the mask changed: its components did too
        comp = _components(mask, smooth)
    labels, count, boxes, area, mass = comp.labels, comp.count, comp.boxes, comp.area, comp.mass
    mass[0] = 0.0
    mass[area < speck] = 0.0  # specks
    inked = (mass > 0)[labels]
    level = broad = 0.0
    if inked.any():
        every = max(1, int(np.count_nonzero(inked)) // 3000)
        level = float(_quantiles(ink[inked][::every], (0.9,))[0])
        broad = float(_quantiles(smooth[inked][::every], (0.9,))[0])
    # Ink stands well above paper noise: thin clean strokes at 6 sigma of the pixels, or thick noisy ones
    # at 8 sigma of the smoothed map (where pure noise peaks at ~5).
    has_ink = level > 0.05 and (level > 3.0 * floor or broad > 8.0 * noise)
    return InkMap(ink, labels, count, boxes, mass, lines, max(level, floor + 1e-3), floor, scale, has_ink,
                  shadowed=shadowed)


def ink_map(source: ImageSource, region: tuple[int, int, int, int] | None = None,
            max_side: int | None = None, margin: bool = False) -> InkMap:
    """Decode `source` (optionally only `region`, in source pixels) and find its cleaned ink. With `margin`,
    a border of the image's edge colour is added first: see `_with_margin`."""
    grey, sx, sy = _decode(source, max_side or _WORK_SIDE, region)
    if not margin:
        ink = _ink_from_grey(grey, (sx, sy))
    else:
        pad = max(2, round(_MARGIN * max(grey.shape)))
        ink = _ink_from_grey(_add_paper_margin(grey, pad), (sx, sy))
        ink.margin = pad
    if region is not None:
        ink.origin = (int(region[0]), int(region[1]))
    return ink


def _add_paper_margin(grey: np.ndarray, pad: int) -> np.ndarray:
    """`grey` inside a `pad`-pixel border of paper like its edge's: the level of a robust plane through
    the edge pixels (so a lighting ramp runs on; ink touching the edge is an outlier it drops) plus the
    edge paper's grain (its residuals resampled, seeded), so noise statistics do not change."""
    h, w = grey.shape
    ys, xs = np.mgrid[0:h, 0:w]
    edge = np.zeros((h, w), dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    a = np.stack([np.ones(np.count_nonzero(edge)), xs[edge] / w, ys[edge] / h], axis=1)
    v = grey[edge].astype(np.float64)
    coef = np.array([np.median(v), 0.0, 0.0])  # start level: the median, which most of the edge is
    keep = np.ones(len(v), dtype=bool)
    for _ in range(3):
        resid = v - a @ coef
        keep = np.abs(resid) <= 2.5 * 1.4826 * np.median(np.abs(resid[keep])) + 0.01
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
    resid = v - a @ coef
    py, px = np.mgrid[-pad:h + pad, -pad:w + pad]
    out = (coef[0] + coef[1] * px / w + coef[2] * py / h).astype(np.float32)
    out += np.random.default_rng(0).choice(resid[keep].astype(np.float32), out.shape)
    out = np.clip(out, 0.0, 1.0)
    out[pad:pad + h, pad:pad + w] = grey
    return out


def _touches_edge(ink: InkMap, keep: np.ndarray) -> bool:
    """Whether the kept labels reach the image's edge: the digit may be cut there, or cropped tightly."""
    kb = ink.boxes[keep]
    h, w = ink.labels.shape
    return bool(kb[:, 0].min() <= 0 or kb[:, 1].min() <= 0 or kb[:, 2].max() >= w or kb[:, 3].max() >= h)


def _with_margin(source: ImageSource, ink: InkMap, keep: np.ndarray | None) -> tuple[InkMap, np.ndarray] | None:
    """A second look, with paper around it, at an image whose digit was not found or reaches the edge.

    Why: a digit cropped tightly (a form cell, a cropped photo, digit sets such as UCI's) has no paper
    margin, so its strokes touch the border, look like a photo's dark frame and are cut away, or leave too
    little paper for the lighting fit. A border of paper like the edge's (`_add_paper_margin`; the edge is
    mostly paper even in a tight crop: a digit touches each side at a few points) gives it the margin MNIST
    digits have. Returns the new ink map and its kept labels, or None when the second look finds no digit
    either. Not for a page a shadow crosses: that is a photo of a page, not a tight crop, and a border
    like its edge would mix the two lights."""
    if ink.shadowed or (ink.has_ink and keep is not None and not _touches_edge(ink, keep)):
        return None
    padded = ink_map(source, margin=True)
    if not padded.has_ink:
        return None
    return padded, main_cluster(padded)


def digit_ink_left_out(ink: InkMap, keep: np.ndarray, digit_mass: float) -> bool:
    """Whether components outside `keep` look like digits themselves: a third of `digit_mass` of ink, and
    half the kept ink's height or more (specks, dots and stray lines stay below one or the other)."""
    kept = np.zeros(ink.count + 1, dtype=bool)
    kept[keep] = True
    height = ink.boxes[keep, 3].max() - ink.boxes[keep, 1].min()
    return bool((~kept & (ink.mass >= digit_mass / 3) & (ink.boxes[:, 3] - ink.boxes[:, 1] >= 0.5 * height)).any())


def _side_by_side(ink: InkMap, keep: np.ndarray) -> bool:
    """Whether the kept cluster holds two digit-sized components next to each other, with a gap between them
    ("40" written with a normal gap joins one cluster, but is no wider than twice its height). The parts
    a pen leaves detached in one digit (the bar of a 5, a broken stroke) are short or lie over each other."""
    height = ink.boxes[keep, 3].max() - ink.boxes[keep, 1].min()
    b = ink.boxes[keep]
    big = keep[((b[:, 3] - b[:, 1]) >= _SIDE_TALL * height) & (ink.mass[keep] >= _SIDE_MASS * ink.mass[keep].sum())]
    if len(big) < 2:
        return False
    order = np.argsort(ink.boxes[big, 0])
    x0, x1 = ink.boxes[big, 0][order], ink.boxes[big, 2][order]
    reach = np.maximum.accumulate(x1)[:-1]  # the right edge of everything to the left (nested parts included)
    return bool((x0[1:] - reach >= _SIDE_GAP * height).any())


# Two digits side by side: each at least this share of the cluster's height and of its ink, with a gap of at
# least this share of its height between them. One digit's parts leave smaller gaps: the halves of a hairline
# 0 broken at top and bottom abut, a 0 drawn as two arcs or an open 4 whose bar stops short of the stem leave
# 0.05-0.1 (a reviewer's drawings); two MNIST digits 4 px apart leave 0.2.
_SIDE_TALL, _SIDE_MASS, _SIDE_GAP = 0.7, 0.2, 0.15


def several_digits(ink: InkMap, keep: np.ndarray) -> bool:
    """Whether the image looks like several digits: other digit-like ink left out of the digit, two digits
    side by side in the cluster, or a "digit" over twice as wide as tall (digits written close together join
    into one cluster). A one-digit reader given "13579" reads one of them, confidently; this lets it say so."""
    width = ink.boxes[keep, 2].max() - ink.boxes[keep, 0].min()
    height = ink.boxes[keep, 3].max() - ink.boxes[keep, 1].min()
    return (digit_ink_left_out(ink, keep, float(ink.mass[keep].sum())) or bool(width > 2 * height)
            or _side_by_side(ink, keep))


def main_cluster(ink: InkMap) -> np.ndarray:
    """Labels of the digit: the component with most ink plus the nearby parts a pen leaves detached
    (bar of a 5, top of a 7, a broken stroke); far-away specks and scribbles stay out."""
    live = np.flatnonzero(ink.mass > 0)
    main = int(live[ink.mass[live].argmax()])
    keep = np.zeros(ink.count + 1, dtype=bool)
    keep[main] = True
    boxes = ink.boxes
    for _ in range(4):
        kb = boxes[keep]
        x0, y0, x1, y1 = kb[:, 0].min(), kb[:, 1].min(), kb[:, 2].max(), kb[:, 3].max()
        margin = 0.2 * max(x1 - x0, y1 - y0) + 2
        near = ((boxes[:, 0] < x1 + margin) & (boxes[:, 2] > x0 - margin)
                & (boxes[:, 1] < y1 + margin) & (boxes[:, 3] > y0 - margin))
        add = near & ~keep & (ink.mass > 0.02 * ink.mass[main])
        if not add.any():
            break
        keep |= add
    return np.flatnonzero(keep)


# ------------------------------------------------------------------------------------------ normalising


def stroke_width(soft: np.ndarray) -> float:
    """Mean stroke width in pixels: ink area over half its outline length (total variation)."""
    outline = np.abs(np.diff(soft, axis=0)).sum() + np.abs(np.diff(soft, axis=1)).sum()
    return float(2.0 * soft.sum() / outline) if outline > 0 else 0.0


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaging (anti-aliased) when shrinking, bilinear when growing: MNIST's soft stroke edges."""
    if img.shape == (height, width):
        return img
    method = Image.BOX if width <= img.shape[1] else Image.BILINEAR
    return np.asarray(Image.fromarray(img, "F").resize((width, height), method), dtype=np.float32)


def normalise(soft: np.ndarray) -> np.ndarray:
    """MNIST's normalisation of one tightly cropped grey digit (ink 1, paper 0): stroke weight brought into
    MNIST's range, fitted into 20x20 keeping aspect with anti-aliasing, pasted in 28x28 with its centre of
    mass at pixel (14, 14)."""
    out = np.zeros((_SIZE, _SIZE), dtype=np.float32)
    if not soft.any():
        return out
    h, w = soft.shape
    long = max(h, w)
    stroke = stroke_width(soft) * _BOX / long  # as it would come out
    if stroke < _STROKE_MIN:  # a thin pen on a big image: thicken to MNIST's weight (thick ones are MNIST too)
        if long < 4 * _BOX:  # too coarse to widen a stroke by a fraction of a pixel: upsample first
            k = math.ceil(4 * _BOX / long)
            h, w, long = h * k, w * k, long * k
            soft = _resize(soft, w, h)
        size = int(round((_STROKE_TARGET - stroke) * long / _BOX)) + 1
        soft = ndi.maximum_filter(np.pad(soft, size), size)
        rows, cols = np.flatnonzero(soft.any(axis=1)), np.flatnonzero(soft.any(axis=0))
        soft = soft[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        h, w = soft.shape
        long = max(h, w)
    nh, nw = max(1, round(h * _BOX / long)), max(1, round(w * _BOX / long))
    patch = np.clip(_resize(np.ascontiguousarray(soft, dtype=np.float32), nw, nh), 0.0, 1.0)
    total = patch.sum()
    if total <= 0:
        return out
    cy = float((patch.sum(axis=1) * np.arange(nh)).sum() / total)
    cx = float((patch.sum(axis=0) * np.arange(nw)).sum() / total)
    oy, ox = int(math.floor(_CENTRE - cy + 0.5)), int(math.floor(_CENTRE - cx + 0.5))
    y0, x0 = max(oy, 0), max(ox, 0)
    y1, x1 = min(oy + nh, _SIZE), min(ox + nw, _SIZE)
    out[y0:y1, x0:x1] = patch[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return out


def crop_soft(ink: InkMap, keep: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Tight grey crop of the labels in `keep` and its box in working pixels."""
    kb = ink.boxes[keep]
    h, w = ink.labels.shape
    x0, y0 = max(int(kb[:, 0].min()) - 3, 0), max(int(kb[:, 1].min()) - 3, 0)
    x1, y1 = min(int(kb[:, 2].max()) + 3, w), min(int(kb[:, 3].max()) + 3, h)
    soft = ink.soft(keep, (slice(y0, y1), slice(x0, x1)))
    rows, cols = np.flatnonzero(soft.any(axis=1)), np.flatnonzero(soft.any(axis=0))
    if rows.size == 0:
        return soft[:0, :0], (x0, y0, x0, y0)
    soft = soft[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return soft, (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def source_box(ink: InkMap, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A working-pixel box in source pixels (clipped to the image where a margin was added around it)."""
    sx, sy = ink.scale
    m = ink.margin
    h, w = ink.labels.shape[0] - 2 * m, ink.labels.shape[1] - 2 * m
    x0, y0 = min(max(box[0] - m, 0), w), min(max(box[1] - m, 0), h)
    x1, y1 = min(max(box[2] - m, 0), w), min(max(box[3] - m, 0), h)
    ox, oy = ink.origin
    return ox + int(x0 * sx), oy + int(y0 * sy), ox + math.ceil(x1 * sx), oy + math.ceil(y1 * sy)


def _blank() -> Prepared:
    return Prepared(np.zeros((_SIZE, _SIZE), dtype=np.float32), False, None)


# A filled dot is no digit: the mean stroke width (`stroke_width`, the crop padded so its edge counts as
# outline) of every one of MNIST's 60,000 training digits is at most 0.33 of its long side; a filled disc's
# is 0.5, and 0.36-0.39 for a tap on the page or a full stop after anti-aliasing (throwaway check).
_DOT = 0.34


def is_dot(soft: np.ndarray) -> bool:
    """Whether the ink is a solid blob (a tap on a touch screen, a full stop, a speck), which a digit model
    would read as a confident 0 or 4. Ink at most 4 working pixels each way is a speck whatever its shape:
    the working image of anything with a digit is at least 24 px (`_TINY_SIDE`)."""
    return max(soft.shape) <= 4 or stroke_width(np.pad(soft, 1)) >= _DOT * max(soft.shape)


def to_mnist(source: ImageSource) -> Prepared:
    """One image of one handwritten digit -> MNIST-normalised 28x28. Raises ImageError on bad input."""
    source = readable(source)  # an open file is read once: the image may be decoded more than once
    ink = ink_map(source)
    if not ink.has_ink and max(ink.scale) >= 2.5:
        # faint or hair-thin strokes can vanish at the working resolution: look once more, closer
        ink = ink_map(source, max_side=3 * _WORK_SIDE)
    keep = main_cluster(ink) if ink.has_ink else None
    second = _with_margin(source, ink, keep)
    if second is not None:
        ink, keep = second
    if keep is None:
        return _blank()
    soft, box = crop_soft(ink, keep)
    if soft.size == 0:
        return _blank()
    src = source_box(ink, box)
    several = several_digits(ink, keep)
    if max(box[2] - box[0], box[3] - box[1]) < _REFINE_BELOW and max(ink.scale) > 1.5:
        # A small digit in a big image: read its neighbourhood again at a resolution that does it justice.
        refined = _refine(source, src, ink)
        if refined is not None:
            return dataclasses.replace(refined, several_digits=several) if refined.has_ink else refined
    if is_dot(soft):
        return _blank()
    return Prepared(normalise(soft), True, src, several)


def _span(lo: float, hi: float, full: int) -> tuple[int, int]:
    """[lo, hi) in whole source pixels inside [0, full), shifted (not only clipped) at the image's edge so that
    it keeps at least `_TINY_SIDE` + 2 px where the image has them: a dot in a corner is not upsampled either."""
    need = min(full, _TINY_SIDE + 2)
    a, b = max(0, int(lo)), min(full, math.ceil(hi))
    if b - a < need:
        a, b = (0, need) if a == 0 else (full - need, full) if b == full else (a, b)
    return a, b


def _refine(source: ImageSource, src: tuple[int, int, int, int], coarse: InkMap) -> Prepared | None:
    """`to_mnist` on the neighbourhood of a digit found small (`src`, source pixels) at a resolution where
    it is ~100 px tall; None if nothing is found there."""
    x0, y0, x1, y1 = src
    if max(x1 - x0, y1 - y0) <= 4:  # a speck in the source itself, which closer looks only blow up
        return _blank()
    # at least _TINY_SIDE px of source round it: a smaller region would be upsampled bicubically
    # (`_decode`), whose soft edges make a dot pass `is_dot` as a stroke (a 3-px speck read as a confident 4)
    margin = max(0.5 * max(x1 - x0, y1 - y0), (_TINY_SIDE - min(x1 - x0, y1 - y0)) / 2 + 1)
    full_w = round((coarse.labels.shape[1] - 2 * coarse.margin) * coarse.scale[0])
    full_h = round((coarse.labels.shape[0] - 2 * coarse.margin) * coarse.scale[1])
    (rx0, rx1), (ry0, ry1) = _span(x0 - margin, x1 + margin, full_w), _span(y0 - margin, y1 + margin, full_h)
    region = (rx0, ry0, rx1, ry1)
    ink = ink_map(source, region, max_side=_REFINE_SIDE)
    if not ink.has_ink:
        return None
    soft, box = crop_soft(ink, main_cluster(ink))
    if soft.size == 0:
        return None
    if is_dot(soft):
        return _blank()
    return Prepared(normalise(soft), True, source_box(ink, box))


def to_mnist_many(sources: list[ImageSource]) -> list[Prepared]:
    """`to_mnist` over many images; each is independent, a bad one raises ImageError naming it."""
    return [to_mnist(s) for s in sources]
