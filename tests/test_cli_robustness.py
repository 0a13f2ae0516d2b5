"""`demo`, `report`, `data show`, `export` and `evaluate` on bad options and malformed model cards: one line and
the right exit status before any work, never a traceback, a partial report or a file in the wrong format."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clirun import assert_one_line_error, run_main

import digitrec.cli.report_cmd  # noqa: F401  (registers the command until digitrec.cli.main imports it)
from digitrec import checkpoint, plots, report
from digitrec.cli import main
from digitrec.errors import CheckpointError

REPO = Path(__file__).resolve().parent.parent
LONG = "a" * 300
HAS_EXPORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


# --- options checked before any work ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["1180591620717411303424", "-1", "2147483648"])
def test_demo_seed_out_of_range_is_a_usage_error_before_training(seed, tmp_path):
    proc = run_main("demo", "--models", "mlp", "--out", str(tmp_path / "d"), "--seed", seed)
    assert_one_line_error(proc, "--seed", seed, code=2)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("args, what", [
    (["demo", "--models", "mlp"], "give a folder"),
    (["report", "--model", "best", "--no-progress"], "give a folder"),
    (["data", "show"], "give a file name"),
])
def test_empty_out_is_refused(args, what, tmp_path):
    proc = run_main(*args, "--out", "", cwd=tmp_path)
    assert_one_line_error(proc, "--out", what, code=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not HAS_EXPORT, reason="needs the 'export' extra")
def test_export_empty_out_is_refused_not_replaced_by_the_default_name(tmp_path):
    proc = run_main("export", "--model", "best", "--out", "", cwd=tmp_path)
    assert_one_line_error(proc, "--out", "give a file name", code=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["report", "--checkpoint", "no-such-checkpoint", "--no-progress", "--out", LONG],  # --out checked first
    ["data", "show", "--n", "4", "--out", LONG + ".png"],
    ["data", "show", "--n", "4", "--out", "a" * 250 + ".png"],  # fits NAME_MAX, its temporary twin does not
    ["demo", "--models", "mlp", "--out", LONG],
])
def test_too_long_out_is_a_usage_error_naming_out(args, tmp_path):
    proc = run_main(*args, cwd=tmp_path)
    assert_one_line_error(proc, "--out", code=2)
    assert "too long" in proc.stderr.lower()
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not HAS_EXPORT, reason="needs the 'export' extra")
@pytest.mark.parametrize("name", [LONG + ".onnx", "a" * 245 + ".onnx"])
def test_export_too_long_out_is_a_usage_error_before_loading(name, tmp_path):
    proc = run_main("export", "--checkpoint", "no-such-checkpoint", "--out", name, cwd=tmp_path)
    assert_one_line_error(proc, "--out", code=2)
    assert "too long" in proc.stderr.lower()


def test_evaluate_unknown_dataset_is_the_only_line():
    proc = run_main("evaluate", "--dataset", "nope")
    assert_one_line_error(proc, "unknown dataset 'nope'", code=2)  # no "trained on mnist" warning first


def test_a_row_reader_card_is_not_called_an_unknown_model():
    proc = run_main("evaluate", "--checkpoint", str(REPO / "src/digitrec/weights/reader.json"))
    assert_one_line_error(proc, "reader.json", "a row reader", "not a digit model", code=2)
    assert "unknown model" not in proc.stderr


# --- data show: the format the suffix names, and a title clear of the digits ---------------------------------


def test_data_show_writes_the_format_its_suffix_names(tmp_path):
    magic = {"g.jpg": b"\xff\xd8\xff", "g.pdf": b"%PDF", "g.svg": b"<?xml", "g.PNG": b"\x89PNG"}
    for name, head in magic.items():
        proc = run_main("data", "show", "--n", "4", "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / name).read_bytes().startswith(head), name
    for name in ("g.txt", "g.html"):
        proc = run_main("data", "show", "--n", "4", "--out", str(tmp_path / name))
        assert_one_line_error(proc, "--out", name, ".png", code=2)
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize("n", [1, 7, 64, 150, 200])  # 150 and 200 overlapped before
def test_digit_grid_title_never_overlaps_the_digits(n):
    fig = plots.digit_grid_figure(np.zeros((n, 28, 28), np.uint8), [str(k % 10) for k in range(n)],
                                  f"mnist train: {n} samples")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    top_of_grid = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes if ax.images)  # captions included
    assert title.y0 > top_of_grid, (n, title.y0, top_of_grid)
    assert title.y1 <= fig.bbox.y1 + 1  # and still on the figure


# --- malformed model cards ----------------------------------------------------------------------------------


BAD_CARDS = [
    (dict(members=[]), "'members'"),
    (dict(members="best"), "'members'"),
    (dict(members=["best", 3]), "'members'"),
    (dict(model="best", temperature="hot"), "'temperature'"),
    (dict(model="best", temperature=0), "'temperature'"),
    (dict(model="best", temperature=-1.5), "'temperature'"),
    (dict(model="best", temperature=float("nan")), "'temperature'"),
    (dict(model="best", temperature=float("inf")), "'temperature'"),
    (dict(model="best", temperature=True), "'temperature'"),
    (dict(model="best", temperature=None), "'temperature'"),
    (dict(model=["best"]), "'model'"),
]


@pytest.mark.parametrize("card, field", BAD_CARDS)
def test_malformed_card_is_one_checkpoint_error_naming_file_and_field(card, field, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert str(path) in message and field in message and "\n" not in message


def test_malformed_hparams_name_the_card(tmp_path):
    shutil.copy(checkpoint.bundled_dir() / "best.safetensors", tmp_path / "best.safetensors")
    card = json.loads((checkpoint.bundled_dir() / "best.json").read_text())
    for hparams in ({"width": "abc"}, {"bogus": 1}, [1, 2]):
        (tmp_path / "best.json").write_text(json.dumps(dict(card, hparams=hparams)))
        with pytest.raises(CheckpointError, match=r"best\.json: 'hparams'"):
            checkpoint.load(tmp_path / "best.json")


def test_malformed_cards_on_the_command_line(tmp_path):
    empty = tmp_path / "ens.json"
    empty.write_text(json.dumps(dict(members=[], dataset="mnist", temperature=1.0)))
    hot = tmp_path / "hot.json"
    hot.write_text(json.dumps(dict(model="best", temperature="hot")))
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(empty)), "ens.json", "'members'", code=1)
    assert_one_line_error(run_main("evaluate", "--checkpoint", str(hot)), "hot.json", "'temperature'", code=1)
    if HAS_EXPORT:
        proc = run_main("export", "--checkpoint", str(empty), "--out", str(tmp_path / "e.onnx"))
        assert_one_line_error(proc, "ens.json", "'members'", code=1)
        assert not (tmp_path / "e.onnx").exists()


def test_export_errors_carry_no_terminal_colour_codes():
    from digitrec.export import _first_line

    assert _first_line(RuntimeError("\n\x1b[1m\x1b[31mguard failed\x1b[0m: x > 2\nmore")) == "guard failed: x > 2"
    assert _first_line(ValueError("")) == "ValueError"


# --- report: built aside, moved into place whole --------------------------------------------------------------


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def no_history(mlp_run, tmp_path_factory) -> Path:
    """The session's MLP again, its card without a training history (so its report has no training_curves.png)."""
    src = Path(mlp_run["checkpoint"])
    folder = tmp_path_factory.mktemp("nohist")
    card = json.loads(src.read_text())
    card.pop("history")
    shutil.copy(src.with_suffix(".safetensors"), folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(dict(card, weights="model.safetensors")))
    return folder / "model.json"


def test_report_rerun_replaces_its_files_and_keeps_others(mlp_run, no_history, tmp_path, capsys):
    out = tmp_path / "r"
    code, err = _run(["report", "--checkpoint", mlp_run["checkpoint"], "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(report.FILES)  # FILES lists what a report writes
    (out / "notes.txt").write_text("mine")
    first = _snapshot(out)

    code, err = _run(["report", "--checkpoint", str(no_history), "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert not (out / "training_curves.png").exists()  # the earlier model's curves are not left behind
    assert (out / "notes.txt").read_text() == "mine"  # not the report's: untouched
    assert str(no_history) in (out / "index.html").read_text()
    assert (out / "index.html").read_bytes() != first["index.html"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_interrupted_report_leaves_no_partial_report(mlp_run, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_calibration_section", interrupt)  # after several PNGs are written
    fresh = tmp_path / "new" / "r"
    code, _ = _run(["report", "--checkpoint", mlp_run["checkpoint"], "--out", str(fresh), "--no-progress"], capsys)
    assert code == 130
    assert not (tmp_path / "new").exists()  # neither the folder nor the parent it made

    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "index.html").write_text("the earlier report")
    (existing / "training_curves.png").write_bytes(b"earlier curves")
    before = _snapshot(existing)
    code, _ = _run(["report", "--checkpoint", mlp_run["checkpoint"], "--out", str(existing), "--no-progress"],
                   capsys)
    assert code == 130
    assert _snapshot(existing) == before  # the earlier report whole, no PNG of the new one, no staging folder


def test_report_stopped_by_sigterm_leaves_the_earlier_report(mlp_run, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "index.html").write_text("the earlier report")
    before = _snapshot(out)
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "report", "--checkpoint", mlp_run["checkpoint"],
                             "--out", str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    deadline = time.monotonic() + 240
    while not list(out.glob(".report-*/*.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the report is half written
    assert proc.poll() is None, "the report finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert _snapshot(out) == before
