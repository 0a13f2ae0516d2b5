"""The `digitrec` command line. Thin: parse, call the library, print.

Errors the user can fix (DigitrecError, bad flags, OS errors such as a full disk) become one line on stderr
and a non-zero exit: 2 for usage errors, 1 for everything else. Never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from digitrec import __version__
from digitrec.errors import DigitrecError, UsageError


@click.group(context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.version_option(__version__, prog_name="digitrec")
def app() -> None:
    """Handwritten digit recognition: train, evaluate, predict, report."""


@app.group("data")
def data_app() -> None:
    """Inspect datasets (missing files are downloaded first, checksum-verified)."""


def _exit_cleanly_on_termination() -> None:
    """SIGTERM and SIGHUP (a closed terminal, `timeout`, a job scheduler) end the command through Python, as
    Ctrl-C does, so the temporary file of an interrupted write is deleted rather than left beside its
    target. (The server replaces these with its own graceful shutdown.)"""
    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        return
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) == signal.SIG_DFL:
            signal.signal(getattr(signal, name), leave)


def main(argv: list[str] | None = None) -> int:
    import importlib

    for module in ("data_cmd", "demo_cmd", "export_cmd", "predict_cmd", "reader_cmd", "report_cmd", "serve_cmd",
                   "train_cmd"):
        importlib.import_module(f"digitrec.cli.{module}")  # each registers its commands on `app`

    _exit_cleanly_on_termination()
    try:
        app.main(args=argv, prog_name="digitrec", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        print(f"digitrec: error: {exc.format_message().splitlines()[0]}{hint}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        print("digitrec: aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except UsageError as exc:
        print(f"digitrec: error: {exc}", file=sys.stderr)
        return 2
    except DigitrecError as exc:
        print(f"digitrec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitrec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:  # a disk filling up, a folder vanishing mid-run: still one line, naming the file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"digitrec: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
