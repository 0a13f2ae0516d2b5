"""The dataset registry, load_dataset, the decoded-array cache and the data-dir search order."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import platformdirs
import pytest
from blocking import finished_in_time
from http_server import LocalHTTPServer

import digitrec.data
from digitrec.data import REGISTRY, Dataset, data_root, get_spec, load_dataset
from digitrec.data import datasets as datasets_module
from digitrec.data.datasets import SPLITS, DatasetSpec
from digitrec.errors import DataError, UsageError

SHARED = Path("/work/shared/data")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def read_sha256sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    return sums


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Shared data via $DIGITREC_DATA, and a private decoded-array cache."""
    monkeypatch.setenv("DIGITREC_DATA", str(SHARED))
    monkeypatch.setenv("DIGITREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


def cache_file(cache: Path, dataset: str, filename: str) -> Path:
    """The one cache entry of a data file: named by the file's checksum and a digest of its content."""
    entries = sorted(cache.glob(f"{REGISTRY[dataset].sha256[filename][:24]}-*.npy"))
    assert len(entries) == 1, entries
    return entries[0]


# --------------------------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(REGISTRY) == {"mnist", "fashion-mnist"}
    assert SPLITS == ("train", "test")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_registry_matches_published_checksums(name):
    spec = get_spec(name)
    assert spec is REGISTRY[name] and spec.name == name
    assert len(spec.all_files) == 4 and len(set(spec.all_files)) == 4
    assert set(spec.files) == set(SPLITS)
    for split, (images, labels) in spec.files.items():
        assert "images" in images and "labels" in labels and images.endswith(".gz")
        assert images.startswith("train" if split == "train" else "t10k")
    assert spec.sha256 == read_sha256sums(SHARED / name / "SHA256SUMS")
    assert set(spec.sha256) == set(spec.all_files)
    assert len(spec.classes) == 10
    assert spec.mirrors and all(m.endswith("/") and m.startswith(("http://", "https://")) for m in spec.mirrors)


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        REGISTRY["mnist"].mirrors = ("http://127.0.0.1/",)


@pytest.mark.parametrize("bad", ["emnist", "MNIST", ""])
def test_unknown_dataset_names_the_choices(bad):
    with pytest.raises(UsageError) as info:
        get_spec(bad)
    message = str(info.value)
    assert repr(bad) in message and "mnist" in message and "fashion-mnist" in message
    with pytest.raises(UsageError, match="fashion-mnist"):
        load_dataset(bad, "train", offline=True, progress=False)


def test_unknown_split_names_the_choices(cache_dir):
    with pytest.raises(UsageError) as info:
        load_dataset("mnist", "validation", offline=True, progress=False)
    assert "'validation'" in str(info.value) and "train" in str(info.value) and "test" in str(info.value)


# --------------------------------------------------------------------------------------------- load_dataset


def test_load_mnist_train(cache_dir):
    ds = load_dataset("mnist", "train", offline=True, progress=False)
    assert isinstance(ds, Dataset) and (ds.name, ds.split) == ("mnist", "train")
    assert ds.images.shape == (60000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (60000,) and ds.labels.dtype == np.int64
    assert len(ds) == 60000
    assert np.bincount(ds.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert ds.classes == tuple("0123456789")
    assert ds.sha256 == {n: REGISTRY["mnist"].sha256[n] for n in REGISTRY["mnist"].files["train"]}
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert 30 < ds.images.mean() < 35  # white ink on black, about 33


def test_load_mnist_test_then_from_cache(cache_dir, monkeypatch):
    first = load_dataset("mnist", "test", offline=True, progress=False)
    assert first.images.shape == (10000, 28, 28) and first.images.dtype == np.uint8
    assert first.labels.shape == (10000,) and first.labels.dtype == np.int64
    assert np.bincount(first.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    for name in REGISTRY["mnist"].files["test"]:
        assert cache_file(cache_dir, "mnist", name).is_file()
    assert not [p for p in cache_dir.iterdir() if p.suffix != ".npy"]  # no temp files left behind

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again instead of using the cache")

    monkeypatch.setattr(digitrec.data, "read_idx", no_decoding)
    start = time.perf_counter()
    second = load_dataset("mnist", "test", offline=True, progress=False)
    assert time.perf_counter() - start < 1.0
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.labels.dtype == np.int64


def test_second_train_load_is_fast(cache_dir):
    load_dataset("mnist", "train", offline=True, progress=False)
    assert cache_file(cache_dir, "mnist", "train-images-idx3-ubyte.gz").stat().st_size > 47_000_000
    start = time.perf_counter()
    ds = load_dataset("mnist", "train", offline=True, progress=False)
    assert time.perf_counter() - start < 1.0
    assert ds.images.shape == (60000, 28, 28)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "header-only", "another array"])
def test_corrupt_cache_is_ignored_and_rebuilt(cache_dir, damage):
    good = load_dataset("mnist", "test", offline=True, progress=False)
    images_cache = cache_file(cache_dir, "mnist", "t10k-images-idx3-ubyte.gz")
    labels_cache = cache_file(cache_dir, "mnist", "t10k-labels-idx1-ubyte.gz")
    raw = images_cache.read_bytes()
    other = labels_cache.read_bytes()  # a valid .npy, of another array: it must not pass for the images
    damaged = {"garbage": b"this is not a numpy file" * 10, "truncated": raw[: len(raw) // 2],
               "empty": b"", "header-only": raw[:128], "another array": other}[damage]
    images_cache.write_bytes(damaged)
    labels_cache.write_bytes(damaged if damage != "another array" else raw)
    again = load_dataset("mnist", "test", offline=True, progress=False)
    np.testing.assert_array_equal(again.images, good.images)
    np.testing.assert_array_equal(again.labels, good.labels)
    np.testing.assert_array_equal(np.load(cache_file(cache_dir, "mnist", "t10k-images-idx3-ubyte.gz")),
                                  good.images)  # rebuilt, under the same name
    assert images_cache.read_bytes() == raw


def test_a_cache_in_the_way_only_costs_speed(cache_dir):
    """A folder where an entry should be, or a cache folder that cannot be listed: decoded from the .gz."""
    good = load_dataset("mnist", "test", offline=True, progress=False)
    entry = cache_file(cache_dir, "mnist", "t10k-images-idx3-ubyte.gz")
    entry.unlink()
    entry.mkdir()
    again = load_dataset("mnist", "test", offline=True, progress=False)
    np.testing.assert_array_equal(again.images, good.images)


def test_a_pipe_in_the_cache_only_costs_speed(cache_dir):
    """np.load on a pipe blocks for ever: an entry that is no regular file is skipped and replaced."""
    good = load_dataset("mnist", "test", offline=True, progress=False)
    entry = cache_file(cache_dir, "mnist", "t10k-labels-idx1-ubyte.gz")
    entry.unlink()
    os.mkfifo(entry)
    loaded: list = []
    finished_in_time(lambda: loaded.append(load_dataset("mnist", "test", offline=True, progress=False)), 60)
    np.testing.assert_array_equal(loaded[0].labels, good.labels)


def test_unwritable_cache_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DIGITREC_DATA", str(SHARED))
    monkeypatch.setenv("DIGITREC_CACHE", str(blocker))
    ds = load_dataset("mnist", "test", offline=True, progress=False)
    assert ds.images.shape == (10000, 28, 28)


def test_load_fashion_mnist(cache_dir):
    test = load_dataset("fashion-mnist", "test", offline=True, progress=False)
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    assert test.labels.dtype == np.int64
    assert np.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert test.classes[0] == "T-shirt/top" and test.classes[9] == "Ankle boot"
    train = load_dataset("fashion-mnist", "train", offline=True, progress=False)
    assert train.images.shape == (60000, 28, 28)
    assert np.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert cache_file(cache_dir, "fashion-mnist", "train-images-idx3-ubyte.gz").is_file()


# --------------------------------------------------------------------------------------------- data dir


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """Point platformdirs' user cache dir at a temporary folder."""
    folder = tmp_path / "user-cache"
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda appname=None, *a, **k: str(folder / appname))
    return folder / "digitrec"


def test_data_root_precedence(tmp_path, monkeypatch, user_cache):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv("DIGITREC_DATA", str(env))
    assert data_root(explicit) == explicit
    assert data_root(str(explicit)) == explicit
    assert data_root() == env
    monkeypatch.setenv("DIGITREC_DATA", "")
    assert data_root() == user_cache / "data"
    monkeypatch.delenv("DIGITREC_DATA")
    assert data_root() == user_cache / "data"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root("~/x") == tmp_path / "x"


def _offline_error(**kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", offline=True, progress=False, **kwargs)
    return str(info.value)


def test_load_dataset_uses_the_same_precedence(tmp_path, monkeypatch, user_cache):
    monkeypatch.setenv("DIGITREC_CACHE", str(tmp_path / "cache"))
    empty_explicit, empty_env = tmp_path / "explicit", tmp_path / "env"
    # explicit beats $DIGITREC_DATA, even when $DIGITREC_DATA holds the data
    monkeypatch.setenv("DIGITREC_DATA", str(SHARED))
    assert str(empty_explicit / "mnist") in _offline_error(data_dir=empty_explicit)
    assert load_dataset("mnist", "test", data_dir=SHARED, offline=True, progress=False).images.shape[0] == 10000
    # $DIGITREC_DATA beats the user cache
    monkeypatch.setenv("DIGITREC_DATA", str(empty_env))
    assert str(empty_env / "mnist") in _offline_error()
    # neither: the platformdirs cache
    monkeypatch.delenv("DIGITREC_DATA")
    assert str(user_cache / "data" / "mnist") in _offline_error()


def test_load_dataset_downloads_into_an_empty_data_dir(tmp_path, monkeypatch):
    """End to end with the registry's MNIST swapped for a copy whose only mirror is a local server."""
    monkeypatch.setenv("DIGITREC_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real = REGISTRY["mnist"]
    with LocalHTTPServer({name: (SHARED / "mnist" / name).read_bytes() for name in real.all_files}) as server:
        local = DatasetSpec(name=real.name, files=real.files, sha256=real.sha256, classes=real.classes,
                            mirrors=(server.base_url,))
        monkeypatch.setitem(datasets_module.REGISTRY, "mnist", local)
        ds = load_dataset("mnist", "test", data_dir=tmp_path / "data", progress=False)
        assert sorted(server.requests) == sorted("/" + n for n in real.files["test"])  # the split's files only
        assert len(load_dataset("mnist", "train", data_dir=tmp_path / "data", progress=False)) == 60000
        assert sorted(server.requests) == sorted("/" + n for n in real.all_files)
    assert ds.images.shape == (10000, 28, 28)
    assert np.bincount(ds.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(real.all_files)
