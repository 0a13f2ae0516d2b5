"""Checkpoints: safetensors weights plus a JSON model card, written atomically, loaded without pickle.

A checkpoint is named by its stem: `run/model.safetensors` + `run/model.json`. An ensemble is a card
alone (`ensemble.json`) whose "members" list other checkpoints in the same folder. `--checkpoint` may
name the .safetensors, the .json, the stem, or a folder holding exactly one card.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from digitrec import __version__
from digitrec.atomic import atomic_write_bytes, atomic_write_text
from digitrec.errors import CheckpointError, UnknownModelError, UsageError
from digitrec.models import build_model, get_spec

BUNDLED = ("distilled", "best", "ensemble", "fast")  # in order of preference for the default


def library_versions() -> dict[str, str]:
    return dict(digitrec=__version__, torch=torch.__version__, numpy=np.__version__,
                safetensors=safetensors.__version__, python=sys.version.split()[0],
                platform=platform.platform())


def save(stem: str | os.PathLike, model: nn.Module, card: dict[str, Any]) -> Path:
    """Write `stem`.safetensors and `stem`.json; the card gets the weights' file name and versions."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_suffix(".safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    atomic_write_bytes(weights, safetensors.torch.save(state, metadata={"model": str(card.get("model", ""))}))
    card = dict(card, weights=weights.name, versions=library_versions())
    atomic_write_text(stem.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return stem.with_suffix(".json")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)      # DDP


def resolve(path: str | os.PathLike) -> Path:
    """Find the card (.json) for whatever the user named."""
    p = Path(path).expanduser()
    if p.is_dir():
        cards = sorted(p.glob("*.json"))
        cards = [c for c in cards if c.name != "resume.json"]
        if len(cards) == 1:
            return cards[0]
        if (p / "model.json").exists():
            return p / "model.json"
        raise CheckpointError(f"{p}: expected one model card (.json) in the folder, found {len(cards)}")
    for candidate in (p, p.with_suffix(".json"), Path(str(p) + ".json")):
        if candidate.suffix == ".json" and candidate.is_file():
            return candidate
    card = p.with_suffix(".json").name
    if p.suffix == ".safetensors" and p.is_file():
        raise CheckpointError(f"{p}: its model card {card} is missing (a checkpoint is the two files together)")
    if p.is_file():
        raise CheckpointError(f"{p}: not a checkpoint (give a model card .json, its .safetensors or its folder)")
    raise CheckpointError(f"{p}: no such checkpoint (looked for {card})")


def read_card(card_path: Path) -> dict[str, Any]:
    try:
        card = json.loads(card_path.read_text())
    except OSError as exc:
        raise CheckpointError(f"{card_path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{card_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(card, dict) or ("model" not in card and "members" not in card):
        raise CheckpointError(f"{card_path}: not a digitrec model card (no 'model' or 'members')")
    _check_card(card_path, card)
    return card


def _check_card(card_path: Path, card: dict[str, Any]) -> None:
    """The fields every reader of a card relies on, checked once when it is read: a hand-edited or truncated
    card is one CheckpointError naming the file and the field, not an error deep in torch or a NaN later."""
    if "members" in card:
        members = card["members"]
        if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
            raise CheckpointError(f"{card_path}: 'members' must be a non-empty list of member names, "
                                  f"got {json.dumps(members)[:80]}")
    elif not isinstance(card["model"], str):
        raise CheckpointError(f"{card_path}: 'model' must be a model name, got {json.dumps(card['model'])[:80]}")
    if "temperature" in card:
        t = card["temperature"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise CheckpointError(f"{card_path}: 'temperature' must be a finite positive number, "
                                  f"got {json.dumps(t)[:80]}")


class Ensemble(nn.Module):
    """Averages members' calibrated softmax outputs; returns log-probabilities, so argmax and NLL work
    as for logits and the ensemble needs no temperature of its own (each member brings the one fitted
    on its own validation split)."""

    def __init__(self, members: list[nn.Module], temperatures: list[float] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperatures = temperatures or [1.0] * len(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([(m(x).float() / t).softmax(1)
                             for m, t in zip(self.members, self.temperatures, strict=True)]).mean(0)
        return probs.clamp_min(1e-12).log()


@dataclass
class Checkpoint:
    model: nn.Module
    card: dict[str, Any]
    path: Path

    @property
    def temperature(self) -> float:
        return float(self.card.get("temperature", 1.0))


def model_name(loaded: Checkpoint) -> str:
    """What to call a model: its card's stem ('distilled', 'ensemble'), or its folder for `run/model.json`."""
    stem = loaded.path.stem
    return loaded.path.parent.name if stem == "model" and loaded.path.parent.name else stem


def warn_if_other_dataset(loaded: Checkpoint, dataset: str) -> None:
    """One line on stderr when a model is measured on a dataset it was not trained on: allowed (a cross-dataset
    check), but never silently, since the figures then say little about the model."""
    from digitrec.data import get_spec

    get_spec(dataset)  # an unknown name is the error, with no warning about it first
    trained_on = loaded.card.get("dataset", "mnist")
    if dataset != trained_on:
        print(f"digitrec: warning: {loaded.path} was trained on {trained_on}, evaluated here on {dataset}",
              file=sys.stderr, flush=True)


def read_weights(card_path: Path, card: dict[str, Any]) -> tuple[Path, dict[str, torch.Tensor]]:
    """The safetensors file a card names (default: beside it, same stem) and its tensors."""
    weights = card_path.parent / card.get("weights", card_path.with_suffix(".safetensors").name)
    try:
        return weights, safetensors.torch.load_file(str(weights))
    except FileNotFoundError:
        raise CheckpointError(f"{weights}: weights file missing") from None
    except OSError as exc:  # a folder, no permission: not the file's content
        raise CheckpointError(f"{weights}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001  SafetensorError for a bad header; torch's own for bad tensors
        raise CheckpointError(f"{weights}: corrupt safetensors file ({exc})") from None


def _load_single(card_path: Path, card: dict[str, Any]) -> nn.Module:
    name = card["model"]
    if name == "crnn-reader":  # reader.json and its like: a real card, for `digitrec.reader`, not a digit model
        raise UsageError(f"{card_path}: a row reader (crnn-reader, for reading rows of digits), not a digit "
                         "model; give a digit model's checkpoint or --model NAME")
    try:
        get_spec(name)
    except UsageError as exc:  # a card from a newer digitrec, or hand-edited: say which card
        raise UsageError(f"{card_path}: {exc}") from None
    weights, state = read_weights(card_path, card)
    hparams = card.get("hparams", {})
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{card_path}: 'hparams' must be an object of NAME: VALUE, "
                              f"got {json.dumps(hparams)[:80]}")
    try:
        model = build_model(name, **hparams)
    except UsageError as exc:  # a hand-edited card: say which one
        raise CheckpointError(f"{card_path}: 'hparams': {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        first = first if len(first) <= 160 else first[:160] + "..."  # it can list every key of the model
        raise CheckpointError(f"{weights}: weights do not match model {name!r} ({first})") from None
    return model.eval()


def load(path: str | os.PathLike) -> Checkpoint:
    card_path = resolve(path)
    card = read_card(card_path)
    if "members" in card:
        return Checkpoint(ensemble_of(card["members"], card_path.parent), card, card_path)
    return Checkpoint(_load_single(card_path, card), card, card_path)


def ensemble_of(members: list[str], folder: Path) -> Ensemble:
    """The ensemble an ensemble card describes: its members' cards are `folder`/MEMBER.json, each bringing
    the temperature fitted on its own validation split."""
    paths = [folder / f"{m}.json" for m in members]
    cards = []
    for member, path in zip(members, paths, strict=True):
        try:
            cards.append(read_card(path))
        except CheckpointError as exc:  # an ensemble card copied away from its members, most often
            raise CheckpointError(f"ensemble member {member!r}: {exc}") from None
    models = [_load_single(p, c) for p, c in zip(paths, cards, strict=True)]
    return Ensemble(models, [float(c.get("temperature", 1.0)) for c in cards]).eval()


def bundled_dir() -> Path:
    return Path(str(resources.files("digitrec") / "weights"))


def bundled(name: str = "best") -> Checkpoint:
    card = bundled_dir() / f"{name}.json"
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise UnknownModelError(f"{name!r} is not a bundled model's name; give a path as the checkpoint instead")
    if not card.exists() or read_card(card).get("model") == "crnn-reader":
        available = sorted(p.stem for p in bundled_dir().glob("*.json")
                           if read_card(p).get("bundled", True))
        raise UnknownModelError(f"no bundled model {name!r}; bundled: {', '.join(available) or 'none'}")
    return load(card)


def choose(path: str | os.PathLike | None = None, name: str | None = None) -> Checkpoint:
    """The checkpoint a command names: `--checkpoint PATH`, else the bundled `--model NAME`, else the
    Recognizer's default; both given is a usage error."""
    if path is not None and name is not None:
        raise UsageError("give a checkpoint path (--checkpoint) or a bundled model's name (--model), not both")
    if path is not None:
        return load(path)
    return bundled(name) if name is not None else default_bundled()


def default_bundled() -> Checkpoint:
    """The Recognizer's default: `distilled`, the `best` network taught by the bundled ensemble
    (`train --teacher ensemble`) with the pen-ink and 1-flag augmentations (`--augment ...,ink=0.5,flag=0.3`).
    It reads writers outside MNIST better than `best` (36.7 of the 1,797 UCI digits misread, mean of
    benchmarks/real_handwriting.py's three forms, against 60.3; 98.05 % of held-out handwriting fonts'
    digits against 97.15 %), at one network's cost (docs/experiments.md). The ensemble costs 8x the
    compute per image, so it stays opt-in (`model="ensemble"`)."""
    for name in BUNDLED:
        if (bundled_dir() / f"{name}.json").exists():
            return bundled(name)
    raise CheckpointError("no bundled weights in this installation; train one with `digitrec train`")
