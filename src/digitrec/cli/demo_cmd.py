"""`digitrec demo`: the whole job from nothing — data, training, test accuracy, sample predictions."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from digitrec.atomic import writable_folder
from digitrec.cli import app, options
from digitrec.errors import UsageError


@app.command()
@click.option("--out", default="demo-out", show_default=True, help="Folder for checkpoints and the picture.")
@click.option("--models", default="mlp,fast", show_default=True, help="Comma-separated models to train.")
@options.seed
@options.data_dir
@options.offline
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
def demo(out, models, seed, data_dir, offline, progress) -> None:
    """Train the seed MLP and the fast CNN on MNIST, evaluate them, show sample predictions."""
    from digitrec import checkpoint
    from digitrec.data import load_dataset
    from digitrec.inference import predict_logits
    from digitrec.models import get_spec
    from digitrec.plots import save_digit_grid
    from digitrec.training import TrainConfig, train

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise UsageError(f"--models {models!r}: name at least one model (e.g. mlp,fast)")
    for name in names:
        get_spec(name)  # fail fast on a typo, before any training
    writable_folder(out)  # and on an --out nothing could be saved in (an empty one would train into ./NAME)
    for name in names:
        writable_folder(Path(out) / name)
    results = []
    for name in names:
        click.echo(f"== training {name}: {get_spec(name).description}")
        results.append(train(TrainConfig(model=name, seed=seed, out=str(Path(out) / name), data_dir=data_dir,
                                         offline=offline, progress=progress, command="digitrec demo")))
    click.echo("\nmodel   test accuracy   train seconds")
    for r in results:
        click.echo(f"{r['model']:6s}  {r['test_accuracy']:13.4f}   {r['train_seconds']:13.2f}")
    best = max(results, key=lambda r: r["test_accuracy"])
    test = load_dataset("mnist", "test", data_dir, offline, progress)
    pick = np.random.default_rng(seed).choice(len(test), 20, replace=False)
    logits = predict_logits(checkpoint.load(best["checkpoint"]).model, test.images[pick])
    preds = logits.argmax(1)
    click.echo(f"\nsample predictions by {best['model']}:")
    for p, y in zip(preds[:10], test.labels[pick][:10], strict=True):
        click.echo(f"  predicted {p}, actual {y}{'' if p == y else '   <- wrong'}")
    picture = Path(out) / "predictions.png"
    save_digit_grid(picture, test.images[pick], [f"pred {p} / true {y}" for p, y in zip(preds, test.labels[pick],
                                                                                       strict=True)],
                    title=f"{best['model']}: test accuracy {best['test_accuracy']:.4f}",
                    colors=["green" if p == y else "red" for p, y in zip(preds, test.labels[pick], strict=True)])
    click.echo(f"wrote {picture}")
