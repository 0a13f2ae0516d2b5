"""Export a checkpoint to ONNX, so the model runs where torch does not: onnxruntime, browsers, phones.

The file is self-contained (weights inside, no .data file beside it) and carries the model card's facts in
its metadata. It takes MNIST-normalised images, as `digitrec.preprocess.to_mnist` makes them, and gives raw
logits plus calibrated probabilities, the card's temperature baked in, so an ONNX user gets the confidences
`Recognizer` reports. Every file is checked against torch with onnxruntime before it appears under its name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digitrec import __version__, checkpoint
from digitrec.atomic import staged_path, writable_file
from digitrec.checkpoint import model_name
from digitrec.errors import DigitrecError, UsageError
from digitrec.inference import fold_batchnorm

OPSET_MIN = 18  # the dynamo exporter's floor: below it torch silently writes 18 anyway
TOLERANCE = 1e-4  # max abs difference of probabilities, onnxruntime against torch (seen: ~3e-7)
VERIFY_BATCH = 64
INPUT_NOTE = ("image: float32 [batch, 1, 28, 28], 0..1, white digit on black, centred by mass in 28x28 "
              "as MNIST (digitrec.preprocess.to_mnist makes it from any image)")
OUTPUT_NOTE = ("logits: float32 [batch, 10], the raw model output (an ensemble: log of its averaged calibrated "
               "probabilities); probabilities: float32 [batch, 10], softmax(logits / temperature)")
EXTRA_HINT = "ONNX export needs the 'export' extra: pip install 'digitrec[export]'"
_QUIET_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour codes some exporter errors carry


def require_extra() -> None:
    """Fail in one line, before any work, when onnx, onnxruntime or onnxscript is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UsageError(EXTRA_HINT) from None


def opset_range() -> tuple[int, int]:
    """The opsets an export may ask for: the exporter's floor to the newest the installed onnx defines."""
    import onnx

    return OPSET_MIN, int(onnx.defs.onnx_opset_version())


def check_opset(opset: int | None) -> None:
    low, high = opset_range()
    if opset is not None and not low <= opset <= high:
        raise UsageError(f"--opset {opset}: choose {low} to {high}, or leave it out for torch's default")


class _Calibrated(nn.Module):
    """Both outputs from one forward pass: the model's logits and softmax(logits / temperature)."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(image).float()
        return logits, (logits / self.temperature).softmax(1)


def export_onnx(loaded: checkpoint.Checkpoint, out: str | os.PathLike, opset: int | None = None) -> dict[str, Any]:
    """Write `loaded` (one network or an Ensemble) to the ONNX file `out`, verified with onnxruntime against
    torch first; returns out, bytes, model, opset, max_abs_diff, batch_verified and seconds.

    Why verified before the rename: a graph that exports but computes something else (an op lowered wrongly,
    a shape fixed where it should vary) must never reach users under the name they asked for."""
    require_extra()
    check_opset(opset)
    target = writable_file(out)
    start = time.perf_counter()
    name = model_name(loaded)
    reference = _Calibrated(_cpu_copy(loaded.model), loaded.temperature).eval()
    folded = _Calibrated(fold_batchnorm(loaded.model).cpu(), loaded.temperature).eval()
    with staged_path(target) as tmp:  # verified inside, renamed only after
        program = _export(folded, target, opset)
        actual_opset = program.model.opset_imports.get("", 0)
        if opset is not None and actual_opset != opset:
            raise UsageError(f"--opset {opset}: this torch/onnxscript wrote opset {actual_opset} instead")
        program.model.metadata_props.update(_metadata(loaded, name))
        program.model.doc_string = f"digitrec {name}: handwritten digit recognition. {INPUT_NOTE}. {OUTPUT_NOTE}."
        program.save(tmp, external_data=False)
        diff = _verify(tmp, reference, target)
    return dict(out=str(target), bytes=target.stat().st_size, model=name, opset=int(actual_opset),
                max_abs_diff=diff, batch_verified=VERIFY_BATCH, seconds=round(time.perf_counter() - start, 2))


def _cpu_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy on the CPU: the caller's model keeps its device and mode (a Recognizer may hold it)."""
    import copy

    return copy.deepcopy(model).cpu().eval()


def _export(model: nn.Module, target: Path, opset: int | None):
    """torch.onnx's dynamo exporter, batch dimension dynamic; its failures become one DigitrecError line."""
    example = (torch.zeros(2, 1, 28, 28),)  # batch 2: a batch of 1 could be specialised as a constant
    try:
        with _quiet():
            return torch.onnx.export(model, example, None, dynamo=True, verbose=False, external_data=False,
                                     input_names=["image"], output_names=["logits", "probabilities"],
                                     dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
                                     opset_version=opset)
    except Exception as exc:  # torch raises many error types; the user needs one line
        raise DigitrecError(f"{target}: ONNX export failed ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    """An exception's first non-empty line, without terminal colour codes (the CLI prints it as plain text)."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _metadata(loaded: checkpoint.Checkpoint, name: str) -> dict[str, str]:
    """The model card's facts, as strings (all ONNX metadata_props can hold)."""
    card = loaded.card
    classes = card.get("classes") or [str(d) for d in range(10)]
    members = card.get("members")
    meta = dict(model=name, architecture=str(card.get("model") or f"ensemble of {len(members or [])}"),
                classes=json.dumps(classes), temperature=repr(loaded.temperature),
                digitrec_version=__version__, input=INPUT_NOTE, outputs=OUTPUT_NOTE)
    accuracy = (card.get("metrics") or {}).get("test_accuracy")
    if accuracy is not None:
        meta["test_accuracy"] = repr(float(accuracy))
    if card.get("dataset"):
        meta["dataset"] = str(card["dataset"])
    if members:
        meta["members"] = json.dumps(members)
    return meta


def verification_images(n: int = VERIFY_BATCH, seed: int = 0) -> np.ndarray:
    """A fixed batch [n, 1, 28, 28] in 0..1: blank and constant images (where softmax ties are likeliest),
    blobs with strokes' scale, sparse ink and dense noise. No dataset needed, so export works offline."""
    rng = np.random.default_rng(seed)
    flat = np.linspace(0, 1, 8, dtype=np.float32)[:, None, None, None] * np.ones((8, 1, 28, 28), np.float32)
    k = (n - len(flat)) // 2
    blobs = np.kron(rng.random((k, 1, 7, 7)), np.ones((4, 4))) > rng.uniform(0.4, 0.8, (k, 1, 1, 1))
    noise = rng.random((n - len(flat) - k, 1, 28, 28))
    sparse = noise * (rng.random(noise.shape) < rng.uniform(0.05, 1.0, (len(noise), 1, 1, 1)))
    return np.concatenate([flat, blobs.astype(np.float32), sparse.astype(np.float32)])


def _verify(path: Path, reference: nn.Module, target: Path) -> float:
    """Run the file with onnxruntime and torch's unfolded model on the same batch; the max abs difference of
    probabilities, or a DigitrecError naming `target` when it is over TOLERANCE or a prediction differs."""
    images = verification_images()
    theirs = _run_onnxruntime(path, images, target)
    with torch.inference_mode():
        ours = reference(torch.from_numpy(images))[1].numpy()
    diff = float(np.abs(theirs - ours).max())
    # A prediction may differ only where torch's own top two are tied within the tolerance.
    top = np.sort(ours, 1)[:, -2:]
    flipped = int(((theirs.argmax(1) != ours.argmax(1)) & (top[:, 1] - top[:, 0] > TOLERANCE)).sum())
    if not diff < TOLERANCE or flipped:
        raise DigitrecError(f"{target}: the exported model does not match torch on {len(images)} test images "
                            f"(max probability difference {diff:.2g}, {flipped} predictions differ); not written")
    return diff


def _run_onnxruntime(path: Path, images: np.ndarray, target: Path) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # 64 small images: threads would cost more than they save
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"image": images})[0]
    except Exception as exc:  # onnxruntime's errors are its own types
        raise DigitrecError(f"{target}: onnxruntime cannot run the exported model ({_first_line(exc)})") from exc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's warnings (torchvision missing, deprecations in its own code): none is about the
    model, and the CLI promises one line per error and nothing else on stderr."""
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
