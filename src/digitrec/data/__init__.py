"""Data layer: IDX files, the dataset registry, download/verify, and decoded-array caching.

Knows nothing about models. `load_dataset("mnist", "train")` is the one call the rest of digitrec uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from digitrec.atomic import atomic_open
from digitrec.data.datasets import REGISTRY, SPLITS, DatasetSpec, get_spec
from digitrec.data.fetch import data_root, ensure_files
from digitrec.data.idx import read_idx, write_idx
from digitrec.errors import DataError, UsageError

__all__ = ["Dataset", "load_dataset", "REGISTRY", "get_spec", "data_root", "read_idx", "write_idx"]


@dataclass
class Dataset:
    """One split of a dataset, whole, in memory."""

    name: str
    split: str
    images: np.ndarray  # uint8 [N, 28, 28], white ink on black as in MNIST
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    sha256: dict[str, str]  # the two files this split came from

    def __len__(self) -> int:
        return len(self.labels)


def _cache_dir() -> Path:
    return Path(os.environ.get("DIGITREC_CACHE") or platformdirs.user_cache_dir("digitrec")) / "decoded"


def _load_cached(path: Path, sha: str) -> np.ndarray:
    """Decode an IDX file once; later loads memory-map a .npy named by the file's checksum."""
    cache = _cache_dir() / f"{sha[:24]}.npy"
    if cache.exists():
        try:
            return np.load(cache)
        except (OSError, ValueError, EOFError):  # EOFError: an empty .npy
            cache.unlink(missing_ok=True)
    array = read_idx(path)
    try:
        with atomic_open(cache, "wb") as f:
            np.save(f, array)
    except OSError:
        pass  # a read-only cache only costs speed
    return array


def load_dataset(name: str = "mnist", split: str = "train", data_dir: str | os.PathLike | None = None,
                 offline: bool = False, progress: bool = True) -> Dataset:
    spec: DatasetSpec = get_spec(name)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    image_file, label_file = spec.files[split]
    folder = ensure_files(spec, data_dir, offline=offline, progress=progress, names=(image_file, label_file))
    images = _load_cached(folder / image_file, spec.sha256[image_file])
    labels = _load_cached(folder / label_file, spec.sha256[label_file])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{folder / image_file}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise DataError(f"{folder / label_file}: {len(labels)} labels for {len(images)} images")
    if labels.size and labels.max() >= len(spec.classes):
        raise DataError(f"{folder / label_file}: label {labels.max()} out of range")
    return Dataset(name, split, images, labels.astype(np.int64), spec.classes,
                   {image_file: spec.sha256[image_file], label_file: spec.sha256[label_file]})
