"""Training the row reader (`reader.CRNN`) with CTC on rows composed from MNIST *training* digits.

Rows come from `synth.compose_number` (the spacing and touching of the benchmark's rows, half user-like)
drawn from training digits only, and go through `reader.line_image`, the normalisation used when
reading. They are made once, in parallel worker processes, into one in-memory uint8 array; training
then only slices batches (rows of similar width together, to waste little padding) and augments them
batched in torch: stroke weight, blur, contrast, scale, stretch, slant and small vertical shifts.
Validation rows are composed from a held-out part of the training set (never from MNIST's test set,
which is for the benchmark's final figures only).

    digitrec train-reader --out runs/reader [--steps N --rows N --seed S] [--init READER_CARD]
                          [--digit-augment rotate=10,elastic=0.4 --digit-copies 4]

`--init` starts from a trained reader's weights (its width and hidden size) instead of random ones: a
second one-cycle run on freshly composed rows (another seed) continues a reader's training at the
cost of the new steps only. The card keeps the chain (`init`: the starting card's command, seed, steps).

`--digit-augment` distorts each training digit (random affine and elastic warp, `augment.augment_batch`,
the digit model's augmentations) before rows are composed from them, `--digit-copies` times over: the
line-level augmentation changes a row's pen, scale and slant, but not the shapes of its digits, so
without it the reader sees only the training writers' shapes, while the test rows come from other writers
(what it measured: README, "Known limits").
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from digitrec import checkpoint
from digitrec.atomic import writable_folder
from digitrec.augment import AUGMENTATIONS, augment_batch
from digitrec.data import load_dataset
from digitrec.data.extra import load_extra_digits
from digitrec.errors import UsageError
from digitrec.reader import (
    BLANK,
    LINE_HEIGHT,
    MULTIPLE,
    STRIDE,
    Reader,
    TrunkReader,
    build_reader,
    ctc_greedy,
    line_image,
)
from digitrec.synth import compose_number
from digitrec.training import holdout_indices

__all__ = ["DIGIT_AUGMENTATIONS", "ReaderConfig", "RowSet", "augment", "card_split", "distort_digits", "make_rows",
           "string_accuracy", "train_reader", "validation_split"]

# Validation rows are composed from the 1,000 training digits the bundled `best` held out (`digitrec train
# --val 1000 --seed 0`): unseen by the reader and by the digit model, so figures for the fused reading
# (reader + digit model) are not flattered by digits the digit model was trained on. Only digit models
# trained with `--seed 0` held these out: the default `distilled` (`--seed 3`) trained on ~98 % of them, so
# judge it on the UCI pool (`reader_validation.py --pool uci`), not on these.
VAL_DIGITS, VAL_SEED = 1000, 0


def validation_split(n_images: int, held_out: int = VAL_DIGITS, mode: str = "random",
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(indices the reader trains on, held-out indices for validation rows) of the MNIST training set.
    The default is the bundled `best`'s own `--val 1000` draw, so neither model has seen the held-out
    digits; mode "tail" holds out the last `held_out` digits, mostly other writers (`holdout_indices`),
    to match a digit model trained with `--val N --val-split tail`."""
    fit, held = holdout_indices(n_images, held_out, VAL_SEED, mode, option="--held-out")
    return np.sort(fit), np.sort(held)


def card_split(card: dict[str, Any], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """`validation_split` as a reader card records it (cards before the choice existed: the default)."""
    split = card.get("split", {})
    return validation_split(n_images, int(split.get("held_out_training_digits", VAL_DIGITS)),
                            str(split.get("held_out_split", "random")))

DIGIT_AUGMENTATIONS = tuple(k for k in AUGMENTATIONS if k != "hflip")  # a mirrored digit is another digit

MAX_WIDTH = 480  # line columns kept (a row of 10 wide digits is ~400)


@dataclass
class RowSet:
    """Normalised lines, zero-padded: `lines` uint8 [N, LINE_HEIGHT, MAX_WIDTH], `widths` [N], `targets`
    int [N, 10] (digits, padded with BLANK), `lengths` [N], and `texts`."""

    lines: np.ndarray
    widths: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray
    texts: list[str]


_POOL_DATA: tuple[np.ndarray, np.ndarray] | None = None


def _rows_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`count` rows of seed (seed, chunk), composed and normalised (runs in a worker process)."""
    seed, chunk, count = args
    assert _POOL_DATA is not None
    images, labels = _POOL_DATA
    rng = np.random.default_rng([seed, chunk])
    lines = np.zeros((count, LINE_HEIGHT, MAX_WIDTH), dtype=np.uint8)
    widths = np.zeros(count, dtype=np.int64)
    texts: list[str] = []
    for k in range(count):
        image, text = compose_number(images, labels, rng, user_like=bool(rng.random() < 0.5))
        line = line_image(image)
        if line is None:  # cannot happen for composed rows; keep the slot empty and its text empty
            texts.append("")
            continue
        w = min(line.image.shape[1], MAX_WIDTH)
        lines[k, :, :w] = np.round(line.image[:, :w] * 255)
        widths[k] = w
        texts.append(text)
    return lines, widths, texts


def make_rows(images: np.ndarray, labels: np.ndarray, n: int, seed: int, workers: int | None = None,
              chunk: int = 250) -> RowSet:
    """`n` composed rows of `images` through `line_image`, made in `workers` forked processes."""
    global _POOL_DATA
    _POOL_DATA = (images, labels)
    jobs = [(seed, c, min(chunk, n - c * chunk)) for c in range(math.ceil(n / chunk))]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_rows_chunk, jobs)
        else:
            parts = [_rows_chunk(j) for j in jobs]
    finally:
        _POOL_DATA = None
    texts = [t for p in parts for t in p[2]]
    targets = np.full((n, 10), BLANK, dtype=np.int64)
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    for k, t in enumerate(texts):
        targets[k, :len(t)] = [int(c) for c in t]
    return RowSet(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), targets, lengths,
                  texts)


def distort_digits(images: np.ndarray, labels: np.ndarray, spec: dict[str, float], copies: int, seed: int,
                   batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """`copies` randomly distorted versions of each uint8 digit [N, 28, 28] (batched torch, `augment_batch`
    with `spec`) and their labels: a pool of new shapes for composing training rows."""
    unknown = set(spec) - set(DIGIT_AUGMENTATIONS)
    if unknown:
        raise UsageError(f"unknown digit augmentation(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(DIGIT_AUGMENTATIONS)})")
    gen = torch.Generator().manual_seed(20_000 + seed)
    out = np.empty((copies * len(images), *images.shape[1:]), dtype=np.uint8)
    for c in range(copies):
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).float().div_(255).unsqueeze(1)
            y = augment_batch(x, spec, gen, torch.from_numpy(labels[i:i + batch]))
            y = y.squeeze(1).mul_(255).round_().clamp_(0, 255)
            out[c * len(images) + i:c * len(images) + i + len(x)] = y.to(torch.uint8).numpy()
    keep = out.reshape(len(out), -1).max(axis=1) > 0  # a digit warped out of its box would make an empty piece
    return out[keep], np.tile(labels, copies)[keep]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Batched augmentation of lines [B, 1, H, W] in [0, 1]: per line, a random affine map (scale 0.85-1.12,
    horizontal stretch 0.9-1.1, slant, vertical shift of up to 2 px), stroke weight (towards a 3x3
    dilation or erosion), blur, contrast (gamma) and a little noise."""
    b, _, h, w = x.shape

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, 1, 1, generator=gen) * (hi - lo) + lo

    scale = uniform(0.85, 1.12)
    stretch = uniform(0.9, 1.1)
    slant = uniform(-0.25, 0.25)
    shift = uniform(-2.0, 2.0)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cy = (h - 1) / 2
    src_y = (ys - cy - shift) / scale + cy
    src_x = (xs - 8.0) / (scale * stretch) + 8.0 + slant * (ys - cy)
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weight = uniform(-0.6, 0.8).unsqueeze(1)
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    x = torch.where(weight > 0, x + weight * (thick - x), x + weight.abs() * (thin - x))
    blur = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    x = x + uniform(0.0, 0.7).unsqueeze(1) * (blur - x)
    x = x.clamp(0, 1) ** torch.exp(uniform(-0.4, 0.4)).unsqueeze(1)
    x = x + torch.randn(x.shape, generator=gen) * uniform(0.0, 0.05).unsqueeze(1)
    return x.clamp(0, 1)


def _batches(widths: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches of rows of similar width (sorted after a shuffle, then batch order shuffled)."""
    order = rng.permutation(len(widths))
    order = order[np.argsort(widths[order], kind="stable")]
    chunks = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def _lines_tensor(lines: np.ndarray, widths: np.ndarray, extra: int = 0) -> torch.Tensor:
    """uint8 padded lines -> float [B, 1, H, W] cut to the batch's widest (plus `extra`, rounded up to
    MULTIPLE)."""
    w = min(int(widths.max()) + extra, lines.shape[2])
    w += -w % MULTIPLE
    out = torch.from_numpy(lines[:, :, :w]).float().div_(255).unsqueeze(1)
    if out.shape[-1] < w:
        out = F.pad(out, (0, w - out.shape[-1]))
    return out


def read_rows(reader: Reader, rows: RowSet, batch: int = 128) -> list[str]:
    """Greedy CTC text of each row of a RowSet."""
    texts: list[str] = []
    model = reader.model.eval()
    with torch.inference_mode():
        for i in range(0, len(rows.widths), batch):
            widths = rows.widths[i:i + batch]
            out = model(_lines_tensor(rows.lines[i:i + batch], widths)).float().log_softmax(-1).numpy()
            for o, w in zip(out, widths, strict=True):
                texts.append("".join(str(d) for d, _, _ in ctc_greedy(o, math.ceil(int(w) / STRIDE))))
    return texts


def string_accuracy(read: list[str], truth: list[str]) -> float:
    return float(np.mean([a == b for a, b in zip(read, truth, strict=True)])) if truth else 0.0


@dataclass
class ReaderConfig:
    """The recipe of one `train-reader` run. The bundled reader is not these defaults: it is a width-32,
    hidden-96 CRNN trained in a chain of `--init` runs (its card's `init` and `command` record them)."""

    steps: int = 4000
    batch: int = 48
    rows: int = 40000
    val_rows: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 24
    hidden: int = 64
    seed: int = 0
    threads: int | None = None
    command: str = ""
    init: str | None = None  # a reader card to start from (warm start)
    digit_augment: dict[str, float] = field(default_factory=dict)  # distort training digits before composing
    digit_copies: int = 1  # distorted versions of each training digit (with digit_augment)
    held_out: int = VAL_DIGITS  # training digits kept out of the rows, for validation rows
    held_out_split: str = "random"  # which: "random" (best's --val 1000 draw) or "tail" (mostly other writers)
    trunk: str | None = None  # a digit model (bundled name or card) whose frozen trunk the reader is built on
    tune_trunk: float = 0.0  # with trunk: train the trunk too, at this multiple of lr (0: frozen)
    extra_digits: str | None = None  # .npz of more labelled digits (other hands) to compose rows from too


def _print(msg: str) -> None:
    print(msg, flush=True)


def load_trunk(trunk: str) -> checkpoint.Checkpoint:
    """The digit model `--trunk` names: a bundled name (`best`), or a card or its folder. Raises
    CheckpointError when it cannot be read, UsageError for an ensemble (it has no single trunk)."""
    bundled_name = (os.sep not in trunk and "/" not in trunk and not Path(trunk).suffix
                    and not Path(trunk).exists())  # a bare name, unless a run folder of that name is here
    try:  # a bundled name, else a path (a run folder, a card, its .safetensors)
        loaded = checkpoint.bundled(trunk) if bundled_name else checkpoint.load(trunk)
    except UsageError as exc:  # a card of another kind (a reader's): name the option
        raise UsageError(f"--trunk {trunk}: not a digit model ({exc})") from None
    if "members" in loaded.card:
        raise UsageError(f"--trunk {trunk}: an ensemble has no single trunk; name one network")
    if loaded.card.get("model") != "best":  # the reader runs best's convolutions along the line
        raise UsageError(f"--trunk {trunk}: a {loaded.card.get('model')!r} model; the trunk must be a 'best' model")
    if loaded.card.get("dataset", "mnist") != "mnist":
        raise UsageError(f"--trunk {trunk}: trained on {loaded.card.get('dataset')!r}; a digit reader needs an "
                         "MNIST model")
    return loaded


def _trunk_reader(trunk: str, hidden: int) -> tuple[TrunkReader, dict[str, Any]]:
    """A TrunkReader on the frozen trunk of digit model `trunk` (`load_trunk`), and what the card records
    of where the trunk came from."""
    loaded = load_trunk(trunk)
    model = TrunkReader(loaded.card["model"], dict(loaded.card.get("hparams", {})), hidden)
    layers = list(loaded.model.children())[:len(model.trunk)]
    model.trunk.load_state_dict(torch.nn.Sequential(*layers).state_dict())
    return model, dict(source=str(trunk), card_command=loaded.card.get("command"), seed=loaded.card.get("seed"),
                       test_accuracy=loaded.card.get("metrics", {}).get("test_accuracy"))


def train_reader(config: ReaderConfig, out: str | os.PathLike, log: Callable[[str], None] = _print,
                 data_dir: str | os.PathLike | None = None, offline: bool = False) -> dict[str, Any]:
    """Train a reader, validate it on held-out rows, write `out`/reader.safetensors + reader.json."""
    if config.rows < config.batch:  # batches are whole: fewer rows than one would leave nothing to train on
        raise UsageError(f"--rows {config.rows}: fewer than one batch of {config.batch}; give more rows or a "
                         "smaller --batch-size")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train = load_dataset("mnist", "train", data_dir, offline)
    out = writable_folder(out)  # checked before the work, after the data (no empty folder on a data error)
    fit_idx, val_idx = validation_split(len(train.images), config.held_out, config.held_out_split)  # not seeded
    t0 = time.perf_counter()
    pool_images, pool_labels = train.images[fit_idx], train.labels[fit_idx]
    extra_info: dict[str, Any] | None = None
    if config.extra_digits:
        extra_images, extra_labels, extra_sha = load_extra_digits(config.extra_digits, 10)
        pool_images = np.concatenate([pool_images, extra_images])
        pool_labels = np.concatenate([pool_labels, extra_labels.astype(pool_labels.dtype)])
        extra_info = dict(path=str(config.extra_digits), sha256=extra_sha, n=len(extra_labels))
        log(f"added {len(extra_labels)} extra digits from {config.extra_digits}")
    if config.digit_augment:
        pool_images, pool_labels = distort_digits(pool_images, pool_labels, config.digit_augment,
                                                  config.digit_copies, config.seed)
        log(f"distorted {len(pool_images)} training digits ({config.digit_copies} per digit) "
            f"[{time.perf_counter() - t0:.1f}s]")
    rows = make_rows(pool_images, pool_labels, config.rows, seed=config.seed)
    val = make_rows(train.images[val_idx], train.labels[val_idx], config.val_rows, seed=10_000 + config.seed)
    log(f"composed {config.rows} training rows and {config.val_rows} validation rows "
        f"[{time.perf_counter() - t0:.1f}s]")

    trunk_source: dict[str, Any] | None = None
    init_card: dict[str, Any] | None = None
    if config.init is not None:
        start = Reader.load_single(Path(config.init))
        model = build_reader(dict(start.model.hparams))
        if "trunk" not in start.model.hparams and start.model.hparams != dict(width=config.width, hidden=config.hidden):
            raise UsageError(f"--init {config.init}: its reader has {start.model.hparams}, not "
                             f"{dict(width=config.width, hidden=config.hidden)}")
        model.load_state_dict(start.model.state_dict())
        init_card = start.card
        trunk_source = init_card.get("recipe", {}).get("trunk")
        log(f"starting from {config.init} ({init_card.get('recipe', {}).get('steps')} steps, "
            f"seed {init_card.get('seed')})")
    elif config.trunk is not None:
        model, trunk_source = _trunk_reader(config.trunk, config.hidden)
    else:
        model = build_reader(dict(width=config.width, hidden=config.hidden))
    model.to(memory_format=torch.channels_last)
    groups = [dict(params=[p for p in model.parameters() if p.requires_grad], lr=config.lr)]
    if config.tune_trunk > 0 and isinstance(model, TrunkReader):  # else a TrunkReader's trunk stays frozen
        groups.append(dict(params=list(model.trunk.requires_grad_(True).parameters()),
                           lr=config.lr * config.tune_trunk))
    trained = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                   total_steps=config.steps, pct_start=0.1)
    ctc = torch.nn.CTCLoss(blank=BLANK, zero_infinity=True)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    batches: list[np.ndarray] = []
    step, loss_sum, seen = 0, 0.0, 0
    model.train()
    while step < config.steps:
        if not batches:
            batches = _batches(rows.widths, config.batch, rng)
        idx = np.sort(batches.pop())
        x = augment(_lines_tensor(rows.lines[idx], rows.widths[idx], extra=16), gen)
        x = x.contiguous(memory_format=torch.channels_last)
        # fp32: bf16 autocast made this model's step ~5x slower on the 2-core CPU (the GRU and the small
        # convolutions fall back to slow paths)
        log_probs = model(x).log_softmax(-1).transpose(0, 1)  # [T, B, C]
        frames = torch.full((len(idx),), log_probs.shape[0], dtype=torch.long)
        loss = ctc(log_probs, torch.from_numpy(rows.targets[idx]), frames, torch.from_numpy(rows.lengths[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        step += 1
        loss_sum += float(loss.detach()) * len(idx)
        seen += len(idx)
        if step % 250 == 0 or step == config.steps:
            log(f"step {step}/{config.steps}  ctc {loss_sum / seen:.4f}  [{time.perf_counter() - t0:.0f}s]")
            loss_sum, seen = 0.0, 0
    train_seconds = time.perf_counter() - t0

    reader = Reader(model.eval(), {})
    val_read = read_rows(reader, val)
    val_accuracy = string_accuracy(val_read, val.texts)
    log(f"validation: {100 * val_accuracy:.2f} % of {config.val_rows} rows read exactly")
    card: dict[str, Any] = dict(
        model="crnn-reader", bundled=False, hparams=dict(model.hparams),
        recipe=dict(steps=config.steps, batch=config.batch, rows=config.rows, lr=config.lr,
                    weight_decay=config.weight_decay, optimizer="adamw", schedule="onecycle", loss="ctc",
                    bf16=False, augment="affine (scale, stretch, slant, shift), stroke, blur, gamma, noise",
                    line=dict(height=LINE_HEIGHT, stride=STRIDE),
                    **(dict(digit_augment=config.digit_augment, digit_copies=config.digit_copies)
                       if config.digit_augment else {}),
                    **(dict(trunk=trunk_source) if trunk_source else {}),
                    **(dict(tune_trunk=config.tune_trunk) if config.tune_trunk else {}),
                    **(dict(extra_digits=extra_info) if extra_info else {})),
        dataset="mnist", data_sha256=dict(train.sha256), seed=config.seed,
        split=dict(held_out_training_digits=config.held_out, held_out_split=config.held_out_split,
                   as_digit_model_val_seed=VAL_SEED, val_rows=config.val_rows,
                   val_row_seed=10_000 + config.seed),
        parameters=sum(p.numel() for p in model.parameters()),
        trained_parameters=sum(p.numel() for p in trained), train_seconds=round(train_seconds, 1),
        threads=torch.get_num_threads(), command=config.command,
        metrics=dict(val_string_accuracy=val_accuracy, val_rows=config.val_rows))
    if init_card is not None:
        previous = init_card.get("init")
        card["init"] = dict(card=str(config.init), command=init_card.get("command"), seed=init_card.get("seed"),
                            steps=init_card.get("recipe", {}).get("steps"),
                            train_seconds=init_card.get("train_seconds"),
                            val_string_accuracy=init_card.get("metrics", {}).get("val_string_accuracy"),
                            **({"init": previous} if previous else {}))
    half = build_reader(dict(model.hparams))
    half.load_state_dict(model.state_dict())
    card_path = checkpoint.save(Path(out) / "reader", half.half(), card)  # fp16 weights: half the size
    return dict(checkpoint=str(card_path), val_string_accuracy=val_accuracy, train_seconds=round(train_seconds, 1),
                steps=config.steps, seed=config.seed, parameters=card["parameters"])
