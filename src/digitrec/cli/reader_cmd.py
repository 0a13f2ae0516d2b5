"""`digitrec train-reader`: train the row reader (CRNN + CTC) used by `predict --multi`."""

from __future__ import annotations

import json
import shlex
import sys

import click

from digitrec.cli import app, options
from digitrec.errors import UsageError


@app.command("train-reader")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimiser steps (default: the recipe's).")
@click.option("--rows", type=click.IntRange(min=1), default=None,
              help="Training rows composed from MNIST training digits (default: the recipe's).")
@click.option("--val-rows", type=click.IntRange(min=1), default=None,
              help="Validation rows, from held-out training digits (default: the recipe's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Rows per step (default: the recipe's).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (default: the recipe's).")
@click.option("--width", type=click.IntRange(min=4), default=None, help="Channels of the first conv (default 24).")
@click.option("--hidden", type=click.IntRange(min=4), default=None, help="GRU size per direction (default 64).")
@options.seed
@click.option("--init", "init", type=click.Path(dir_okay=True), default=None,
              help="Start from this reader (card .json or its folder) instead of random weights; its width "
                   "and hidden size are used.")
@click.option("--digit-augment", default=None,
              help="Distort each training digit before composing rows, e.g. 'rotate=10,scale=0.1,elastic=0.4' "
                   "(the names of `train --augment`; default: none).")
@click.option("--digit-copies", type=click.IntRange(min=1), default=1, show_default=True,
              help="Distorted versions of each training digit (with --digit-augment).")
@click.option("--extra-digits", type=click.Path(dir_okay=False), default=None,
              help="Compose rows from these labelled 28x28 digits too (an .npz as `train --extra-digits` takes, "
                   "e.g. from `python tools/handwriting_fonts.py digits`); distorted like the rest.")
@click.option("--held-out", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training digits kept out of the training rows, for the validation rows.")
@click.option("--held-out-split", type=click.Choice(["random", "tail"]), default="random", show_default=True,
              help="Which: random (the bundled best's own --val 1000 draw), or the last N (mostly other writers; "
                   "pair with a digit model trained with --val N --val-split tail).")
@click.option("--trunk", default=None,
              help="Build the reader on this digit model's frozen conv trunk (a bundled name such as 'best', or "
                   "a checkpoint card) instead of its own conv stack; --width then does not apply.")
@click.option("--tune-trunk", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --trunk (or --init of a trunk reader): train the trunk too, at this multiple of --lr "
                   "(0 keeps it frozen).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@options.data_dir
@options.offline
@click.option("--out", default="runs/reader-s{seed}", show_default=True, help="Output folder.")
@options.json_out
def train_reader(steps, rows, val_rows, batch_size, lr, width, hidden, seed, init, digit_augment, digit_copies,
                 extra_digits, held_out, held_out_split, trunk, tune_trunk, threads, data_dir, offline, out,
                 json_out) -> None:
    """Train the multi-digit row reader on composed rows; write OUT/reader.safetensors + reader.json."""
    from digitrec.augment import check_ranges
    from digitrec.reader import Reader
    from digitrec.reader_training import DIGIT_AUGMENTATIONS, ReaderConfig, load_trunk
    from digitrec.reader_training import train_reader as run

    if trunk is not None and width is not None:
        raise UsageError("--width does not apply with --trunk (the trunk's channels are the digit model's)")
    hparams: dict = {}
    if init is not None:
        if trunk is not None:
            raise UsageError("--trunk and --init: a reader started with --init keeps its own trunk")
        start = Reader.load_card_path(init)
        hparams = Reader.load_single(start).model.hparams  # CheckpointError (one line) when it is not a reader
        for name, value in (("width", width), ("hidden", hidden)):
            if value is not None and value != hparams.get(name):
                raise UsageError(f"--{name} {value} differs from the --init reader's {name} {hparams.get(name)}")
        width, hidden, init = hparams.get("width", width), hparams["hidden"], str(start)
    elif trunk is not None:
        load_trunk(trunk)  # a missing or unsuitable digit model: one line, before rows are composed

    if tune_trunk and trunk is None and (init is None or "trunk" not in hparams):
        raise UsageError("--tune-trunk needs --trunk (or --init of a reader built with --trunk)")
    spec = options.parse_augment(digit_augment, "--digit-augment") or {}
    unknown = sorted(set(spec) - set(DIGIT_AUGMENTATIONS))
    if unknown:
        raise UsageError(f"--digit-augment: unknown name(s) {', '.join(unknown)}; known: "
                         + ", ".join(DIGIT_AUGMENTATIONS))
    check_ranges(spec, "--digit-augment")
    if digit_copies > 1 and not spec:
        raise UsageError("--digit-copies needs --digit-augment (copies of undistorted digits add nothing)")
    given = dict(steps=steps, rows=rows, val_rows=val_rows, batch=batch_size, lr=lr, width=width, hidden=hidden)
    command = "digitrec " + shlex.join(sys.argv[1:]) if sys.argv and "digitrec" in sys.argv[0] else ""
    config = ReaderConfig(seed=seed, threads=threads, command=command, init=init, digit_augment=spec,
                          digit_copies=digit_copies, held_out=held_out, held_out_split=held_out_split, trunk=trunk,
                          tune_trunk=tune_trunk, extra_digits=extra_digits,
                          **{k: v for k, v in given.items() if v is not None})
    def log(msg: str) -> None:
        print(msg, file=sys.stderr if json_out else sys.stdout, flush=True)

    result = run(config, out.format(seed=seed), log=log, data_dir=data_dir, offline=offline)
    print(f"validation {100 * result['val_string_accuracy']:.2f} % whole-string  "
          f"train {result['train_seconds']:.1f}s  -> {result['checkpoint']}")
    if json_out:
        print(json.dumps(result))
