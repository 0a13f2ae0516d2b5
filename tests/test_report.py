"""`digitrec report`: one self-contained HTML page whose numbers equal `digitrec evaluate --json`."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from clirun import run_main
from PIL import Image

import digitrec.cli.report_cmd  # noqa: F401  (registers the command until digitrec.cli.main imports it)
from digitrec.cli import main
from digitrec.report import SECTIONS

PNGS = ("samples.png", "class_balance.png", "training_curves.png", "confusion.png", "confident_mistakes.png",
        "unsure_correct.png", "reliability.png", "features_pca.png")


class Page(HTMLParser):
    """Collects what the tests look at: section ids, headings, images, exact values, the confusion table."""

    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.headings: dict[str, str] = {}
        self.images: list[str] = []
        self.values: dict[str, str] = {}
        self.confusion: list[list[int]] = []
        self.tags: set[str] = set()
        self.external: list[str] = []
        self._section = ""
        self._heading: str | None = None
        self._in_confusion = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "section":
            self._section = a.get("id", "")
        if tag == "h2":
            self._heading = ""
        if tag == "img":
            self.images.append(a.get("src", ""))
        for attr in ("src", "href"):
            if attr in a and not (a[attr].startswith("data:") or a[attr].startswith("#")):
                self.external.append(a[attr])
        if "data-key" in a:
            self.values[a["data-key"]] = a["data-value"]
        if tag == "table" and a.get("id") == "confusion-table":
            self._in_confusion = True
        if self._in_confusion and tag == "tr":
            self.confusion.append([])
        if self._in_confusion and tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "h2" and self._heading is not None:
            self.headings[self._section] = self._heading.strip()
            self._heading = None
        if tag == "table":
            self._in_confusion = False
        if tag == "td" and self._cell is not None:
            self.confusion[-1].append(int("".join(self._cell)))
            self._cell = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def report_dir(mlp_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "r"
    assert main(["report", "--checkpoint", mlp_run["checkpoint"], "--out", str(out)]) == 0
    return out


def test_report_writes_every_section(report_dir):
    assert (report_dir / "index.html").is_file() and (report_dir / "metrics.json").is_file()
    for name in PNGS:
        assert (report_dir / name).stat().st_size > 1000, name
    assert not list(report_dir.glob(".*"))  # no temporary files left behind
    page = _parse(report_dir / "index.html")
    for section in SECTIONS:
        assert section in page.ids, section
        assert page.headings.get(section), section
    assert {"confident-mistakes", "unsure-correct", "per-class-table", "calibration-table"} <= set(page.ids)
    assert "Calibration" in page.headings["calibration"] and "Model card" in page.headings["model-card"]
    text = (report_dir / "index.html").read_text()
    for fragment in ("validation", "Reliability diagram", "expected calibration error",
                     "model card&#x27;s temperature", "Architecture", "Linear(in_features=784",
                     "79,510", "440fcabf73cc546f", "Library versions", "penultimate"):
        assert fragment in text, fragment


def test_report_is_self_contained_and_images_decode(report_dir):
    page = _parse(report_dir / "index.html")
    assert not page.external, page.external
    assert not {"script", "link", "iframe"} & page.tags
    assert len(page.images) == len(PNGS)
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True))) as im:
            im.load()
            assert im.format == "PNG" and min(im.size) > 100
    # The embedded images are the PNG files beside the page.
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in page.images}
    assert {(report_dir / name).read_bytes() for name in PNGS} == embedded


def test_report_numbers_equal_evaluate_json(report_dir, mlp_run):
    proc = run_main("evaluate", "--checkpoint", mlp_run["checkpoint"], "--json")
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads((report_dir / "metrics.json").read_text()) == evaluated
    page = _parse(report_dir / "index.html")
    assert float(page.values["accuracy"]) == evaluated["accuracy"]
    assert float(page.values["loss"]) == evaluated["loss"]
    assert [row for row in page.confusion if row] == evaluated["confusion"]  # (the header row has no td)
    ece_before, ece_after = float(page.values["ece_before"]), float(page.values["ece_after"])
    assert 0 <= ece_after <= 0.1 and 0 <= ece_before <= 0.1


def test_report_on_an_ensemble_shows_member_curves_and_calibrates_as_predict_does(mlp_run, tmp_path, capsys):
    from digitrec.ensemble import write_ensemble

    first = Path(mlp_run["checkpoint"])
    second = tmp_path / "copy" / "model.json"
    shutil.copytree(first.parent, second.parent)
    result = write_ensemble([first, second], "mnist", False, out=tmp_path / "ens" / "ensemble.json")
    code, out, err = _run(["report", "--checkpoint", result["checkpoint"], "--out", str(tmp_path / "r"),
                           "--no-progress"], capsys)
    assert code == 0, err
    assert "wrote" in out and "accuracy" in out
    text = (tmp_path / "r" / "index.html").read_text()
    assert "curves of its 2 of 2 members" in text and "member 1 (seed 0)" in text
    # the probabilities `predict` gives: the members' own temperatures, nothing fitted again on training images
    assert "the members' own temperatures" in html.unescape(text) and "fitted here" not in text
    page = _parse(tmp_path / "r" / "index.html")
    assert page.values["ece_after"] == page.values["ece_before"]
    assert "the first member" in text
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(mlp_run["test_accuracy"])  # two identical members


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("digitrec: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_report_bad_inputs_give_one_line_errors(mlp_run, tmp_path, capsys):
    ck = mlp_run["checkpoint"]
    out = str(tmp_path / "r")
    code, _, err = _run(["report", "--checkpoint", str(tmp_path / "nope"), "--out", out, "--no-progress"], capsys)
    _assert_one_line_error(code, err, "no such checkpoint")
    assert not (tmp_path / "r").exists()

    code, _, err = _run(["report", "--checkpoint", ck, "--dataset", "kmnist", "--out", out, "--no-progress"], capsys)
    _assert_one_line_error(code, err, "unknown dataset 'kmnist'")
    code, _, err = _run(["report", "--checkpoint", ck, "--data-dir", str(tmp_path / "empty"), "--offline",
                         "--out", out, "--no-progress"], capsys)
    _assert_one_line_error(code, err, "missing", "--offline")
    assert not (tmp_path / "r").exists()  # the data is looked for before the folder is made

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = _run(["report", "--checkpoint", ck, "--out", str(blocker), "--no-progress"], capsys)
    _assert_one_line_error(code, err, "--out", "not a folder")
    code, _, err = _run(["report", "--checkpoint", ck, "--out", str(blocker / "sub"), "--no-progress"], capsys)
    _assert_one_line_error(code, err, "--out", "cannot write")

    code, _, err = _run(["report", "--model", "no-such-model", "--out", out, "--no-progress"], capsys)
    _assert_one_line_error(code, err, "no bundled model 'no-such-model'")
    code, _, err = _run(["report", "--model", "best", "--checkpoint", ck, "--out", out, "--no-progress"], capsys)
    _assert_one_line_error(code, err, "not both")
    code, _, err = _run(["report", "--checkpoint", ck], capsys)
    _assert_one_line_error(code, err, "--out")

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, _, err = _run(["report", "--checkpoint", str(broken), "--out", out, "--no-progress"], capsys)
    _assert_one_line_error(code, err, "not valid JSON")


# --- TensorBoard logger (optional dependency) ------------------------------------------------------------


def test_tensorboard_logger_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from digitrec.tb import TensorboardLogger

    with TensorboardLogger(tmp_path / "tb") as logger:
        for epoch in (1, 2):
            logger.log_epoch(dict(epoch=epoch, train_loss=1.0 / epoch, train_accuracy=0.9, val_loss=0.5 / epoch,
                                  val_accuracy=np.float64(0.95), seconds=3.0 * epoch, note="skipped",
                                  flag=True, missing=None), step=epoch)
        logger.log_images("samples", np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8), 2)
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "seconds", "epoch"} == set(tags["scalars"])
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("loss/train")] == [(1, 1.0), (2, 0.5)]
    assert tags["images"] == ["samples"]


def test_tensorboard_missing_gives_install_hint(tmp_path, monkeypatch):
    import sys

    from digitrec.errors import UsageError
    from digitrec.tb import TensorboardLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(UsageError, match=r"pip install 'digitrec\[tensorboard\]'"):
        TensorboardLogger(tmp_path / "tb")


def test_training_curves_tell_train_from_validation():
    """One run: train and validation in two colours, named by what each loss is; several runs: one colour each,
    and their legend beside the plots instead of over them; one epoch is a point at 1, not an axis around it."""
    from matplotlib.colors import to_hex

    from digitrec.plots import training_curves_figure

    rows = [dict(epoch=e, train_loss=0.5 / e, train_accuracy=0.9, val_loss=0.1 / e, val_accuracy=0.95)
            for e in (1, 2, 3)]
    loss_ax = training_curves_figure({"run": rows}).axes[0]
    assert [line.get_label() for line in loss_ax.lines] == ["train objective", "validation NLL"]
    assert len({to_hex(line.get_color()) for line in loss_ax.lines}) == 2
    fig = training_curves_figure({f"seed{k}": rows for k in range(8)})
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()][-2:] == ["train", "validation"]
    single = training_curves_figure({"run": rows[:1]}).axes[0]
    assert single.get_xlim() == (0.5, 1.5)
