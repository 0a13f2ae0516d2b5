"""Find, download, verify and cache dataset files.

Search order for the data root: an explicit `data_dir`, then $DIGITREC_DATA, then the user cache dir.
The root holds one folder per dataset (`mnist/`, `fashion-mnist/`). Every file is checked against the
registry's sha256 before use; downloads go to a temporary file and are renamed only once verified.
Missing files come from $DIGITREC_MIRROR first (your own copies, laid out as the data root is), then from
the registry's public mirrors, unless $DIGITREC_PUBLIC_MIRRORS is off (a network that must not reach out).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import platformdirs
from tqdm.auto import tqdm

from digitrec.atomic import atomic_open
from digitrec.data.datasets import DatasetSpec
from digitrec.errors import DataError

ENV_VAR = "DIGITREC_DATA"
MIRROR_ENV_VAR = "DIGITREC_MIRROR"
PUBLIC_ENV_VAR = "DIGITREC_PUBLIC_MIRRORS"
_SWITCH = {"1": True, "on": True, "yes": True, "true": True, "0": False, "off": False, "no": False, "false": False}
_CHUNK = 1 << 20


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir is not None:
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
    for base in os.environ.get(MIRROR_ENV_VAR, "").replace(",", " ").split():
        if "://" not in base:
            if not os.path.isabs(base):
                raise DataError(f"${MIRROR_ENV_VAR}: {base!r} is not a URL; give http(s)://HOST/PATH or "
                                "file:///ABSOLUTE/PATH (or an absolute folder path)")
            base = Path(base).as_uri()
        own.append(f"{base.rstrip('/')}/{spec.name}/{name}")
    setting = os.environ.get(PUBLIC_ENV_VAR, "on").strip().lower() or "on"
    if setting not in _SWITCH:
        raise DataError(f"${PUBLIC_ENV_VAR}: {setting!r} is neither on nor off")
    if not _SWITCH[setting]:
        if not own:
            raise DataError(f"{spec.name}/{name}: missing, ${PUBLIC_ENV_VAR} is off and ${MIRROR_ENV_VAR} names "
                            "no mirror of your own")
        return own
    return own + [mirror + name for mirror in spec.mirrors]


def _shown(url: str) -> str:
    """`url` as errors show it: a password in it (https://user:secret@host/) is not repeated."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


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
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
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


def download(urls: list[str], dest: Path, expected_sha256: str, timeout: float = 30.0,
             progress: bool = True) -> None:
    """Try each URL in turn until one yields a file with the right checksum; write it atomically."""
    failures: list[str] = []
    for url in urls:
        try:
            with atomic_open(dest, "wb") as out:
                digest = hashlib.sha256()
                with urllib.request.urlopen(_request(url), timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                              disable=not progress, leave=False) as bar:
                        while chunk := response.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            bar.update(len(chunk))
                if digest.hexdigest() != expected_sha256:
                    raise DataError("checksum mismatch")
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException, DataError, ValueError) as exc:
            reason = " ".join(str(getattr(exc, "reason", None) or exc).split())  # one line, even for raw peers
            failures.append(f"{_shown(url)}: {reason or type(exc).__name__}")
    raise DataError(f"could not download {dest.name} from any mirror ({'; '.join(failures)})")


def ensure_files(spec: DatasetSpec, data_dir: str | os.PathLike | None = None, offline: bool = False,
                 progress: bool = True, names: Sequence[str] | None = None) -> Path:
    """Return the folder holding `spec`'s verified files (`names`, default all), downloading missing ones:
    a test-set evaluation needs, and fetches, the two test files only."""
    folder = data_root(data_dir) / spec.name
    for name in spec.all_files if names is None else names:
        path = folder / name
        if not path.exists():
            if offline:
                raise DataError(
                    f"{path}: missing and --offline is set; put the {spec.name} .gz files in {folder} "
                    f"or point --data-dir / ${ENV_VAR} at a folder holding {spec.name}/"
                )
            urls = mirror_urls(spec, name)
            fresh = not folder.exists()
            try:
                download(urls, path, spec.sha256[name], progress=progress)
            except DataError as exc:
                if fresh and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()  # a failed first download leaves no empty dataset folder behind
                raise DataError(
                    f"{exc}. Without network, put the {spec.name} .gz files in {folder}, "
                    f"point --data-dir / ${ENV_VAR} at a folder holding {spec.name}/, "
                    f"or ${MIRROR_ENV_VAR} at a server or file:// folder holding {spec.name}/"
                ) from None
        verify(path, spec.sha256[name])
    return folder
