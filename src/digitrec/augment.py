"""Batched, on-device data augmentation: pure tensor ops on [N, 1, H, W] floats in [0, 1].

Everything here processes a whole batch with a handful of kernels (one affine_grid + grid_sample for
all geometric transforms, a low-resolution noise field for elastic distortion), so augmentation costs
little next to the forward pass, on a CPU as on a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from digitrec.errors import UsageError

# Names accepted in an `augment` dict, with what a value means.
AUGMENTATIONS = {
    "rotate": "max rotation in degrees",
    "scale": "max relative zoom (0.1 = 0.9..1.1)",
    "shear": "max shear factor",
    "translate": "max shift as a fraction of the image size",
    "elastic": "elastic distortion strength in pixels (displacement std)",
    "stroke": "probability of thickening or thinning strokes by one pixel",
    "ink": "probability of re-inking a digit as a pen on paper draws it, then re-normalising it as preprocess does",
    "flag": "probability of drawing a 1 with the flag (and sometimes the foot) most writers outside the US give it"
            " (digits only: needs the labels)",
    "blur": "probability of a light Gaussian blur",
    "noise": "std of additive Gaussian noise",
    "hflip": "probability of a left-right mirror (for Fashion-MNIST; never for digits)",
}
# The values each accepts: beyond them a transform stops meaning what its name says (a probability over 1,
# a zoom that can flip the image, a rotation past upside down).
AUGMENT_RANGES = {"rotate": (0.0, 180.0), "scale": (0.0, 0.9), "shear": (0.0, 1.0), "translate": (0.0, 0.5),
                  "elastic": (0.0, 10.0), "stroke": (0.0, 1.0), "ink": (0.0, 1.0), "flag": (0.0, 1.0),
                  "blur": (0.0, 1.0), "noise": (0.0, 1.0), "hflip": (0.0, 1.0)}


def check_ranges(spec: dict[str, float], option: str = "--augment") -> None:
    """UsageError, naming `option`, for a strength outside its range (NaN included): a rotate=999 or scale=5
    would draw nonsense digits, or fail deep inside the sampling."""
    for name, value in spec.items():
        if name not in AUGMENT_RANGES:
            continue  # unknown names are the caller's to report, with its own list
        low, high = AUGMENT_RANGES[name]
        if not low <= float(value) <= high:  # NaN fails both comparisons
            raise UsageError(f"{option} {name}={float(value):g}: must be {low:g} to {high:g} ({AUGMENTATIONS[name]})")


def random_affine(x: torch.Tensor, generator: torch.Generator | None, rotate: float = 0.0,
                  scale: float = 0.0, shear: float = 0.0, translate: float = 0.0,
                  elastic: float = 0.0) -> torch.Tensor:
    """Rotate/scale/shear/shift (and optionally elastically warp) every image with its own random draw."""
    n, dev = x.shape[0], x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, device=dev, generator=generator) * (hi - lo) + lo

    angle = uniform(-rotate, rotate) * (math.pi / 180)
    zoom = uniform(1 - scale, 1 + scale)
    sh = uniform(-shear, shear)
    tx, ty = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output coords to input coords (normalised [-1, 1]); rotation @ shear, then shift.
    theta = torch.stack([
        torch.stack([cos, cos * sh - sin, tx], 1),
        torch.stack([sin, sin * sh + cos, ty], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic > 0:
        h, w = x.shape[-2:]
        # Smooth displacement: random field at 1/4 resolution, bicubic upsampled (≈ Simard's Gaussian
        # smoothing at a fraction of the cost). Strength is in pixels, converted to normalised units.
        coarse = torch.randn(n, 2, max(h // 4, 2), max(w // 4, 2), device=dev, generator=generator)
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        # Python-scalar scaling per axis (no host-to-device tensor: keeps the step CUDA-graph capturable).
        field = torch.stack([field[:, 0] * (elastic * 2 / w), field[:, 1] * (elastic * 2 / h)], dim=-1)
        grid = grid + field
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_ink(x: torch.Tensor, generator: torch.Generator | None, p: float, factor: int = 4,
               levels: tuple[float, float] = (0.3, 0.6)) -> torch.Tensor:
    """Redraw a random subset the way a user's photo of the digit reaches the model: MNIST's soft grey
    edges become a pen's sharp ones (upsample, a steep ink ramp at a random level, as `synth` renders
    paper), and the stroke that is left is fitted into MNIST's 20x20 box and centred by its centre of
    mass again (as `preprocess.normalise` does), then area-downsampled. Faint strokes vanish and the box
    changes, which is what costs a model trained on MNIST alone about 0.25 points a digit on user-like
    renderings (docs/experiments.md)."""
    # Batches come in random order, so the first round(p * n) images are a random subset: redrawing only
    # those keeps the cost proportional to p and the shapes fixed (CUDA-graph capturable).
    k = min(max(round(p * x.shape[0]), 0), x.shape[0])  # a share: p outside [0, 1] is clipped to it
    if k == 0:
        return x
    rest, x = x[k:], x[:k]
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    dev = x.device
    up = F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
    level = (torch.rand(n, 1, 1, 1, device=dev, generator=generator) * (levels[1] - levels[0]) + levels[0])
    ink = ((up - level) / 0.12 + 0.5).clamp_(0, 1)
    big_h, big_w = h * factor, w * factor
    mass = ink.sum((1, 2, 3)).clamp_min(1e-6)
    ys = torch.arange(big_h, device=dev, dtype=x.dtype) + 0.5
    xs = torch.arange(big_w, device=dev, dtype=x.dtype) + 0.5
    cy = (ink.sum(3)[:, 0] * ys).sum(1) / mass  # centre of mass, continuous pixel coordinates
    cx = (ink.sum(2)[:, 0] * xs).sum(1) / mass
    rows, cols = ink.amax(3)[:, 0] > 0, ink.amax(2)[:, 0] > 0

    def extent(mask: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(mask.shape[1], device=dev)
        last = torch.where(mask, idx, -1).amax(1)
        first = torch.where(mask, idx, mask.shape[1]).amin(1)
        return (last - first + 1).clamp_min(1).to(x.dtype)

    side = torch.maximum(extent(rows), extent(cols))
    s = (20 * factor) / side  # the 20x20 box of MNIST, in upsampled pixels
    # Output (continuous) X maps to input cx + (X - target) / s; in affine_grid's [-1, 1] units:
    target_x, target_y = (w / 2 + 0.5) * factor, (h / 2 + 0.5) * factor  # MNIST's centre pixel (14, 14)
    tx = 2 * cx / big_w - 1 + (big_w - 2 * target_x) / (big_w * s)
    ty = 2 * cy / big_h - 1 + (big_h - 2 * target_y) / (big_h * s)
    zero = torch.zeros_like(s)
    theta = torch.stack([torch.stack([1 / s, zero, tx], 1), torch.stack([zero, 1 / s, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, big_h, big_w], align_corners=False)
    # Nearest: the pen's sharp edges survive the refit (bilinear would soften them again); at 4x the
    # position error is under a quarter of an MNIST pixel.
    fitted = F.avg_pool2d(F.grid_sample(ink, grid, mode="nearest", padding_mode="zeros", align_corners=False),
                          factor)
    return torch.cat([torch.where((mass > 1.0).view(n, 1, 1, 1), fitted, x), rest])


def _segment_ink(px: torch.Tensor, py: torch.Tensor, start: tuple[torch.Tensor, torch.Tensor],
                 end: tuple[torch.Tensor, torch.Tensor], width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased ink [N, H, W] of one straight pen stroke per image, from `start` to `end` ((x, y), [N]
    each, pixel units), `width` px wide."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = (x1 - x0)[:, None, None], (y1 - y0)[:, None, None]
    rx, ry = px - x0[:, None, None], py - y0[:, None, None]
    t = ((rx * dx + ry * dy) / (dx * dx + dy * dy).clamp_min(1e-6)).clamp(0, 1)
    dist = torch.sqrt((rx - t * dx) ** 2 + (ry - t * dy) ** 2)
    return (width[:, None, None] / 2 + 0.5 - dist).clamp(0, 1)


def random_flag(x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None, p: float,
                one: int = 1) -> torch.Tensor:
    """Give a random share `p` of the 1s the flag (an up-stroke from the top, down to the left) that most
    writers outside the US draw, and a third of those a foot. Why: MNIST's 1s are nearly all bare
    strokes, so a model trained on them reads a flagged 1 as a 7 (the commonest confusion on handwriting
    fonts, docs/experiments.md). The flag leaves the top at 30-65 degrees below the horizontal, 25-50 % of
    the digit's height long; a 7's bar is near-horizontal and as wide as the digit."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    dev, dtype = x.device, x.dtype

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, device=dev, generator=generator, dtype=dtype) * (hi - lo) + lo

    draw = uniform(0, 1)
    angle = uniform(30, 65) * (math.pi / 180)
    length = uniform(0.25, 0.5)
    width = uniform(1.5, 2.5)
    foot, foot_half = uniform(0, 1), uniform(0.2, 0.35)
    img = x[:, 0]
    ys = torch.arange(h, device=dev, dtype=dtype)
    xs = torch.arange(w, device=dev, dtype=dtype)
    rows = img.amax(2) > 0.3  # [N, H]
    top = torch.where(rows, ys, float(h)).amin(1)
    bottom = torch.where(rows, ys, -1.0).amax(1)
    height = (bottom - top + 1).clamp_min(1)

    def column(row: torch.Tensor) -> torch.Tensor:  # ink-weighted column of the 3 rows from `row` inward
        near = ((ys[None] - row[:, None]).abs() <= 2) & rows
        wts = img * near[:, :, None]
        return (wts.sum(1) * xs).sum(1) / wts.sum((1, 2)).clamp_min(1e-6)

    px, py = xs[None, None, :] + 0.0, ys[None, :, None] + 0.0
    x_top, y_top = column(top), top + 0.5
    reach = length * height
    flag = _segment_ink(px, py, (x_top, y_top),
                        (x_top - reach * torch.cos(angle), y_top + reach * torch.sin(angle)), width)
    x_bot, y_bot = column(bottom), bottom - 0.5
    half = foot_half * height
    base = _segment_ink(px, py, (x_bot - half, y_bot), (x_bot + half, y_bot), width)
    ink = torch.maximum(flag, base * (foot < 1 / 3).to(dtype)[:, None, None])
    pick = (labels == one) & (draw < p) & rows.any(1)
    return torch.where(pick.view(n, 1, 1, 1), torch.maximum(x, ink[:, None] * img.amax((1, 2)).view(n, 1, 1, 1)), x)


def random_stroke(x: torch.Tensor, generator: torch.Generator | None, p: float) -> torch.Tensor:
    """Thicken (grey dilation) or thin (grey erosion) a random subset: users' pens differ from MNIST's."""
    n = x.shape[0]
    pick = torch.rand(n, device=x.device, generator=generator)
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 2, 1, 0)
    thin = F.pad(thin, (0, 1, 0, 1))
    # Blend toward the morphed image by half: a full 3x3 dilation is too strong at 28x28.
    out = torch.where((pick < p / 2).view(n, 1, 1, 1), 0.5 * (x + thick), x)
    return torch.where(((pick >= p / 2) & (pick < p)).view(n, 1, 1, 1), torch.maximum(thin, 0.5 * x), out)


def random_blur(x: torch.Tensor, generator: torch.Generator | None, p: float) -> torch.Tensor:
    n = x.shape[0]
    # The binomial kernel [1 2 1]^T [1 2 1] / 16, built on the device (capturable: no host copy).
    k = torch.ones(3, device=x.device, dtype=x.dtype)
    k[1] = 2.0
    kernel = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
    blurred = F.conv2d(x, kernel, padding=1)
    pick = torch.rand(n, device=x.device, generator=generator) < p
    return torch.where(pick.view(n, 1, 1, 1), blurred, x)


def augment_batch(x: torch.Tensor, spec: dict[str, float], generator: torch.Generator | None = None,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the augmentations named in `spec` (see AUGMENTATIONS) to a batch (`labels`: for `flag`)."""
    if not spec:
        return x
    unknown = set(spec) - set(AUGMENTATIONS)
    if unknown:
        raise UsageError(f"unknown augmentation(s): {', '.join(sorted(unknown))}")
    if spec.get("flag"):  # before the geometry, which then slants and warps the flag with the digit
        if labels is None:
            raise UsageError("the flag augmentation needs the batch's labels")
        x = random_flag(x, labels, generator, float(spec["flag"]))
    geo = {k: float(spec.get(k, 0.0)) for k in ("rotate", "scale", "shear", "translate", "elastic")}
    if any(geo.values()):
        x = random_affine(x, generator, **geo)
    if spec.get("ink"):
        x = random_ink(x, generator, float(spec["ink"]))
    if spec.get("stroke"):
        x = random_stroke(x, generator, float(spec["stroke"]))
    if spec.get("blur"):
        x = random_blur(x, generator, float(spec["blur"]))
    if spec.get("hflip"):
        flip = torch.rand(x.shape[0], device=x.device, generator=generator) < float(spec["hflip"])
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if spec.get("noise"):
        x = (x + torch.randn(x.shape, device=x.device, generator=generator) * float(spec["noise"])).clamp_(0, 1)
    return x


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """Deterministic test-time views: the image and its four one-pixel shifts (no rotations);
    `inference.predict_logits` averages their softmax probabilities, not their logits."""
    views = [x]
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        views.append(torch.roll(x, shifts=(dy, dx), dims=(-2, -1)))
    return views
