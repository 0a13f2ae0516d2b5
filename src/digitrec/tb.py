"""Optional TensorBoard logging (`pip install 'digitrec[tensorboard]'`).

    logger = TensorboardLogger("runs/tb")
    logger.log_epoch({"epoch": 1, "train_loss": 0.31, "val_accuracy": 0.94, "seconds": 6.4}, step=1)
    logger.log_images("mistakes", images_uint8_nhw, step=1)
    logger.close()

Keys named `<split>_<metric>` are logged as `<metric>/<split>` (train_loss -> loss/train, val_loss ->
loss/val), so TensorBoard draws train and validation of one metric in the same section.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from digitrec.errors import UsageError

SPLIT_PREFIXES = ("train", "val", "test")


def scalar_tag(key: str) -> str:
    split, sep, metric = key.partition("_")
    return f"{metric}/{split}" if sep and split in SPLIT_PREFIXES and metric else key


class TensorboardLogger:
    """Writes scalars and image grids as TensorBoard event files in `logdir`."""

    def __init__(self, logdir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("TensorBoard logging needs the tensorboard package: "
                             "pip install 'digitrec[tensorboard]'") from None
        try:
            self.writer = SummaryWriter(log_dir=str(logdir))
        except OSError as exc:
            raise UsageError(f"--tensorboard {logdir}: cannot write there ({exc.strerror or exc})") from None
        self.logdir = str(logdir)

    def log_epoch(self, row: dict[str, Any], step: int) -> None:
        """One scalar per numeric value in `row` (booleans, strings, None and NaN are skipped)."""
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real | np.ndarray):
                continue
            if isinstance(value, np.ndarray):
                if value.size != 1:
                    continue
                value = value.item()
            value = float(value)
            if math.isfinite(value):
                self.writer.add_scalar(scalar_tag(key), value, step)
        self.writer.flush()

    def log_images(self, tag: str, images: np.ndarray, step: int) -> None:
        """A batch of images [N, H, W] (or one [H, W]): uint8 0..255, or float 0..1."""
        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] == 0:
            raise UsageError(f"log_images: expected images [N, H, W], got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
        self.writer.add_images(tag, arr[:, None], step, dataformats="NCHW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TensorboardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
