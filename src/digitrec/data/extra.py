"""Labelled digits from outside the registered datasets (e.g. handwriting fonts' digits), for training
on other hands too: `digitrec train --extra-digits` and `digitrec train-reader --extra-digits`."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from digitrec.errors import UsageError


def load_extra_digits(path: str | os.PathLike, classes: int) -> tuple[np.ndarray, np.ndarray, str]:
    """More labelled training digits from an .npz (`images` uint8 [N, 28, 28], ink bright as in MNIST;
    `labels` [N] in 0..classes-1), e.g. handwriting-font digits from `tools/handwriting_fonts.py digits`;
    and the file's sha256, for the card. Any problem is one UsageError naming the file."""
    name = f"--extra-digits {path}"
    try:
        raw = Path(path).read_bytes()
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array: no labels to go with it
            raise UsageError(f"{name}: a single array (.npy), not an .npz with 'images' and 'labels'")
        with loaded as npz:
            missing = [key for key in ("images", "labels") if key not in npz.files]
            if missing:
                raise UsageError(f"{name}: no {missing[0]!r} array (expected 'images' and 'labels')")
            images, labels = np.asarray(npz["images"]), np.asarray(npz["labels"])
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{name}: not a readable .npz ({exc})") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UsageError(f"{name}: 'images' must be uint8 [N, 28, 28], not {images.dtype} {list(images.shape)}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{name}: 'labels' must be {len(images)} integers, not {labels.dtype} {list(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise UsageError(f"{name}: labels must lie in 0..{classes - 1}")
    return images, labels.astype(np.int64), hashlib.sha256(raw).hexdigest()
