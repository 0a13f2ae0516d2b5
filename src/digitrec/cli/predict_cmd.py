"""`digitrec predict`: read digits from image files and folders.

Exit status: 0 when every input was read, 1 when some inputs failed (each reported on its own line,
the rest still processed), 2 for usage errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from digitrec.cli import app, options
from digitrec.errors import DigitrecError, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
CHUNK = 256  # files preprocessed and classified together: bounded memory, one forward pass each


def expand(paths: tuple[str, ...]) -> Iterator[tuple[str, str | None]]:
    """(file, error) pairs: folders are searched recursively for images, in sorted order."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                yield raw, f"{raw}: no image files in this folder"
            for f in found:
                yield str(f), None
        elif p.exists():
            yield raw, None
        else:
            yield raw, f"{raw}: no such file or folder"


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@app.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--checkpoint", type=click.Path(), default=None, help="Checkpoint; default: the bundled model.")
@click.option("--model", default=None, help="Bundled model: best, ensemble or fast.")
@click.option("--top-k", type=click.IntRange(1, 10), default=None, help="Also list the K most likely digits.")
@click.option("--multi", is_flag=True, help="Each image holds several digits in a row: read them all.")
@click.option("--tta/--no-tta", default=None, help="Test-time augmentation: 5x the compute (default: off).")
@options.device
@options.json_out
def predict(paths, checkpoint, model, top_k, multi, tta, device, json_out) -> None:
    """Recognise the digit in each image (PNG, JPEG, GIF, BMP, TIFF, WebP; folders recursively)."""
    from digitrec.recognizer import Recognizer

    if checkpoint and model:
        raise UsageError("give --checkpoint or --model, not both")
    rec = Recognizer.load(checkpoint, model=model, device=device, tta=tta)
    failed = 0
    for chunk in _chunks(expand(paths), CHUNK):
        files = [f for f, err in chunk if err is None]
        if multi:
            results = []
            for f in files:
                try:
                    results.append(rec.read_number(f))
                except DigitrecError as exc:
                    results.append(exc)
        else:
            results = rec.predict_many(files, errors="return")
        by_file = dict(zip(files, results, strict=True))
        for f, err in chunk:
            result = by_file.get(f) if err is None else None
            error = err or (str(result) if isinstance(result, DigitrecError) else None)
            if error:
                failed += 1
                _emit_error(f, error, json_out, multi)
            else:
                _emit(f, result, json_out, top_k, multi)
    if failed:
        raise SystemExit(1)


def _emit_error(file: str, error: str, json_out: bool, multi: bool) -> None:
    if json_out:
        record = dict(file=file, error=error)
        record.update(dict(text=None, digits=[]) if multi else
                      dict(digit=None, confidence=None, probabilities=None, unsure=True))
        print(json.dumps(record), flush=True)
    else:
        print(f"digitrec: error: {error}", file=sys.stderr, flush=True)


def _emit(file: str, result, json_out: bool, top_k: int | None, multi: bool) -> None:
    if json_out:
        record = dict(file=file, **(result.to_dict() if multi else result.to_dict(top_k or 0)), error=None)
        print(json.dumps(record), flush=True)
        return
    if multi:
        flag = "  (unsure)" if result.unsure else ""
        print(f"{file}: {result.text or '(no digits found)'}  confidence {result.confidence:.3f}{flag}")
        return
    if result.digit is None:
        print(f"{file}: no digit found (blank or unreadable image)")
        return
    line = f"{file}: {result.digit}  confidence {result.confidence:.3f}{'  (unsure)' if result.unsure else ''}"
    if top_k:
        line += "  top: " + ", ".join(f"{d} {p:.3f}" for d, p in result.top_k(top_k))
    print(line)
