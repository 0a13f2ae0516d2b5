"""`digitrec report`: a self-contained HTML page on what a model learned."""

from __future__ import annotations

import shlex
import sys

import click

from digitrec.cli import app, options


@app.command()
@options.model_choice()
@click.option("--dataset", default=None, help="Test set to use (mnist or fashion-mnist); default: the "
                                               "checkpoint's dataset.")
@options.data_dir
@options.offline
@options.device
@click.option("--out", required=True, type=click.Path(), help="Folder for index.html, the PNGs and metrics.json.")
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
def report(checkpoint, model, dataset, data_dir, offline, device, out, progress) -> None:
    """Write an HTML report: data, training curves, confusion, mistakes, calibration, features, model card.

    OUT/index.html embeds every image, so it opens offline; the PNGs and metrics.json (the same record
    as `digitrec evaluate --json`) sit beside it. They are moved into OUT only once all are written, replacing
    an earlier report's (an interrupted run leaves OUT as it was).
    """
    from pathlib import Path

    from digitrec.report import build_report

    command = "digitrec " + shlex.join(sys.argv[1:]) if sys.argv and "digitrec" in sys.argv[0] else ""
    metrics = build_report(out, checkpoint=checkpoint, model=model, dataset=dataset, data_dir=data_dir,
                           offline=offline, device=device, progress=progress, command=command)
    print(f"accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  on {metrics['dataset']} test "
          f"({metrics['n']} images)")
    print(f"wrote {Path(out) / 'index.html'}")
