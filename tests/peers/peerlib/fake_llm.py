"""A real local OpenAI-compatible HTTP server that fails: every POST .../chat/completions
gets HTTP 500 with an OpenAI-style error body. Runs on 127.0.0.1 in a thread of the test
process (stdlib http.server) and records what it was asked, so a test can prove that the
gateway really called it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .process import LOOPBACK

ERROR_BODY = json.dumps(
    {"error": {"message": "fake upstream failure", "type": "server_error", "code": None}}
).encode()


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(eq=False)
class FailingLlmServer:
    """`with FailingLlmServer() as llm:` then point the gateway at `llm.base_url`."""

    status: int = 500
    requests: list[SeenRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def chat_requests(self) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def start(self) -> FailingLlmServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner._lock:
                    owner.requests.append(
                        SeenRequest(self.command, self.path, dict(self.headers.items()), body)
                    )

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self._record()
                if self.path.rstrip("/").endswith("/chat/completions"):
                    self._reply(owner.status, ERROR_BODY)
                else:
                    self._reply(404, b'{"error": {"message": "not found"}}')

            def do_GET(self) -> None:
                self._record()
                self._reply(404, b'{"error": {"message": "not found"}}')

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads `requests`; keep stderr for real problems

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FailingLlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
