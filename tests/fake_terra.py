"""A stand-in for Terra's REST API, served over real HTTP on loopback, recording every request.

Defaults (what every test gets unless it changes them): any GET answers `status` (200) with
`{"status": "success", "type": <last path segment>}`; POST /auth/generateWidgetSession answers a
widget session; DELETE /auth/deauthenticateUser and any other POST/DELETE answer
`{"status": "success"}`. Tests may set, and `reset()` restores:
- `status` / `delay`: for every request;
- `path_status` / `path_delay`: by path (as recorded, e.g. "/v2/userInfo"), over the above;
- `path_body_delay`: by path, a pause between the answer's head and its body (slow in two phases);
- `user_status`: by the `user_id` query parameter, over all the above;
- `headers`: extra response headers (e.g. Retry-After);
- `user_delay`: by the `user_id` query parameter, over `delay` / `path_delay` (one slow connection);
- `path_script`: by path, how that path's next requests are answered, one step per request, over
  everything else: a status, or (status, delay) for a slow answer (`[503, (200, 5.0), 200]`:
  fails, answers too late, then answers); the other settings apply once it is empty;
- `status_headers`: extra response headers by status (e.g. {429: {"Retry-After": "7"}});
- `user_info`: the JSON answer of GET /userInfo (None keeps the generic GET answer);
- `widget_session`: the JSON answer of POST /auth/generateWidgetSession.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_WIDGET_SESSION = {
    "status": "success",
    "session_id": "fake-session-1",
    "url": "https://widget.tryterra.co/session/fake-session-1",
    "expires_in": 900,
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0  # what the fake answered (set once it has decided)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeTerra:
    requests: list[RecordedRequest] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    path_status: dict[str, int] = field(default_factory=dict)
    path_delay: dict[str, float] = field(default_factory=dict)
    path_body_delay: dict[str, float] = field(default_factory=dict)
    user_status: dict[str, int] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    user_delay: dict[str, float] = field(default_factory=dict)
    path_script: dict[str, list[int | tuple[int, float]]] = field(default_factory=dict)
    status_headers: dict[int, dict[str, str]] = field(default_factory=dict)
    user_info: Any = None
    widget_session: Any = field(default_factory=lambda: dict(DEFAULT_WIDGET_SESSION))
    server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2"

    def reset(self) -> None:
        """Forget requests and restore every default behaviour."""
        self.requests.clear()
        self.status, self.delay = 200, 0.0
        self.path_status, self.path_delay, self.user_status, self.headers = {}, {}, {}, {}
        self.path_body_delay = {}
        self.user_delay, self.path_script, self.status_headers = {}, {}, {}
        self.user_info = None
        self.widget_session = dict(DEFAULT_WIDGET_SESSION)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def requests_of(self, user_id: str) -> list[RecordedRequest]:
        return [r for r in self.requests if (r.query.get("user_id") or [""])[0] == user_id]

    def _answer(self, request: RecordedRequest) -> tuple[int, float, Any]:
        user_id = (request.query.get("user_id") or [""])[0]
        status = self.user_status.get(user_id, self.path_status.get(request.path, self.status))
        delay = self.user_delay.get(user_id, self.path_delay.get(request.path, self.delay))
        script = self.path_script.get(request.path)
        if script:
            step = script.pop(0)
            status, delay = step if isinstance(step, tuple) else (step, delay)
        if request.method == "GET" and request.path.endswith("/userInfo") and self.user_info is not None:
            body = self.user_info
        elif request.method == "GET" and request.path.endswith("/subscriptions"):
            page = int((request.query.get("page") or ["0"])[0])
            users = [{"user_id": f"t{n}", "provider": "GARMIN"} for n in range(page * 2, page * 2 + 2)]
            body = {"data": {"next": page + 1 if page < 1 else None, "max_page": 1, "results": users}}
        elif request.method == "GET":
            body = {"status": "success", "type": request.path.rsplit("/", 1)[-1]}
        elif request.method == "POST" and request.path.endswith("/auth/generateWidgetSession"):
            body = self.widget_session
        elif request.method == "POST" and request.path.endswith("/lab-reports"):
            body = {"upload_id": f"upl_{len(self.requests)}", "current_status": "processing"}
        else:
            body = {"status": "success"}
        return status, delay, body

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                request = RecordedRequest(
                    method,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                fake.requests.append(request)
                with fake._lock:  # one script step per request, even when requests race
                    status, delay, answer = fake._answer(request)
                request.status = status
                time.sleep(delay)
                body = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    for name, value in {**fake.headers, **fake.status_headers.get(status, {})}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if pause := fake.path_body_delay.get(request.path):
                        self.wfile.flush()
                        time.sleep(pause)
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
