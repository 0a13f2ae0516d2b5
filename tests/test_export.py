"""`digitrec export` and digitrec.export: the ONNX file computes what the Recognizer computes, carries the model
card, takes any batch size, and bad input is one line with nothing left behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402
import torch  # noqa: E402

from digitrec import Recognizer, checkpoint, export  # noqa: E402
from digitrec.cli import export_cmd, main  # noqa: E402, F401  (export_cmd registers the command)
from digitrec.errors import DigitrecError  # noqa: E402
from digitrec.models import build_model  # noqa: E402

N_DIGITS = 500


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machines have two cores shared with other work; one thread keeps this file light."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first MNIST test digits as the model takes them: float32 [N, 28, 28] in 0..1."""
    from digitrec.data import load_dataset

    return load_dataset("mnist", "test", offline=True, progress=False).images[:N_DIGITS].astype(np.float32) / 255


@pytest.fixture(scope="module")
def best_onnx(tmp_path_factory) -> dict:
    return export.export_onnx(checkpoint.bundled("best"), tmp_path_factory.mktemp("best") / "best.onnx")


@pytest.fixture(scope="module")
def ensemble_onnx(tmp_path_factory) -> dict:
    return export.export_onnx(checkpoint.bundled("ensemble"), tmp_path_factory.mktemp("ens") / "ensemble.onnx")


def session(path: str | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(path: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) for float images [N, 28, 28]."""
    logits, probs = session(path).run(["logits", "probabilities"], {"image": images[:, None]})
    return logits, probs


def assert_matches_recognizer(path: str | Path, model: str, images: np.ndarray) -> None:
    ours = Recognizer.load(model=model, reader=None).classify(images)
    _, theirs = run(path, images)
    assert (theirs.argmax(1) == ours.argmax(1)).all()
    assert np.abs(theirs - ours).max() < 1e-4


# ------------------------------------------------------------------------------------------------- the file
def test_best_matches_the_recognizer_on_mnist_digits(best_onnx, digits):
    assert_matches_recognizer(best_onnx["out"], "best", digits)


def test_record_names_one_self_contained_verified_file(best_onnx):
    out = Path(best_onnx["out"])
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no .data file, no temporary left
    assert best_onnx["bytes"] == out.stat().st_size > 100_000
    assert best_onnx["model"] == "best" and best_onnx["batch_verified"] == export.VERIFY_BATCH
    assert 0 <= best_onnx["max_abs_diff"] < export.TOLERANCE
    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == best_onnx["opset"]


def test_graph_has_named_inputs_and_a_dynamic_batch(best_onnx, digits):
    s = session(best_onnx["out"])
    (image,), outputs = s.get_inputs(), s.get_outputs()
    assert image.name == "image" and image.type == "tensor(float)" and image.shape[1:] == [1, 28, 28]
    assert isinstance(image.shape[0], str)
    assert [(o.name, o.shape[1]) for o in outputs] == [("logits", 10), ("probabilities", 10)]
    _, whole = run(best_onnx["out"], digits[:40])
    for batch in (1, 37):
        logits, probs = run(best_onnx["out"], digits[:batch])
        assert logits.shape == probs.shape == (batch, 10)
        np.testing.assert_allclose(probs, whole[:batch], atol=1e-5)


def test_probabilities_are_the_logits_calibrated_by_the_cards_temperature(best_onnx, digits):
    logits, probs = run(best_onnx["out"], digits[:50])
    temperature = checkpoint.bundled("best").temperature
    assert temperature != 1.0
    expected = torch.from_numpy(logits / temperature).softmax(1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_metadata_carries_the_model_card(best_onnx):
    meta = session(best_onnx["out"]).get_modelmeta().custom_metadata_map
    card = checkpoint.bundled("best").card
    assert meta["model"] == "best" and meta["architecture"] == "best"
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)]
    assert float(meta["temperature"]) == card["temperature"]
    assert float(meta["test_accuracy"]) == card["metrics"]["test_accuracy"]
    assert meta["digitrec_version"] == __import__("digitrec").__version__
    assert "[batch, 1, 28, 28]" in meta["input"] and "to_mnist" in meta["input"]


def test_ensemble_exports_and_matches_the_recognizer(ensemble_onnx, digits):
    assert_matches_recognizer(ensemble_onnx["out"], "ensemble", digits)
    meta = session(ensemble_onnx["out"]).get_modelmeta().custom_metadata_map
    assert meta["model"] == "ensemble" and float(meta["temperature"]) == 1.0
    assert len(json.loads(meta["members"])) == 8
    assert sorted(p.name for p in Path(ensemble_onnx["out"]).parent.iterdir()) == ["ensemble.onnx"]


# ----------------------------------------------------------------------------- failures leave nothing behind
def tiny_checkpoint(folder: Path) -> Path:
    """An untrained seed MLP saved as a checkpoint card: exports in about a second."""
    torch.manual_seed(0)
    return checkpoint.save(folder / "model", build_model("mlp"), dict(model="mlp"))


@pytest.mark.parametrize("failure", ["mismatch", "interrupt"])
def test_a_failed_export_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch, failure):
    loaded = checkpoint.load(tiny_checkpoint(tmp_path / "mlp"))
    out = tmp_path / "out" / "mlp.onnx"
    out.parent.mkdir()
    out.write_bytes(b"the previous export")
    if failure == "mismatch":
        monkeypatch.setattr(export, "TOLERANCE", 0.0)  # no difference is under 0: verification must refuse
        with pytest.raises(DigitrecError, match=f"{out}: the exported model does not match torch"):
            export.export_onnx(loaded, out)
    else:
        def interrupted(*args):
            raise KeyboardInterrupt
        monkeypatch.setattr(export, "_verify", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export.export_onnx(loaded, out)
    assert [p.name for p in out.parent.iterdir()] == ["mlp.onnx"]
    assert out.read_bytes() == b"the previous export"


# ---------------------------------------------------------------------------------------------------- the CLI
def test_cli_exports_the_default_model_with_a_default_name(tmp_path, monkeypatch, capsys, digits):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    result = json.loads(captured.out)
    assert result["out"] == "digitrec-distilled.onnx" and result["model"] == "distilled"
    assert result["format"] == "onnx" and result["bytes"] == (tmp_path / result["out"]).stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digitrec-distilled.onnx"]
    assert_matches_recognizer(tmp_path / result["out"], "distilled", digits[:100])


def test_cli_exports_a_checkpoint_at_a_chosen_opset(tmp_path, capsys):
    out = tmp_path / "sub" / "best-18.onnx"
    card = checkpoint.bundled_dir() / "best.json"
    assert main(["export", "--checkpoint", str(card), "--opset", "18", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and len(captured.out.splitlines()) == 1
    assert captured.out.startswith(f"wrote {out}: best, ONNX opset 18")
    assert {o.domain: o.version for o in onnx.load(out).opset_import}[""] == 18


def _corrupt_checkpoint(tmp: Path) -> list[str]:
    folder = tmp / "corrupt"
    folder.mkdir()
    (folder / "model.json").write_text((checkpoint.bundled_dir() / "best.json").read_text())
    (folder / "best.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{trunc")
    return ["--checkpoint", str(folder)]


BAD = {  # name: (arguments given tmp_path, exit status, words the error line must hold)
    "unknown model": (lambda t: ["--model", "nope"], 2, "no bundled model 'nope'"),
    "missing checkpoint": (lambda t: ["--checkpoint", str(t / "none.json")], 1, "no such checkpoint"),
    "corrupt checkpoint": (_corrupt_checkpoint, 1, "corrupt safetensors file"),
    "both sources": (lambda t: ["--model", "best", "--checkpoint", str(t / "x.json")], 2, "not both"),
    "directory as --out": (lambda t: ["--out", str(t)], 2, "is a folder"),
    "file as --out's folder": (lambda t: ["--out", str(t / "afile" / "x.onnx")], 2, "afile is not a folder"),
    "unwritable --out": (lambda t: ["--out", "/proc/digitrec-test.onnx"], 2, "cannot write there"),
    "unsupported --format": (lambda t: ["--format", "tflite"], 2, "'--format'"),
    "opset too old": (lambda t: ["--opset", "17"], 2, "--opset 17: choose 18 to"),
    "opset too new": (lambda t: ["--opset", "99"], 2, "--opset 99: choose 18 to"),
    "opset not a number": (lambda t: ["--opset", "x"], 2, "'--opset'"),
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_input_is_one_line_and_leaves_nothing(case, tmp_path, monkeypatch, capsys):
    if case == "unwritable --out" and not Path("/proc/self").exists():
        pytest.skip("needs Linux's /proc as a folder nobody can write")
    make_args, status, words = BAD[case]
    monkeypatch.chdir(tmp_path)  # a default-named file would land here, and be caught
    (tmp_path / "afile").write_text("a file, not a folder")
    args = make_args(tmp_path)
    before = _tree(tmp_path)
    assert main(["export", *args]) == status
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitrec: error: ") and words in lines[0], captured.err
    assert captured.out == "" and "Traceback" not in captured.err
    assert _tree(tmp_path) == before
    assert not Path("/proc/digitrec-test.onnx").exists()


def test_cli_without_the_export_extra_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    assert main(["export", "--model", "best"]) == 2
    assert capsys.readouterr().err == "digitrec: error: ONNX export needs the 'export' extra: " \
                                       "pip install 'digitrec[export]'\n"
    assert list(tmp_path.iterdir()) == []


def test_cli_mismatch_is_exit_1_naming_the_file(tmp_path, monkeypatch, capsys):
    card = tiny_checkpoint(tmp_path / "mlp-run")
    monkeypatch.setattr(export, "TOLERANCE", 0.0)
    out = tmp_path / "mlp.onnx"
    assert main(["export", "--checkpoint", str(card), "--out", str(out)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"digitrec: error: {out}: the exported model does not match torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp-run"]


def test_readme_onnx_examples_run_verbatim(tmp_path, monkeypatch, capsys):
    """The README's two ONNX snippets, run as a new user would: after its Python API example made seven.png
    and `digitrec export` wrote the default model here. Both read the 7; a plain 28x28 resize does not."""
    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    api_example = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    onnx_examples = readme.split("## Exporting to ONNX", 1)[1].split("\n## ", 1)[0].split("```python\n")[1:]
    assert len(onnx_examples) == 2
    monkeypatch.chdir(tmp_path)
    exec(compile(api_example, "README.md (Python API)", "exec"), {})
    assert main(["export"]) == 0 and (tmp_path / "digitrec-distilled.onnx").exists()
    capsys.readouterr()
    for k, block in enumerate(onnx_examples):
        namespace: dict = {}
        exec(compile(block.split("```", 1)[0], f"README.md (ONNX example {k + 1})", "exec"), namespace)
        printed = capsys.readouterr().out.split()
        assert printed[0] == "7" and float(printed[1]) > 0.99, printed
        if k == 0:
            assert printed[2:] == ["[7", "7]"], printed  # the batch line
    assert namespace["probs"].shape == (1, 10)
    plain = np.asarray(Image.open("seven.png").convert("L").resize((28, 28)), np.float32)[None, None] / 255
    probs = session("digitrec-distilled.onnx").run(["probabilities"], {"image": 1 - plain})[0]
    assert int(probs.argmax()) == 8 and probs.max() > 0.999  # the README says so
