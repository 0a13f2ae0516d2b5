"""Run the CLI as a user would, and capture everything.

`run_cli` starts a fresh interpreter (`python -m digitrec`): the real entry point, with whatever a library
prints at import time. `run_main` calls the same `digitrec.cli.main` inside the test process, with the
same exit codes and messages, but without the ~3 s a new interpreter spends importing torch (on a 2-core
CPU that was most of the suite's time in bad-argument checks). End-to-end runs, signals and torchrun keep
`run_cli`; checks of refusals and messages use `run_main`.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@contextlib.contextmanager
def _process_state(env: dict | None, cwd) -> Iterator[None]:
    """What one CLI run may change in the process (environment, working folder, torch's thread count,
    SIGTERM/SIGHUP handlers), put back afterwards so runs do not leak into each other."""
    import torch

    saved_env, saved_cwd, threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def run_main(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`digitrec ARGS` in this process; returns what `run_cli` would (exit code, stdout, stderr). Python
    warnings are written to its stderr as an interpreter would print them (pytest would otherwise keep them
    aside, and a warning printed beside an error is what the one-line checks must catch). An uncaught
    exception propagates and fails the test, as a traceback in `run_cli`'s stderr would."""
    from digitrec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (_process_state(env, cwd), warnings.catch_warnings(record=True) as caught,
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            code = main(list(args))
        except SystemExit as exc:  # what the interpreter does with it: an int is the status, text goes to stderr
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, int | None):
                print(exc.code, file=err)
    for w in caught:
        err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    return subprocess.CompletedProcess(["digitrec", *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> None:
    """Non-zero exit, no traceback, one line on stderr naming what is wrong."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("digitrec: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
