"""Batched, on-device data augmentation: pure tensor ops on [N, 1, H, W] floats in [0, 1].

Everything here processes a whole batch with a handful of kernels (one affine_grid + grid_sample for
all geometric transforms, a low-resolution noise field for elastic distortion), so augmentation costs
little next to the forward pass, on a CPU as on a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Names accepted in an `augment` dict, with what a value means.
AUGMENTATIONS = {
    "rotate": "max rotation in degrees",
    "scale": "max relative zoom (0.1 = 0.9..1.1)",
    "shear": "max shear factor",
    "translate": "max shift as a fraction of the image size",
    "elastic": "elastic distortion strength in pixels (displacement std)",
    "stroke": "probability of thickening or thinning strokes by one pixel",
    "blur": "probability of a light Gaussian blur",
    "noise": "std of additive Gaussian noise",
    "hflip": "probability of a left-right mirror (for Fashion-MNIST; never for digits)",
}


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


def augment_batch(x: torch.Tensor, spec: dict[str, float], generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Apply the augmentations named in `spec` (see AUGMENTATIONS) to a batch."""
    if not spec:
        return x
    unknown = set(spec) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentation(s): {', '.join(sorted(unknown))}")
    geo = {k: float(spec.get(k, 0.0)) for k in ("rotate", "scale", "shear", "translate", "elastic")}
    if any(geo.values()):
        x = random_affine(x, generator, **geo)
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
    """Deterministic test-time views: the image and small shifts/rotations; logits are averaged."""
    views = [x]
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        views.append(torch.roll(x, shifts=(dy, dx), dims=(-2, -1)))
    return views
