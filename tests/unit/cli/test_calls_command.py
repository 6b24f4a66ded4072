"""`callbridge calls`: the running gateway's calls as a table, from its HTTP API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from callbridge.cli.main import format_calls, main
from tests.peers.peerlib.process import free_port

CALLS = [
    {"id": "call-2-bb", "live": True, "transport": "sip", "direction": "inbound",
     "from": "sip:alice@192.0.2.1", "to": "agent", "agent": "voice", "started": 1000.0},
    {"id": "call-1-aa", "live": False, "transport": "twilio", "direction": "outbound",
     "from": "", "to": "+15551234567", "agent": "echo", "started": 900.0, "ended": 965.0,
     "end_reason": "remote_bye"},
]  # fmt: skip


def test_format_calls_is_a_table() -> None:
    lines = format_calls(CALLS, now=1075.0).splitlines()
    assert lines[0].split() == ["ID", "STATE", "VIA", "DIR", "FROM", "TO", "AGENT", "DURATION"]
    assert lines[1].split() == [
        "call-2-bb", "live", "sip", "inb", "sip:alice@192.0.2.1", "agent", "voice", "1:15",
    ]  # fmt: skip
    assert lines[2].split() == [
        "call-1-aa", "remote_bye", "twilio", "out", "+15551234567", "echo", "1:05",
    ]  # fmt: skip
    assert format_calls([], now=0.0) == "no calls"


@pytest.fixture
def api() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
            body = json.dumps({"calls": CALLS[:1]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_lists_live_calls_with_the_token(
    api: tuple[int, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, seen = api
    monkeypatch.setenv("CALLBRIDGE_HTTP_PORT", str(port))
    monkeypatch.setenv("CALLBRIDGE_API_TOKEN", "t0ken")
    assert main(["calls"]) == 0
    assert seen == [{"path": "/calls?live=true&limit=50", "auth": "Bearer t0ken"}]
    out = capsys.readouterr()
    assert "call-2-bb" in out.out
    assert "HTTP Request" not in out.err  # httpx's INFO line is not printed


def test_no_gateway_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLBRIDGE_HTTP_PORT", str(free_port()))
    assert main(["calls", "--all"]) == 1
    assert "is `callbridge serve` running" in capsys.readouterr().err
