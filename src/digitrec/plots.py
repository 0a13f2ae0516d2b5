"""Small matplotlib figures shared by the CLI, the demo and the report. Files are written atomically."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np

from digitrec.atomic import atomic_write_bytes


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and no GUI backend import
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike | None = None, dpi: int = 100) -> bytes:
    """Render to PNG bytes; write them to `path` atomically when given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _figure().close(fig)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def digit_grid_figure(images: np.ndarray, captions: Sequence[str], title: str = "", colors=None):
    """A grid of 28x28 images with a caption under each (e.g. 'predicted 7, actual 7')."""
    plt = _figure()
    n = len(images)
    cols = min(n, 10 if max((len(c) for c in captions), default=0) < 14 else 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, img, cap) in enumerate(zip(axes.flat, images, captions, strict=False)):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
        ax.set_title(cap, fontsize=7, color=(colors[k] if colors else "black"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_digit_grid(path: str | os.PathLike, images: np.ndarray, captions: Sequence[str], title: str = "",
                    colors=None) -> None:
    save_figure(digit_grid_figure(images, captions, title, colors), path)
