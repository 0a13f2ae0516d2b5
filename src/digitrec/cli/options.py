"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

from digitrec.errors import UsageError

data_dir = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder holding mnist/ and fashion-mnist/ (default: $DIGITREC_DATA, "
                             "else the user cache).")
offline = click.option("--offline", is_flag=True, help="Never download; fail if files are missing.")
json_out = click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
                      show_default=True)
dataset = click.option("--dataset", default="mnist", show_default=True, help="mnist or fashion-mnist")


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
