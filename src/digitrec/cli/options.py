"""Options shared by several commands, defined once."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import click

from digitrec.atomic import writable_file, writable_folder
from digitrec.errors import UsageError

data_dir = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder holding mnist/ and fashion-mnist/ (default: $DIGITREC_DATA, "
                             "else the user cache).")
offline = click.option("--offline", is_flag=True, help="Never download; fail if files are missing.")
json_out = click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
                      show_default=True)
dataset = click.option("--dataset", default="mnist", show_default=True, help="mnist or fashion-mnist")
seed = click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)  # as `train`'s


class FiniteRange(click.FloatRange):
    """click's FloatRange, which lets NaN through (every comparison with it is false), without it."""

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


def model_choice(default: str = "distilled"):
    """`--checkpoint PATH` or `--model NAME`, the two ways a command names the model it uses; giving both is
    a usage error, refused before the command loads anything."""
    others = [name for name in ("distilled", "best", "ensemble", "ensemble-1 to -7") if name != default]
    names = ", ".join([f"{default} (the default)", *others])

    def decorate(command):
        @functools.wraps(command)
        def checked(*args, **kwargs):
            if kwargs.get("checkpoint") is not None and kwargs.get("model") is not None:
                raise UsageError("give --checkpoint or --model, not both")
            return command(*args, **kwargs)

        checked = click.option("--model", default=None, help=f"Bundled model: {names}.")(checked)
        checkpoint_help = "Checkpoint (.json card, .safetensors or folder); default: the bundled model."
        return click.option("--checkpoint", type=click.Path(), default=None, help=checkpoint_help)(checked)

    return decorate


def parse_augment(text: str | None, option: str = "--augment") -> dict[str, float] | None:
    """'rotate=10,elastic=0.5' -> dict (a bare NAME means 1.0); 'none' -> {}; None -> None (the recipe's)."""
    if text is None:
        return None
    if text.strip().lower() in ("none", "off", ""):
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise UsageError(f"{option}: {part!r} is not NAME=NUMBER") from None
    return out


STAGED_NAME_EXTRA = len("..XXXXXXXX.part")  # what atomic.staged_path adds to a file's name for its temporary twin


def out_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """`--out` as a folder to write into, checked before any work as `train` checks its own: an empty name
    (which would write into the current folder), a file in the way, a folder that cannot be written or a
    name the file system refuses (too long) is one UsageError line naming `option`."""
    if not str(out).strip():
        raise UsageError(f"{option}: give a folder (an empty name would write into the current one)")
    try:
        return writable_folder(out, option)
    except OSError as exc:  # raised before writable_folder's own check: a name too long to look up
        raise UsageError(f"{option} {out}: cannot write there ({exc.strerror or exc})") from None


def out_file(out: str | os.PathLike, option: str = "--out") -> Path:
    """`--out` as a file to write, checked as `out_folder` checks a folder; the name must also leave room for
    the temporary sibling every write goes through (atomic.staged_path), or the write would fail at the end."""
    if not str(out).strip():
        raise UsageError(f"{option}: give a file name (an empty one names no file)")
    try:
        target = writable_file(out, option)
        folder = next(p for p in (target.parent, *target.parent.absolute().parents) if p.exists())
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except OSError as exc:
        raise UsageError(f"{option} {out}: cannot write there ({exc.strerror or exc})") from None
    except (ValueError, StopIteration):  # no such limit on this system
        return target
    if len(os.fsencode(target.name)) + STAGED_NAME_EXTRA > name_max:
        raise UsageError(f"{option} {out}: file name too long (at most {name_max - STAGED_NAME_EXTRA} bytes here)")
    return target
