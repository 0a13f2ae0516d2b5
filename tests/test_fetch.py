"""Download and verification (digitrec.data.fetch) against a local HTTP server; never the internet."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from blocking import finished_in_time
from http_server import LocalHTTPServer, Raw, Redirect, Stall, Trickle, Truncated, closed_port_url

from digitrec.data import fetch
from digitrec.data.datasets import MNIST, DatasetSpec
from digitrec.data.idx import read_idx
from digitrec.errors import DataError

SHARED_MNIST = Path("/work/shared/data/mnist")
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def real(name: str) -> bytes:
    return (SHARED_MNIST / name).read_bytes()


def corrupted(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    return bytes(flipped)


def labels_spec(*mirrors: str) -> DatasetSpec:
    """An MNIST-like spec holding only the two small label files, served from `mirrors`."""
    return DatasetSpec(name="mnist", files={"train": (TRAIN_LABELS, TEST_LABELS)},
                       sha256={n: MNIST.sha256[n] for n in (TRAIN_LABELS, TEST_LABELS)},
                       classes=MNIST.classes, mirrors=tuple(mirrors))


def folder_contents(folder: Path) -> list[str]:
    """Every name in `folder`, hidden .part files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Make sure urllib talks to 127.0.0.1 directly, whatever the environment says."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(fetch.MIRROR_ENV_VAR, raising=False)  # a user's own mirror must not leak into the tests
    monkeypatch.delenv(fetch.PUBLIC_ENV_VAR, raising=False)


@pytest.fixture
def server():
    with LocalHTTPServer(max_lifetime=60) as srv:
        yield srv


@pytest.fixture
def mirrors():
    """Two independent servers: mirror 1 and mirror 2."""
    with LocalHTTPServer(max_lifetime=60) as one, LocalHTTPServer(max_lifetime=60) as two:
        yield one, two


def test_registry_is_not_patched():
    assert all(m.startswith("https://") or m.startswith("http://") for m in MNIST.mirrors)
    assert not any("127.0.0.1" in m for m in MNIST.mirrors)


# --------------------------------------------------------------------------------------------- download()


def test_download_good_file(server, tmp_path):
    server[TRAIN_LABELS] = real(TRAIN_LABELS)
    dest = tmp_path / TRAIN_LABELS
    fetch.download([server.url(TRAIN_LABELS)], dest, MNIST.sha256[TRAIN_LABELS], progress=False)
    assert dest.read_bytes() == real(TRAIN_LABELS)
    assert folder_contents(tmp_path) == [TRAIN_LABELS]
    assert server.requests == ["/" + TRAIN_LABELS]


def test_download_full_images_file_with_progress(server, tmp_path):
    server[TEST_IMAGES] = real(TEST_IMAGES)
    dest = tmp_path / "sub" / TEST_IMAGES  # the folder is created
    fetch.download([server.url(TEST_IMAGES)], dest, MNIST.sha256[TEST_IMAGES], progress=True)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == MNIST.sha256[TEST_IMAGES]
    assert read_idx(dest).shape == (10000, 28, 28)
    assert folder_contents(dest.parent) == [TEST_IMAGES]


def test_corrupt_mirror_then_good_mirror(mirrors, tmp_path):
    one, two = mirrors
    one[TEST_LABELS] = corrupted(real(TEST_LABELS))
    two[TEST_LABELS] = real(TEST_LABELS)
    dest = tmp_path / TEST_LABELS
    fetch.download([one.url(TEST_LABELS), two.url(TEST_LABELS)], dest, MNIST.sha256[TEST_LABELS], progress=False)
    assert dest.read_bytes() == real(TEST_LABELS)
    assert one.requests == two.requests == ["/" + TEST_LABELS]
    assert folder_contents(tmp_path) == [TEST_LABELS]


@pytest.mark.parametrize("bad", [
    404,
    500,
    Truncated(real(TEST_LABELS)[:1000], len(real(TEST_LABELS))),  # connection drops mid-file
    Raw(b"SSH-2.0-OpenSSH_9.6\r\n"),  # not an HTTP server at all (http.client.BadStatusLine)
    Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc"),  # IncompleteRead
    Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),  # bad chunk size
    b"",  # an empty 200
], ids=["404", "500", "truncated", "not-http", "incomplete-chunked", "bad-chunk", "empty"])
def test_failing_mirror_then_good_mirror(mirrors, tmp_path, bad):
    one, two = mirrors
    one[TEST_LABELS] = bad
    two[TEST_LABELS] = real(TEST_LABELS)
    dest = tmp_path / TEST_LABELS
    fetch.download([one.url(TEST_LABELS), two.url(TEST_LABELS)], dest, MNIST.sha256[TEST_LABELS], progress=False)
    assert dest.read_bytes() == real(TEST_LABELS)
    assert folder_contents(tmp_path) == [TEST_LABELS]


def test_refused_then_stalled_then_good_mirror(server, tmp_path):
    server["slow/" + TEST_LABELS] = Stall(30, real(TEST_LABELS))
    server[TEST_LABELS] = real(TEST_LABELS)
    dest = tmp_path / TEST_LABELS
    urls = [closed_port_url() + TEST_LABELS, server.url("slow/" + TEST_LABELS), server.url(TEST_LABELS)]
    fetch.download(urls, dest, MNIST.sha256[TEST_LABELS], timeout=1.0, progress=False)
    assert dest.read_bytes() == real(TEST_LABELS)
    assert server.requests == ["/slow/" + TEST_LABELS, "/" + TEST_LABELS]


def test_all_mirrors_dead(server, tmp_path):
    server["a/" + TEST_LABELS] = 404
    server["b/" + TEST_LABELS] = corrupted(real(TEST_LABELS))
    server["c/" + TEST_LABELS] = Raw(b"garbage\r\nmore garbage\r\n")
    refused = closed_port_url() + TEST_LABELS
    urls = [server.url("a/" + TEST_LABELS), refused, server.url("b/" + TEST_LABELS), server.url("c/" + TEST_LABELS)]
    dest = tmp_path / TEST_LABELS
    with pytest.raises(DataError) as info:
        fetch.download(urls, dest, MNIST.sha256[TEST_LABELS], progress=False)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"could not download {TEST_LABELS} from any mirror")
    for url in urls:
        assert url in message
    assert "Not Found" in message and "refused" in message and "checksum mismatch" in message
    assert folder_contents(tmp_path) == []  # neither the file nor a .part file


def test_no_mirrors_at_all(tmp_path):
    with pytest.raises(DataError, match="any mirror"):
        fetch.download([], tmp_path / TEST_LABELS, MNIST.sha256[TEST_LABELS], progress=False)
    assert folder_contents(tmp_path) == []


def test_download_replaces_nothing_on_failure(tmp_path):
    dest = tmp_path / TEST_LABELS
    dest.write_bytes(b"keep me")
    with pytest.raises(DataError):
        fetch.download([closed_port_url() + TEST_LABELS], dest, MNIST.sha256[TEST_LABELS], progress=False)
    assert dest.read_bytes() == b"keep me"
    assert folder_contents(tmp_path) == [TEST_LABELS]


# --------------------------------------------------------------------------------------------- ensure_files()


def test_ensure_files_downloads_missing_files(server, tmp_path):
    server[TRAIN_LABELS] = real(TRAIN_LABELS)
    server[TEST_LABELS] = real(TEST_LABELS)
    spec = labels_spec(closed_port_url(), server.base_url)
    folder = fetch.ensure_files(spec, tmp_path, progress=False)
    assert folder == tmp_path / "mnist"
    assert folder_contents(folder) == [TEST_LABELS, TRAIN_LABELS]
    for name in (TRAIN_LABELS, TEST_LABELS):
        assert (folder / name).read_bytes() == real(name)
    # a second call finds everything in place and asks no server
    fetch.ensure_files(spec, tmp_path, progress=False)
    assert sorted(server.requests) == ["/" + TEST_LABELS, "/" + TRAIN_LABELS]


def test_ensure_files_downloads_only_what_is_missing(server, tmp_path):
    (tmp_path / "mnist").mkdir()
    shutil.copy(SHARED_MNIST / TRAIN_LABELS, tmp_path / "mnist" / TRAIN_LABELS)
    server[TEST_LABELS] = real(TEST_LABELS)
    fetch.ensure_files(labels_spec(server.base_url), tmp_path, progress=False)
    assert server.requests == ["/" + TEST_LABELS]


def test_own_mirror_comes_first_and_is_laid_out_as_a_data_root(server, monkeypatch, tmp_path):
    """$DIGITREC_MIRROR: base URLs holding <dataset>/<file>; tried before the registry's mirrors."""
    public = LocalHTTPServer(max_lifetime=60).start()
    try:
        public[TRAIN_LABELS] = real(TRAIN_LABELS)
        public[TEST_LABELS] = real(TEST_LABELS)
        server["mnist/" + TRAIN_LABELS] = real(TRAIN_LABELS)  # the own mirror lacks the test labels
        dead = closed_port_url()
        monkeypatch.setenv(fetch.MIRROR_ENV_VAR, f"{dead}, {server.base_url}")
        assert fetch.mirror_urls(labels_spec(public.base_url), TEST_LABELS) == [
            dead + "mnist/" + TEST_LABELS, server.base_url + "mnist/" + TEST_LABELS,
            public.base_url + TEST_LABELS]
        folder = fetch.ensure_files(labels_spec(public.base_url), tmp_path, progress=False)
        assert sorted(server.requests) == ["/mnist/" + TEST_LABELS, "/mnist/" + TRAIN_LABELS]
        assert public.requests == ["/" + TEST_LABELS]  # only what the own mirror did not have
        assert folder_contents(folder) == [TEST_LABELS, TRAIN_LABELS]
    finally:
        public.stop()


def test_public_mirrors_can_be_switched_off(server, monkeypatch, tmp_path):
    """$DIGITREC_PUBLIC_MIRRORS=off: only the own mirror is asked; with none, a one-line error before any request."""
    public = LocalHTTPServer(max_lifetime=60).start()
    try:
        public[TEST_LABELS] = real(TEST_LABELS)
        spec = labels_spec(public.base_url)
        monkeypatch.setenv(fetch.PUBLIC_ENV_VAR, "off")
        with pytest.raises(DataError, match=rf"mnist/{TRAIN_LABELS}: missing, \$DIGITREC_PUBLIC_MIRRORS is off and "
                                            r"\$DIGITREC_MIRROR names no mirror of your own"):
            fetch.ensure_files(spec, tmp_path / "a", progress=False)
        server["mnist/" + TRAIN_LABELS] = real(TRAIN_LABELS)
        monkeypatch.setenv(fetch.MIRROR_ENV_VAR, server.base_url)
        assert fetch.mirror_urls(spec, TEST_LABELS) == [server.base_url + "mnist/" + TEST_LABELS]
        with pytest.raises(DataError, match=f"mnist/{TEST_LABELS}: Not Found\\)"):  # not in the own mirror: no fallback
            fetch.ensure_files(spec, tmp_path / "b", progress=False)
        assert public.requests == []
        assert folder_contents(tmp_path / "b" / "mnist") == [TRAIN_LABELS]
        monkeypatch.setenv(fetch.PUBLIC_ENV_VAR, "On")
        assert fetch.mirror_urls(spec, TEST_LABELS)[-1] == public.base_url + TEST_LABELS
        monkeypatch.setenv(fetch.PUBLIC_ENV_VAR, "maybe")
        with pytest.raises(DataError, match=r"\$DIGITREC_PUBLIC_MIRRORS: 'maybe' is neither on nor off"):
            fetch.mirror_urls(spec, TEST_LABELS)
    finally:
        public.stop()


def test_own_mirror_can_be_a_folder(monkeypatch, tmp_path):
    """A file:// mirror (a shared drive): a copy of a data root; a corrupt copy there is refused."""
    shared = tmp_path / "shared"
    (shared / "mnist").mkdir(parents=True)
    (shared / "mnist" / TRAIN_LABELS).write_bytes(real(TRAIN_LABELS))
    (shared / "mnist" / TEST_LABELS).write_bytes(corrupted(real(TEST_LABELS)))
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, shared.as_uri())
    spec = labels_spec()
    with pytest.raises(DataError) as info:
        fetch.ensure_files(spec, tmp_path / "data", progress=False)
    assert f"{shared.as_uri()}/mnist/{TEST_LABELS}: checksum mismatch" in str(info.value)
    assert "DIGITREC_MIRROR" in str(info.value)
    assert folder_contents(tmp_path / "data" / "mnist") == [TRAIN_LABELS]  # the good file arrived, the bad did not
    assert (tmp_path / "data" / "mnist" / TRAIN_LABELS).read_bytes() == real(TRAIN_LABELS)


def test_own_mirror_as_a_plain_path_and_bad_entries(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, str(tmp_path / "copies"))
    assert fetch.mirror_urls(labels_spec(), TEST_LABELS) == [(tmp_path / "copies").as_uri() + "/mnist/" + TEST_LABELS]
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, "data")
    with pytest.raises(DataError, match=r"\$DIGITREC_MIRROR: 'data' is not a URL; give http\(s\)://"):
        fetch.ensure_files(labels_spec(), tmp_path, progress=False)


def test_a_mirror_url_with_a_password_logs_in_with_it(server, monkeypatch, tmp_path):
    import base64

    server["mnist/" + TRAIN_LABELS] = real(TRAIN_LABELS)
    server["mnist/" + TEST_LABELS] = real(TEST_LABELS)
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, server.base_url.replace("http://", "http://alice:s%40cret@"))
    folder = fetch.ensure_files(labels_spec(), tmp_path, progress=False)
    assert folder_contents(folder) == [TEST_LABELS, TRAIN_LABELS]
    assert server.authorizations == ["Basic " + base64.b64encode(b"alice:s@cret").decode()] * 2


def test_a_password_goes_only_to_the_mirror_it_was_given_for(mirrors, monkeypatch, tmp_path):
    """A redirect to the same host keeps the login; one to another host (here: another port) drops it, so
    a mirror cannot hand its users' passwords to a third party."""
    import base64

    one, two = mirrors
    one["mnist/" + TRAIN_LABELS] = Redirect(one.base_url + "moved/" + TRAIN_LABELS)
    one["moved/" + TRAIN_LABELS] = real(TRAIN_LABELS)
    one["mnist/" + TEST_LABELS] = Redirect(two.base_url + TEST_LABELS)
    two[TEST_LABELS] = real(TEST_LABELS)
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, one.base_url.replace("http://", "http://alice:s3cret@"))
    folder = fetch.ensure_files(labels_spec(), tmp_path, progress=False)
    assert folder_contents(folder) == [TEST_LABELS, TRAIN_LABELS]
    login = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert one.authorizations == [login] * 3  # both first requests, and the redirect on the same host
    assert two.authorizations == [None]


def test_a_slow_or_cut_transfer_says_so(server, tmp_path):
    body = real(TEST_LABELS)
    server["slow.gz"] = Trickle(body, chunk=200, interval=0.2)
    server["cut.gz"] = Truncated(body[:1000], len(body))
    with pytest.raises(DataError) as info:
        fetch.download([server.url("slow.gz"), server.url("cut.gz")], tmp_path / TEST_LABELS,
                       MNIST.sha256[TEST_LABELS], progress=False, min_rate=100_000, patience=0.5)
    message = str(info.value)
    assert "slow.gz: too slow (" in message and "cut.gz: transfer cut short (1000 of 4542 bytes)" in message
    assert folder_contents(tmp_path) == []


def test_a_destination_that_cannot_be_written_asks_no_mirror(server, tmp_path):
    server[TEST_LABELS] = real(TEST_LABELS)
    (tmp_path / "file").write_text("a file where the dataset folder goes")
    with pytest.raises(DataError, match=r"file/mnist/t10k-labels-idx1-ubyte.gz: cannot write the download there"):
        fetch.download([server.url(TEST_LABELS)], tmp_path / "file" / "mnist" / TEST_LABELS,
                       MNIST.sha256[TEST_LABELS], progress=False)
    assert server.requests == []


def test_a_pipe_in_the_data_folder_is_refused_not_read(tmp_path):
    (tmp_path / "mnist").mkdir()
    os.mkfifo(tmp_path / "mnist" / TEST_LABELS)  # reading it would block for ever
    with pytest.raises(DataError, match="not a regular file"):
        fetch.ensure_files(labels_spec(), tmp_path, offline=True, progress=False, names=(TEST_LABELS,))


def test_mirror_entries_quoted_with_home_and_queries(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, f'"{tmp_path}/my mirror", ~/copies, https://h.example/d?token=1')
    assert fetch.mirror_urls(labels_spec(), TEST_LABELS)[:3] == [
        (tmp_path / "my mirror").as_uri() + "/mnist/" + TEST_LABELS,
        (tmp_path / "copies").as_uri() + "/mnist/" + TEST_LABELS,
        "https://h.example/d/mnist/" + TEST_LABELS + "?token=1"]
    for bad in ("http://[::1/x", "ftp://h/x"):
        monkeypatch.setenv(fetch.MIRROR_ENV_VAR, bad)
        with pytest.raises(DataError, match=r"\$DIGITREC_MIRROR: "):
            fetch.mirror_urls(labels_spec(), TEST_LABELS)
        with pytest.raises(DataError, match=r"^\$DIGITREC_MIRROR: [^.]*$"):  # no advice about the network
            fetch.ensure_files(labels_spec(), tmp_path, progress=False)
    assert folder_contents(tmp_path) == []


def test_a_password_in_a_mirror_url_is_not_repeated(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.MIRROR_ENV_VAR, closed_port_url().replace("http://", "http://alice:s3cret@"))
    with pytest.raises(DataError) as info:
        fetch.ensure_files(labels_spec(), tmp_path, progress=False)
    assert "s3cret" not in str(info.value) and "alice" not in str(info.value)
    assert "http://***@127.0.0.1:" in str(info.value)


def test_ensure_files_all_mirrors_dead(server, tmp_path):
    spec = labels_spec(server.base_url, closed_port_url())  # 404 for everything, then refused
    with pytest.raises(DataError) as info:
        fetch.ensure_files(spec, tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "could not download" in message and "Not Found" in message and "refused" in message
    assert str(tmp_path / "mnist") in message and "DIGITREC_DATA" in message  # says where to put the files
    assert not (tmp_path / "mnist").exists()  # no empty dataset folder left behind


def test_ensure_files_offline_missing_file(server, tmp_path):
    server[TRAIN_LABELS] = real(TRAIN_LABELS)
    server[TEST_LABELS] = real(TEST_LABELS)
    with pytest.raises(DataError) as info:
        fetch.ensure_files(labels_spec(server.base_url), tmp_path, offline=True, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "mnist" / TRAIN_LABELS) in message and "missing" in message and "offline" in message
    assert f"put the mnist .gz files in {tmp_path / 'mnist'}" in message
    assert "--data-dir" in message and "$DIGITREC_DATA" in message
    assert server.requests == []  # offline means offline
    assert folder_contents(tmp_path / "mnist") == []


@pytest.mark.parametrize("offline", [False, True])
def test_existing_file_with_wrong_checksum_is_never_used(server, tmp_path, offline):
    folder = tmp_path / "mnist"
    folder.mkdir()
    bad = corrupted(real(TRAIN_LABELS))
    (folder / TRAIN_LABELS).write_bytes(bad)
    shutil.copy(SHARED_MNIST / TEST_LABELS, folder / TEST_LABELS)
    server[TRAIN_LABELS] = real(TRAIN_LABELS)  # a good copy is available, but must not be fetched silently
    with pytest.raises(DataError) as info:
        fetch.ensure_files(labels_spec(server.base_url), tmp_path, offline=offline, progress=False)
    message = str(info.value)
    assert str(folder / TRAIN_LABELS) in message and "checksum mismatch" in message and "delete" in message
    assert (folder / TRAIN_LABELS).read_bytes() == bad
    assert server.requests == []


def test_verify_catches_a_file_changed_after_verification(tmp_path):
    path = tmp_path / TEST_LABELS
    shutil.copy(SHARED_MNIST / TEST_LABELS, path)
    fetch.verify(path, MNIST.sha256[TEST_LABELS])
    fetch.verify(path, MNIST.sha256[TEST_LABELS])  # remembered
    path.write_bytes(corrupted(real(TEST_LABELS))[:-1])  # new size: must be hashed again
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch.verify(path, MNIST.sha256[TEST_LABELS])


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_download_stopped_by_a_signal_leaves_nothing(server, tmp_path, sig):
    """`timeout`, a closed terminal or Ctrl-C stop a download mid-file: its .part file and the dataset folder
    it made go with it (SIGTERM and SIGHUP used to kill the process before any cleanup ran)."""
    import signal
    import subprocess
    import sys
    import time

    server["mnist/" + TEST_IMAGES] = Trickle(real(TEST_IMAGES), chunk=20_000, interval=0.2)
    env = dict(os.environ, DIGITREC_MIRROR=server.base_url, DIGITREC_PUBLIC_MIRRORS="off",
               DIGITREC_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "data", "show", "--split", "test", "--data-dir",
                             str(tmp_path / "data"), "--out", str(tmp_path / "grid.png")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folder, deadline = tmp_path / "data" / "mnist", time.monotonic() + 60
    while not any(p.name.endswith(".part") for p in (folder.iterdir() if folder.exists() else [])):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode in (128 + getattr(signal, sig), 130), (proc.returncode, err)
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "mnist").exists() and not (tmp_path / "grid.png").exists()


def test_a_mirror_sending_more_than_the_file_is_cut_off(mirrors, tmp_path, capsys):
    """The registry knows each file's size: a mirror offering or sending more (an error page, another file,
    an endless stream) is left at once for the next, and never fills the disk. A fallback is a warning."""
    one, two = mirrors
    body = real(TEST_LABELS)
    one["offered.gz"] = body * 3
    one["streamed.gz"] = Raw(b"HTTP/1.0 200 OK\r\n\r\n" + body * 3)  # no Content-Length
    one["short.gz"] = Raw(b"HTTP/1.0 200 OK\r\n\r\n" + body[:1000])
    two[TEST_LABELS] = body
    urls = [one.url("offered.gz"), one.url("streamed.gz"), one.url("short.gz")]
    dest = tmp_path / TEST_LABELS
    with pytest.raises(DataError) as info:
        fetch.download(urls, dest, MNIST.sha256[TEST_LABELS], progress=False, expected_size=len(body))
    message = str(info.value)
    assert f"offered.gz: {3 * len(body)} bytes offered (application/octet-stream), expected {len(body)}" in message
    assert f"streamed.gz: more than the expected {len(body)} bytes" in message
    assert f"short.gz: transfer cut short (1000 of {len(body)} bytes)" in message
    assert folder_contents(tmp_path) == []
    capsys.readouterr()
    fetch.download([*urls, two.url(TEST_LABELS)], dest, MNIST.sha256[TEST_LABELS], progress=False,
                   expected_size=len(body))
    assert dest.read_bytes() == body
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 3 and all(w.startswith("digitrec: warning: ") and w.endswith("trying the next mirror")
                                      for w in warnings)


def test_a_pipe_as_a_file_mirror_is_refused_not_read(server, tmp_path):
    """A file:// mirror has no socket timeout: a pipe there blocked for ever, and the next mirror was never asked."""
    (tmp_path / "copy" / "mnist").mkdir(parents=True)
    os.mkfifo(tmp_path / "copy" / "mnist" / TEST_LABELS)
    server[TEST_LABELS] = real(TEST_LABELS)
    dest = tmp_path / "data" / TEST_LABELS
    finished_in_time(lambda: fetch.download([(tmp_path / "copy" / "mnist" / TEST_LABELS).as_uri(),
                                             server.url(TEST_LABELS)], dest, MNIST.sha256[TEST_LABELS], progress=False))
    assert dest.read_bytes() == real(TEST_LABELS)


def test_a_failed_download_leaves_no_empty_folders(server, tmp_path):
    """Every folder the download made goes with it, not only the dataset's: a mistyped --data-dir or
    $DIGITREC_DATA left new empty folders behind."""
    with pytest.raises(DataError):
        fetch.ensure_files(labels_spec(server.base_url), tmp_path / "new" / "deeper", progress=False)
    assert folder_contents(tmp_path) == []


def test_stale_part_files_of_a_killed_download_are_removed(server, tmp_path):
    """kill -9 runs no cleanup: a half-written twin older than ten minutes is no live download's."""
    import time

    server[TEST_LABELS] = real(TEST_LABELS)
    stale, live = tmp_path / f".{TEST_LABELS}.abcd1234.part", tmp_path / f".{TEST_LABELS}.efgh5678.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fetch.download([server.url(TEST_LABELS)], tmp_path / TEST_LABELS, MNIST.sha256[TEST_LABELS], progress=False)
    assert folder_contents(tmp_path) == sorted([TEST_LABELS, live.name])


def test_a_stale_part_beside_a_file_already_there_is_removed(tmp_path):
    """A re-download right after a kill -9 finds its twin under ten minutes old and keeps it; a later
    load, which downloads nothing, removes it then."""
    import time

    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copy(SHARED_MNIST / TEST_LABELS, folder / TEST_LABELS)
    stale = folder / f".{TEST_LABELS}.abcd1234.part"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fetch.ensure_files(labels_spec(), tmp_path, offline=True, progress=False, names=(TEST_LABELS,))
    assert folder_contents(folder) == [TEST_LABELS]


def test_files_in_the_wrong_form_or_place_are_named(tmp_path):
    """Uncompressed IDX files (a common layout) and another dataset's file are told apart from missing or
    corrupt ones."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / TRAIN_LABELS.removesuffix(".gz")).write_bytes(b"idx")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is there uncompressed"):
        fetch.ensure_files(labels_spec(), tmp_path, offline=True, progress=False)
    shutil.copy(Path("/work/shared/data/fashion-mnist") / TRAIN_LABELS, folder / TRAIN_LABELS)
    with pytest.raises(DataError, match=rf"this is fashion-mnist/{TRAIN_LABELS}, not mnist/{TRAIN_LABELS}"):
        fetch.ensure_files(labels_spec(), tmp_path, offline=True, progress=False)


def test_a_dead_mirror_is_waited_for_once_not_for_every_file(mirrors, tmp_path, monkeypatch):
    """A mirror that timed out for one file is skipped for the next: each wait cost 30 s per file."""
    import functools

    one, two = mirrors
    for name in (TRAIN_LABELS, TEST_LABELS):
        one[name] = Stall(30, real(name))
        two[name] = real(name)
    monkeypatch.setattr(fetch, "download", functools.partial(fetch.download, timeout=2.0))
    spec = labels_spec(one.base_url, two.base_url)
    fetch.ensure_files(spec, tmp_path, progress=False)
    assert one.requests == ["/" + TRAIN_LABELS]
    assert two.requests == ["/" + TRAIN_LABELS, "/" + TEST_LABELS]
