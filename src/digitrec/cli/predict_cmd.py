"""`digitrec predict`: read digits from image files and folders.

Exit status: 0 when every input was read, 1 when some inputs failed (each reported on its own line,
the rest still processed), 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
from PIL import Image

from digitrec.cli import app, options
from digitrec.errors import DigitrecError, UsageError

CHUNK = 256  # files preprocessed and classified together: bounded memory, one forward pass each
TASK = 8  # files per message to a preprocessing process: amortises pickling without starving the tail


def image_suffixes() -> frozenset[str]:
    """The file extensions Pillow registers for the formats `preprocess` reads."""
    from digitrec.preprocess import FORMATS

    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in FORMATS)


def expand(paths: tuple[str, ...]) -> Iterator[tuple[str, str | None]]:
    """(file, error) pairs: folders are searched recursively for images, in sorted order. In a folder, an image
    is a file whose extension Pillow registers for a format read here (.jfif and .apng too); a file named on
    the command line is read whatever it is called."""
    suffixes = image_suffixes()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
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


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _prepare(batch: list[str]) -> list:
    """`to_mnist` over a batch; an unreadable image comes back as its error instead of stopping the run."""
    from digitrec.preprocess import to_mnist

    out: list = []
    for source in batch:
        try:
            out.append(to_mnist(source))
        except DigitrecError as exc:
            out.append(exc)
    return out


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # in workers: Ctrl-C is the parent's to handle


def _prepare_in_worker(batch: list[str]) -> list:
    return _prepare(batch)  # looked up when called, in the worker: the pool pickles this function by name


class _Prefetch:
    """Preprocesses `files` in batches of TASK in a pool of forked processes; `take` hands results out in
    file order.

    Why: preprocessing is many small numpy/scipy calls that hold the GIL, so threads run it at one core's
    speed; processes do not. The pool is forked before torch is imported, so it works through the first
    batches while this process imports torch and loads the model (~2 s of one core). A batch whose worker
    failed or died is redone here, where a genuine bug raises as it would have without workers."""

    def __init__(self, files: list[str], workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import digitrec.preprocess  # noqa: F401  imported once here, inherited by every worker

        self.batches = [files[i:i + TASK] for i in range(0, len(files), TASK)]
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_ignore_sigint)
        self.futures = [self.pool.submit(_prepare_in_worker, batch) for batch in self.batches]
        self.next = 0  # the batch to hand out next
        self.ready: list = []  # results of finished batches not yet handed out

    def take(self, count: int) -> list:
        """The next `count` results, in file order (Prepared, or the DigitrecError of an unreadable file)."""
        while len(self.ready) < count:
            k = self.next
            try:
                self.ready.extend(self.futures[k].result())
            except Exception:  # noqa: BLE001  a failed or killed worker: redo the batch here
                self.ready.extend(_prepare(self.batches[k]))
            self.next += 1
        out, self.ready = self.ready[:count], self.ready[count:]
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _start_workers(files: list[str]) -> _Prefetch | None:
    """A `_Prefetch` for `files`, or None where fork is unavailable or not worth it (then the caller uses
    Recognizer.predict_many, threads in this process)."""
    workers = min(_cpus(), len(files) // TASK)
    if workers < 2 or not sys.platform.startswith("linux"):  # fork is safe on Linux; elsewhere, threads
        return None
    return _Prefetch(files, workers)


def _prepared_results(rec, files: list[str], prefetch: _Prefetch) -> list:
    """The next len(files) results from the prefetcher, classified in one batch; errors stay in their slots."""
    from digitrec.preprocess import Prepared

    prepared = prefetch.take(len(files))
    good = [p for p in prepared if isinstance(p, Prepared)]
    predictions = iter(rec.predict_prepared(good))
    return [next(predictions) if isinstance(p, Prepared) else p for p in prepared]


@app.command()
@click.argument("paths", nargs=-1, required=True)
@options.model_choice()
@click.option("--top-k", type=click.IntRange(1, 10), default=None, help="Also list the K most likely digits.")
@click.option("--multi", is_flag=True, help="Each image holds several digits in a row: read them all.")
@click.option("--tta/--no-tta", default=None, help="Test-time augmentation: 5x the compute (default: off).")
@options.device
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object per input, a line each.")
def predict(paths, checkpoint, model, top_k, multi, tta, device, json_out) -> None:
    """Recognise the digit in each image (PNG, JPEG, GIF, BMP, TIFF, WebP; folders recursively)."""
    if multi and top_k:
        raise UsageError("--top-k ranks one digit's answers; with --multi each digit has its confidence instead")
    # Pillow warns (two lines on stderr) from ~89 MP; preprocess refuses from 40 MP anyway, in one line.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    items = list(expand(paths))
    files = [f for f, err in items if err is None]
    prefetch = None if multi else _start_workers(files)
    try:
        failed = _run(items, prefetch, checkpoint, model, top_k, multi, tta, device, json_out)
    finally:
        if prefetch:
            prefetch.close()
    if failed:
        raise SystemExit(1)


def _run(items: list[tuple[str, str | None]], prefetch: _Prefetch | None, checkpoint, model, top_k, multi, tta,
         device, json_out) -> int:
    """Classify and print every item in order; returns how many failed."""
    from digitrec.recognizer import Recognizer

    rec = Recognizer.load(checkpoint, model=model, device=device, tta=tta)
    threads = None
    if prefetch is not None and rec.device.type == "cpu":
        import torch

        # The workers keep the other cores busy: OpenMP threads would spin against them (one 28x28 array took
        # ~100 ms at 2 threads on a loaded 2-core machine, ~1 ms at 1). Batches of 256 give identical results.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        return _emit_all(rec, items, prefetch, top_k, multi, json_out)
    finally:
        if threads is not None:
            torch.set_num_threads(threads)


def _emit_all(rec, items: list[tuple[str, str | None]], prefetch: _Prefetch | None, top_k, multi, json_out) -> int:
    failed = 0
    for chunk in _chunks(iter(items), CHUNK):
        files = [f for f, err in chunk if err is None]
        if multi:
            results = []
            for f in files:
                try:
                    results.append(rec.read_number(f))
                except DigitrecError as exc:
                    results.append(exc)
        elif prefetch is not None:
            results = _prepared_results(rec, files, prefetch)
        else:
            results = rec.predict_many(files, errors="return")
        by_file = dict(zip(files, results, strict=True))
        lines: list[str] = []
        for f, err in chunk:
            result = by_file.get(f) if err is None else None
            error = err or (str(result) if isinstance(result, DigitrecError) else None)
            if error:
                failed += 1
                _emit_error(f, error, json_out, multi, lines, top_k)
            else:
                _emit(f, result, json_out, top_k, multi, lines)
        _flush(lines)
    return failed


def _flush(lines: Iterable[str]) -> None:
    """One write per chunk instead of one per image; errors go to stderr as they are found."""
    text = "".join(lines)
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


def _emit_error(file: str, error: str, json_out: bool, multi: bool, out: list[str], top_k: int | None = None) -> None:
    if json_out:
        # The same keys, in the same order, as a result line, so consumers can read every line alike.
        empty = (dict(text=None, confidence=None, unsure=True, ink_left_out=None, digits=[]) if multi else
                 dict(digit=None, confidence=None, probabilities=None, unsure=True, box=None, several_digits=None))
        if top_k and not multi:
            empty["top_k"] = None
        record = dict(file=file, **empty, error=error)
        out.append(json.dumps(record) + "\n")
    else:
        _flush(out)  # keep stdout and stderr in file order
        out.clear()
        print(f"digitrec: error: {error}", file=sys.stderr, flush=True)


def _emit(file: str, result, json_out: bool, top_k: int | None, multi: bool, out: list[str]) -> None:
    if json_out:
        record = dict(file=file, **(result.to_dict() if multi else result.to_dict(top_k or 0)), error=None)
        out.append(json.dumps(record) + "\n")
        return
    if multi:
        flag = "  (unsure)" if result.unsure else ""
        out.append(f"{file}: {result.text or '(no digits found)'}  confidence {result.confidence:.3f}{flag}\n")
        return
    if result.digit is None:
        out.append(f"{file}: no digit found (no ink in the image)\n")
        return
    flag = "  (unsure: several digits? --multi reads a row)" if result.several_digits else (
        "  (unsure)" if result.unsure else "")
    line = f"{file}: {result.digit}  confidence {result.confidence:.3f}{flag}"
    if top_k:
        line += "  top: " + ", ".join(f"{d} {p:.3f}" for d, p in result.top_k(top_k))
    out.append(line + "\n")
