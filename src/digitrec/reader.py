"""A sequence reader for a row of handwritten digits: one CRNN reads the whole line, trained with CTC.

Segmenting first and classifying each piece (`segment.py`) fails where digits touch: no cut separates
them cleanly. The reader never cuts. The row's cleaned ink (`preprocess.ink_map`, the same polarity,
lighting, threshold and speck removal as for single digits) is cropped to the digits on the line and
scaled to a fixed ink height (`INK_HEIGHT` in a `LINE_HEIGHT` px line, aspect kept, like MNIST's 20 px
digits in 28); a small conv stack turns it into one feature vector per 2 columns, a bidirectional GRU
gives each column context, and a linear layer gives 11 scores (blank, 0-9) per column. Greedy CTC
decoding gives the text; each digit's confidence is its posterior where the reader was surest of it;
its box is the ink between the midpoints of neighbouring digits' aligned columns.

`line_image` is the one normalisation, used by training (`reader_training.py`) and by reading.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitrec import checkpoint
from digitrec.errors import CheckpointError, UsageError
from digitrec.preprocess import (
    ImageSource,
    InkMap,
    _resize,
    crop_soft,
    normalise,
    source_box,
)
from digitrec.segment import row_components, row_ink

__all__ = ["BLANK", "CRNN", "LINE_HEIGHT", "MULTIPLE", "Line", "Reader", "ReadDigit", "TrunkReader", "build_reader",
           "ctc_greedy", "line_image"]

LINE_HEIGHT = 32  # px of the model's input line
INK_HEIGHT = 24  # px the row's ink is scaled to (MNIST: 20 px digits, plus the row's up-and-down drift)
PAD = 8  # px of empty line left and right of the ink
STRIDE = 2  # line columns per output frame
MULTIPLE = 4  # line widths are padded to a multiple of this (the conv stack's horizontal reduction)
TRUNK_SCALE = 20 / INK_HEIGHT  # TrunkReader scales the line so its ink is MNIST's digit height
BLANK = 10  # CTC blank index; classes 0-9 are the digits
READER_NAME = "reader"  # the bundled weights: weights/reader.safetensors + reader.json


@dataclass
class Line:
    """A row's ink as the reader sees it: `image` float32 [LINE_HEIGHT, W] in [0, 1] (ink 1), and how to
    map its columns back: line column c is working pixel `x0 + (c - PAD) / scale`."""

    image: np.ndarray
    ink: InkMap
    soft: np.ndarray  # the cropped ink at working resolution
    box: tuple[int, int, int, int]  # the crop in working pixels
    scale: float
    # digit-sized ink off the line was left out (digits stacked in a column, a second row): not all read
    ink_left_out: bool = False


def line_image(source: ImageSource) -> Line | None:
    """The normalised line of `source` (path, bytes, PIL image or array), or None when it holds no ink.
    Raises ImageError on input that is not an image."""
    ink = row_ink(source)
    if not ink.has_ink:
        return None
    live = np.flatnonzero(ink.mass > 0)
    if live.size == 0:
        return None
    keep, left_out = row_components(ink)
    if keep.size == 0:  # only dots
        return None
    soft, box = crop_soft(ink, keep)
    if soft.size == 0:
        return None
    scale = INK_HEIGHT / soft.shape[0]
    width = max(1, round(soft.shape[1] * scale))
    line = np.zeros((LINE_HEIGHT, width + 2 * PAD), dtype=np.float32)
    top = (LINE_HEIGHT - INK_HEIGHT) // 2
    scaled = _resize(np.ascontiguousarray(soft, np.float32), width, INK_HEIGHT)  # preprocess's anti-aliasing
    line[top:top + INK_HEIGHT, PAD:PAD + width] = np.clip(scaled, 0.0, 1.0)
    return Line(line, ink, soft, box, scale, left_out)


class CRNN(nn.Module):
    """Conv stack (height 32 -> 4, width / 4) -> per-column features -> BiGRU -> 11 scores for each of
    the two line columns pairs a feature column covers (so frames are STRIDE = 2 columns apart: two
    touching 1s still get the three frames CTC needs for "1 blank 1"). The conv work at a quarter of
    the width keeps a training step cheap on a CPU."""

    def __init__(self, width: int = 24, hidden: int = 64):
        super().__init__()
        c1, c2, c3 = width, 2 * width, round(8 * width / 3)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, c1), nn.MaxPool2d(2),                 # 16 x W/2
            *block(c1, c2), nn.MaxPool2d(2),                # 8 x W/4
            *block(c2, c3), nn.MaxPool2d((2, 1)),           # 4 x W/4
            *block(c3, c3),
        )
        self.project = nn.Linear(4 * c3, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 2 * (BLANK + 1))
        self.hparams = dict(width=width, hidden=hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, LINE_HEIGHT, W] (W a multiple of 4) -> logits [B, W // STRIDE, 11]."""
        f = self.features(x)                                # [B, C, 4, W/4]
        f = f.flatten(1, 2).transpose(1, 2).float()         # [B, W/4, 4C]
        h, _ = self.rnn(torch.relu(self.project(f)))
        out = self.head(h)                                  # [B, W/4, 2 x 11]
        return out.reshape(out.shape[0], -1, BLANK + 1)


class TrunkReader(nn.Module):
    """A digit model's convolutional trunk, frozen, run along the whole line; then a projection, a BiGRU
    and the CTC head, with CRNN's input and output (11 scores for each of W / STRIDE frames).

    Why: the digit model reads other writers' single digits far better than the CRNNs read other
    writers' rows (they learnt the training writers' rows; docs/experiments.md), and it has no cuts to
    get wrong. Its trunk's local features, computed across the line, give a reader that errs the way
    the digit model does, not as the CRNNs do. Frozen, so a training step costs the trunk's forward
    pass only and the features stay those learnt from the augmented single digits (`train-reader
    --tune-trunk S` trains the trunk too, at S times the learning rate, its BatchNorm statistics kept as
    the digit model's). The line is scaled
    by TRUNK_SCALE first, so its ink is MNIST's 20 px tall, as the trunk learnt it."""

    def __init__(self, trunk: str = "best", trunk_arch: dict[str, Any] | None = None, hidden: int = 96):
        super().__init__()
        from digitrec.models import build_model

        layers = list(build_model(trunk, **(trunk_arch or {})).children())
        cut = next(i for i, m in enumerate(layers) if isinstance(m, nn.AdaptiveAvgPool2d))
        self.trunk = nn.Sequential(*layers[:cut]).requires_grad_(False)
        channels = [m for m in self.trunk.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        self.project = nn.Linear(7 * channels, hidden)  # the trunk ends at 7 rows, as for a 28x28 digit
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 2 * (BLANK + 1))
        self.hparams = dict(trunk=trunk, trunk_arch=dict(trunk_arch or {}), hidden=hidden)

    def train(self, mode: bool = True) -> TrunkReader:
        super().train(mode)
        self.trunk.eval()  # frozen: its BatchNorm keeps the digit model's statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, LINE_HEIGHT, W] (W a multiple of 4) -> logits [B, W // STRIDE, 11]."""
        b, _, h, w = x.shape
        small = F.interpolate(x.float(), size=(round(h * TRUNK_SCALE), max(MULTIPLE, round(w * TRUNK_SCALE))),
                              mode="bilinear", antialias=True, align_corners=False)
        # 27 rows -> 28: one on top puts the ink in rows 4-24, where MNIST's 20 px digits sit
        small = F.pad(small, (0, -small.shape[-1] % MULTIPLE, 1, 28 - 1 - small.shape[-2]))
        tuned = torch.is_grad_enabled() and any(p.requires_grad for p in self.trunk.parameters())  # --tune-trunk
        with torch.set_grad_enabled(tuned), torch.autocast("cpu", torch.bfloat16, enabled=x.device.type == "cpu"):
            f = self.trunk(small.contiguous(memory_format=torch.channels_last))  # [B, C, 7, W'/4]
        f = f.float().flatten(1, 2).transpose(1, 2)                             # [B, W'/4, 7C]
        h_seq, _ = self.rnn(torch.relu(self.project(f)))
        h_seq = F.interpolate(h_seq.transpose(1, 2), size=w // MULTIPLE, mode="linear",
                              align_corners=False).transpose(1, 2)               # back to W/4 columns
        out = self.head(h_seq)
        return out.reshape(b, -1, BLANK + 1)


def build_reader(hparams: dict[str, Any]) -> nn.Module:
    """The reader network a card's `hparams` describe: a TrunkReader when they name a trunk, else a CRNN."""
    return TrunkReader(**hparams) if "trunk" in hparams else CRNN(**hparams)


def ctc_greedy(log_probs: np.ndarray, length: int | None = None) -> list[tuple[int, int, int]]:
    """Best-path CTC decoding of one line's [T, 11] scores: (label, first frame, last frame) per digit,
    repeats merged unless a blank separates them."""
    best = np.asarray(log_probs)[: length if length is not None else len(log_probs)].argmax(axis=1)
    out: list[tuple[int, int, int]] = []
    previous = BLANK
    for t, label in enumerate(best.tolist()):
        if label != BLANK:
            if label == previous:
                out[-1] = (label, out[-1][1], t)
            else:
                out.append((label, t, t))
        previous = label
    return out


@dataclass
class ReadDigit:
    """One digit the reader found: its class posteriors (10, at its surest frame), confidence, box in
    source pixels and its ink normalised like `to_mnist` (for display and for the Prediction)."""

    digit: int
    confidence: float
    probabilities: np.ndarray
    box: tuple[int, int, int, int] | None
    image: np.ndarray


class Reader:
    """A loaded CRNN plus the line normalisation. Thread-safe for reading.

    A reader may bring `companions`: other readers (their cards listed in this card's "companions", each
    with a weight) whose CTC log-likelihoods are added to its own when candidate texts are scored
    (`score_texts`). Why at the level of texts: CTC puts each digit's spike on whichever frame a model
    likes, so averaging two readers' posteriors frame by frame blurs both; summing each reader's likelihood
    of a whole text (all alignments) is the product of two experts. The reading itself (`decode`, boxes,
    `method="reader"`) is this reader's alone."""

    def __init__(self, model: nn.Module, card: dict[str, Any], path: Path | None = None,
                 companions: list[tuple[Reader, float]] | None = None):
        self.model = model.eval()
        self.card = card
        self.path = path
        self.companions = companions or []

    @staticmethod
    def bundled_card() -> Path:
        return checkpoint.bundled_dir() / (READER_NAME + ".json")

    @classmethod
    def bundled_exists(cls) -> bool:
        return cls.bundled_card().is_file()

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Reader:
        """A reader checkpoint (card .json or its stem; by default the bundled one) with its companions."""
        card_path = cls.load_card_path(path)
        reader = cls.load_single(card_path)
        companions = reader.card.get("companions", [])
        if not isinstance(companions, list):
            raise CheckpointError(f"{card_path}: 'companions' must be a list of {{card, weight}} entries")
        for entry in companions:
            try:
                other, weight = card_path.parent / str(entry["card"]), float(entry["weight"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{card_path}: a companion needs a 'card' and a numeric 'weight'") from None
            reader.companions.append((cls.load_single(other), weight))  # a companion's own companions: ignored
        return reader

    @classmethod
    def load_card_path(cls, path: str | os.PathLike | None = None) -> Path:
        """The card a `load` path means: a .json, its stem, a folder holding reader.json, or the bundled one."""
        card_path = Path(path).expanduser() if path is not None else cls.bundled_card()
        if card_path.is_dir():
            return card_path / (READER_NAME + ".json")
        return card_path if card_path.suffix == ".json" else card_path.with_suffix(".json")

    @classmethod
    def load_single(cls, card_path: Path) -> Reader:
        """One reader from its card, without its companions (also how `train-reader --init` starts)."""
        card = checkpoint.read_card(card_path)
        if card.get("model") != "crnn-reader":
            raise CheckpointError(f"{card_path}: not a digitrec reader card (model is not 'crnn-reader')")
        weights, state = checkpoint.read_weights(card_path, card)
        try:
            model = build_reader(dict(card.get("hparams", {})))
        except (TypeError, ValueError, UsageError) as exc:
            raise CheckpointError(f"{card_path}: hparams do not describe a reader ({exc})") from None
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            raise CheckpointError(f"{weights}: weights do not match the reader ({str(exc).splitlines()[0]})") from None
        return cls(model, card, card_path)

    @torch.inference_mode()
    def log_probs(self, lines: list[np.ndarray], tta: bool = True) -> list[np.ndarray]:
        """[T, 11] log-posteriors for each normalised line (one padded batch). With `tta`, the mean of the
        posteriors of the line as it is, half-way to a 3x3 dilation and half-way to a 3x3 erosion (same
        geometry, so the frames align): on validation rows it read 1.75 points more rows exactly."""
        if not lines:
            return []
        width = max(x.shape[1] for x in lines)
        width += -width % MULTIPLE
        batch = np.zeros((len(lines), 1, LINE_HEIGHT, width), dtype=np.float32)
        for k, x in enumerate(lines):
            batch[k, 0, :, :x.shape[1]] = x
        x = torch.from_numpy(batch)
        if tta:
            thick = torch.nn.functional.max_pool2d(x, 3, 1, 1)
            thin = -torch.nn.functional.max_pool2d(-x, 3, 1, 1)
            x = torch.cat([x, x + 0.5 * (thick - x), x + 0.5 * (thin - x)])
        probs = self.model(x).float().softmax(-1)
        if tta:
            probs = probs.reshape(3, len(lines), *probs.shape[1:]).mean(0)
        out = probs.clamp_min(1e-12).log().numpy()
        return [o[: math.ceil(x.shape[1] / STRIDE)] for o, x in zip(out, lines, strict=True)]

    def scan(self, source: ImageSource) -> tuple[Line, np.ndarray] | None:
        """The normalised line of `source` and its [T, 11] CTC log-posteriors; None when there is no ink."""
        line = line_image(source)
        if line is None:
            return None
        return line, self.log_probs([line.image])[0]

    def companion_log_probs(self, line: Line) -> list[np.ndarray]:
        """Each companion's [T, 11] log-posteriors for a line this reader scanned."""
        return [reader.log_probs([line.image])[0] for reader, _ in self.companions]

    def companion_readings(self, line: Line, companion_log_probs: list[np.ndarray]) -> list[list[ReadDigit]]:
        """Each companion's own reading of the line: its digit count and text become fused candidates too."""
        return [reader.decode(line, lp) for (reader, _), lp in zip(self.companions, companion_log_probs, strict=True)]

    def score_texts(self, log_probs: np.ndarray, companion_log_probs: list[np.ndarray], texts: list[str]
                    ) -> np.ndarray:
        """This reader's CTC log-likelihood of each text plus each companion's, times its weight."""
        total = self.log_likelihood(log_probs, texts)
        for (_, weight), lp in zip(self.companions, companion_log_probs, strict=True):
            total = total + weight * self.log_likelihood(lp, texts)
        return total

    def read(self, source: ImageSource) -> list[ReadDigit]:
        """The digits of a one-line number, left to right ([] when there is no ink)."""
        scanned = self.scan(source)
        return [] if scanned is None else self.decode(*scanned)

    @staticmethod
    def log_likelihood(log_probs: np.ndarray, texts: list[str]) -> np.ndarray:
        """log P(text | line) under CTC (all alignments summed) for each candidate text; -inf where the
        line has too few frames for it."""
        if not texts:
            return np.zeros(0)
        lp = torch.from_numpy(np.ascontiguousarray(log_probs, np.float32))[:, None].expand(-1, len(texts), -1)
        targets = torch.tensor([int(c) for t in texts for c in t], dtype=torch.long)
        nll = torch.nn.functional.ctc_loss(lp, targets, torch.full((len(texts),), lp.shape[0], dtype=torch.long),
                                           torch.tensor([len(t) for t in texts], dtype=torch.long), blank=BLANK,
                                           reduction="none", zero_infinity=False)
        return -nll.numpy().astype(np.float64)

    def decode(self, line: Line, log_probs: np.ndarray) -> list[ReadDigit]:
        """Digits, confidences and boxes from one line's CTC scores."""
        spans = ctc_greedy(log_probs)
        probs = np.exp(log_probs)
        n_frames = len(log_probs)
        out: list[ReadDigit] = []
        for k, (label, f0, f1) in enumerate(spans):
            frames = np.arange(f0, f1 + 1)
            peak = int(frames[np.argmax(probs[frames, label])])
            digits = probs[peak, :BLANK] / max(float(probs[peak, :BLANK].sum()), 1e-12)
            # columns: from midway to the previous digit's frames to midway to the next one's
            left = 0 if k == 0 else (spans[k - 1][2] + 1 + f0) / 2
            right = n_frames if k == len(spans) - 1 else (f1 + 1 + spans[k + 1][1]) / 2
            box, image = self._ink_between(line, left * STRIDE, right * STRIDE)
            out.append(ReadDigit(label, float(probs[peak, label]), digits.astype(np.float32), box, image))
        return out

    @staticmethod
    def _ink_between(line: Line, c0: float, c1: float) -> tuple[tuple[int, int, int, int] | None, np.ndarray]:
        """The ink between line columns [c0, c1): its box in source pixels and its MNIST normalisation."""
        x0 = max(0, int(math.floor((c0 - PAD) / line.scale)))
        x1 = min(line.soft.shape[1], int(math.ceil((c1 - PAD) / line.scale)))
        piece = line.soft[:, x0:x1] if x1 > x0 else line.soft[:, :0]
        rows, cols = np.flatnonzero(piece.any(axis=1)), np.flatnonzero(piece.any(axis=0))
        if rows.size == 0:
            return None, np.zeros((28, 28), dtype=np.float32)
        crop = piece[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        bx, by = line.box[0], line.box[1]
        box = (bx + x0 + int(cols[0]), by + int(rows[0]), bx + x0 + int(cols[-1]) + 1, by + int(rows[-1]) + 1)
        return source_box(line.ink, box), normalise(crop)
