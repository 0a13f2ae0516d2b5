"""Options shared by several commands, defined once."""

from __future__ import annotations

import functools
import math

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
seed = click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)  # as `train`'s


class FiniteRange(click.FloatRange):
    """click's FloatRange, which lets NaN through (every comparison with it is false), without it."""

    def convert(self, value, param, ctx):  # click's signature
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
                raise UsageError("give a checkpoint path (--checkpoint) or a bundled model's name (--model), not both")
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
