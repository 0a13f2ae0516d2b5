"""End to end: the `digitrec` command on the real MNIST files, and every bad input it must refuse."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import assert_one_line_error, run_cli, run_main

REQUIRED = {"model", "dataset", "epochs", "seed", "test_accuracy", "test_loss", "train_seconds", "checkpoint"}


def test_train_mlp_one_epoch_reaches_93_percent(mlp_run):
    assert REQUIRED <= set(mlp_run)
    assert mlp_run["model"] == "mlp" and mlp_run["dataset"] == "mnist" and mlp_run["epochs"] == 1
    assert mlp_run["test_accuracy"] >= 0.93
    assert 0 < mlp_run["test_loss"] < 0.5
    assert mlp_run["train_seconds"] > 0
    assert mlp_run["val_accuracy"] >= 0.90


def test_checkpoint_files_and_model_card(mlp_run):
    card_path = Path(mlp_run["checkpoint"])
    card = json.loads(card_path.read_text())
    assert card_path.with_suffix(".safetensors").stat().st_size > 300_000  # 79,510 float32 parameters
    assert card["model"] == "mlp" and card["recipe"]["optimizer"] == "adam"
    assert card["recipe"]["batch_size"] == 32 and card["recipe"]["epochs"] == 1
    assert card["data_sha256"]["train-images-idx3-ubyte.gz"].startswith("440fcabf")
    assert card["metrics"]["test_accuracy"] == mlp_run["test_accuracy"]
    assert len(card["history"]) == 1 and {"train_loss", "val_accuracy"} <= set(card["history"][0])
    assert {"torch", "numpy", "digitrec"} <= set(card["versions"])
    assert 0.2 < card["temperature"] < 5
    assert not list(card_path.parent.glob("*.part")) and not (card_path.parent / "resume.pt").exists()


def test_evaluate_reads_checkpoint_back_and_agrees(mlp_run):
    proc = run_cli("evaluate", "--checkpoint", mlp_run["checkpoint"], "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"accuracy", "loss", "n", "per_class", "confusion"} <= set(result)
    assert result["n"] == 10_000
    assert result["accuracy"] == pytest.approx(mlp_run["test_accuracy"], abs=1e-9)
    assert result["loss"] == pytest.approx(mlp_run["test_loss"], rel=1e-4)
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    assert np.trace(confusion) / 10_000 == pytest.approx(result["accuracy"])
    assert [row["support"] for row in result["per_class"]] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_evaluate_human_readable(mlp_run):
    proc = run_main("evaluate", "--checkpoint", str(Path(mlp_run["checkpoint"]).parent))
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "confusion" in proc.stdout and "precision" in proc.stdout


def test_same_seed_same_result(tmp_path):
    from digitrec.training import TrainConfig, train

    def once(out):
        return train(TrainConfig(model="mlp", seed=3, out=str(out), progress=False,
                                 overrides=dict(epochs=1, batch_size=256)))

    a, b = once(tmp_path / "a"), once(tmp_path / "b")
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
    wa = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_data_info_and_show(tmp_path):
    proc = run_main("data", "info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["train"]["n"] == 60000 and info["test"]["n"] == 10000
    assert info["train"]["class_counts"][1] == 6742
    assert abs(info["train"]["pixel_mean"] - 0.1307) < 1e-3 and abs(info["train"]["pixel_std"] - 0.3081) < 1e-3
    out = tmp_path / "grid.png"
    proc = run_main("data", "show", "--out", str(out), "--n", "16")
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


# --- bad input: one line, non-zero exit, no traceback, no partial file -------------------------------

@pytest.mark.parametrize("args, fragments, code", [
    (["train", "--model", "resnet999"], ["unknown model 'resnet999'", "mlp"], 2),
    (["train", "--dataset", "cifar"], ["unknown dataset 'cifar'", "mnist"], 2),
    (["train", "--epochs", "0"], ["--epochs"], 2),
    (["train", "--epochs", "abc"], ["--epochs"], 2),
    (["train", "--lr", "-1"], ["--lr"], 2),
    (["train", "--augment", "rotate=x"], ["--augment"], 2),
    (["train", "--augment", "wobble=1"], ["unknown augmentation", "wobble"], 2),
    (["train", "--augment", "hflip=2"], ["--augment hflip=2: must be 0 to 1"], 2),
    (["train", "--augment", "rotate=1000"], ["--augment rotate=1000: must be 0 to 180"], 2),
    (["train", "--augment", "scale=-1"], ["--augment scale=-1: must be 0 to 0.9"], 2),
    (["train", "--augment", "hflip=0.5"], ["--augment hflip: a mirrored digit is another digit"], 2),
    (["train", "--dataset", "fashion-mnist", "--augment", "flag=0.5"],
     ["--augment flag: draws the flag of a handwritten 1; not for fashion-mnist"], 2),
    (["train", "--model", "best", "--arch", "widht=64"], ["unknown architecture option", "widht", "width"], 2),
    (["train", "--model", "best", "--arch", "width=wide"], ["--arch", "width=wide"], 2),
    (["train", "--model", "best", "--arch", "width=-8"], ["cannot be built", "width"], 2),
    (["train", "--no-such-flag"], ["--no-such-flag"], 2),
    (["train", "--distill", "0.3"], ["--distill", "need --teacher"], 2),
    (["train", "--teacher", "ensemble", "--distill", "2"], ["--distill", "0<x<=1"], 2),
    (["train", "--teacher", "nope", "--epochs", "0.01"], ["--teacher nope", "no bundled model 'nope'"], 2),
    (["train", "--teacher", "src/digitrec/weights/reader.json", "--epochs", "0.01"],
     ["--teacher src/digitrec/weights/reader.json", "a row reader", "not a digit model"], 2),
    (["train", "--dataset", "fashion-mnist", "--teacher", "best", "--epochs", "0.01"],
     ["--teacher best", "trained on 'mnist', not 'fashion-mnist'"], 2),
    (["train", "--device", "tpu"], ["--device"], 2),
    (["train", "--epochs", "nan"], ["--epochs", "'nan' is not a number"], 2),
    (["train", "--dataset", "fashion-mnist", "--extra-digits", "README.md"],
     ["--extra-digits", "not fashion-mnist"], 2),
    (["train-reader", "--digit-augment", "rotate=nan"], ["--digit-augment rotate=nan: must be 0 to 180"], 2),
    (["train", "--epochs", "inf"], ["--epochs"], 2),
    (["train", "--seed", "100000000000000000"], ["--seed"], 2),
    (["train", "--lr", "inf"], ["--lr"], 2),
    (["evaluate", "--checkpoint", "/nonexistent/model.json"], ["/nonexistent/model", "no such checkpoint"], 1),
    (["evaluate", "--checkpoint", "README.md"], ["README.md: not a checkpoint", "model card .json"], 1),
    (["evaluate", "--checkpoint", "src/digitrec/weights/__init__.py"], ["__init__.py: not a checkpoint"], 1),
    (["evaluate", "--checkpoint", "x.json", "--model", "best"], ["(--model), not both"], 2),
    (["predict", "--checkpoint", "x.json", "--model", "best", "digit.png"], ["not both"], 2),
    (["data", "info", "--dataset", "nope"], ["unknown dataset 'nope'"], 2),
    # a size of 0 builds a module that fails only in its first step: caught when the model is built
    (["train", "--model", "fast", "--arch", "c1=0"], ["cannot be built", "'c1': 0"], 2),
    # no bundled model by that name is a usage error (2), as a bad --model value of `train` is
    (["evaluate", "--model", "fast"], ["no bundled model 'fast'", "distilled"], 2),
    (["predict", "--model", "bogus", "digit.png"], ["no bundled model 'bogus'", "distilled"], 2),
    (["demo", "--models", " , "], ["--models", "at least one model"], 2),  # was a ValueError
])
def test_bad_arguments(args, fragments, code, tmp_path):
    proc = run_main(*args, "--out", str(tmp_path / "o")) if args[0] == "train" else run_main(*args)
    assert_one_line_error(proc, *fragments, code=code)
    assert not (tmp_path / "o").exists()


def test_digit_reading_refuses_a_fashion_model(tmp_path):
    """predict (and serve, and the Recognizer) normalise every image as a digit: clothes would be wrecked."""
    from digitrec import Recognizer, checkpoint
    from digitrec.errors import UsageError

    card = json.loads((checkpoint.bundled_dir() / "best.json").read_text())
    card.update(dataset="fashion-mnist", weights=str(checkpoint.bundled_dir() / "best.safetensors"))
    path = tmp_path / "fashion.json"
    path.write_text(json.dumps(card))
    with pytest.raises(UsageError, match="a fashion-mnist model; the Recognizer"):
        Recognizer.load(path)
    assert_one_line_error(run_main("predict", "--checkpoint", str(path), str(path)),
                          "a fashion-mnist model", "evaluate and report take it", code=2)


def test_a_card_naming_an_unknown_model_names_the_card(tmp_path):
    from digitrec import checkpoint

    card = json.loads((checkpoint.bundled_dir() / "best.json").read_text())
    card["model"] = "nonsense"
    (tmp_path / "odd.json").write_text(json.dumps(card))
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(tmp_path / "odd.json")),
                          f"{tmp_path / 'odd.json'}: unknown model 'nonsense'", code=2)


def test_report_warns_like_evaluate_on_another_dataset(capsys):
    from digitrec import checkpoint

    loaded = checkpoint.bundled("best")
    checkpoint.warn_if_other_dataset(loaded, "mnist")
    assert capsys.readouterr().err == ""
    checkpoint.warn_if_other_dataset(loaded, "fashion-mnist")
    assert capsys.readouterr().err.strip() == (f"digitrec: warning: {loaded.path} was trained on mnist, evaluated "
                                               "here on fashion-mnist")


def test_cross_dataset_evaluation_and_an_empty_resume_say_so(tmp_path):
    proc = run_cli("evaluate", "--model", "best", "--dataset", "fashion-mnist", "--no-tta", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["dataset"] == "fashion-mnist"
    assert proc.stderr.strip().endswith("best.json was trained on mnist, evaluated here on fashion-mnist")
    proc = run_cli("train", "--model", "mlp", "--epochs", "0.02", "--resume", "--json", "--no-progress",
                   "--out", str(tmp_path / "typo"))
    assert proc.returncode == 0, proc.stderr
    assert f"digitrec: note: nothing to resume in {tmp_path / 'typo'} (no resume.pt); starting from epoch 1" \
        in proc.stderr


def test_an_out_that_cannot_be_written_fails_before_the_work(tmp_path):
    """`--out` naming a file where a folder goes (or the other way round) fails at once, with one line,
    not after the training it was to hold; the file is left as it was."""
    taken = tmp_path / "notes.png"
    taken.write_bytes(b"mine")
    for args in (["train", "--model", "fast"], ["train-reader", "--steps", "1"]):
        proc = run_main(*args, "--out", str(taken))
        assert_one_line_error(proc, f"--out {taken}", "exists and is not a folder", code=2)
    proc = run_main("data", "show", "--out", str(tmp_path))
    assert_one_line_error(proc, f"--out {tmp_path}", "is a folder", code=2)
    assert taken.read_bytes() == b"mine" and sorted(tmp_path.iterdir()) == [taken]


def test_missing_data_dir_offline(tmp_path):
    proc = run_main("train", "--data-dir", str(tmp_path / "empty"), "--offline", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "missing", "--offline", str(tmp_path / "empty" / "mnist"), code=1)
    assert not (tmp_path / "o").exists()


def test_the_test_split_needs_only_the_test_files(data_dir, tmp_path):
    """A folder holding only the two t10k files serves the test split (`evaluate`, `data show --split test`)
    offline; training still names the missing training file."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(data_dir / "mnist" / name, folder / name)
    proc = run_main("data", "show", "--split", "test", "--n", "4", "--data-dir", str(tmp_path / "data"), "--offline",
                   "--out", str(tmp_path / "grid.png"))
    assert proc.returncode == 0, proc.stderr
    proc = run_main("train", "--data-dir", str(tmp_path / "data"), "--offline", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "train-images-idx3-ubyte.gz", "missing", code=1)


def _copy_mnist(data_dir: Path, dest: Path) -> Path:
    folder = dest / "mnist"
    shutil.copytree(data_dir / "mnist", folder)
    for f in folder.iterdir():
        os.chmod(f, 0o644)
    return folder


def test_wrong_checksum_is_refused(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path / "data")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: a valid IDX file, but not MNIST's
    labels.write_bytes(gzip.compress(bytes(raw)))
    proc = run_main("data", "info", "--data-dir", str(tmp_path / "data"), "--offline")
    assert_one_line_error(proc, "t10k-labels-idx1-ubyte.gz", "checksum mismatch", code=1)


def test_corrupt_idx_is_refused(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path / "data")
    images = folder / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])  # truncated download
    proc = run_main("train", "--data-dir", str(tmp_path / "data"), "--offline", "--epochs", "1",
                   "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "t10k-images-idx3-ubyte.gz", code=1)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.safetensors"))


def test_corrupt_checkpoint_card(tmp_path):
    card = tmp_path / "model.json"
    card.write_text("{not json")
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(card)), "model.json", "not valid JSON", code=1)
    card.write_text(json.dumps({"model": "mlp"}))
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(card)), "model.safetensors", "missing", code=1)
    (tmp_path / "model.safetensors").write_bytes(b"garbage" * 10)
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(card)), "model.safetensors", "corrupt", code=1)
    card.unlink()  # the weights without their card
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(tmp_path / "model.safetensors")),
                          "model.safetensors: its model card model.json is missing", code=1)


def test_help_and_version():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "train" in proc.stdout and "evaluate" in proc.stdout
    proc = run_cli("--version")
    assert proc.returncode == 0 and "digitrec" in proc.stdout


def test_ensemble_training_and_evaluation(tmp_path):
    tensorboard = ["--tensorboard", str(tmp_path / "tb")] if importlib.util.find_spec("tensorboard") else []
    proc = run_cli("train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--ensemble", "2",
                   "--no-progress", "--json", "--out", str(tmp_path / "ens"), *tensorboard)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "ensemble" and result["members"] == 2
    assert (tmp_path / "ens" / "seed0" / "model.json").exists() and (tmp_path / "ens" / "seed1" / "model.json").exists()
    if tensorboard:  # one log folder per member, so their curves can be told apart
        assert all(list((tmp_path / "tb" / f"seed{s}").glob("events.out.tfevents.*")) for s in (0, 1))
    evaluated = run_cli("evaluate", "--checkpoint", result["checkpoint"], "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == result["test_accuracy"]


def test_distillation_follows_the_teacher(mlp_run, tmp_path):
    """A student trained only on soft labels (--distill 1) learns what its teacher says, even when the teacher
    is wrong on purpose: a copy of the seed MLP whose outputs are shifted by one class (digit d -> d + 1)."""
    from digitrec import checkpoint

    teacher = checkpoint.load(mlp_run["checkpoint"])
    last = teacher.model[-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.roll(1, dims=0))
        last.bias.copy_(last.bias.roll(1))
    shifted = checkpoint.save(tmp_path / "shifted" / "model", teacher.model, dict(teacher.card))
    proc = run_cli("train", "--model", "mlp", "--epochs", "0.5", "--batch-size", "256", "--teacher", str(shifted),
                   "--distill", "1", "--distill-temperature", "1", "--no-progress", "--json",
                   "--out", str(tmp_path / "student"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["test_accuracy"] < 0.05  # it learnt the teacher's shifted answers, not the labels
    card = json.loads(Path(result["checkpoint"]).read_text())
    assert card["teacher"]["card"] == str(shifted) and card["recipe"]["distill"] == 1.0
    student = checkpoint.load(result["checkpoint"]).model
    from digitrec.data import load_dataset

    test = load_dataset("mnist", "test")
    with torch.no_grad():
        logits = student(torch.from_numpy(test.images[:2000]).float().div(255).unsqueeze(1))
    assert (logits.argmax(1).numpy() == (test.labels[:2000] + 1) % 10).mean() > 0.85


def test_an_ensemble_card_away_from_its_members_names_the_member(tmp_path):
    import shutil

    from digitrec import checkpoint

    shutil.copy(checkpoint.bundled_dir() / "ensemble.json", tmp_path / "ensemble.json")
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(tmp_path / "ensemble.json")),
                          "ensemble member 'best'", "best.json: cannot read", code=1)


def test_out_patterns_and_folders_are_checked_before_any_member_trains(tmp_path, mlp_run, monkeypatch):
    for out, fragment in [("{foo}", "only {model}, {dataset} and {seed} are filled in"), ("{", "literal brace"),
                          ("", "give a folder")]:
        assert_one_line_error(run_main("train", "--model", "mlp", "--out", out), "--out", fragment, code=2)
    (tmp_path / "ens_1").write_text("a file where member 1's folder goes")
    proc = run_main("train", "--model", "mlp", "--epochs", "0.05", "--ensemble", "2",
                   "--out", str(tmp_path / "ens_{seed}"))
    assert_one_line_error(proc, f"--out {tmp_path / 'ens_1'}", "exists and is not a folder", code=2)
    assert not (tmp_path / "ens_0").exists()  # refused before member 0 trained
    proc = run_main("train", "--model", "mlp", "--ensemble", "2", env=dict(os.environ, WORLD_SIZE="2"))
    assert_one_line_error(proc, "--ensemble", "under torchrun", code=2)
    proc = run_main("train-reader", "--steps", "1", "--trunk", mlp_run["checkpoint"], "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "--trunk", "a 'mlp' model; the trunk must be a 'best' model", code=2)
