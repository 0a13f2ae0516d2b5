"""Atomic writes never replace what is not a regular file, and write through symbolic links."""

from __future__ import annotations

import os

import pytest

from digitrec.atomic import atomic_write_text, writable_file
from digitrec.cli import main
from digitrec.errors import UsageError


def test_a_pipe_or_device_is_refused_not_replaced(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    for target in (fifo, "/dev/null"):
        with pytest.raises(UsageError, match="not a regular file"):
            writable_file(target)
        with pytest.raises(UsageError, match="not a regular file"):
            atomic_write_text(target, "x")
    assert fifo.is_fifo() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_symbolic_link_is_written_through(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert writable_file(link) == real
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_cli_refuses_a_device_as_out(capsys):
    assert main(["export", "--out", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("digitrec: error: --out /dev/null: not a regular file (a device, pipe or socket); "
                           "give a file name")
    assert not os.path.isfile("/dev/null")
