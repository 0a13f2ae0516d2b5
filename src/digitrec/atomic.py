"""Atomic file writes: a temporary file in the target folder, then os.replace.

Every file digitrec writes goes through here, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from digitrec.errors import UsageError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _regular_target(path: Path, option: str = "") -> Path:
    """Where a write to `path` should land: through a symbolic link to the file it names (the link stays a
    link), and never over a device, pipe or socket (renaming over /dev/null would replace it)."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UsageError(f"{option + ' ' if option else ''}{path}: not a regular file (a device, pipe or socket); "
                         "give a file name")
    return path


@contextlib.contextmanager
def staged_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of `path` to write by name (for writers that want a path, not an open file); on
    success it is renamed over `path`, on any error or interrupt deleted. Whatever checks the file must
    pass go inside the block, so a file that fails them never appears under its name."""
    path = _regular_target(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any file we create
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path`; on success rename it over `path`, on error delete it."""
    with staged_path(path) as tmp, open(tmp, mode) as f:
        yield f


_STAGED_EXTRA = len("..XXXXXXXX.part")  # what staged_path adds to a file's name for its temporary twin


def writable_folder(path: str | os.PathLike, option: str = "--out", shown: Path | None = None) -> Path:
    """`path` as a folder digitrec can write into; otherwise a UsageError naming `option` and `shown`
    (default: the folder). Checked before the work, so a long run cannot end in an error about where to put
    its result: an empty name (which would write into the current folder), a file in the way, a folder that
    cannot be written, a name the file system refuses. Folders it had to make for the check are removed
    again: the first write makes them for good (every write goes through `staged_path`), so a run
    interrupted before it wrote anything leaves nothing."""
    if not str(path).strip():
        raise UsageError(f"{option}: give a folder (an empty name would write into the current one)")
    folder = Path(path).expanduser()
    name = f"{option} {shown or folder}"
    missing: list[Path] = []
    try:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{name}: " + (f"{folder} is not a folder" if shown else "exists and is not a folder"))
        missing = [p for p in (folder, *folder.absolute().parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:  # also a name too long to look up at all
        raise UsageError(f"{name}: cannot write there ({exc.strerror or exc})") from None
    finally:
        for made in missing:  # deepest first; rmdir leaves any folder something else wrote into meanwhile
            with contextlib.suppress(OSError):
                made.rmdir()
    return folder


def writable_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """`path` as a file digitrec can write (its folder created if missing), checked as `writable_folder`;
    its name must also leave room for the temporary twin `staged_path` writes first, or the write would
    fail only at the end."""
    if not str(path).strip():
        raise UsageError(f"{option}: give a file name (an empty one names no file)")
    try:
        target = _regular_target(Path(path).expanduser(), option)
        if target.is_dir():
            raise UsageError(f"{option} {target}: is a folder; give a file name")
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    writable_folder(target.parent, option, shown=target)
    try:
        existing = next(p for p in (target.parent, *target.parent.absolute().parents) if p.exists())
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, StopIteration):  # no such limit here
        return target
    if len(os.fsencode(target.name)) + _STAGED_EXTRA > name_max:
        raise UsageError(f"{option} {target}: file name too long (at most {name_max - _STAGED_EXTRA} bytes here)")
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)
