"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

data_dir = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder holding mnist/ and fashion-mnist/ (default: $DIGITREC_DATA, "
                             "else the user cache).")
offline = click.option("--offline", is_flag=True, help="Never download; fail if files are missing.")
json_out = click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
                      show_default=True)
dataset = click.option("--dataset", default="mnist", show_default=True, help="mnist or fashion-mnist")
