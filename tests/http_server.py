"""A small threaded HTTP server on 127.0.0.1 for tests, so no test ever touches the internet.

    with LocalHTTPServer({"/a.gz": data, "/gone.gz": 404}) as server:
        urllib.request.urlopen(server.url("a.gz"))

Each route maps a path to what the server answers:
  bytes        200 with that body and a correct Content-Length
  int          that status code with an empty body (404, 500, ...)
  Truncated    a Content-Length larger than the body it sends before closing the connection
  Raw          these bytes verbatim (no status line added), then close: for broken or non-HTTP peers
  Stall        wait that many seconds before answering 200 with the body (for client timeouts)
  Trickle      200 with the body sent `chunk` bytes at a time, `interval` seconds apart (a slow mirror)
  Redirect     302 to `location`
Unknown paths get 404. Every request path is recorded, in order, in `server.requests`.

The server is bounded: it binds port 0 on 127.0.0.1 only, every connection has a socket timeout,
stalls end as soon as the server stops, and the server shuts itself down after `max_lifetime` seconds
even if a test forgets to stop it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Truncated:
    body: bytes
    declared_length: int


@dataclass(frozen=True)
class Raw:
    data: bytes


@dataclass(frozen=True)
class Stall:
    seconds: float
    body: bytes = b""


@dataclass(frozen=True)
class Trickle:
    body: bytes
    chunk: int
    interval: float


@dataclass(frozen=True)
class Redirect:
    location: str


Route = bytes | int | Truncated | Raw | Stall | Trickle | Redirect


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # seconds; applied to each connection's socket
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner._lock:
            owner.requests.append(path)
            owner.authorizations.append(self.headers.get("Authorization"))
            route = owner.routes.get(path, 404)
        if isinstance(route, Stall):
            if owner._stopping.wait(route.seconds):
                self.close_connection = True
                return
            route = route.body
        if isinstance(route, int):
            self.send_response(route)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif isinstance(route, bytes):
            self._send_body(route, len(route))
        elif isinstance(route, Truncated):
            self._send_body(route.body, route.declared_length)
            self.close_connection = True
        elif isinstance(route, Trickle):
            self.send_response(200)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            try:
                for start in range(0, len(route.body), route.chunk):
                    self.wfile.write(route.body[start:start + route.chunk])
                    self.wfile.flush()
                    if owner._stopping.wait(route.interval):
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
            self.close_connection = True
        elif isinstance(route, Redirect):
            self.send_response(302)
            self.send_header("Location", route.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif isinstance(route, Raw):
            self.wfile.write(route.data)
            self.wfile.flush()
            self.close_connection = True
        else:  # pragma: no cover - a bug in the test itself
            raise TypeError(f"unsupported route {route!r}")

    def _send_body(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (e.g. its timeout fired)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LocalHTTPServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-response is expected in these tests


class LocalHTTPServer:
    def __init__(self, routes: Mapping[str, Route] | None = None, *, max_lifetime: float = 60.0) -> None:
        self.routes: dict[str, Route] = {self._norm(k): v for k, v in (routes or {}).items()}
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header, in order
        self.max_lifetime = max_lifetime
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @staticmethod
    def _norm(path: str) -> str:
        return path if path.startswith("/") else "/" + path

    def __setitem__(self, path: str, route: Route) -> None:
        with self._lock:
            self.routes[self._norm(path)] = route

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The server's root URL, ending in "/" like a registry mirror."""
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str = "") -> str:
        return self.base_url + path.lstrip("/")

    def start(self) -> LocalHTTPServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-http-server", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
