"""Find, download, verify and cache dataset files.

Search order for the data root: an explicit `data_dir`, then $DIGITREC_DATA, then the user cache dir.
The root holds one folder per dataset (`mnist/`, `fashion-mnist/`). Every file is checked against the
registry's sha256 before use; downloads go to a temporary file and are renamed only once verified.
Missing files come from $DIGITREC_MIRROR first (your own copies, laid out as the data root is), then from
the registry's public mirrors, unless $DIGITREC_PUBLIC_MIRRORS is off (a network that must not reach out).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import http.client
import os
import shlex
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import platformdirs
from tqdm.auto import tqdm

from digitrec.atomic import atomic_open
from digitrec.data.datasets import REGISTRY, DatasetSpec
from digitrec.errors import DataError

ENV_VAR = "DIGITREC_DATA"
MIRROR_ENV_VAR = "DIGITREC_MIRROR"
PUBLIC_ENV_VAR = "DIGITREC_PUBLIC_MIRRORS"
_SWITCH = {"1": True, "on": True, "yes": True, "true": True, "0": False, "off": False, "no": False, "false": False}
_CHUNK = 1 << 20
MIN_RATE = 5_000  # bytes/s: a mirror slower than this on average after a minute is given up


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir is not None and str(data_dir) != "":  # an empty --data-dir, like an empty $DIGITREC_DATA, is unset
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(platformdirs.user_cache_dir("digitrec")) / "data"


def mirror_urls(spec: DatasetSpec, name: str) -> list[str]:
    """Where to download `name` from, in order: each base URL in $DIGITREC_MIRROR (space- or comma-separated;
    http(s):// or file://), holding `<dataset>/<file>` as a data root does, so a company mirror or a shared
    drive is just a copy of one; then the registry's public mirrors, unless $DIGITREC_PUBLIC_MIRRORS=off.
    The checksum decides, never the source."""
    own = []
    try:  # quotes keep a folder with spaces in it whole
        bases = shlex.split(os.environ.get(MIRROR_ENV_VAR, "").replace(",", " "))
    except ValueError as exc:
        raise DataError(f"${MIRROR_ENV_VAR}: cannot be split into mirrors ({exc})") from None
    for base in bases:
        if "://" not in base:
            base = os.path.expanduser(base)
            if not os.path.isabs(base):
                raise DataError(f"${MIRROR_ENV_VAR}: {base!r} is not a URL; give http(s)://HOST/PATH or "
                                "file:///ABSOLUTE/PATH (or an absolute folder path)")
            base = Path(base).as_uri()
        try:
            parts = urllib.parse.urlsplit(base)
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError as exc:
            raise DataError(f"${MIRROR_ENV_VAR}: {_shown(base, checked=False)!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https", "file"):
            raise DataError(f"${MIRROR_ENV_VAR}: {_shown(base)!r}: only http(s):// and file:// mirrors are read")
        # the files go under the base's path, before any query string it carries
        own.append(urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{spec.name}/{name}")))
    setting = os.environ.get(PUBLIC_ENV_VAR, "on").strip().lower() or "on"
    if setting not in _SWITCH:
        raise DataError(f"${PUBLIC_ENV_VAR}: {setting!r} is neither on nor off")
    if not _SWITCH[setting]:
        if not own:
            raise DataError(f"{spec.name}/{name}: missing, ${PUBLIC_ENV_VAR} is off and ${MIRROR_ENV_VAR} names "
                            "no mirror of your own")
        return own
    return own + [mirror + name for mirror in spec.mirrors]


def _shown(url: str, checked: bool = True) -> str:
    """`url` as errors show it: a password in it (https://user:secret@host/) is not repeated."""
    if not checked:  # not known to parse: hide whatever lies between '//' and the last '@'
        head, sep, rest = url.partition("//")
        return head + sep + ("***@" + rest.rsplit("@", 1)[1] if "@" in rest else rest)
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


class _NoCredentialsElsewhere(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but a mirror's password goes only where the mirror's URL said: a redirect to
    another scheme, host or port gets the request without its Authorization header."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # urllib's signature
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            old, moved = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
            if (old.scheme, old.hostname, old.port) != (moved.scheme, moved.hostname, moved.port):
                new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoCredentialsElsewhere)


class _LocalWriteError(DataError):
    """The download could not be written here: no other mirror would do better, so none is tried."""


def _request(url: str) -> str | urllib.request.Request:
    """`url` as urlopen takes it: credentials in it (https://user:secret@host/) become a Basic
    Authorization header, since urllib would otherwise take 'user:secret@host' for the host's name."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    user = urllib.parse.unquote(parts.username)
    token = base64.b64encode(f"{user}:{urllib.parse.unquote(parts.password or '')}".encode()).decode()
    return urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
                                  headers={"Authorization": f"Basic {token}"})


def sha256_of(path: Path) -> str:
    if not path.is_file():  # a pipe would block for ever, a folder cannot be hashed
        raise DataError(f"{path}: not a regular file")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:  # no permission, an I/O error: one line through the API too, not a raw OSError
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


# Verified (path, size, mtime) -> sha ok; saves re-hashing 10 MB on every load in one process.
_VERIFIED: set[tuple[str, int, float]] = set()


def verify(path: Path, expected_sha256: str) -> None:
    """Raise DataError unless `path` hashes to `expected_sha256`."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key in _VERIFIED:
        return
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise DataError(
            f"{path}: checksum mismatch (sha256 {actual[:16]}..., expected {expected_sha256[:16]}...); "
            "delete the file to download it again"
        )
    _VERIFIED.add(key)


def _writable_destination(dest: Path) -> None:
    """Fail before any mirror is asked when the download could not be written (a file where the folder
    goes, no permission): that is no mirror's fault, and every mirror would fail the same way."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise _LocalWriteError(f"{dest}: cannot write the download there ({exc.strerror or exc})") from None


def _host(url: str) -> str:
    """scheme://host:port of a network URL ('' for file://): what a dead mirror's files share."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.scheme in ("http", "https") else ""


def _remove_stale_parts(dest: Path, age: float = 600.0) -> None:
    """Delete the half-written twins of `dest` that a killed download left (kill -9 runs no cleanup). One
    unchanged for `age` seconds is no live download's: a live one writes, or gives up, within a minute."""
    for part in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > age:
                part.unlink()


def _local_source(url: str) -> None:
    """A file:// mirror gets no socket timeout: a pipe (or a folder) there would block or fail obscurely."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        local = Path(urllib.request.url2pathname(parts.path))
        if local.exists() and not local.is_file():
            raise DataError(f"{local}: not a regular file")


def download(urls: list[str], dest: Path, expected_sha256: str, timeout: float = 30.0,
             progress: bool = True, min_rate: float = MIN_RATE, patience: float = 60.0,
             expected_size: int | None = None, unreachable: set[str] | None = None) -> None:
    """Try each URL in turn until one yields a file with the right checksum; write it atomically. A
    mirror is given up after `timeout` seconds without a byte, or when it sends under `min_rate`
    bytes/s on average once `patience` seconds have passed (a trickle would otherwise take hours).
    `unreachable`: hosts that timed out or refused earlier in this run, skipped (and added to)."""
    _writable_destination(dest)
    _remove_stale_parts(dest)
    failures: list[str] = []
    earlier = set(unreachable or ())  # this file's own mirrors are each tried: two bases may share a host
    for url in urls:
        try:
            host = _host(url)
        except ValueError as exc:  # a malformed port: this mirror's failure, not a traceback
            failures.append(f"{_shown(url, checked=False)}: {exc}")
            continue
        if host in earlier:
            failures.append(f"{_shown(url)}: skipped (unreachable for an earlier file)")
            continue
        try:
            _local_source(url)
            with atomic_open(dest, "wb") as out:
                digest = hashlib.sha256()
                with _OPENER.open(_request(url), timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    if expected_size and total and total != expected_size:  # an HTML page, another file
                        raise DataError(f"{total} bytes offered ({response.headers.get_content_type()}), "
                                        f"expected {expected_size}")
                    received, start = 0, time.monotonic()
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                              disable=not progress, leave=False) as bar:
                        read = getattr(response, "read1", response.read)  # what has arrived, not a full MiB
                        while chunk := read(_CHUNK):
                            digest.update(chunk)
                            try:
                                out.write(chunk)
                            except OSError as exc:  # a full disk: ours, not the mirror's
                                raise _LocalWriteError(f"{dest}: cannot write ({exc.strerror or exc})") from None
                            received += len(chunk)
                            if expected_size and received > expected_size:  # not the file: never fill the disk
                                raise DataError(f"more than the expected {expected_size} bytes")
                            bar.update(len(chunk))
                            elapsed = time.monotonic() - start
                            if elapsed > patience and received < min_rate * elapsed:
                                raise DataError(f"too slow ({received / elapsed / 1000:.1f} kB/s after "
                                                f"{elapsed:.0f} s)")
                if received < (total or expected_size or 0):  # without a Content-Length, the published size
                    raise DataError(f"transfer cut short ({received} of {total or expected_size} bytes)")
                if digest.hexdigest() != expected_sha256:
                    raise DataError("checksum mismatch")
            return
        except _LocalWriteError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException, DataError, ValueError) as exc:
            reason = " ".join(str(getattr(exc, "reason", None) or exc).split())  # one line, even for raw peers
            failures.append(f"{_shown(url)}: {reason or type(exc).__name__}")
            dead = isinstance(getattr(exc, "reason", exc), (TimeoutError, ConnectionError, socket.gaierror))
            if host and dead and unreachable is not None:
                unreachable.add(host)  # a dead mirror would cost the same wait again for every later file
            if url != urls[-1]:  # a broken mirror of your own should not go unnoticed behind a good one
                print(f"digitrec: warning: {failures[-1]}; trying the next mirror", file=sys.stderr)
    raise DataError(f"could not download {dest.name} from any mirror ({'; '.join(failures)})")


def ensure_files(spec: DatasetSpec, data_dir: str | os.PathLike | None = None, offline: bool = False,
                 progress: bool = True, names: Sequence[str] | None = None) -> Path:
    """Return the folder holding `spec`'s verified files (`names`, default all), downloading missing ones:
    a test-set evaluation needs, and fetches, the two test files only."""
    # '..' taken out lexically: 'new/../data' does not exist until mkdir has made 'new', so the folders a
    # download makes would include 'data' itself, which may have existed (and be removed if empty)
    folder = Path(os.path.normpath(data_root(data_dir) / spec.name))
    unreachable: set[str] = set()  # for this call's files (one split, or all four files of `data info`)
    for name in spec.all_files if names is None else names:
        path = folder / name
        if path.exists():  # a kill -9's twin outlives a re-download made within ten minutes (`download` clears
            _remove_stale_parts(path)  # the rest when it runs)
        else:
            if offline:
                raw = folder / name.removesuffix(".gz")
                seen = (f" ({raw.name} is there uncompressed, but the checksums are those of the published .gz "
                        "files, and compressing it again does not reproduce them)") if raw.is_file() else ""
                raise DataError(
                    f"{path}: missing and --offline is set{seen}; put the {spec.name} .gz files in {folder} "
                    f"or point --data-dir / ${ENV_VAR} at a folder holding {spec.name}/"
                )
            urls = mirror_urls(spec, name)  # a malformed $DIGITREC_MIRROR is its own error, not a network one
            # every folder this download creates (the dataset's, and the data root's when --data-dir or
            # $DIGITREC_DATA names a new one), deepest first: a failure or an interrupt leaves none behind empty
            made = [p for p in (folder, *folder.absolute().parents) if not p.exists()]
            try:
                download(urls, path, spec.sha256[name], progress=progress,
                         expected_size=spec.sizes.get(name), unreachable=unreachable)
            except _LocalWriteError:
                raise
            except DataError as exc:
                raise DataError(
                    f"{exc}. Without network, put the {spec.name} .gz files in {folder}, "
                    f"point --data-dir / ${ENV_VAR} at a folder holding {spec.name}/, "
                    f"or ${MIRROR_ENV_VAR} at a server or file:// folder holding {spec.name}/"
                ) from None
            finally:  # rmdir removes only what stayed empty
                for made_dir in made:
                    with contextlib.suppress(OSError):
                        made_dir.rmdir()
        try:
            verify(path, spec.sha256[name])
        except DataError:  # say so when it is another registered file: fashion-mnist's in mnist/, ...
            actual = sha256_of(path)
            known = [f"{other.name}/{file}" for other in REGISTRY.values() for file, sha in other.sha256.items()
                     if sha == actual]
            if not known:
                raise
            raise DataError(f"{path}: this is {known[0]}, not {spec.name}/{name}; move it where it belongs") from None
    return folder
