"""Copy trained checkpoints into the package as its bundled weights, and build the bundled ensemble.

The members were trained by the project's own command (recorded in each card), e.g. on a GPU:
    digitrec train --model best --seed S --val 1000 --tta --device cuda      for S = 0..7
Usage:
    python tools/bundle_weights.py --best runs/best-s0 --members runs/best-s1 ... [--fast runs/fast-s0]
    python tools/bundle_weights.py --reader runs/reader-s0       # the row reader (`digitrec train-reader`)
    python tools/bundle_weights.py --reader runs/reader-a --companions runs/reader-b   # plus companion readers
    python tools/bundle_weights.py --distilled runs/kd-s0   # the default single model (`train --teacher`)
    python tools/bundle_weights.py --refit-temperatures   # refit the bundled cards' temperatures, re-measure
The first checkpoint (--best) is also ensemble member 0, so its weights ship once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from digitrec import checkpoint
from digitrec.atomic import atomic_write_text, staged_path
from digitrec.data import load_dataset
from digitrec.ensemble import write_ensemble
from digitrec.errors import DigitrecError
from digitrec.inference import predict_logits
from digitrec.metrics import fit_temperature, summarize
from digitrec.training import split_validation

WEIGHTS = Path(__file__).resolve().parent.parent / "src" / "digitrec" / "weights"


def _install(staged: Path, name: str) -> Path:
    """Move a staged NAME.safetensors and NAME.json into the package, each by an atomic rename (weights
    first: a card never names weights that are not there yet)."""
    with staged_path(WEIGHTS / f"{name}.safetensors") as tmp:
        shutil.copyfile(staged / f"{name}.safetensors", tmp)
    atomic_write_text(WEIGHTS / f"{name}.json", (staged / f"{name}.json").read_text())
    return WEIGHTS / f"{name}.json"


def copy_checkpoint(src: Path, name: str, command: str | None) -> Path:
    """A digit model's card and weights as weights/NAME.*, its test figures re-measured on the CPU first: a
    failure anywhere leaves the bundled files as they were."""
    card_path = checkpoint.resolve(src)
    card = checkpoint.read_card(card_path)
    card["weights"] = f"{name}.safetensors"
    if command and not card.get("command"):
        card["command"] = command
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging)
        shutil.copyfile(card_path.parent / checkpoint.read_card(card_path)["weights"], staged / card["weights"])
        (staged / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
        # Re-measure on the CPU inference path users get, so `digitrec evaluate` reproduces the card exactly
        # (a GPU's convolution kernels can flip a borderline test image).
        test = load_dataset(card["dataset"], "test")
        model = checkpoint.load(staged / f"{name}.json").model
        metrics = summarize(predict_logits(model, test.images, device=torch.device("cpu"), tta=card.get("tta", False)),
                            test.labels, len(test.classes))
        card["metrics_at_training"] = card["metrics"]
        card["metrics"] = dict(test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
                               per_class=metrics["per_class"], measured_on="cpu")
        (staged / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
        return _install(staged, name)


def copy_reader(src: Path, name: str, companions: list[dict] | None = None) -> Path:
    """A row reader's card and weights as weights/NAME.*; its card keeps its validation figures (it is
    judged on the test set by benchmarks/user_like_accuracy.py, through read_number). `companions`:
    entries {"card": ..., "weight": ...} for readers whose likelihoods it adds when scoring (reader.py)."""
    from digitrec.reader import READER_NAME, Reader

    src = src / f"{READER_NAME}.json" if src.is_dir() else src.with_suffix(".json")
    card = checkpoint.read_card(src)
    weights = src.parent / card["weights"]
    card["weights"] = f"{name}.safetensors"
    card.pop("companions", None)
    if companions:
        card["companions"] = companions
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging)
        shutil.copyfile(weights, staged / card["weights"])
        (staged / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
        for entry in companions or []:  # already installed: the staged card names them beside it
            for suffix in (".json", ".safetensors"):
                shutil.copyfile(WEIGHTS / Path(entry["card"]).with_suffix(suffix).name,
                                staged / Path(entry["card"]).with_suffix(suffix).name)
        Reader.load(staged / f"{name}.json")  # loads, or raises before anything is installed
        return _install(staged, name)


def refit_temperatures() -> None:
    """Refit each bundled digit model's temperature on its own validation split (the card's seed, val and
    val_split, with its TTA), as `digitrec train` does now; a card changes when its fit moves by over 1 %.
    Then re-measure the ensemble, whose softmax average uses them. Argmax is untouched, so each model's
    own test accuracy stays what its card says."""
    train = load_dataset("mnist", "train")
    for card_path in sorted(WEIGHTS.glob("*.json")):
        card = checkpoint.read_card(card_path)
        if card.get("model") in (None, "crnn-reader") or not card.get("val"):
            continue
        _, val_idx = split_validation(train, int(card["val"]), int(card["seed"]), card.get("val_split", "random"))
        logits = predict_logits(checkpoint.load(card_path).model, train.images[val_idx], tta=card.get("tta", False))
        new = fit_temperature(logits, train.labels[val_idx])
        right = int((logits.argmax(1) == train.labels[val_idx]).sum())
        print(f"{card_path.name}: {right}/{len(val_idx)} right on its validation split, "
              f"temperature {card['temperature']:.4f} -> {new:.4f}")
        if abs(new / card["temperature"] - 1) > 0.01:  # not CPU-vs-GPU jitter in a fit that had a minimum
            card.setdefault("temperature_history", []).append(card["temperature"])
            card["temperature"] = new
            atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    remeasure_ensemble()


def remeasure_ensemble() -> None:
    """Measure the bundled ensemble again (on the CPU) after a member or its temperature changed."""
    ensemble = checkpoint.read_card(WEIGHTS / "ensemble.json")
    members = [WEIGHTS / f"{Path(m).name}.json" for m in ensemble["members"]]
    print(json.dumps(write_ensemble(members, ensemble["dataset"], tta=ensemble["tta"],
                                    command=ensemble["command"], out=WEIGHTS / "ensemble.json", device="cpu")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--best", type=Path)
    parser.add_argument("--reader", type=Path, help="a `digitrec train-reader` output folder")
    parser.add_argument("--companions", nargs="*", type=Path, default=[],
                        help="more reader folders whose CTC likelihoods the bundled reader adds when scoring")
    parser.add_argument("--companion-weight", type=float, default=1.0)
    parser.add_argument("--members", nargs="*", type=Path, default=[])
    parser.add_argument("--fast", type=Path)
    parser.add_argument("--distilled", type=Path, help="a `digitrec train --teacher ...` output folder")
    parser.add_argument("--command", default="digitrec train --model best --seed {seed} --val 1000 --tta "
                                              "--device cuda")
    parser.add_argument("--refit-temperatures", action="store_true",
                        help="refit the bundled digit models' temperatures and re-measure the ensemble")
    args = parser.parse_args()
    if args.refit_temperatures:
        refit_temperatures()
        return

    def command_for(path: Path) -> str:
        seed = checkpoint.read_card(checkpoint.resolve(path))["seed"]
        return args.command.format(seed=seed)

    if not (args.best or args.reader or args.distilled):
        parser.error("give --best (with --members, --fast), --reader (with --companions), --distilled, or "
                     "--refit-temperatures")
    if args.companions and not args.reader:
        parser.error("--companions needs --reader")
    if (args.members or args.fast) and not args.best:
        parser.error("--members and --fast need --best")
    if args.distilled:
        print(copy_checkpoint(args.distilled, "distilled", None))
    if args.reader:
        from digitrec.reader import READER_NAME

        # companions first: the main reader's card names them, and loading it checks they load
        entries = [dict(card=copy_reader(path, f"{READER_NAME}-{k}").name, weight=args.companion_weight)
                   for k, path in enumerate(args.companions, start=1)]
        print(copy_reader(args.reader, READER_NAME, entries))
    if args.best is None:
        return
    cards = [copy_checkpoint(args.best, "best", command_for(args.best))]
    for k, member in enumerate(args.members, start=1):
        cards.append(copy_checkpoint(member, f"ensemble-{k}", command_for(member)))
    if args.fast:
        copy_checkpoint(args.fast, "fast", None)
    if args.members:
        result = write_ensemble(cards, checkpoint.read_card(cards[0])["dataset"], tta=True,
                                command="python tools/bundle_weights.py (averages the members' softmax)",
                                out=WEIGHTS / "ensemble.json", device="cpu")
        print(json.dumps(result))
    elif (WEIGHTS / "ensemble.json").exists():  # `best` is member 0 of the bundled ensemble
        remeasure_ensemble()
    for card in sorted(WEIGHTS.glob("*.json")):
        print(card.name, checkpoint.read_card(card).get("metrics", {}).get("test_accuracy"))


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as err:  # a missing or corrupt checkpoint: one line, not a traceback
        raise SystemExit(f"bundle_weights: error: {err}") from None
