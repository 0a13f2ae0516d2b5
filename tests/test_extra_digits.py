"""Training on extra labelled digits (`train --extra-digits`) and the handwriting-font digits that feed it
(`tools/handwriting_fonts.py`): the loader's checks, a real run that records them, and the font drawing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from clirun import assert_one_line_error, run_cli, run_main

from digitrec.data.extra import load_extra_digits
from digitrec.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import handwriting_fonts  # noqa: E402

# A print font every install has: matplotlib (a core dependency, for reports) ships DejaVu Sans.
DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _good(n: int = 40) -> dict:
    rng = np.random.default_rng(0)
    return dict(images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels=np.arange(n) % 10)


def test_load_extra_digits_reads_images_labels_and_checksum(tmp_path):
    path = _npz(tmp_path / "ok.npz", **_good())
    images, labels, sha = load_extra_digits(path, 10)
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and list(labels[:3]) == [0, 1, 2]
    assert len(sha) == 64


@pytest.mark.parametrize("arrays, fragment", [
    (dict(images=np.zeros((4, 28, 28), np.uint8)), "no 'labels' array"),
    (dict(images=np.zeros((4, 28, 28), np.float32), labels=np.zeros(4, int)), "must be uint8 [N, 28, 28]"),
    (dict(images=np.zeros((4, 32, 32), np.uint8), labels=np.zeros(4, int)), "must be uint8 [N, 28, 28]"),
    (dict(images=np.zeros((4, 28, 28), np.uint8), labels=np.zeros(3, int)), "'labels' must be 4 integers"),
    (dict(images=np.zeros((4, 28, 28), np.uint8), labels=np.zeros(4, float)), "'labels' must be 4 integers"),
    (dict(images=np.zeros((4, 28, 28), np.uint8), labels=np.array([0, 1, 2, 10])), "labels must lie in 0..9"),
])
def test_load_extra_digits_rejects_bad_arrays(tmp_path, arrays, fragment):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError, match="--extra-digits") as err:
        load_extra_digits(path, 10)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_load_extra_digits_rejects_missing_and_non_npz_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_extra_digits(tmp_path / "missing.npz", 10)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(UsageError, match="not a readable .npz"):
        load_extra_digits(tmp_path / "text.npz", 10)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, images=np.array([object()]), labels=np.zeros(1, int))
    with pytest.raises(UsageError, match="not a readable .npz"):  # no pickles: allow_pickle=False
        load_extra_digits(pickled, 10)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(UsageError, match=r"a single array \(\.npy\)"):  # was a TypeError from np.load's result
        load_extra_digits(plain, 10)


@pytest.mark.slow
def test_train_with_extra_digits_and_a_teacher_records_them(tmp_path, mlp_run):
    """A real (short) run: the extra digits join the training images only (more steps, same validation
    split), the teacher path gives them their own labels, and the card records file, checksum and count.
    (The teacher is the session's one-epoch MLP: a bundled conv net's logits for 61,560 images were most
    of this test's time on a 2-core CPU.)"""
    extra = _npz(tmp_path / "extra.npz", **_good(2560))
    common = ["train", "--model", "fast", "--epochs", "0.1", "--val", "1000", "--seed", "0", "--threads", "2",
              "--no-progress", "--json"]
    plain = run_cli(*common, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    more = run_cli(*common, "--extra-digits", str(extra), "--teacher", mlp_run["checkpoint"],
                   "--out", str(tmp_path / "more"))
    assert more.returncode == 0, more.stderr
    plain_result, more_result = json.loads(plain.stdout.splitlines()[-1]), json.loads(more.stdout.splitlines()[-1])
    assert plain_result["steps"] == round(0.1 * (59000 // 128))
    assert more_result["steps"] == round(0.1 * ((59000 + 2560) // 128))
    card = json.loads(Path(more_result["checkpoint"]).read_text())
    assert card["extra_digits"]["n"] == 2560 and len(card["extra_digits"]["sha256"]) == 64
    assert card["extra_digits"]["path"] == str(extra)
    assert card["teacher"]["name"] == mlp_run["checkpoint"]
    assert more_result["test_accuracy"] > 0.8  # a tenth of an epoch of `fast` still learns


def test_train_extra_digits_bad_file_is_one_line_error(tmp_path):
    proc = run_main("train", "--model", "fast", "--epochs", "0.01", "--no-progress",
                   "--extra-digits", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "--extra-digits", "missing.npz", "no such file")
    assert not (tmp_path / "run" / "model.json").exists()


def test_held_out_fonts_are_every_third_of_the_list_whatever_is_missing(tmp_path):
    """Every third font of the full list, by its place there: a font that failed to fetch moves no other
    across the split (it once shifted every font after it)."""
    names = handwriting_fonts.NPM_FONTS
    fonts = [tmp_path / f"{name}.woff" for name in names[:7]]
    assert list(np.flatnonzero(handwriting_fonts.held_out(fonts))) == [2, 5]
    without_second = [f for f in fonts if f.stem != names[1]]
    held = {f.stem for f, h in zip(without_second, handwriting_fonts.held_out(without_second), strict=True) if h}
    assert held == {names[2], names[5]}
    debian = handwriting_fonts.SYSTEM_FONTS / handwriting_fonts.DEBIAN_FONTS[0]
    place = len(names)  # the Debian fonts follow the npm ones in the list
    assert handwriting_fonts.held_out([debian])[0] == (place % 3 == 2)
    stand_in = handwriting_fonts.held_out([tmp_path / "DejaVuSans.ttf"] * 2)  # outside the list: by name
    assert stand_in[0] == stand_in[1]


def test_font_digits_vary_and_read_as_their_digit():
    """Each draw differs (a writer never draws a digit twice alike), and a plain print font's digits, drawn
    this way and normalised as `predict` does, read as themselves."""
    from PIL import ImageFont

    from digitrec import Recognizer

    font = ImageFont.truetype(str(DEJAVU), handwriting_fonts.GLYPH)
    rng = np.random.default_rng(0)
    a, b = handwriting_fonts.font_digit(font, 3, rng), handwriting_fonts.font_digit(font, 3, rng)
    assert a.dtype == np.uint8 and a.min() < 64 and np.median(a) == 255  # dark ink on white paper
    assert a.shape != b.shape or not np.array_equal(a, b)
    pages, labels, writers = handwriting_fonts.font_pool([DEJAVU], 2, seed=1)
    assert list(labels) == [d for d in range(10) for _ in range(2)] and set(writers) == {0}
    images = handwriting_fonts.mnist_like(pages)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    read = np.array([p.digit for p in Recognizer.load().predict_array(images)])
    assert (read == labels).mean() >= 0.9


def test_digits_command_writes_training_fonts_only(tmp_path):
    """`handwriting_fonts.py digits` keeps every third font out and writes what --extra-digits reads."""
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    for name in handwriting_fonts.NPM_FONTS[:3]:  # FreeType reads a TrueType file whatever its suffix
        shutil.copy(DEJAVU, fonts / f"{name}.woff")
    out = tmp_path / "digits.npz"
    tool = [sys.executable, str(REPO / "tools" / "handwriting_fonts.py"), "digits"]
    proc = subprocess.run([*tool, str(out), "--fonts", str(fonts), "--per-glyph", "1", "--no-system-fonts"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    listed = handwriting_fonts.font_files(fonts, system=False)
    assert [f.stem for f in listed] == list(handwriting_fonts.NPM_FONTS[:3])
    with np.load(out) as npz:
        assert [str(f) for f in npz["fonts"]] == [f"{n}.woff" for n in handwriting_fonts.NPM_FONTS[:2]]
    images, labels, _ = load_extra_digits(out, 10)
    assert len(images) == 2 * 10 and sorted(set(labels.tolist())) == list(range(10))
    empty = subprocess.run([*tool, str(tmp_path / "none.npz"), "--fonts", str(tmp_path / "nothing"),
                            "--no-system-fonts"], capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0 and "no fonts" in empty.stderr and not (tmp_path / "none.npz").exists()


def test_train_reader_composes_rows_from_extra_digits_too(tmp_path, monkeypatch):
    """`train-reader --extra-digits`: the rows are composed from the training digits plus the extra ones
    (the pool handed to the row composer grows by their count) and the card records them."""
    import digitrec.reader_training as reader_training
    from digitrec.cli import main

    pools: list[int] = []
    compose = reader_training.make_rows

    def recording_make_rows(images, labels, n, seed, workers=None):
        pools.append(len(images))
        return compose(images, labels, n, seed=seed, workers=workers)

    monkeypatch.setattr(reader_training, "make_rows", recording_make_rows)
    extra = _npz(tmp_path / "extra.npz", **_good(50))
    out = tmp_path / "reader"
    code = main(["train-reader", "--steps", "2", "--rows", "32", "--val-rows", "8", "--batch-size", "16",
                 "--extra-digits", str(extra), "--out", str(out)])
    assert code == 0
    assert pools[0] == 59000 + 50 and pools[1] == 1000  # training rows' pool; validation rows' (MNIST only)
    recipe = json.loads((out / "reader.json").read_text())["recipe"]
    assert recipe["extra_digits"]["n"] == 50 and recipe["extra_digits"]["path"] == str(extra)


def test_train_reader_extra_digits_bad_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 28, 28), np.uint8), labels=np.array([1, 2, 12]))
    proc = run_main("train-reader", "--steps", "2", "--extra-digits", str(bad), "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "--extra-digits", "bad.npz", "0..9")
    assert not (tmp_path / "r" / "reader.json").exists()


def test_the_fonts_benchmark_refuses_a_model_that_trained_on_its_held_out_fonts(tmp_path, monkeypatch):
    """benchmarks/handwriting_fonts.py checks the fonts listed in the model's --extra-digits file against those
    it holds out: a model that saw one would make the held-out figure meaningless."""
    import importlib.util
    from types import SimpleNamespace

    from digitrec.errors import UsageError

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when the script runs: its helpers beside it
    spec = importlib.util.spec_from_file_location("fonts_benchmark", REPO / "benchmarks" / "handwriting_fonts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    unseen = [tmp_path / "mali.woff", tmp_path / "kalam.woff"]
    extra = tmp_path / "digits.npz"

    def model(fonts):
        np.savez(extra, images=np.zeros((1, 28, 28), np.uint8), labels=np.zeros(1, np.int64), fonts=np.array(fonts))
        return SimpleNamespace(name="m", checkpoint=SimpleNamespace(card={"extra_digits": {"path": str(extra)}}))

    bench._check_unseen(model(["caveat.woff", "gaegu.woff"]), unseen)  # trained on others: fine
    with pytest.raises(UsageError, match=r"m trained on 1 of the fonts held out here \(kalam.woff"):
        bench._check_unseen(model(["caveat.woff", "kalam.woff"]), unseen)
    bench._check_unseen(SimpleNamespace(name="m", checkpoint=SimpleNamespace(card={})), unseen)  # no extra digits
