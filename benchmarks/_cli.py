"""Command-line pieces the benchmark scripts share: a parser that shows the script's docstring, a positive
whole-number type for counts, one-line errors instead of tracebacks, and JSON results written atomically.

Errors follow `digitrec`'s own command line: a bad flag is argparse's usage line and exit 2; a
`digitrec.errors.UsageError` (unknown model, unknown dataset) one line and exit 2; any other
`DigitrecError` (a missing checkpoint, a corrupt data file) or OSError one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitrec.atomic import atomic_write_text, writable_file
from digitrec.errors import DigitrecError, UsageError


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose --help shows the script's whole docstring, line breaks kept."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text: str, least: int = 1) -> int:
    """argparse type for a count: a whole number of at least 1 (`least`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type for a count that may be 0 (0 skips that part of a benchmark)."""
    return positive_int(text, least=0)


def json_output(path: str | os.PathLike | None, option: str = "--json") -> Path | None:
    """`path` checked as a file the script can write (its folder may be missing: the write makes it), before
    the long work, so a run cannot end in an error about where to put its result. None stays None."""
    return None if path is None else writable_file(path, option)


def write_json(path: str | os.PathLike, data: Any, indent: int = 1) -> None:
    """Write `data` as JSON atomically (a temporary sibling renamed over `path`), creating the folder."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def _one_line(text: object) -> str:
    return " ".join(str(text).split("\n")).strip()


def run(main: Callable[[], object]) -> None:
    """Call `main`; turn the errors a user can fix into one `PROG: error: ...` line on stderr and an exit code."""
    prog = Path(sys.argv[0]).name
    try:
        main()
    except UsageError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except DigitrecError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:  # a full disk, an unreadable file: one line naming the file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{_one_line(exc.strerror or exc)}", file=sys.stderr)
        sys.exit(1)


def model_identity(rec: Any) -> dict[str, str]:
    """Which model a result is from, beyond its path: the card's name and the sha256 of the card and of each
    weights file it names (an ensemble's members' too), so a JSON result can be traced to the weights."""
    import hashlib

    from digitrec import checkpoint

    card_path = Path(rec.checkpoint.path)
    files = [card_path]
    cards = [(card_path, rec.checkpoint.card)]
    if "members" in rec.checkpoint.card:
        cards = [(card_path.parent / f"{m}.json", None) for m in rec.checkpoint.card["members"]]
        files += [path for path, _ in cards]
    for path, card in cards:
        card = card or checkpoint.read_card(path)
        if card.get("weights"):
            files.append(path.parent / card["weights"])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return dict(model=checkpoint.model_name(rec.checkpoint), model_card=str(card_path),
                model_sha256=digest.hexdigest())
