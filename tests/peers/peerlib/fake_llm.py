"""A real local OpenAI-compatible HTTP server that fails: every POST .../chat/completions
gets HTTP 500 with an OpenAI-style error body. Runs on 127.0.0.1 in a thread of the test
process (stdlib http.server) and records what it was asked, so a test can prove that the
gateway really called it.

With `tool_call=(name, arguments)` it answers instead: the first chat completion is a
streamed (SSE) assistant message that only calls that tool, later ones say "Okay."."""

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
    tool_call: tuple[str, dict[str, Any]] | None = None  # answer with this call, not an error
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
                if owner.tool_call is not None and self.path.rstrip("/").endswith(
                    "/chat/completions"
                ):
                    first = len(owner.chat_requests()) == 1
                    body = _tool_call_stream(*owner.tool_call) if first else _text_stream("Okay.")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path.rstrip("/").endswith("/chat/completions"):
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


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _tool_call_stream(name: str, arguments: dict[str, Any]) -> bytes:
    """An assistant turn that only calls `name`, its arguments in two pieces (as OpenAI
    streams them), then finish_reason tool_calls and [DONE]."""
    args = json.dumps(arguments)
    half = len(args) // 2
    call = {"index": 0, "id": "call_fake_1", "type": "function"}
    return b"".join([
        _chunk({"role": "assistant", "content": None,
                "tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}),
        _chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ])  # fmt: skip


def _text_stream(text: str) -> bytes:
    return b"".join(
        [_chunk({"role": "assistant", "content": text}), _chunk({}, "stop"), b"data: [DONE]\n\n"]
    )
