"""Run the CLI in a subprocess, as a user would, and capture everything."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


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
