"""Data layer: IDX files, the dataset registry, download/verify, and decoded-array caching.

Knows nothing about models. `load_dataset("mnist", "train")` is the one call the rest of digitrec uses.
"""

from __future__ import annotations

import contextlib
import hashlib
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
    return Path(os.environ.get("DIGITREC_CACHE") or platformdirs.user_cache_dir("digitrec")).expanduser() / "decoded"


def _digest(array: np.ndarray) -> str:
    """A digest of an array's type, shape and bytes (blake2b: about 50 ms for MNIST's training images)."""
    digest = hashlib.blake2b(f"{array.dtype.str}{array.shape}".encode(), digest_size=8)
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _load_cached(path: Path, sha: str) -> np.ndarray:
    """Decode an IDX file once; later loads read a .npy named by the file's checksum and by a digest of its
    own content, checked on every load: an entry copied over another, truncated or altered is decoded
    again. Any problem with the cache (unreadable, read-only, a folder in the way) only costs speed."""
    folder, stem = _cache_dir(), sha[:24]
    try:
        entries = sorted(folder.glob(f"{stem}*.npy"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            if not entry.is_file():  # a pipe would block np.load for ever, a folder cannot be loaded
                raise ValueError(f"{entry}: not a regular file")
            array = np.load(entry, allow_pickle=False)
            if entry.stem == f"{stem}-{_digest(array)}":
                return array
        except (OSError, ValueError, EOFError):  # EOFError: an empty .npy
            pass
        with contextlib.suppress(OSError):  # stale (or from before entries carried a digest)
            entry.unlink()
    array = read_idx(path)
    with contextlib.suppress(OSError):
        with atomic_open(folder / f"{stem}-{_digest(array)}.npy", "wb") as f:
            np.save(f, array)
    return array


def load_dataset(name: str = "mnist", split: str = "train", data_dir: str | os.PathLike | None = None,
                 offline: bool = False, progress: bool = True) -> Dataset:
    if not isinstance(name, str) or not isinstance(split, str):
        raise UsageError(f"dataset and split are names such as 'mnist' and 'train', not {name!r} and {split!r}")
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
