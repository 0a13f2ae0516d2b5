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
from pathlib import Path

from digitrec import checkpoint
from digitrec.data import load_dataset
from digitrec.ensemble import write_ensemble
from digitrec.errors import DigitrecError
from digitrec.inference import predict_logits
from digitrec.metrics import fit_temperature, summarize
from digitrec.training import split_validation

WEIGHTS = Path(__file__).resolve().parent.parent / "src" / "digitrec" / "weights"


def copy_checkpoint(src: Path, name: str, command: str | None) -> Path:
    card_path = checkpoint.resolve(src)
    card = checkpoint.read_card(card_path)
    shutil.copyfile(card_path.parent / card["weights"], WEIGHTS / f"{name}.safetensors")
    card["weights"] = f"{name}.safetensors"
    if command and not card.get("command"):
        card["command"] = command
    dest = WEIGHTS / f"{name}.json"
    dest.write_text(json.dumps(card, indent=2) + "\n")
    # Re-measure on the CPU inference path users get, so `digitrec evaluate` reproduces the card exactly
    # (a GPU's convolution kernels can flip a borderline test image).
    test = load_dataset(card["dataset"], "test")
    metrics = summarize(predict_logits(checkpoint.load(dest).model, test.images, tta=card.get("tta", False)),
                        test.labels, len(test.classes))
    card["metrics_at_training"] = card["metrics"]
    card["metrics"] = dict(test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
                           per_class=metrics["per_class"], measured_on="cpu")
    dest.write_text(json.dumps(card, indent=2) + "\n")
    return dest


def copy_reader(src: Path, name: str, companions: list[dict] | None = None) -> Path:
    """A row reader's card and weights as weights/NAME.*; its card keeps its validation figures (it is
    judged on the test set by benchmarks/user_like_accuracy.py, through read_number). `companions`:
    entries {"card": ..., "weight": ...} for readers whose likelihoods it adds when scoring (reader.py)."""
    from digitrec.reader import READER_NAME, Reader

    src = src / f"{READER_NAME}.json" if src.is_dir() else src.with_suffix(".json")
    card = checkpoint.read_card(src)
    shutil.copyfile(src.parent / card["weights"], WEIGHTS / f"{name}.safetensors")
    card["weights"] = f"{name}.safetensors"
    card.pop("companions", None)
    if companions:
        card["companions"] = companions
    dest = WEIGHTS / f"{name}.json"
    dest.write_text(json.dumps(card, indent=2) + "\n")
    Reader.load(dest)  # loads, or raises
    return dest


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
            card_path.write_text(json.dumps(card, indent=2) + "\n")
    ensemble = checkpoint.read_card(WEIGHTS / "ensemble.json")
    members = [WEIGHTS / f"{Path(m).name}.json" for m in ensemble["members"]]
    print(json.dumps(write_ensemble(members, ensemble["dataset"], tta=ensemble["tta"],
                                    command=ensemble["command"], out=WEIGHTS / "ensemble.json")))


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

    if args.distilled:
        print(copy_checkpoint(args.distilled, "distilled", None))
        if not (args.best or args.reader):
            return
    if args.companions and not args.reader:
        parser.error("--companions needs --reader")
    if args.reader:
        from digitrec.reader import READER_NAME

        # companions first: the main reader's card names them, and loading it checks they load
        entries = [dict(card=copy_reader(path, f"{READER_NAME}-{k}").name, weight=args.companion_weight)
                   for k, path in enumerate(args.companions, start=1)]
        print(copy_reader(args.reader, READER_NAME, entries))
    if args.best is None:
        if args.members or args.fast:
            parser.error("--members and --fast need --best")
        if not args.reader:
            parser.error("give --best and/or --reader")
        return
    cards = [copy_checkpoint(args.best, "best", command_for(args.best))]
    for k, member in enumerate(args.members, start=1):
        cards.append(copy_checkpoint(member, f"ensemble-{k}", command_for(member)))
    if args.fast:
        copy_checkpoint(args.fast, "fast", None)
    if args.members:
        result = write_ensemble(cards, checkpoint.read_card(cards[0])["dataset"], tta=True,
                                command="python tools/bundle_weights.py (averages the members' softmax)",
                                out=WEIGHTS / "ensemble.json")
        print(json.dumps(result))
    for card in sorted(WEIGHTS.glob("*.json")):
        print(card.name, checkpoint.read_card(card).get("metrics", {}).get("test_accuracy"))


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as err:  # a missing or corrupt checkpoint: one line, not a traceback
        raise SystemExit(f"bundle_weights: error: {err}") from None
