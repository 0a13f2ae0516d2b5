"""IDX reader/writer (digitrec.data.idx) and atomic writes (digitrec.atomic)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digitrec.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from digitrec.data.idx import encode_idx, parse_idx, read_idx, write_idx
from digitrec.errors import DataError

SHARED_MNIST = Path("/work/shared/data/mnist")

# Every dtype IDX can hold, with its type code; arrays may come in either byte order.
IDX_DTYPES = {
    "uint8": (np.dtype(np.uint8), 0x08),
    "int8": (np.dtype(np.int8), 0x09),
    "int16": (np.dtype(np.int16), 0x0B),
    "int32": (np.dtype(np.int32), 0x0C),
    "float32": (np.dtype(np.float32), 0x0D),
    "float64": (np.dtype(np.float64), 0x0E),
}

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes = b"") -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def same_bits(out: np.ndarray, arr: np.ndarray) -> bool:
    """Equal shape and bit-for-bit equal values (so NaN payloads and -0.0 count too)."""
    native = arr.astype(arr.dtype.newbyteorder("="))
    return out.shape == arr.shape and out.tobytes() == native.tobytes()


def check_error(path: Path | str, *words: str, data: bytes | None = None) -> str:
    """Read `path` (after writing `data` to it), expect a one-line DataError naming the file and `words`."""
    if data is not None:
        Path(path).write_bytes(data)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype_name", sorted(IDX_DTYPES))
def test_round_trip_every_dtype_and_rank(tmp_path, dtype_name, ndim, suffix):
    dtype, code = IDX_DTYPES[dtype_name]
    shape = (3, 2, 4, 5)[:ndim]
    rng = np.random.default_rng(ndim)
    if dtype.kind == "f":
        arr = rng.standard_normal(shape).astype(dtype)
        arr.flat[0] = np.nan
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    path = tmp_path / f"a-idx{ndim}-ubyte{suffix}"
    write_idx(path, arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    plain = gzip.decompress(raw) if suffix else raw
    # the header is exactly what the format says: 0 0 code ndim, then big-endian uint32 dims
    assert plain[:4] == bytes([0, 0, code, ndim])
    assert plain[4:4 + 4 * ndim] == struct.pack(f">{ndim}I", *shape)
    assert len(plain) == 4 + 4 * ndim + arr.size * dtype.itemsize
    out = read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    assert same_bits(out, arr)


@HYPOTHESIS
@given(
    arr=st.sampled_from(sorted(IDX_DTYPES)).flatmap(
        lambda name: st.sampled_from([IDX_DTYPES[name][0], IDX_DTYPES[name][0].newbyteorder(">")])).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6))),
    compress=st.sampled_from([True, False, None]),
    gz_name=st.booleans(),
)
def test_round_trip_hypothesis(tmp_path, arr, compress, gz_name):
    path = tmp_path / ("x.idx.gz" if gz_name else "x.idx")
    write_idx(path, arr, compress=compress)
    compressed = compress if compress is not None else gz_name
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compressed  # the reader detects it by content
    out = read_idx(path)
    assert out.dtype == arr.dtype.newbyteorder("=") and out.dtype.isnative
    assert same_bits(out, arr)
    assert same_bits(parse_idx(encode_idx(arr)), arr)


def test_known_encoding_is_big_endian():
    assert encode_idx(np.array([[1, 2, 3], [4, 5, 6]], np.uint8)) == idx_bytes(0x08, (2, 3), bytes([1, 2, 3, 4, 5, 6]))
    assert encode_idx(np.array([1, -2], "<i2")) == idx_bytes(0x0B, (2,), b"\x00\x01\xff\xfe")
    assert encode_idx(np.array([1.0], "<f4")) == idx_bytes(0x0D, (1,), b"\x3f\x80\x00\x00")


def test_gz_output_is_reproducible(tmp_path):
    arr = np.arange(100, dtype=np.uint8).reshape(10, 10)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()  # mtime=0 in the gzip header


@pytest.mark.parametrize("arr", [np.zeros(3, bool), np.zeros(3, np.int64), np.zeros(3, np.uint16),
                                 np.zeros(3, np.complex64), np.array(7, np.uint8)],
                         ids=["bool", "int64", "uint16", "complex64", "0-d"])
def test_encode_rejects_what_idx_cannot_hold(tmp_path, arr):
    with pytest.raises(DataError):
        encode_idx(arr)
    with pytest.raises(DataError):
        write_idx(tmp_path / "bad.idx", arr)
    assert list(tmp_path.iterdir()) == []


def test_reads_real_mnist_labels():
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


# --------------------------------------------------------------------------------------------- corrupt files

GOOD = idx_bytes(0x08, (2, 3), bytes(range(6)))

CORRUPT_CASES = {
    "bad magic": (b"\x01\x00" + GOOD[2:], "bad magic"),
    "bad magic 2nd byte": (b"\x00\x07" + GOOD[2:], "bad magic"),
    "unknown dtype": (b"\x00\x00\x0a" + GOOD[3:], "unknown IDX dtype code 0x0a"),
    "zero dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "truncated header": (GOOD[:9], "truncated header"),
    "truncated data": (GOOD[:-1], "truncated data"),
    "header only": (GOOD[:12], "truncated data"),
    "trailing bytes": (GOOD + b"\x00\x00", "2 unexpected trailing bytes"),
    "too short": (b"\x00\x00\x08", "too short"),
    "empty": (b"", "too short"),
}


@pytest.mark.parametrize("wrap", ["raw", "gz"])
@pytest.mark.parametrize("case", sorted(CORRUPT_CASES))
def test_corrupt_idx_raises_data_error_naming_file_and_problem(tmp_path, case, wrap):
    data, words = CORRUPT_CASES[case]
    if wrap == "gz":
        data = gzip.compress(data, mtime=0)
    check_error(tmp_path / f"broken-{wrap}.idx", words, data=data)
    with pytest.raises(DataError, match="<bytes>"):
        parse_idx(gzip.decompress(data) if wrap == "gz" else data)


def test_missing_file(tmp_path):
    check_error(tmp_path / "nope-idx1-ubyte.gz", "not found")


def test_directory_instead_of_file(tmp_path):
    check_error(tmp_path, "cannot read")


def test_corrupt_gzip_stream_in_the_middle(tmp_path):
    raw = bytearray((SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 8] = bytes(b ^ 0xFF for b in raw[mid:mid + 8])
    check_error(tmp_path / "labels.gz", "corrupt gzip stream", data=bytes(raw))


def test_truncated_gzip_at_every_length(tmp_path):
    full = gzip.compress(GOOD, mtime=0)
    path = tmp_path / "cut.gz"
    for cut in range(len(full)):
        message = check_error(path, data=full[:cut])
        if cut >= 2:  # still starts with the gzip magic
            assert "corrupt gzip stream" in message


def test_real_truncated_gz_download(tmp_path):
    raw = (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()
    check_error(tmp_path / "t10k-labels-idx1-ubyte.gz", "corrupt gzip stream", data=raw[: len(raw) * 3 // 4])


def test_gzip_holding_a_truncated_idx_names_the_gz_file(tmp_path):
    check_error(tmp_path / "a.gz", "truncated data", data=gzip.compress(GOOD[:-3]))


@HYPOTHESIS
@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_single_byte_change_in_a_gz_is_detected_or_harmless(tmp_path, position, flip):
    arr = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    data = bytearray(gzip.compress(encode_idx(arr), mtime=0))
    data[position % len(data)] ^= flip
    path = tmp_path / "flip.gz"
    path.write_bytes(bytes(data))
    try:
        out = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:  # e.g. a flipped mtime or OS byte in the gzip header changes nothing that matters
        assert same_bits(out, arr)


# --------------------------------------------------------------------------------------------- fuzzing

_header_like = st.builds(
    lambda code, dims, tail: bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + tail,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    st.lists(st.one_of(st.integers(0, 4), st.sampled_from([65536, 2**31, 2**32 - 1])), min_size=0, max_size=6),
    st.binary(max_size=80),
)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=120), _header_like))
# dims whose product is 2**64 once wrapped to 0 in int64 (was a ValueError from reshape)
@example(data=idx_bytes(0x08, (65536, 65536, 65536, 65536)))
@example(data=idx_bytes(0x0E, (2**32 - 1, 2**32 - 1), b"xx"))
@example(data=idx_bytes(0x08, (0, 5)))
@example(data=idx_bytes(0x08, (0, 2**32 - 1, 2**32 - 1)))  # empty, but too big for numpy
def test_parse_idx_returns_array_or_raises_data_error(data):
    try:
        out = parse_idx(data, "fuzz")
    except DataError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert isinstance(out, np.ndarray) and out.dtype.isnative
    assert 1 <= out.ndim <= 255
    assert 4 + 4 * out.ndim + out.nbytes == len(data)
    assert encode_idx(out) == data  # a valid file re-encodes to the same bytes


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=100), st.binary(max_size=100).map(lambda b: b"\x1f\x8b" + b),
                      _header_like.map(gzip.compress)))
def test_read_idx_of_arbitrary_file_returns_array_or_raises_data_error(tmp_path, data):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(data)
    try:
        out = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(out, np.ndarray)


# --------------------------------------------------------------------------------------------- atomic writes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_atomic_open_exception_leaves_no_target_and_no_temp(tmp_path, exc_type):
    target = tmp_path / "out.bin"
    with pytest.raises(exc_type):
        with atomic_open(target, "wb") as f:
            f.write(b"half a file")
            f.flush()
            assert len(_leftovers(tmp_path)) == 1  # the temporary sibling exists while writing ...
            raise exc_type("interrupted")
    assert _leftovers(tmp_path) == []  # ... and is gone, with no target, after the failure


def test_atomic_open_exception_keeps_previous_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_open(target, "w") as f:
            f.write("new")
            raise ValueError
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == ["out.txt"]


def test_atomic_writes_succeed_and_create_parents(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "t.txt", "hello")
    atomic_write_text(tmp_path / "t.txt", "bye")  # replaces
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text() == "bye"
    assert _leftovers(tmp_path) == ["a", "t.txt"]


def test_write_idx_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_idx(tmp_path / "big.gz", np.zeros((100, 100), np.uint8))
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
