"""`digitrec data info` and `digitrec data show`."""

from __future__ import annotations

import json

import click
import numpy as np

from digitrec.atomic import writable_file
from digitrec.cli import data_app, options


@data_app.command("info")
@options.dataset
@options.data_dir
@options.offline
@options.json_out
def info(dataset, data_dir, offline, json_out) -> None:
    """Counts, class balance, pixel mean/std and checksum status of each split."""
    from digitrec.data import get_spec, load_dataset
    from digitrec.data.fetch import data_root

    spec = get_spec(dataset)
    report: dict = dict(dataset=dataset, folder=str(data_root(data_dir) / dataset), classes=list(spec.classes))
    for split in ("train", "test"):
        d = load_dataset(dataset, split, data_dir, offline)  # verifies every file's sha256
        pixels = d.images.astype(np.float32) / 255
        report[split] = dict(n=len(d), shape=list(d.images.shape[1:]),
                             class_counts=np.bincount(d.labels, minlength=len(spec.classes)).tolist(),
                             pixel_mean=round(float(pixels.mean()), 4), pixel_std=round(float(pixels.std()), 4),
                             checksums={f: "ok" for f in d.sha256})
    if json_out:
        print(json.dumps(report))
        return
    print(f"{dataset}  ({report['folder']})")
    for split in ("train", "test"):
        r = report[split]
        print(f"  {split:5} {r['n']:6d} images {r['shape'][0]}x{r['shape'][1]}  pixel mean {r['pixel_mean']:.4f}"
              f"  std {r['pixel_std']:.4f}  sha256 ok")
        print("        per class: " + " ".join(f"{spec.classes[c]}={n}" for c, n in enumerate(r["class_counts"])))


@data_app.command("show")
@click.option("--out", default="grid.png", show_default=True,
              help="Image to write, in the format its suffix names (.png, .jpg, .pdf, .svg, ...).")
@options.dataset
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--n", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@options.data_dir
@options.offline
def show(out, dataset, split, n, seed, data_dir, offline) -> None:
    """Write a grid of sample images with their labels."""
    from digitrec.data import load_dataset
    from digitrec.plots import image_format, save_digit_grid

    writable_file(out)
    image_format(out)  # an unknown suffix is refused, not written as PNG under that name
    d = load_dataset(dataset, split, data_dir, offline)
    idx = np.random.default_rng(seed).choice(len(d), size=min(n, len(d)), replace=False)
    save_digit_grid(out, d.images[idx], [d.classes[label] for label in d.labels[idx]],
                    title=f"{dataset} {split}: {len(idx)} samples")
    print(f"wrote {out}")
