"""The tutorial notebook runs top to bottom on a CPU (deselect with `-m "not notebook"`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "tour.ipynb"

pytestmark = pytest.mark.notebook


def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "clear the notebook's outputs before committing"


def test_tour_notebook_executes(tmp_path, data_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("DIGITREC_DATA", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # One thread per kernel: on a shared 2-core CI box, two OpenMP threads that keep waiting for each other
    # make small-batch training 5-10x slower; one thread keeps the run short and steady (about 25 s).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning on kernel start
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute(env=dict(os.environ))
    seconds = time.perf_counter() - t0
    outputs = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "the fast CNN reads 4" in outputs, outputs[-2000:]
    assert (tmp_path / "runs" / "tour-fast" / "model.json").is_file()
    assert (tmp_path / "runs" / "tour-report" / "index.html").is_file()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert "skipped: pip install 'digitrec[export]'" in outputs
    else:
        assert (tmp_path / "runs" / "tour-fast.onnx").is_file()
        assert "the same prediction as torch on 100.00% of the digits" in outputs, outputs[-2000:]
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.get("output_type") == "error"]
    assert not errors
    assert seconds < 120, f"the tour took {seconds:.0f} s; keep it well under 2 minutes"
