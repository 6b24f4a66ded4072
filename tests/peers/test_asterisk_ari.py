"""Issue 14 over ARI: the gateway as a Stasis app against the ARI double (peerlib.asterisk,
from Asterisk's ARI swagger and resource_channels.c).

The double pushes StasisStart for a caller's channel; the gateway answers it, creates an
externalMedia channel (RTP over UDP to a port of its own), a mixing bridge, and adds both.
The test then plays Asterisk's UnicastRTP channel: RTP from UNICASTRTP_LOCAL_ADDRESS/PORT to
the gateway's port, and the echo agent's RTP comes back to it. A digit reaches the agent, and
when the caller hangs up the gateway deletes the external channel, the caller's channel and
the bridge. Every REST call is checked, in order, with its parameters; the call record and
the log carry the channel ids and the RTP address.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from .conftest import GatewayFactory
from .peerlib.asterisk import AriDouble
from .peerlib.asterisk_calls import LoopThread
from .peerlib.audio import dbfs, ulaw_decode, ulaw_encode
from .peerlib.process import LOOPBACK, free_port, wait_until

pytestmark = pytest.mark.peer

CALLER = "1761234567.1"


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def rtp(seq: int, payload: bytes, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, ssrc) + payload


def test_stasis_start_external_media_rtp_to_the_agent_and_hang_up(
    gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    rtp_port = free_port()
    double = AriDouble(rtp_address=(LOOPBACK, rtp_port))
    loop_thread.run(double.start())
    gw = gateway_factory(
        extra_env={
            "CALLBRIDGE_DEFAULT_AGENT": "echo",
            "CALLBRIDGE_ARI_ENABLED": "true",
            "CALLBRIDGE_ARI_URL": double.base_url,
            "CALLBRIDGE_ARI_USERNAME": double.username,
            "CALLBRIDGE_ARI_PASSWORD": double.password,
            "CALLBRIDGE_ARI_APP": double.app,
        }
    )
    gw.wait_for("ari.connected", timeout=10)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # Asterisk's UnicastRTP channel
    media.bind((LOOPBACK, rtp_port))
    media.settimeout(0.02)
    try:
        loop_thread.run(double.start_call(CALLER, "4930123456"))
        bridged = gw.wait_for("ari.bridged", timeout=10)[0]
        started = gw.wait_for("call.started", timeout=5, ari_channel_id=CALLER)[0]
        call_id = started["call_id"]
        host, port = started["rtp_local"].split(":")
        # 1.5 s of a tone to the agent; the echo agent sends it back.
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160 * 75) / 8000)).astype(np.int16)
        back: list[bytes] = []
        t0 = time.monotonic()
        for i in range(75):
            media.sendto(rtp(i, ulaw_encode(tone[160 * i : 160 * (i + 1)])), (host, int(port)))
            while time.monotonic() < t0 + 0.02 * (i + 1):
                with contextlib.suppress(TimeoutError):
                    back.append(media.recv(2048))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                back.append(media.recv(2048))
        loop_thread.run(double.dtmf(CALLER, "5"))
        gw.wait_for("call.dtmf", timeout=5, call_id=call_id, digit="5")
        loop_thread.run(double.caller_hangs_up(CALLER))
        ended = gw.wait_for("call.ended", timeout=10, call_id=call_id)[0]
        wait_until(lambda: not double.bridges or None, 5, "the bridge to be destroyed")
    finally:
        media.close()
        loop_thread.run(double.close())

    # RTP came back from the gateway: PCMU, and the echo of the tone in it.
    audio = [p[12:] for p in back if len(p) > 12 and p[1] & 0x7F == 0]
    assert len(audio) > 50, f"{len(audio)} RTP packets back"
    loud = [dbfs(ulaw_decode(a)) for a in audio]
    assert max(loud) > -20, "the echo of the tone did not come back"
    assert ended["reason"] == "remote_hangup", ended

    # The exact REST conversation.
    ext, bridge = started["ari_external_channel_id"], started["ari_bridge_id"]
    calls = [(c.method, c.path, c.query) for c in double.calls]
    assert calls == [
        ("POST", f"/ari/channels/{CALLER}/answer", {}),
        ("POST", "/ari/channels/externalMedia",
         {"app": "callbridge", "external_host": f"{host}:{port}", "format": "ulaw",
          "encapsulation": "rtp", "transport": "udp", "direction": "both", "channelId": ext}),
        ("POST", f"/ari/bridges/{bridge}", {"type": "mixing"}),
        ("POST", f"/ari/bridges/{bridge}/addChannel", {"channel": f"{CALLER},{ext}"}),
        ("DELETE", f"/ari/channels/{ext}", {}),
        ("DELETE", f"/ari/channels/{CALLER}", {}),
        ("DELETE", f"/ari/bridges/{bridge}", {}),
    ], calls  # fmt: skip
    assert double.channels == {}, "a channel was left behind"

    # Correlation: the log and the call record carry the ids and the RTP address.
    assert started["unicastrtp_local_address"] == LOOPBACK
    assert started["unicastrtp_local_port"] == str(rtp_port)
    assert bridged["ari_channel_id"] == CALLER and bridged["call_id"] == call_id
    gw.wait_for("store.call_saved", timeout=5, call_id=call_id)
    with sqlite3.connect(gw.config.data_dir / "callbridge.db") as db:
        (ids,) = db.execute("SELECT ids FROM calls WHERE id = ?", (call_id,)).fetchone()
    record = json.loads(ids)
    for key in ("ari_channel_id", "ari_external_channel_id", "ari_bridge_id",
                "unicastrtp_local_address", "unicastrtp_local_port"):  # fmt: skip
        assert record[key] == started[key], (key, record)
    stderr = gw.proc.stderr_text()
    assert double.password not in stderr, "the ARI password was logged"
    gw.assert_no_crash()
