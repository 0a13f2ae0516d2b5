"""The public API for reading digits from real images.

    from digitrec import Recognizer
    rec = Recognizer.load()                 # the bundled model; or Recognizer.load("runs/x/model.json")
    rec.predict("photo.jpg").digit          # path, bytes, PIL image or numpy array
    rec.predict_many(paths)                 # batched: one forward pass per chunk
    rec.read_number("meter.png").text       # several digits in a row

Every image goes through `preprocess` (MNIST's own normalisation), then the model; confidences are
softmax probabilities after temperature scaling fitted on a validation split at training time.
Rows of digits are read by the bundled sequence reader (`reader.py`, a CRNN trained with CTC), which
needs no cuts between touching digits; without it, by segmentation plus the digit model (`segment.py`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from digitrec import checkpoint
from digitrec.errors import CheckpointError, DigitrecError, ImageError, UsageError
from digitrec.inference import fold_batchnorm, pick_device, predict_logits
from digitrec.metrics import softmax
from digitrec.preprocess import ImageSource, InkMap, Prepared, readable, to_mnist
from digitrec.reader import Reader
from digitrec.segment import ink_left_out, row_ink, segment_readings

# Below this calibrated probability an answer is flagged `unsure` (about 1 in 1,000 MNIST test digits,
# but most of the scribbles, noise and non-digits users send).
UNSURE_BELOW = 0.75
# How much the digit model's log-probabilities count against the row reader's CTC log-likelihood when
# `read_number` fuses the two (chosen on validation rows of held-out training digits; on rows of the UCI
# digits, writers outside MNIST, 0.5/1.0 also beat 0.75/1.5 to 2.0/4.0: README, Known limits).
FUSE_WEIGHT = 0.5
FUSE_PER_DIGIT = 1.0  # added per digit of a candidate: the digit model's log-probabilities favour short texts


@dataclass
class Prediction:
    """One digit. `digit` is None when the image holds no ink (then `unsure` is True). `several_digits`:
    the image looks like several digits (then `unsure` is True too: read it with `read_number`)."""

    digit: int | None
    confidence: float
    probabilities: np.ndarray          # [10], calibrated
    unsure: bool
    image: np.ndarray                  # the 28x28 float input the model saw
    box: tuple[int, int, int, int] | None = None   # where the digit was found, in source pixels
    several_digits: bool = False

    def __repr__(self) -> str:  # short: the 28x28 array would print 800 lines in a REPL
        return (f"Prediction(digit={self.digit}, confidence={self.confidence:.4f}, unsure={self.unsure}, "
                f"box={self.box})")

    def top_k(self, k: int) -> list[tuple[int, float]]:
        """The `k` most likely digits (1 to 10), best first, with their probabilities."""
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self.probabilities):
            raise UsageError(f"top_k takes 1 to {len(self.probabilities)} digits, not {k!r}")
        if self.digit is None:  # no ink: no ranking of ten zeros (as `to_dict`)
            return []
        order = np.argsort(-self.probabilities)[:k]
        return [(int(d), float(self.probabilities[d])) for d in order]

    def to_dict(self, top_k: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = dict(digit=self.digit, confidence=round(self.confidence, 6),
                                   probabilities=[round(float(p), 6) for p in self.probabilities],
                                   unsure=self.unsure, box=list(self.box) if self.box else None,
                                   several_digits=self.several_digits)
        if top_k:  # no ink: no ranking of ten zeros
            # the HTTP API's shape, so one parser reads both
            out["top_k"] = ([dict(digit=d, probability=round(p, 6)) for d, p in self.top_k(top_k)]
                            if self.digit is not None else [])
        return out


@dataclass
class NumberReading:
    """Several digits in a row: `text` is the digits left to right ('' when there is no ink)."""

    text: str
    digits: list[Prediction] = field(default_factory=list)
    # digit-sized ink off the row was not read (digits stacked in a column, a second row): then unsure
    ink_left_out: bool = False

    @property
    def confidence(self) -> float:
        return float(np.prod([d.confidence for d in self.digits])) if self.digits else 0.0

    @property
    def unsure(self) -> bool:
        return not self.digits or self.ink_left_out or any(d.unsure for d in self.digits)

    def to_dict(self) -> dict[str, Any]:
        return dict(text=self.text, confidence=round(self.confidence, 6), unsure=self.unsure,
                    ink_left_out=self.ink_left_out,
                    digits=[dict(digit=d.digit, confidence=round(d.confidence, 6), box=list(d.box or ()))
                            for d in self.digits])


@dataclass
class FusedCandidates:
    """A row's candidate readings (see `Recognizer.fused_candidates`): `keys[i]` = (text, index of the cut
    it was read on), `reader_probs[i]` the matching reader's per-digit posteriors (None when no reader's
    count matched that cut), `ctc[i]` the readers' CTC log-likelihood of the text and `digit_log_probs[i]`
    the digit model's log-probability of its digits on the cut."""

    keys: list[tuple[str, int]]
    reader_probs: list[list[np.ndarray] | None]
    ctc: np.ndarray
    digit_log_probs: np.ndarray
    cuts: list[NumberReading]
    ink_left_out: bool = False  # see NumberReading

    def scores(self, weight: float, per_digit: float) -> np.ndarray:
        """CTC log-likelihood + `weight` x the digit model's log-probability + `per_digit` per digit."""
        lengths = np.array([len(text) for text, _ in self.keys], dtype=np.float64)
        return self.ctc + weight * self.digit_log_probs + per_digit * lengths

    def best_text(self, weight: float, per_digit: float) -> str:
        return self.keys[int(np.argmax(self.scores(weight, per_digit)))][0]

    def choose(self, weight: float, per_digit: float, unsure_below: float) -> NumberReading:
        """The best-scoring candidate, with boxes and images from its cut and, per digit, the product of
        the digit model's and the reader's posteriors as its probabilities."""
        i = int(np.argmax(self.scores(weight, per_digit)))
        (text, ci), mine = self.keys[i], self.reader_probs[i]
        out = []
        for k, (ch, theirs) in enumerate(zip(text, self.cuts[ci].digits, strict=True)):
            joint = theirs.probabilities.astype(np.float64) * (mine[k] if mine is not None else 1.0)
            joint = joint / joint.sum() if joint.sum() > 0 else theirs.probabilities.astype(np.float64)
            digit = int(ch)
            out.append(Prediction(digit, float(joint[digit]), joint.astype(np.float32),
                                  bool(joint[digit] < unsure_below), theirs.image, theirs.box))
        return NumberReading(text, out, self.ink_left_out)


class Recognizer:
    """A loaded model plus MNIST-style preprocessing. Thread-safe for prediction."""

    def __init__(self, loaded: checkpoint.Checkpoint, device: str = "cpu", tta: bool | None = None,
                 unsure_below: float = UNSURE_BELOW, reader: Reader | str | os.PathLike | None = "bundled"):
        if not (reader is None or isinstance(reader, (Reader, str, os.PathLike))):
            raise UsageError(f"reader must be 'bundled', a reader checkpoint's path, a Reader or None, not {reader!r}")
        dataset = loaded.card.get("dataset", "mnist")
        if dataset != "mnist":  # preprocessing makes any image an MNIST digit: clothes would be wrecked by it
            raise UsageError(f"{loaded.path}: a {dataset} model; the Recognizer (and predict, serve) reads "
                             f"handwritten digits only; evaluate and report take it with --dataset {dataset}")
        self.checkpoint = loaded
        self.device = pick_device(device)
        self.model = fold_batchnorm(loaded.model.to(self.device).eval())  # same predictions, less latency
        self.temperature = loaded.temperature
        # TTA off by default: it buys ~0.05 % on MNIST's test set at 5x the compute, and a user waiting on
        # one image cares more about the 1 ms. `tta=True` (CLI: --tta) turns it on.
        self.tta = False if tta is None else tta
        self.unsure_below = unsure_below
        self.classes = loaded.card.get("classes") or [str(d) for d in range(10)]
        # The row reader loads on the first read_number: single-digit use never pays for it. "bundled":
        # the packaged reader if there is one; a path: that reader checkpoint; None: segmentation only.
        self._reader_source = reader
        self._reader: Reader | None = reader if isinstance(reader, Reader) else None
        self._reader_lock = threading.Lock()  # threads that all read their first row load the reader once

    @property
    def reader(self) -> Reader | None:
        """The row reader `read_number` uses, or None (then rows are segmented and classified)."""
        if self._reader is None and self._reader_source is not None:
            with self._reader_lock:
                if self._reader is None and self._reader_source is not None:
                    if self._reader_source == "bundled":
                        self._reader = Reader.load() if Reader.bundled_exists() else None
                    else:
                        self._reader = Reader.load(self._reader_source)
                    if self._reader is None:
                        self._reader_source = None
        return self._reader

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, model: str | None = None, device: str = "cpu",
             tta: bool | None = None, reader: Reader | str | os.PathLike | None = "bundled") -> Recognizer:
        """`path`: a checkpoint; else the bundled `model` ('distilled', 'best', 'ensemble'); else the default.
        `reader`: the row reader for `read_number` ('bundled', a reader checkpoint, or None: segmentation)."""
        loaded = checkpoint.choose(path, model)  # both given is a UsageError
        return cls(loaded, device=device, tta=tta, reader=reader)

    @property
    def name(self) -> str:
        return str(self.checkpoint.path)

    # --- core: 28x28 arrays in, predictions out --------------------------------------------------
    def _logits(self, images: np.ndarray) -> np.ndarray:
        """Raw logits [N, 10] for MNIST-normalised float images [N, 28, 28], batched."""
        with torch.inference_mode():
            return predict_logits(self.model, np.asarray(images, np.float32), batch_size=512,
                                  device=self.device, tta=self.tta)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [N, 10] for MNIST-normalised float images [N, 28, 28]."""
        return softmax(self._logits(images), self.temperature)

    def _predictions(self, prepared: Sequence[Prepared], probs: np.ndarray | None = None) -> list[Prediction]:
        """Predictions for prepared digits; `probs` (one row per inked digit) skips classifying again."""
        if probs is None:
            inked = [k for k, p in enumerate(prepared) if p.has_ink]
            probs = self.classify(np.stack([prepared[k].image for k in inked])) if inked else np.zeros((0, 10))
        out: list[Prediction] = []
        row = iter(probs)
        for p in prepared:
            if not p.has_ink:
                out.append(Prediction(None, 0.0, np.zeros(10, np.float32), True, p.image, None))
                continue
            pr = next(row)
            digit = int(pr.argmax())
            out.append(Prediction(digit, float(pr[digit]), pr.astype(np.float32),
                                  bool(pr[digit] < self.unsure_below or p.several_digits), p.image, p.box,
                                  p.several_digits))
        return out

    # --- public API ---------------------------------------------------------------------------------
    def predict(self, image: ImageSource) -> Prediction:
        """One image of one digit. Raises ImageError (naming the file) when it cannot be read."""
        return self._predictions([to_mnist(image)])[0]

    def predict_many(self, images: Iterable[ImageSource], workers: int | None = None,
                     errors: str = "raise") -> list[Prediction | DigitrecError]:
        """Many images: preprocessing in parallel threads, one batched forward pass.

        errors='raise' raises on the first bad image; errors='return' puts the exception in its slot.
        """
        if errors not in ("raise", "return"):
            raise UsageError(f"errors must be 'raise' or 'return', not {errors!r}")
        one_array = isinstance(images, np.ndarray) and (images.ndim < 3 or (images.ndim == 3 and images.shape[2] <= 4))
        one_file = callable(getattr(images, "read", None))  # an open file iterates over its lines
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or one_array or one_file:
            # one image: iterating it would read a path letter by letter, an array row by row (a stack of
            # arrays, [N, H, W] or [N, H, W, C], is many images)
            raise UsageError(f"predict_many takes a list of images, not one {type(images).__name__}; "
                             "use predict for one image")
        if workers is not None and (not isinstance(workers, int) or workers < 0):
            raise UsageError(f"workers must be a whole number of threads (0 or None: one per core), not {workers!r}")
        try:
            images = list(images)
        except TypeError:
            raise UsageError(f"predict_many takes a list of images, not {type(images).__name__}") from None
        workers = workers or min(len(images), os.cpu_count() or 1) or 1
        for image in images:
            if isinstance(image, Image.Image):
                with contextlib.suppress(Exception):  # a closed or broken image: to_mnist says so, per image
                    image.load()  # a lazily opened image decodes in the first thread to touch it: not shared

        def prepare(source: ImageSource) -> Prepared | DigitrecError:
            try:
                return to_mnist(source)
            except DigitrecError as exc:
                if errors == "raise":
                    raise
                return exc

        if workers > 1 and len(images) > 1:
            with ThreadPoolExecutor(workers) as pool:
                prepared = list(pool.map(prepare, images))
        else:
            prepared = [prepare(s) for s in images]
        good = [p for p in prepared if isinstance(p, Prepared)]
        predictions = iter(self._predictions(good))
        return [next(predictions) if isinstance(p, Prepared) else p for p in prepared]

    def predict_prepared(self, prepared: Sequence[Prepared]) -> list[Prediction]:
        """Digits already through `preprocess.to_mnist` (e.g. in worker processes): one batched forward pass."""
        return self._predictions(prepared)

    def predict_array(self, images: np.ndarray) -> list[Prediction]:
        """Already MNIST-normalised arrays [N, 28, 28] (uint8 0..255 or float 0..1), no preprocessing."""
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ImageError(f"expected MNIST-normalised arrays of shape [N, 28, 28], got {images.shape}")
        if images.dtype == object:
            raise ImageError(f"predict_array: expected numeric pixels, got {images.dtype} values")
        floats = images.astype(np.float32)
        if not np.isfinite(floats).all():
            raise ImageError("predict_array: pixels contain NaN or infinity")
        top = float(floats.max(initial=0.0))
        if np.issubdtype(images.dtype, np.integer) and top <= 255 and floats.min(initial=0.0) >= 0:
            floats /= 255
        elif not np.issubdtype(images.dtype, np.floating) or top > 1.0 + 1e-3 or floats.min(initial=0.0) < -1e-3:
            # another range means another normalisation than the model's: read wrongly, with confidence
            raise ImageError(f"predict_array: expected MNIST-normalised pixels, uint8 0..255 or float 0..1 (got "
                             f"{images.dtype} {floats.min(initial=0.0):g}..{top:g}); predict() reads other images")
        if np.issubdtype(images.dtype, np.integer) and 0 < top <= 1:
            # a 0/1 mask divided by 255 is a faint smudge the model reads as a confident 1
            raise ImageError("predict_array: a 0/1 mask, not uint8 0..255; multiply it by 255 or use predict()")
        edge = np.concatenate([floats[:, :2, :], floats[:, -2:, :], floats[:, :, :2].transpose(0, 2, 1),
                               floats[:, :, -2:].transpose(0, 2, 1)], axis=1)  # [N, 8, 28]: the outer 2 px
        if (edge.mean(axis=(1, 2)) > 0.5).any():
            # MNIST is white ink on black (the border ring of its 60,000 training digits: at most 4 % ink)
            raise ImageError("predict_array: dark ink on light paper (MNIST is white on black); invert it (255 - x or "
                             "1 - x) or use predict()")
        return self._predictions([Prepared(img, bool(img.max() > 0), None) for img in floats])

    def read_number(self, image: ImageSource, method: str = "auto") -> NumberReading:
        """Several digits in a row (a year, a phone number, a meter). Methods: 'reader', the sequence
        reader reads the whole row; 'fused', the reader's digit count fixes how the row is cut, and each
        digit is the reader's and the digit model's posteriors combined; 'segment', cut into digits
        (count chosen by the cut programme), then classify each; 'auto': 'fused' when a reader is
        available, else 'segment'. Raises ImageError on bad input."""
        if method not in ("auto", "reader", "fused", "segment"):
            raise UsageError(f"method must be 'auto', 'reader', 'fused' or 'segment', not {method!r}")
        image = readable(image)  # an open file is read once: the row is decoded more than once
        if method == "segment" or (method == "auto" and self.reader is None):
            return self._read_segmented(image)
        if self.reader is None:
            raise CheckpointError("no row reader available; train one with `digitrec train-reader`")
        return self._read_with_reader(image, fuse=method != "reader")

    def _read_with_reader(self, image: ImageSource, fuse: bool) -> NumberReading:
        """The sequence reader's reading; per digit its posterior (flagged unsure as single digits are),
        the ink box its aligned columns cover, and that ink normalised like a single digit.

        With `fuse`, the reading is chosen among candidate texts (`fused_candidates`) by
        `FusedCandidates.choose` with `FUSE_WEIGHT` and `FUSE_PER_DIGIT`."""
        fused = self.fused_candidates(image, fuse)
        if isinstance(fused, NumberReading):
            return fused
        return fused.choose(FUSE_WEIGHT, FUSE_PER_DIGIT, self.unsure_below)

    def fused_candidates(self, image: ImageSource, fuse: bool = True) -> FusedCandidates | NumberReading:
        """The candidate readings of a row and their scores, before the fusion weights choose one; or the
        final reading when there is nothing to choose (no ink, no reader digits, `fuse` off, no cut).

        The row is cut by the segmentation programme into each reader's number of digits (the reader's
        and its companions') and into the programme's own choice. Candidate texts: per cut, the digit
        model's reading and, for each reader whose count matches the cut, that reader's text and the
        digit-by-digit product of its and the digit model's posteriors. Each carries the readers' CTC
        log-likelihood of the whole text (`Reader.score_texts`) and the digit model's log-probability of
        its digits on that cut. Split from the choice so that a benchmark can weigh the same candidates
        many ways (`benchmarks/reader_validation.py --fuse-weights`)."""
        if self.reader is None:  # not an assert: python -O strips those, and this is reachable from the API
            raise CheckpointError("no row reader available; train one with `digitrec train-reader`")
        scanned = self.reader.scan(image)
        if scanned is None:
            return NumberReading("", [])
        line, log_probs = scanned
        found = self.reader.decode(line, log_probs)
        preds = [Prediction(d.digit, d.confidence, d.probabilities, bool(d.confidence < self.unsure_below),
                            d.image, d.box) for d in found]
        reader_reading = NumberReading("".join(str(p.digit) for p in preds), preds, line.ink_left_out)
        if not fuse or not preds:
            return reader_reading
        others = self.reader.companion_log_probs(line)
        readings = [found, *self.reader.companion_readings(line, others)]
        counts: list[int | None] = [*dict.fromkeys(len(r) for r in readings if r), None]
        cuts = [c for c in self._segment_readings(image, counts) if c.digits]
        # (text, digit model's predictions on its cut) -> the first matching reader's posteriors, or None
        candidates: dict[tuple[str, int], list[np.ndarray] | None] = {}
        for ci, cut in enumerate(cuts):
            matching = [r for r in readings if len(r) == len(cut.digits)]
            candidates[(cut.text, ci)] = [d.probabilities for d in matching[0]] if matching else None
            for reading in matching:
                mine = [d.probabilities for d in reading]
                joint = [m.astype(np.float64) * t.probabilities for m, t in zip(mine, cut.digits, strict=True)]
                for text in ("".join(str(int(j.argmax())) for j in joint), "".join(str(d.digit) for d in reading)):
                    candidates.setdefault((text, ci), mine)
        if not candidates:
            return reader_reading
        keys = list(candidates)
        ctc = self.reader.score_texts(log_probs, others, [text for text, _ in keys])
        digit_log_probs = np.array([sum(float(np.log(max(float(p.probabilities[int(ch)]), 1e-12)))
                                        for ch, p in zip(text, cuts[ci].digits, strict=True))
                                    for text, ci in keys])
        return FusedCandidates(keys, [candidates[k] for k in keys], np.asarray(ctc, np.float64),
                               digit_log_probs, cuts, line.ink_left_out)

    def _read_segmented(self, image: ImageSource) -> NumberReading:
        """Segment the row (cuts chosen with the digit model's help), then read each piece; say, as the
        reader's methods do, when digit-sized ink off the row was left unread."""
        ink = row_ink(image)  # decoded once, for the cuts and for what they leave out
        reading = self._segment_readings(image, [None], ink)[0]
        reading.ink_left_out = ink_left_out(ink)
        return reading

    def _segment_readings(self, image: ImageSource, counts: list[int | None], ink: InkMap | None = None,
                          ) -> list[NumberReading]:
        """`_read_segmented` for several digit counts (None: the cut programme's choice), one lattice
        (`ink`: the row's ink, when the caller has it)."""
        scored: dict[bytes, np.ndarray] = {}

        def score(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # One forward pass over every candidate crop; remember the probabilities, so the chosen crops
            # are not classified twice. The calibrated logits tell a clean digit from a confident fragment.
            logits = self._logits(batch)
            probs = softmax(logits, self.temperature)
            scored.update((np.asarray(img, np.float32).tobytes(), p) for img, p in zip(batch, probs, strict=True))
            return probs, logits / self.temperature

        readings = []
        for crops in segment_readings(image, score, counts, ink):  # cuts chosen with the classifier's help
            if not crops:
                readings.append(NumberReading("", []))
                continue
            prepared = [Prepared(c.image, True, c.box) for c in crops]
            known = [scored.get(np.asarray(c.image, np.float32).tobytes()) for c in crops]
            probs = np.stack(known) if all(k is not None for k in known) else None
            preds = self._predictions(prepared, probs)
            readings.append(NumberReading("".join(str(p.digit) for p in preds), preds))
        return readings
