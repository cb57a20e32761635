"""Tiny HTTP(S) servers on loopback addresses for the ``http`` handler's tests: each answers
its routes and records every request it received, so a test can show a refused request
never reached it."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

# A route's body: bytes, or a writer that streams to the socket until it fails
Body = bytes | Callable[[BinaryIO], None]


@dataclass(frozen=True)
class Route:
    status: int = 200
    body: Body = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Server:
    host: str
    port: int
    scheme: str
    requests: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"


def _handler(server: Server, routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            server.requests.append(Seen(self.command, self.path, dict(self.headers.items())))
            route = routes.get(self.path, Route(404, b"no such route"))
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if isinstance(route.body, bytes):
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            else:
                self.send_header("Connection", "close")
                self.end_headers()
                with suppress(OSError):  # the client hung up, as it should past its cap
                    route.body(self.wfile)

        do_GET = do_POST = do_PUT = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read ``requests`` instead."""

    return Handler


@contextmanager
def serve(
    routes: dict[str, Route],
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Server]:
    """A threaded server on ``host``:``port`` (0: any free port) answering ``routes``; with
    ``tls``, over TLS, recording the SNI each client sent."""
    httpd = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
    server = Server(host, httpd.server_address[1], "https" if tls else "http")
    httpd.RequestHandlerClass = _handler(server, routes)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: server.sni.append(name)  # type: ignore[assignment]
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
