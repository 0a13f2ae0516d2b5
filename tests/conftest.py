"""Shared fixtures: the offline MNIST folder, an isolated cache, and one small trained checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run, so CI fails on a regression, not on a new random draw
# (known counterexamples are kept as explicit @example cases). HYPOTHESIS_PROFILE=explore searches afresh.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _data_root() -> Path:
    env = os.environ.get("DIGITREC_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


DATA = _data_root()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "notebook: executes the tutorial notebook")
    if not (DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        raise pytest.UsageError(f"MNIST not found under {DATA}; set DIGITREC_DATA to a folder holding mnist/")
    os.environ["DIGITREC_DATA"] = str(DATA)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test` runs one pytest worker per core (pytest-xdist): each, and the CLI processes it starts, then
        # computes on one thread. Two workers of two threads each on 2 cores ran no faster than one pytest,
        # their OpenMP threads spinning against each other; most of the suite is one-threaded Python anyway.
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory) -> dict:
    """One epoch of the seed MLP with a validation split, trained once for the whole session."""
    from digitrec.cli import main

    out = tmp_path_factory.mktemp("mlp-run")
    json_file = out / "result.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "--model", "mlp", "--epochs", "1", "--val", "5000", "--seed", "0", "--json",
                     "--no-progress", "--out", str(out)])
    assert code == 0, buf.getvalue()
    result = json.loads(buf.getvalue().strip().splitlines()[-1])
    json_file.write_text(json.dumps(result))
    return result
