"""`digitrec report`: what a model learned, as one self-contained HTML page plus the PNGs behind it.

The page (`index.html`) embeds every image as a base64 data URI and carries its own CSS: no scripts, no
external files, it opens offline and can be mailed as is. Sections, each with a stable id:

    summary, data, training, confusion, per-class, mistakes, calibration, features, model-card

The test-set numbers are computed exactly as `digitrec evaluate --json` computes them (metrics.summarize
over inference.predict_logits in batches of 1000, with the card's TTA setting), so the two agree to the
last digit; `metrics.json` holds that same record.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from digitrec import __version__, plots
from digitrec import checkpoint as ckpt
from digitrec.atomic import atomic_write_text, writable_folder
from digitrec.data import Dataset, get_spec, load_dataset
from digitrec.errors import CheckpointError
from digitrec.inference import default_batch_size, pick_device, predict_logits
from digitrec.metrics import (
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
    softmax,
    summarize,
)
from digitrec.models import count_parameters

CALIBRATION_IMAGES = 5000  # the last N training images, when the card carries no fitted temperature
GALLERY = 24             # images per gallery
SAMPLES = 40             # images in the data sample grid
SECTIONS = ("summary", "data", "training", "confusion", "per-class", "mistakes", "calibration", "features",
            "model-card")
# Every file a report writes into its folder. A new report replaces them all: those it does not write this time
# (training_curves.png for a card without history, a gallery with nothing in it) are removed, not left stale
# from an earlier model. Nothing else in the folder is touched.
FILES = ("index.html", "metrics.json", "samples.png", "class_balance.png", "training_curves.png", "confusion.png",
         "confident_mistakes.png", "unsure_correct.png", "reliability.png", "features_pca.png")


# --- computation ----------------------------------------------------------------------------------------


def _feature_layer(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """The layer whose output feeds the final Linear (the penultimate features), and that Linear.

    For an ensemble, the first member's. Modules are taken in registration order, which for the zoo's
    nn.Sequential models is execution order; the captured width is checked against the Linear's input.
    """
    net = model.members[0] if isinstance(model, ckpt.Ensemble) else model
    leaves = [m for m in net.modules() if not list(m.children())]
    linears = [i for i, m in enumerate(leaves) if isinstance(m, nn.Linear)]
    if not linears or linears[-1] == 0:
        return None
    return leaves[linears[-1] - 1], leaves[linears[-1]]


def predict_with_features(model: nn.Module, images: np.ndarray, device: torch.device, tta: bool,
                          progress: bool = True, desc: str = "predicting"
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits exactly as `predict_logits(model, images, device=device, tta=tta)` returns them (the same
    batches), plus the penultimate features of the un-augmented images (None if not found)."""
    layer = _feature_layer(model)
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        def hook(_module, _inputs, output):
            captured.append(output.detach().flatten(1).float().cpu().clone())

        handle = layer[0].register_forward_hook(hook)
    logits, feats = [], []
    try:
        batch = default_batch_size(device)
        for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False,
                      file=sys.stderr, disable=not progress):
            logits.append(predict_logits(model, images[i:i + batch], batch_size=batch, device=device, tta=tta))
            if captured:
                feats.append(captured[0])  # TTA's first view is the image itself
            captured.clear()
    finally:
        if handle is not None:
            handle.remove()
    out = np.concatenate(logits) if logits else np.zeros((0, 10), np.float32)
    features = torch.cat(feats).numpy() if feats and layer is not None else None
    if features is not None and (len(features) != len(out) or features.shape[1] != layer[1].in_features):
        features = None
    return out, features


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the top two principal components (SVD); returns points [N, 2] and explained-variance
    ratios of those two components."""
    x = features.astype(np.float64)
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    points = x @ vt[:2].T
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points, ratio


def _histories(loaded: ckpt.Checkpoint) -> tuple[dict[str, list[dict]], str]:
    """Training histories to plot, and a sentence about where they came from."""
    card = loaded.card
    if card.get("history"):
        return {"model": card["history"]}, ""
    if "members" in card:
        out: dict[str, list[dict]] = {}
        for k, member in enumerate(card["members"]):
            try:
                mcard = ckpt.read_card(loaded.path.parent / f"{member}.json")
            except CheckpointError:
                continue
            if mcard.get("history"):
                out[f"member {k} (seed {mcard.get('seed', '?')})"] = mcard["history"]
        if out:
            return out, (f"An ensemble card has no history of its own; these are the curves of its "
                         f"{len(out)} of {len(card['members'])} members that recorded one.")
        return {}, "This ensemble's card and its members' cards record no training history."
    return {}, "This model card records no training history."


class _Steps:
    """A step-level progress bar on stderr, and a wall-clock time per step for the model card."""

    def __init__(self, names: Sequence[str], enabled: bool):
        self.bar = tqdm(total=len(names), desc="report", unit="step", file=sys.stderr, disable=not enabled)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0
        self.bar.update()

    def close(self) -> None:
        self.bar.set_postfix_str("done")
        self.bar.close()


STEPS = ("load", "predict", "calibrate", "data figures", "training curves", "confusion", "galleries",
         "calibration figure", "feature map", "write")


def build_report(out: str | os.PathLike, checkpoint: str | os.PathLike | None = None, model: str | None = None,
                 dataset: str | None = None, data_dir: str | os.PathLike | None = None, offline: bool = False,
                 device: str = "auto", progress: bool = True, command: str = "") -> dict[str, Any]:
    """Write `out`/index.html, the PNGs and metrics.json; return the metrics record (as evaluate --json).

    The report is built in a hidden folder inside `out` and its files are moved into place only once all are
    written, so an interrupted or failed run leaves no partial report (and an earlier report in `out` stays
    whole); the files of an earlier report this one does not write are removed (see FILES)."""
    if dataset is not None:
        get_spec(dataset)  # unknown name -> UsageError before any work
    out_dir = writable_folder(out)  # before the model and the data load; leaves no folder behind
    steps = _Steps(STEPS, progress)
    t_start = time.perf_counter()
    try:
        with steps.step("load"):
            loaded = ckpt.choose(checkpoint, model)
            name = dataset or loaded.card.get("dataset", "mnist")
            ckpt.warn_if_other_dataset(loaded, name)
            spec = get_spec(name)
            dev = pick_device(device)  # a device that is not there is a UsageError
            train = load_dataset(name, "train", data_dir, offline, progress)
            test = load_dataset(name, "test", data_dir, offline, progress)
            net = loaded.model.to(dev)
            use_tta = bool(loaded.card.get("tta", False))

        with steps.step("predict"):
            logits, features = predict_with_features(net, test.images, dev, use_tta, progress, "test set")
            if logits.shape[1] != len(spec.classes):
                raise CheckpointError(f"{loaded.path}: the model has {logits.shape[1]} outputs but {name} has "
                                      f"{len(spec.classes)} classes")
            # Exactly `digitrec evaluate --json`'s record.
            metrics = summarize(logits, test.labels, len(test.classes))
            metrics.update(checkpoint=str(loaded.path), dataset=name, tta=use_tta)

        with steps.step("calibrate"):
            calib = _calibration(loaded, logits, test, train, dev, use_tta, progress)

        with _staging(out_dir) as staging:
            ctx = _Context(staging)
            with steps.step("data figures"):
                _data_section(ctx, train, test)
            with steps.step("training curves"):
                _training_section(ctx, loaded)
            with steps.step("confusion"):
                _confusion_sections(ctx, metrics, test.classes)
            with steps.step("galleries"):
                _mistakes_section(ctx, softmax(logits, calib["temperature"]), test, calib["temperature"])
            with steps.step("calibration figure"):
                _calibration_section(ctx, calib)
            with steps.step("feature map"):
                _features_section(ctx, features, test, loaded)
            with steps.step("write"):
                atomic_write_text(staging / "metrics.json", json.dumps(metrics, indent=2) + "\n")
                timings = dict(steps.seconds, total=time.perf_counter() - t_start)
                _model_card_section(ctx, loaded, net, train, test, dev, timings, command)
                summary = _summary_section(loaded, name, metrics, calib)
                atomic_write_text(staging / "index.html", _page(loaded, name, summary, ctx.sections))
    finally:
        steps.close()
    return metrics


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder inside `out_dir` to build the report in. On success its files replace those in
    `out_dir` (index.html last) and the report's files it lacks are removed there; on any error or interrupt
    it is deleted, with `out_dir` and its parents when this run made them and they are empty again."""
    made = [p for p in (out_dir, *out_dir.absolute().parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-", suffix=".part"))
    try:
        yield staging
        written = sorted(p.name for p in staging.iterdir())
        with _signals_held():  # a few renames: an interrupt lands before or after them, not between
            for name in sorted(written, key=lambda n: n == "index.html"):
                os.replace(staging / name, out_dir / name)
            for name in set(FILES) - set(written):
                stale = out_dir / name
                if stale.is_symlink() or stale.is_file():
                    stale.unlink()
            staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # deepest first; rmdir leaves a folder something else wrote into meanwhile
            with suppress(OSError):
                folder.rmdir()
        raise


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP for the block and deliver the first one after it. Python runs
    signal handlers on the main thread whatever thread the kernel picked (a thread mask would not do: torch
    runs threads of its own), so handlers that only note the signal are installed for the block; elsewhere
    than the main thread, where handlers cannot be set, a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _frame: caught.append(number)) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


# --- calibration ----------------------------------------------------------------------------------------


def _calibration(loaded: ckpt.Checkpoint, logits: np.ndarray, test: Dataset, train: Dataset,
                 device: torch.device, tta: bool, progress: bool) -> dict[str, Any]:
    card_t = loaded.card.get("temperature")
    if "members" in loaded.card:
        # What `predict` and the Recognizer use: the members' probabilities, each at its own temperature.
        temperature = 1.0
        source = ("the members' own temperatures, each fitted during its training on its held-out training "
                  "images, before their probabilities are averaged (as `predict` does); the test set was not "
                  "used to choose them")
    elif card_t is not None and float(card_t) != 1.0:
        temperature = float(card_t)
        n_val = loaded.card.get("val") or 0
        source = ("the model card's temperature"
                  + (f", fitted during training on {n_val} held-out training images" if n_val else "")
                  + "; the test set was not used to choose it")
    else:
        n = min(CALIBRATION_IMAGES, len(train) // 2)
        val_logits, _ = predict_with_features(loaded.model, train.images[-n:], device, tta, progress,
                                              "calibration split")
        temperature = fit_temperature(val_logits, train.labels[-n:])
        source = (f"fitted here on the last {n} training images (the card has no fitted temperature); "
                  "the test set was not used to choose it. The model may have trained on those images, so "
                  "this temperature can under-correct overconfidence")
    before, after = softmax(logits), softmax(logits, temperature)
    labels = test.labels
    return dict(
        temperature=temperature, source=source,
        ece_before=expected_calibration_error(before, labels), ece_after=expected_calibration_error(after, labels),
        nll_before=nll(logits, labels), nll_after=nll(logits, labels, temperature),
        reliability_before=reliability(before, labels), reliability_after=reliability(after, labels),
    )


# --- HTML -------------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Context:
    """Collects sections; writes each figure's PNG to the output folder and embeds the same bytes."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.sections: dict[str, str] = {}

    def figure(self, fig, filename: str, alt: str) -> str:
        data = plots.save_figure(fig, self.out_dir / filename)
        b64 = base64.b64encode(data).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(alt)}">'
                f'<figcaption>{esc(alt)} <span class="file">({esc(filename)})</span></figcaption></figure>')

    def add(self, section_id: str, title: str, body: str) -> None:
        self.sections[section_id] = f'<section id="{section_id}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "", table_id: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' id="{table_id}"' if table_id else "")
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(c if isinstance(c, _Raw) else f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                     for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


class _Raw(str):
    """A pre-rendered table cell."""


def _num(value: float, text: str, key: str = "") -> _Raw:
    """A cell showing `text` and carrying the exact value (repr) for machines."""
    k = f' data-key="{esc(key)}"' if key else ""
    return _Raw(f'<td class="num"{k} data-value="{esc(repr(value))}">{esc(text)}</td>')


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{v if isinstance(v, _Raw) else esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>\n{rows}\n</tbody></table>'


def _summary_section(loaded: ckpt.Checkpoint, name: str, metrics: dict, calib: dict) -> str:
    pairs = [
        ("checkpoint", str(loaded.path)),
        ("evaluated on", f"{name} test set, {metrics['n']} images" + (", with test-time augmentation"
                                                                        if metrics["tta"] else "")),
        ("accuracy", _Raw(f'<span data-key="accuracy" data-value="{esc(repr(metrics["accuracy"]))}">'
                          f'{metrics["accuracy"]:.4f} ({100 * metrics["accuracy"]:.2f} %, '
                          f'{round((1 - metrics["accuracy"]) * metrics["n"])} errors)</span>')),
        ("loss (mean NLL)", _Raw(f'<span data-key="loss" data-value="{esc(repr(metrics["loss"]))}">'
                                 f'{metrics["loss"]:.4f}</span>')),
        ("expected calibration error", f"{calib['ece_before']:.4f} raw, {calib['ece_after']:.4f} at temperature "
                                       f"{calib['temperature']:.3f}"),
    ]
    body = (_kv(pairs) + "<p>These numbers come from the same code as <code>digitrec evaluate --json</code>; "
            "the full record is in <code>metrics.json</code>.</p>")
    return f'<section id="summary">\n<h2>Summary</h2>\n{body}\n</section>'


def _data_section(ctx: _Context, train: Dataset, test: Dataset) -> None:
    idx = np.sort(np.random.default_rng(0).choice(len(train), size=min(SAMPLES, len(train)), replace=False))
    grid = ctx.figure(plots.digit_grid_figure(train.images[idx], [train.classes[c] for c in train.labels[idx]],
                                              title=f"{train.name} train: {len(idx)} random samples"),
                      "samples.png", "Random training images with their labels")
    counts = {s.split: np.bincount(s.labels, minlength=len(s.classes)).tolist() for s in (train, test)}
    balance = ctx.figure(plots.class_balance_figure(counts, train.classes, f"{train.name}: images per class"),
                         "class_balance.png", "Class balance of the training and test sets")
    rows = [[c, counts["train"][k], counts["test"][k]] for k, c in enumerate(train.classes)]
    table = _table(["class", "train", "test"], rows + [["total", len(train), len(test)]], "small")
    ctx.add("data", "The data", grid + balance + f"<details><summary>Counts per class</summary>{table}</details>")


def _training_section(ctx: _Context, loaded: ckpt.Checkpoint) -> None:
    histories, note = _histories(loaded)
    body = f"<p>{esc(note)}</p>" if note else ""
    if histories:
        body += ctx.figure(plots.training_curves_figure(histories, "Loss and accuracy per epoch"),
                           "training_curves.png",
                           "Training curves: train solid, validation dashed. The train loss is the training "
                           "objective (with label smoothing and, for a distilled model, the teacher's term); the "
                           "validation loss is the plain negative log-likelihood")
        keys = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]
        for run, rows in histories.items():
            present = [k for k in keys if any(k in r for r in rows)]
            cells = [[_fmt(r.get(k)) for k in present] for r in rows]
            body += (f"<details><summary>History: {esc(run)} ({len(rows)} epochs)</summary>"
                     f"{_table(present, cells, 'small')}</details>")
        if not any("val_loss" in r for rows in histories.values() for r in rows):
            body += "<p>No validation curve: the model was trained without a held-out split (<code>--val</code>).</p>"
    ctx.add("training", "Training curves", body)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def _confusion_sections(ctx: _Context, metrics: dict, classes: Sequence[str]) -> None:
    conf = np.array(metrics["confusion"])
    fig = ctx.figure(plots.confusion_figure(conf, classes, "Confusion matrix (test set)"), "confusion.png",
                     "Confusion matrix: rows are the true class, columns the prediction")
    header = ["true \\ predicted", *classes]
    rows = [[_Raw(f"<th>{esc(c)}</th>"), *[_Raw(f'<td class="num{" diag" if i == j else ""}">{conf[i, j]}</td>')
                                         for j in range(len(classes))]]
            for i, c in enumerate(classes)]
    off = conf.copy()
    np.fill_diagonal(off, 0)
    top = np.dstack(np.unravel_index(np.argsort(-off, axis=None), off.shape))[0][:5]
    common = ", ".join(f"{classes[i]} read as {classes[j]} ({off[i, j]})" for i, j in top if off[i, j])
    body = (fig + f"<p>Most frequent confusions: {esc(common or 'none')}.</p>"
            + _table(header, rows, "confusion", "confusion-table"))
    ctx.add("confusion", "Confusion matrix", body)

    pc = metrics["per_class"]
    rows = [[c, _num(r["precision"], f"{r['precision']:.4f}"), _num(r["recall"], f"{r['recall']:.4f}"),
             _num(r["f1"], f"{r['f1']:.4f}"), _num(r["support"], str(r["support"]))] for c, r in zip(classes, pc,
                                                                                                  strict=True)]
    macro = {k: float(np.mean([r[k] for r in pc])) for k in ("precision", "recall", "f1")}
    rows.append([_Raw("<th>macro average</th>"), *[_Raw(f'<td class="num">{macro[k]:.4f}</td>') for k in macro],
                 _Raw(f'<td class="num">{sum(r["support"] for r in pc)}</td>')])
    ctx.add("per-class", "Per-class precision, recall and F1",
            _table(["class", "precision", "recall", "F1", "support"], rows, "", "per-class-table"))


def _gallery(ctx: _Context, idx: np.ndarray, probs: np.ndarray, test: Dataset, filename: str, title: str,
             color: str) -> str:
    preds = probs.argmax(1)
    caps = [f"true {test.classes[test.labels[i]]}\npred {test.classes[preds[i]]} {probs[i, preds[i]]:.3f}"
            for i in idx]
    fig = ctx.figure(plots.digit_grid_figure(test.images[idx], caps, title, colors=[color] * len(idx)), filename,
                     title)
    rows = []
    for i in idx:
        second = int(np.argsort(probs[i])[-2])
        rows.append([int(i), test.classes[test.labels[i]], test.classes[preds[i]], f"{probs[i, preds[i]]:.4f}",
                     f"{test.classes[second]} ({probs[i, second]:.4f})"])
    table = _table(["test index", "true", "predicted", "confidence", "runner-up"], rows, "small")
    return fig + f"<details><summary>As a table</summary>{table}</details>"


def _mistakes_section(ctx: _Context, probs: np.ndarray, test: Dataset, temperature: float) -> None:
    preds, conf = probs.argmax(1), probs.max(1)
    wrong, right = np.flatnonzero(preds != test.labels), np.flatnonzero(preds == test.labels)
    body = (f"<p>Confidence is the softmax probability of the predicted class at temperature "
            f"{temperature:.3f} (see <a href=\"#calibration\">calibration</a>).</p>")
    body += '<h3 id="confident-mistakes">Most confident mistakes</h3>'
    if len(wrong):
        worst = wrong[np.argsort(-conf[wrong], kind="stable")][:GALLERY]
        body += _gallery(ctx, worst, probs, test, "confident_mistakes.png",
                         f"The {len(worst)} most confident of {len(wrong)} mistakes", "crimson")
    else:
        body += "<p>No mistakes on the test set.</p>"
    body += '<h3 id="unsure-correct">Least confident correct answers</h3>'
    if len(right):
        unsure = right[np.argsort(conf[right], kind="stable")][:GALLERY]
        body += _gallery(ctx, unsure, probs, test, "unsure_correct.png",
                         f"The {len(unsure)} least confident of {len(right)} correct answers", "darkgreen")
    else:
        body += "<p>No correct answers on the test set.</p>"
    ctx.add("mistakes", "Mistakes and near misses", body)


def _calibration_section(ctx: _Context, calib: dict) -> None:
    t = calib["temperature"]
    fig = ctx.figure(plots.reliability_figure({"raw (T = 1)": calib["reliability_before"],
                                               f"temperature-scaled (T = {t:.3f})": calib["reliability_after"]},
                                              "Reliability diagram (test set)"),
                     "reliability.png", "Reliability diagram before and after temperature scaling")
    rows = [["raw (T = 1)", _num(calib["ece_before"], f"{calib['ece_before']:.4f}", "ece_before"),
             f"{calib['nll_before']:.4f}"],
            [f"temperature-scaled (T = {t:.4f})", _num(calib["ece_after"], f"{calib['ece_after']:.4f}", "ece_after"),
             f"{calib['nll_after']:.4f}"]]
    body = (f"<p>Temperature: <strong>{t:.4f}</strong>, {esc(calib['source'])}.</p>"
            + _table(["probabilities", "expected calibration error (15 bins)", "test NLL"], rows, "",
                     "calibration-table")
            + "<p>A perfectly calibrated model's points lie on the diagonal: of the answers given with 90 % "
              "confidence, 90 % are right. Points below it mean overconfidence.</p>" + fig)
    ctx.add("calibration", "Calibration", body)


def _features_section(ctx: _Context, features: np.ndarray | None, test: Dataset, loaded: ckpt.Checkpoint) -> None:
    if features is None:
        ctx.add("features", "The test set in the network's feature space",
                "<p>No penultimate layer (a layer feeding a final Linear) was found in this model.</p>")
        return
    points, ratio = pca_2d(features)
    which = "the first member's " if "members" in loaded.card else ""  # an ensemble: its first member
    owner = "the first member's" if which else "the network's"
    fig = ctx.figure(plots.embedding_figure(points, test.labels, test.classes,
                                            f"Test set: PCA of {which}{features.shape[1]}-d penultimate features",
                                            f"PC 1 ({100 * ratio[0]:.1f} % of variance)",
                                            f"PC 2 ({100 * ratio[1]:.1f} % of variance)"),
                     "features_pca.png", "Each test image as a point: the top two principal components of the "
                                         "features the final layer sees, coloured by true class")
    body = (f"<p>The {len(features)} test images, mapped by {owner} penultimate layer "
            f"({features.shape[1]} features: the input of the final Linear, captured with a forward hook on the "
            "layer before it) and projected to 2-D with PCA. "
            "Well-separated clusters mean the final linear layer has an easy job; overlapping clusters are the "
            "classes it confuses.</p>" + fig)
    ctx.add("features", "The test set in the network's feature space", body)


def _model_card_section(ctx: _Context, loaded: ckpt.Checkpoint, net: nn.Module, train: Dataset, test: Dataset,
                        device: torch.device, timings: dict[str, float], command: str) -> None:
    card = loaded.card
    kind = "ensemble of " + str(len(card["members"])) if "members" in card else str(card.get("model"))
    pairs: list[tuple[str, Any]] = [
        ("model", kind),
        ("checkpoint", str(loaded.path)),
        ("trained on", card.get("dataset", "?")),
        ("parameters", f"{count_parameters(net):,}"),
        ("seed", card.get("seed", card.get("member_seeds", ""))),
        ("validation images held out", card.get("val", "")),
        ("test-time augmentation", card.get("tta", False)),
        ("temperature (card)", card.get("temperature", "absent")),
        ("test accuracy recorded in the card", (card.get("metrics") or {}).get("test_accuracy", "")),
        ("training time", f"{float(card['train_seconds']):.2f} s" if "train_seconds" in card else ""),
        ("training device", f"{card.get('device', '?')}, {card.get('threads', '?')} threads, "
                            f"world size {card.get('world_size', 1)}" if "device" in card else ""),
        ("training command", card.get("command") or "(not recorded)"),
        ("report command", command or "(library call)"),
        ("report device", str(device)),
    ]
    if "members" in card:
        pairs.append(("members", ", ".join(card["members"])))
        pairs.append(("members' test accuracy", ", ".join(str(a) for a in card.get("member_test_accuracy", []))))
    body = "<h3>Summary</h3>" + _kv([(k, v) for k, v in pairs if v != ""])

    recipe = card.get("recipe")
    if recipe or card.get("hparams"):
        rows = [[k, json.dumps(v)] for k, v in (recipe or {}).items()]
        rows += [[f"hparams.{k}", json.dumps(v)] for k, v in (card.get("hparams") or {}).items()]
        body += "<h3>Hyper-parameters (recipe)</h3>" + _table(["name", "value"], rows, "small")

    current = {**train.sha256, **test.sha256}
    recorded = card.get("data_sha256") or {}
    rows = []
    for f in sorted(set(current) | set(recorded)):
        now, then = current.get(f, ""), recorded.get(f, "")
        status = "match" if now and now == then else ("not in card" if not then else
                                                       ("not used now" if not now else "DIFFERENT"))
        rows.append([f, then or "-", now or "-", status])
    body += ("<h3>Data checksums (sha256)</h3><p>Recorded at training time and of the files this report "
             f"read ({esc(train.name)}, verified on load).</p>"
             + _table(["file", "training", "this report", "status"], rows, "small mono"))

    body += "<h3>Timings</h3>" + _table(["report step", "seconds"],
                                        [[k, f"{v:.2f}"] for k, v in timings.items()], "small")
    then_v, now_v = card.get("versions") or {}, ckpt.library_versions()
    body += "<h3>Library versions</h3>" + _table(
        ["library", "training", "this report"],
        [[k, then_v.get(k, "-"), now_v.get(k, "-")] for k in dict.fromkeys([*then_v, *now_v])], "small")
    arch = str(net)
    body += (f"<h3>Architecture</h3><pre>{esc(arch)}</pre>")
    body += (f"<details><summary>The model card (JSON)</summary><pre>{esc(json.dumps(card, indent=2))}</pre>"
             "</details>")
    ctx.add("model-card", "Model card", body)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1000px;margin:0 auto;padding:1em 1.5em 4em;background:#fff}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.4em 0;font-size:13px;z-index:1}
nav a{margin-right:.9em;color:#0645ad;text-decoration:none}
h1{font-size:1.6em;margin:.4em 0}h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:1.8em}
h3{margin-top:1.3em}section,h2{scroll-margin-top:3em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.2em .55em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.confusion td.diag{background:#e7f0fb;font-weight:600}
table.kv th{background:#f7f7f7;font-weight:600;white-space:nowrap}
table.mono td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#555}.file{color:#999}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:12px;max-height:40em}
code{background:#f3f3f3;padding:0 .25em}details{margin:.5em 0}summary{cursor:pointer;color:#0645ad}
"""

_TITLES = {"summary": "Summary", "data": "Data", "training": "Training", "confusion": "Confusion",
           "per-class": "Per class", "mistakes": "Mistakes", "calibration": "Calibration",
           "features": "Feature map", "model-card": "Model card"}


def _page(loaded: ckpt.Checkpoint, name: str, summary: str, sections: dict[str, str]) -> str:
    title = f"digitrec report: {loaded.path.parent.name}/{loaded.path.stem} on {name}"
    nav = "".join(f'<a href="#{s}">{_TITLES[s]}</a>' for s in SECTIONS)
    body = "\n".join([summary, *(sections[s] for s in SECTIONS if s in sections)])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="digitrec {esc(__version__)}">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{esc(title)}</h1>
<p>Generated {esc(stamp)}. Self-contained: every image is embedded, nothing is fetched.</p>
<nav>{nav}</nav>
{body}
</main>
</body>
</html>
"""


__all__ = ["SECTIONS", "build_report", "pca_2d", "predict_with_features"]
