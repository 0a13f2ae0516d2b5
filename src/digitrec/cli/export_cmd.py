"""`digitrec export`: write a model as one self-contained ONNX file, verified with onnxruntime.

Exit status: 0 written, 1 the checkpoint or the export failed, 2 usage errors (unknown model, bad --out,
--opset or --format, the 'export' extra missing). Nothing is left under --out unless it was verified.
"""

from __future__ import annotations

import json

import click

from digitrec.atomic import writable_file
from digitrec.cli import app, options


@app.command("export")
@options.model_choice()
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="File format.")
@click.option("--out", type=click.Path(), default=None,
              help="File to write, replaced if it exists (default: digitrec-MODEL.onnx here).")
@click.option("--opset", type=int, default=None, help="ONNX opset, 18 or newer (default: torch's).")
@options.json_out
def export(checkpoint, model, fmt, out, opset, json_out) -> None:
    """Export a model to ONNX: input "image" [batch, 1, 28, 28] as to_mnist makes it, outputs "logits" and
    calibrated "probabilities" [batch, 10]; checked against torch with onnxruntime before it is written."""
    from digitrec import export as exporter
    from digitrec.checkpoint import choose

    exporter.require_extra()
    exporter.check_opset(opset)
    if out is not None:
        writable_file(out)  # before the model loads: an empty name, a folder, an unwritable or too long name
    loaded = choose(checkpoint, model)
    result = exporter.export_onnx(loaded, out or f"digitrec-{exporter.model_name(loaded)}.onnx", opset=opset)
    if json_out:
        click.echo(json.dumps(dict(result, format=fmt)))
    else:
        click.echo(f"wrote {result['out']}: {result['model']}, ONNX opset {result['opset']}, "
                   f"{result['bytes'] / 1e6:.2f} MB, matches torch on {result['batch_verified']} images "
                   f"(max probability difference {result['max_abs_diff']:.1g}), {result['seconds']:.1f} s")
