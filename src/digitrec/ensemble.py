"""Combine trained checkpoints into an ensemble card and measure it on the test set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from digitrec import checkpoint
from digitrec.atomic import atomic_write_text
from digitrec.data import load_dataset
from digitrec.inference import pick_device, predict_logits
from digitrec.metrics import summarize


def write_ensemble(member_cards: list[str | os.PathLike], dataset: str, tta: bool,
                   data_dir: str | os.PathLike | None = None, offline: bool = False, command: str = "",
                   out: str | os.PathLike | None = None, device: str = "auto") -> dict[str, Any]:
    """Measure the members' ensemble on the test set (on `device`), then write its card, once, next to the
    members' folders (or at `out`); return a train-style result record."""
    cards = [Path(c) for c in member_cards]
    out_path = Path(out) if out else cards[0].parent.parent / f"{cards[0].parent.name}-ensemble" / "ensemble.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    members = [os.path.relpath(c.with_suffix(""), out_path.parent) for c in cards]
    member_info = [checkpoint.read_card(c) for c in cards]
    card: dict[str, Any] = dict(
        members=members, dataset=dataset, tta=tta, command=command,
        temperature=1.0, data_sha256=member_info[0].get("data_sha256", {}),
        member_seeds=[m.get("seed") for m in member_info],
        member_test_accuracy=[m.get("metrics", {}).get("test_accuracy") for m in member_info],
        train_seconds=sum(float(m.get("train_seconds", 0.0)) for m in member_info),
        versions=checkpoint.library_versions(),
    )
    model = checkpoint.ensemble_of(members, out_path.parent)
    dev = pick_device(device)
    data = load_dataset(dataset, "test", data_dir, offline)
    metrics = summarize(predict_logits(model.to(dev), data.images, device=dev, tta=tta),
                        data.labels, len(data.classes))
    card["metrics"] = dict(test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
                           per_class=metrics["per_class"])
    atomic_write_text(out_path, json.dumps(card, indent=2) + "\n")  # a card only once it has its figures
    return dict(model="ensemble", dataset=dataset, epochs=member_info[0].get("recipe", {}).get("epochs"),
                seed=member_info[0].get("seed"), test_accuracy=metrics["accuracy"],
                test_loss=metrics["loss"], train_seconds=round(card["train_seconds"], 3),
                checkpoint=str(out_path), members=len(cards))
