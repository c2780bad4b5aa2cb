"""A stand-in for the S3 bucket of Terra's ping mode: serves set bodies over real HTTP on loopback."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    delay: float = 0.0  # seconds before the answer starts
    content_length: bool = True  # False: no header, the body ends when the connection closes
    headers: dict[str, str] = field(default_factory=dict)  # more response headers (a Location)


@dataclass
class PayloadServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # each request's Host header
    server: ThreadingHTTPServer | None = None
    tls: ssl.SSLContext | None = None  # set: HTTPS with this server context
    server_names: list[str] = field(default_factory=list)  # each TLS handshake's SNI

    @property
    def origin(self) -> str:
        """The server's origin, as AMY_S3_PAYLOAD_HOSTS lists it."""
        assert self.server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        assert self.server is not None
        # A query string like a pre-signed URL's, which the server ignores.
        return f"{self.origin}{path}?X-Amz-Expires=300&X-Amz-Signature=test"

    def serve(self, path: str, body: bytes = b"", **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return self.url(path)

    def start(self) -> None:
        routes, requests, hosts = self.routes, self.requests, self.hosts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                requests.append(path)
                hosts.append(self.headers.get("host", ""))
                route = routes.get(path, Route(b"<Error><Code>NoSuchKey</Code></Error>", status=404))
                time.sleep(route.delay)
                try:
                    self.send_response(route.status)
                    self.send_header("content-type", "application/json")
                    if route.content_length:
                        self.send_header("content-length", str(len(route.body)))
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout or a refused body): expected in tests

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.tls.sni_callback = lambda _socket, name, _context: self.server_names.append(name or "")
            # The handshake in each request's thread, so a client that aborts it never holds up accept().
            self.server.socket = self.tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
