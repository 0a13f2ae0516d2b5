"""Read and write IDX files (the MNIST container format), plain or gzip-compressed.

Format: 2 zero bytes, a dtype code, the number of dimensions, then each dimension as a big-endian
uint32, then the data in C order. We check all of it so a truncated download never becomes a
silently short dataset.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from digitrec.atomic import atomic_write_bytes
from digitrec.errors import DataError

# IDX dtype codes -> numpy big-endian dtypes.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip stream ({exc})") from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array; raise DataError naming `name` on any inconsistency."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad magic number (first bytes {data[:4].hex()}, expected 0000xxxx)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no int64 wrap-around on huge headers
    actual = len(data) - header
    if actual < expected:
        raise DataError(f"{name}: truncated data ({actual} bytes, header {shape} needs {expected})")
    if actual > expected:
        raise DataError(f"{name}: {actual - expected} unexpected trailing bytes after the data")
    try:
        array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    except ValueError as exc:  # e.g. (0, 2**31, 2**31): no data, but numpy refuses such a shape
        raise DataError(f"{name}: unusable shape {shape} ({exc})") from None
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (.gz or raw, detected by content) into a native-endian numpy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if key not in _CODES:
        raise DataError(f"dtype {array.dtype} cannot be stored in IDX")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    header = bytes([0, 0, _CODES[key], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=key).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an IDX file atomically; gzip it when `compress` is True or the name ends in .gz."""
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
