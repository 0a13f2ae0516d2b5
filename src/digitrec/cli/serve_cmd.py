"""`digitrec serve`: the drawing page and the JSON API over HTTP (needs the `serve` extra)."""

from __future__ import annotations

import ipaddress
import logging
import socket

import click

from digitrec.cli import app, options
from digitrec.errors import DigitrecError, UsageError

LIMIT_CONNECTIONS = 200


def _listen(host: str, port: int) -> socket.socket:
    """A bound listening socket, made here so a taken port or unknown host is one line, not a log dump,
    and so `--port 0` can report the port the system chose."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise DigitrecError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


@app.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, reachable from other machines).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@options.model_choice()
@click.option("--tta/--no-tta", default=None, help="Test-time augmentation: 5x the compute (default: off).")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=10.0, show_default=True,
              help="Largest image accepted per uploaded file.")
@click.option("--quiet", is_flag=True, help="No access log line per request.")
@options.device
def serve(host, port, checkpoint, model, tta, max_upload_mb, quiet, device) -> None:
    """Serve the drawing page (/) and the JSON API (/api/v1; schema at /openapi.json) until Ctrl-C."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (FastAPI's file uploads)
        import uvicorn
    except ImportError:
        raise UsageError("digitrec serve needs the 'serve' extra: pip install 'digitrec[serve]'") from None
    from digitrec.checkpoint import model_name
    from digitrec.recognizer import Recognizer
    from digitrec.serve import create_app

    sock = _listen(host, port)  # before loading the model: a taken port fails in a moment, not seconds
    try:
        rec = Recognizer.load(checkpoint, model=model, device=device, tta=tta)
        web = create_app(rec, max_upload_bytes=int(max_upload_mb * 2**20))
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"digitrec: serving {model_name(rec.checkpoint)} at http://{shown}:{bound}/ "
                   "(API schema: /openapi.json; Ctrl-C to stop)")
        if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
            click.echo("digitrec: warning: reachable from other machines, with no authentication and no TLS; "
                       "put a reverse proxy in front before exposing it", err=True)
        # python-multipart logs each malformed body it meets, without the request; the client gets a 400 naming it
        logging.getLogger("python_multipart").setLevel(logging.ERROR)
        # Past LIMIT_CONNECTIONS open connections uvicorn answers 503 at once instead of queueing without end.
        config = uvicorn.Config(web, log_level="info", access_log=not quiet, timeout_graceful_shutdown=5,
                                limit_concurrency=LIMIT_CONNECTIONS)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the Ctrl-C it caught
            pass
        click.echo("digitrec: stopped")
    finally:
        sock.close()
