"""Small matplotlib figures shared by the CLI, the demo and the report. Files are written atomically."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digitrec.atomic import atomic_write_bytes
from digitrec.errors import UsageError

# What a figure can be saved as, by file suffix (matplotlib's own writers and Pillow; not pgf, which needs LaTeX,
# nor gif, which matplotlib writes only from 3.11 on).
IMAGE_FORMATS = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "pdf", "svg", "svgz", "eps", "ps")


def _subplots(*args, figsize: tuple[float, float], **kwargs):
    """A figure and its axes, made without pyplot: no backend is chosen or switched (pyplot would need a
    display, and `matplotlib.use("Agg")` switched a Jupyter user's inline backend off), and no figure is
    kept in pyplot's registry to leak. Its canvas is Agg's, as with pyplot under Agg before: fig.canvas.draw(),
    get_renderer() and buffer_rgba() keep working for callers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def image_format(path: str | os.PathLike, option: str = "--out") -> str:
    """The format a file name's suffix names ('png' for none); an unknown suffix is a UsageError, so a file
    is never written in one format under another's name."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in IMAGE_FORMATS:
        raise UsageError(f"{option} {path}: cannot write an image as .{suffix}; use "
                         + ", ".join(f".{f}" for f in IMAGE_FORMATS))
    return suffix


def save_figure(fig, path: str | os.PathLike | None = None, dpi: int = 100, fmt: str = "png") -> bytes:
    """Render to `fmt` bytes (PNG by default); write them to `path` atomically when given."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def digit_grid_figure(images: np.ndarray, captions: Sequence[str], title: str = "", colors=None):
    """A grid of 28x28 images with a caption under each (e.g. 'predicted 7, actual 7')."""
    n = len(images)
    cols = min(n, 10 if max((len(c) for c in captions), default=0) < 14 else 6)
    rows = math.ceil(n / cols)
    fig, axes = _subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, img, cap) in enumerate(zip(axes.flat, images, captions, strict=False)):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
        ax.set_title(cap, fontsize=7, color=(colors[k] if colors else "black"))
    if title:
        # Anchored a fixed distance below the top edge, not at matplotlib's 0.98 of the height: on a tall grid
        # that fraction lies inches down, inside the first rows, while tight_layout keeps room for the title
        # only at the top.
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / fig.get_figheight(), va="top")
    fig.tight_layout()
    return fig


def save_digit_grid(path: str | os.PathLike, images: np.ndarray, captions: Sequence[str], title: str = "",
                    colors=None) -> None:
    """Write the grid to `path` in the format its suffix names (PNG for none); see `image_format`."""
    save_figure(digit_grid_figure(images, captions, title, colors), path, fmt=image_format(path))


# --- figures for `digitrec report` (and anyone else who wants them) -------------------------------------


def class_balance_figure(counts: dict[str, Sequence[int]], classes: Sequence[str], title: str = "Class balance"):
    """Grouped bars: one group per class, one bar per split (e.g. {'train': [...], 'test': [...]})."""
    fig, ax = _subplots(figsize=(max(6.0, len(classes) * 0.7), 3.2))
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(classes))
    for k, (split, values) in enumerate(counts.items()):
        bars = ax.bar(x + (k - (len(counts) - 1) / 2) * width, values, width, label=f"{split} (n={sum(values)})")
        ax.bar_label(bars, fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x, [c[:10] for c in classes], rotation=30 if max(len(c) for c in classes) > 3 else 0,
                  fontsize=8)
    ax.set_ylabel("images")
    ax.margins(y=0.18)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_curves_figure(histories: dict[str, Sequence[dict]], title: str = "Training curves"):
    """Loss and accuracy per epoch, train solid and validation dashed. One run: train and validation in two
    colours; several (an ensemble's members): one colour per run, and a legend beside the plots, not over them.

    Each history is a list of rows with `epoch`, `train_loss`, `train_accuracy` and optionally `val_loss`,
    `val_accuracy` (the model card's `history`). The two losses differ in kind: the training objective
    (label smoothing, a teacher's term) against the validation set's plain NLL, so the legend says which.
    """
    import matplotlib
    from matplotlib.lines import Line2D

    several = len(histories) > 1
    fig, axes = _subplots(1, 2, figsize=(10.5 if several else 9, 3.2))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    names = {("loss", "train"): "train objective", ("loss", "val"): "validation NLL",
             ("accuracy", "train"): "train", ("accuracy", "val"): "validation"}
    last = 1
    for k, rows in enumerate(histories.values()):
        epochs = [r["epoch"] for r in rows]
        last = max([last, *epochs])
        marker = "o" if len(epochs) <= 12 else None  # dots hide the dashes of a long curve
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for s, (split, style) in enumerate((("train", "-"), ("val", "--"))):
                pts = [(e, r[f"{split}_{metric}"]) for e, r in zip(epochs, rows, strict=True)
                       if r.get(f"{split}_{metric}") is not None]
                if pts:
                    color = colors[(k if several else s) % len(colors)]
                    ax.plot(*zip(*pts, strict=True), style, marker=marker, markersize=3, color=color,
                            label=names[(metric, split)])
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if last <= 1:  # one epoch: one point, not an axis from 0.96 to 1.04
            ax.set_xlim(0.5, 1.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines and not several:
            ax.legend(fontsize=7)
    if several and axes[0].lines:
        handles = [Line2D([], [], color=colors[k % len(colors)], label=name) for k, name in enumerate(histories)]
        handles += [Line2D([], [], color="black", linestyle="-", label="train"),
                    Line2D([], [], color="black", linestyle="--", label="validation")]
        fig.legend(handles=handles, fontsize=7, loc="center right", frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84 if several else 1, 1))
    return fig


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix"):
    """Annotated heatmap, rows true and columns predicted; colour is the row-normalised rate, text the count."""
    confusion = np.asarray(confusion)
    n = len(classes)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = _subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    # sqrt stretch: keeps the rare off-diagonal errors visible next to the large diagonal.
    im = ax.imshow(np.sqrt(rates), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.36 else "black")
    labels = [c[:12] for c in classes]
    ax.set_xticks(range(n), labels, fontsize=8, rotation=45 if max(len(c) for c in labels) > 2 else 0)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.array([0, 0.01, 0.1, 0.5, 1.0])
    cbar.set_ticks(np.sqrt(ticks), labels=[f"{t:g}" for t in ticks])
    cbar.set_label("fraction of true class", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(curves: dict[str, dict[str, list[float]]], title: str = "Reliability diagram"):
    """Accuracy against mean confidence per bin, one line per curve (e.g. before/after temperature
    scaling); `curves` maps a label to metrics.reliability()'s output. Bin counts are drawn below."""
    fig, (ax, ax_n) = _subplots(2, 1, figsize=(4.8, 5.2), sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for k, (label, r) in enumerate(curves.items()):
        conf, acc = np.array(r["confidence"], float), np.array(r["accuracy"], float)
        ok = ~np.isnan(conf)
        ax.plot(conf[ok], acc[ok], "o-", markersize=3, label=label)
        lower = np.array(r["lower"], float)
        w = lower[1] - lower[0] if len(lower) > 1 else 1.0
        n_curves = len(curves)
        ax_n.bar(lower + w * (k + 0.5) / n_curves, r["count"], w / n_curves, label=label)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=10)
    ax_n.set_yscale("log")
    ax_n.set_xlabel("confidence")
    ax_n.set_ylabel("images")
    fig.tight_layout()
    return fig


def embedding_figure(points: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str = "",
                     xlabel: str = "component 1", ylabel: str = "component 2"):
    """Scatter of 2-D points coloured by class (e.g. a PCA of penultimate-layer features)."""
    import matplotlib

    fig, ax = _subplots(figsize=(6.4, 5.2))
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    order = np.random.default_rng(0).permutation(len(points))  # no class painted over all the others
    colors = cmap(np.asarray(labels)[order] % cmap.N)
    ax.scatter(points[order, 0], points[order, 1], s=2, alpha=0.5, c=colors, linewidths=0, rasterized=True)
    for c, name in enumerate(classes):
        ax.scatter([], [], s=25, color=cmap(c % cmap.N), label=name)  # legend entries
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
