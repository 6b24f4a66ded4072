"""Issue 5 acceptance 5 (the webhook half): the caller's phone dies mid-call without a BYE.

SIPp calls the echo agent with the test's RTP endpoint as its media; the endpoint then goes
silent (no RTP, no BYE). With CALLBRIDGE_RTP_TIMEOUT=2 the gateway ends the call as
rtp_timeout, and a `call.ended` webhook carrying that reason reaches the test's HTTP receiver
on loopback, signed: `verify()` accepts its signature (and refuses it with another secret).
The recording.ready and call.transcript events follow, once the files are final.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from callbridge.observability.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

from .conftest import GatewayFactory, require_tools
from .peerlib.process import ProcessRegistry, free_port, wait_until
from .peerlib.voice_caller import CallerMedia, start_voice_caller

pytestmark = pytest.mark.peer

RTP_TIMEOUT_S = 2.0
SECRET = "peer-drop-webhook-secret"


@dataclass(frozen=True, slots=True)
class Hook:
    timestamp: str
    signature: str
    body: bytes

    @property
    def doc(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver(ThreadingHTTPServer):
    hooks: list[Hook]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.hooks.append(
            Hook(self.headers[TIMESTAMP_HEADER], self.headers[SIGNATURE_HEADER], body)
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.hooks = []
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def hook_of(receiver: Receiver, type_: str, call_id: str) -> Hook | None:
    for hook in list(receiver.hooks):
        doc = hook.doc
        if doc["type"] == type_ and doc["data"].get("call_id") == call_id:
            return hook
    return None


def test_a_dead_peer_sends_a_signed_call_ended_webhook(
    registry: ProcessRegistry,
    gateway_factory: GatewayFactory,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    require_tools("sipp")
    port = receiver.server_address[1]
    gw = gateway_factory(
        extra_env={
            "CALLBRIDGE_DEFAULT_AGENT": "echo",
            "CALLBRIDGE_RTP_TIMEOUT": str(RTP_TIMEOUT_S),
            "CALLBRIDGE_WEBHOOKS_URL": f"http://127.0.0.1:{port}/hooks",
            "CALLBRIDGE_WEBHOOKS_SECRET": SECRET,
        }
    )
    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(registry, gw.sip_addr, media)
        call_id = str(
            gw.wait_for("call.started", timeout=5, sip_call_id=caller.sip_call_id)[0]["call_id"]
        )
        wait_until(lambda: hook_of(receiver, "call.answered", call_id), 5, "call.answered hook")
        wait_until(lambda: media.received or None, 5, "the echo's first packets")
        dropped = time.time()
        media.stop()  # the phone dies: no more RTP, no BYE
        ended = gw.wait_for("call.ended", timeout=RTP_TIMEOUT_S + 10, call_id=call_id)[0]
    assert ended["reason"] == "rtp_timeout", ended
    assert time.time() - dropped >= RTP_TIMEOUT_S

    hook = wait_until(lambda: hook_of(receiver, "call.ended", call_id), 10, "call.ended hook")
    assert hook.doc["data"]["reason"] == "rtp_timeout", hook.doc
    assert verify(SECRET, hook.timestamp, hook.body, hook.signature)
    assert not verify("another secret", hook.timestamp, hook.body, hook.signature)
    assert abs(int(hook.timestamp) - time.time()) < 60

    ready = wait_until(lambda: hook_of(receiver, "recording.ready", call_id), 10, "recording")
    assert Path(ready.doc["data"]["path"]).is_file()
    assert ready.doc["data"]["path"] == str(gw.config.data_dir / "recordings" / f"{call_id}.wav")
    transcript = wait_until(lambda: hook_of(receiver, "call.transcript", call_id), 10, "hook")
    saved = json.loads(Path(transcript.doc["data"]["path"]).read_text(encoding="utf-8"))
    assert (saved["complete"], saved["end_reason"]) == (True, "rtp_timeout")
    order = [h.doc["type"] for h in receiver.hooks if h.doc["data"].get("call_id") == call_id]
    assert order.index("call.started") < order.index("call.ended") < order.index("recording.ready")
    for h in receiver.hooks:
        assert verify(SECRET, h.timestamp, h.body, h.signature), h.doc
    caller.sipp.wait(10)  # it answers the gateway's BYE
