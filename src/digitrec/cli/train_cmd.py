"""`digitrec train` and `digitrec evaluate`."""

from __future__ import annotations

import json
import os
import shlex
import sys

import click
import numpy as np

from digitrec.atomic import writable_folder
from digitrec.cli import app, options
from digitrec.errors import UsageError


def _parse_arch(text: str | None) -> dict[str, int | float]:
    """'width=64,dropout=0.2' -> {'width': 64, 'dropout': 0.2} (whole numbers stay ints)."""
    out: dict[str, int | float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--arch: {part!r} is not NAME=NUMBER") from None
        out[key.strip()] = int(number) if sep and number.is_integer() and "." not in value else number
    return out


@app.command()
@click.option("--model", default="mlp", show_default=True, help="mlp (the seed), fast, or best")
@options.dataset
@click.option("--epochs", type=options.FiniteRange(min=0, max=100_000, min_open=True), default=None,
              help="Default: the model's recipe. A fraction (e.g. 0.8) stops the last epoch early.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per step (default: the recipe's).")
@click.option("--lr", type=options.FiniteRange(min=0, max=100, min_open=True), default=None,
              help="Peak learning rate (default: the recipe's).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--val", type=click.IntRange(min=0), default=0, show_default=True,
              help="Hold out N training images for validation (and temperature calibration).")
@click.option("--val-split", type=click.Choice(["random", "tail"]), default="random", show_default=True,
              help="Which N: a random draw, or the last N (MNIST keeps each writer's digits together, so "
                   "these are mostly other writers than the training digits').")
@click.option("--augment", default=None, help="e.g. 'rotate=10,elastic=0.5', or 'none'.")
@click.option("--arch", default=None, help="Architecture knobs, e.g. 'width=64' for best (see digitrec.models).")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train K members with seeds seed..seed+K-1 and write an ensemble card.")
@click.option("--tta/--no-tta", default=False, help="Evaluate with test-time augmentation.")
@click.option("--teacher", default=None,
              help="Distil from this checkpoint or bundled model (e.g. 'ensemble'): the student also learns "
                   "the teacher's soft labels.")
@click.option("--extra-digits", type=click.Path(dir_okay=False), default=None,
              help="Train on these labelled 28x28 digits too: an .npz with 'images' (uint8 [N, 28, 28], ink "
                   "bright) and 'labels', e.g. from `python tools/handwriting_fonts.py digits`.")
@click.option("--distill", type=options.FiniteRange(0, 1, min_open=True), default=None,
              help="With --teacher: weight of the soft labels (0.5).")
@click.option("--distill-temperature", type=options.FiniteRange(0, 1000, min_open=True), default=None,
              help="With --teacher: softening temperature of both outputs (4.0).")
@options.device
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--cuda-graphs/--no-cuda-graphs", default=True, show_default=True,
              help="On one CUDA GPU, replay each training step as a captured CUDA graph (much faster).")
@options.data_dir
@options.offline
@click.option("--out", default="runs/{model}-{dataset}-s{seed}", show_default=True, help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue from the last finished epoch in --out.")
@click.option("--tensorboard", type=click.Path(file_okay=False), default=None,
              help="Log scalars and sample images to this folder (needs digitrec[tensorboard]).")
@options.json_out
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
def train(model, dataset, epochs, batch_size, lr, seed, val, val_split, augment, arch, ensemble, tta, teacher,
          extra_digits, distill, distill_temperature, device, threads, cuda_graphs, data_dir, offline, out, resume,
          tensorboard, json_out, progress) -> None:
    """Train a model, evaluate it on the test set and save a checkpoint."""
    from digitrec.training import TrainConfig, end_distributed, out_folder
    from digitrec.training import train as run_training

    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, augment=options.parse_augment(augment),
                     distill=distill, distill_temperature=distill_temperature)
    model_kwargs = _parse_arch(arch)
    command = "digitrec " + shlex.join(sys.argv[1:]) if sys.argv and "digitrec" in sys.argv[0] else ""
    if ensemble > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--ensemble trains its members one after another in one process; under torchrun, "
                         "train each member with its own --seed instead")
    configs = []
    for k in range(ensemble):
        # Members must not overwrite each other: a fixed --out gets one sub-folder per seed.
        member_out = out if ensemble == 1 or "{seed}" in out else f"{out}/seed{seed + k}"
        member_log = f"{tensorboard}/seed{seed + k}" if tensorboard and ensemble > 1 else tensorboard  # runs apart
        configs.append(TrainConfig(model=model, dataset=dataset, seed=seed + k, val=val, val_split=val_split,
                                   device=device, out=member_out, data_dir=data_dir, offline=offline,
                                   resume=resume, threads=threads, tta=tta, progress=progress,
                                   tensorboard=member_log, command=command, overrides=overrides,
                                   cuda_graphs=cuda_graphs, model_kwargs=model_kwargs, teacher=teacher,
                                   extra_digits=extra_digits))
    for config in configs:  # every member's folder checked before any work
        try:
            folder = out_folder(config)
        except (KeyError, ValueError, IndexError) as exc:
            raise UsageError(f"--out {out!r}: only {{model}}, {{dataset}} and {{seed}} are filled in; write a "
                             f"literal brace as {{{{ or }}}} ({type(exc).__name__}: {exc})") from None
        writable_folder(folder if config.out.strip() else config.out)  # an empty --out is refused there
    results = []
    for k, config in enumerate(configs):
        folder = out_folder(config)
        if resume and ensemble > 1 and (folder / "model.json").exists() and not (folder / "resume.pt").exists():
            # an ensemble resumed after a later member was interrupted: this member is done, keep it
            from digitrec.checkpoint import read_card

            card = read_card(folder / "model.json")  # a corrupt card: a CheckpointError line, not a traceback
            metrics = card.get("metrics") or {}
            results.append(dict(model=model, dataset=dataset, seed=seed + k, steps=card.get("steps"),
                                test_accuracy=metrics.get("test_accuracy"), test_loss=metrics.get("test_loss"),
                                train_seconds=card.get("train_seconds"), checkpoint=str(folder / "model.json")))
            print(f"member seed {seed + k} already finished -> {folder / 'model.json'}")
            continue
        try:
            result = run_training(config)
        except KeyboardInterrupt:
            state = out_folder(config) / "resume.pt"
            if state.exists():
                print(f"digitrec: note: {state} keeps the finished epochs; the same command with --resume goes on",
                      file=sys.stderr, flush=True)
            raise
        if not result:  # a non-zero DDP rank
            end_distributed()
            return
        results.append(result)
        print(f"test accuracy {result['test_accuracy']:.4f}  test loss {result['test_loss']:.4f}  "
              f"train {result['train_seconds']:.2f}s  -> {result['checkpoint']}")
    if ensemble > 1:
        from digitrec.ensemble import write_ensemble

        results.append(write_ensemble([r["checkpoint"] for r in results], dataset, tta,
                                      data_dir, offline, command, device=device))
        print(f"ensemble of {ensemble}: test accuracy {results[-1]['test_accuracy']:.4f}"
              f"  -> {results[-1]['checkpoint']}")
    if json_out:
        print(json.dumps(results[-1]))
    end_distributed()  # under torchrun: leave without the gloo teardown that can deadlock


@app.command()
@options.model_choice(default="best")
@click.option("--dataset", default=None, help="Default: the checkpoint's dataset.")
@click.option("--tta/--no-tta", default=None, help="Default: as the checkpoint was evaluated.")
@options.device
@options.data_dir
@options.offline
@options.json_out
def evaluate(checkpoint, model, dataset, tta, device, data_dir, offline, json_out) -> None:
    """Accuracy, loss, per-class precision/recall and the confusion matrix on the test set."""
    from digitrec import checkpoint as ckpt
    from digitrec.data import load_dataset
    from digitrec.inference import pick_device, predict_logits
    from digitrec.metrics import summarize

    loaded = ckpt.load(checkpoint) if checkpoint else ckpt.bundled(model or "best")
    name = dataset or loaded.card.get("dataset", "mnist")
    ckpt.warn_if_other_dataset(loaded, name)
    data = load_dataset(name, "test", data_dir, offline)
    use_tta = loaded.card.get("tta", False) if tta is None else tta
    dev = pick_device(device)
    logits = predict_logits(loaded.model.to(dev), data.images, device=dev, tta=use_tta)
    result = summarize(logits, data.labels, len(data.classes))
    result.update(checkpoint=str(loaded.path), dataset=name, tta=use_tta)
    if json_out:
        print(json.dumps(result))
        return
    print(f"{loaded.path}  on {name} test ({result['n']} images{', TTA' if use_tta else ''})")
    print(f"accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}")
    print("class  precision  recall     f1  support")
    for c, row in enumerate(result["per_class"]):
        print(f"{data.classes[c][:5]:>5}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}"
              f"  {row['support']:7d}")
    print("confusion (rows true, columns predicted):")
    print(np.array(result["confusion"]))
