"""Issue 14 over chan_websocket (Asterisk 22.6+/23): "Asterisk" (peerlib.asterisk.
ChanWebSocketAsterisk, from chan_websocket.c) dials out to the gateway's /asterisk/media as
Dial(WebSocket/...) does, with the credentials of websocket_client.conf: MEDIA_START, µ-law
frames both ways, its playout queue played one frame per 20 ms.

The caller asks what the agent can do and talks over the long answer 1.5 s in: what Asterisk
plays to the caller stops within the SIP bound (300 ms; PAUSE_MEDIA at the speech onset) and
the gateway sends FLUSH_MEDIA once the barge-in is confirmed.
Wrong credentials get no call. The caller's DTMF_END reaches the agent; HANGUP ends it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import pytest
import websockets

from callbridge.asterisk import chan_websocket as cws

from .conftest import GatewayFactory
from .peerlib import speech
from .peerlib.asterisk import ChanWebSocketAsterisk
from .peerlib.asterisk_calls import ChanWebSocketCaller, LoopThread
from .peerlib.audio import ulaw_encode
from .peerlib.process import LOOPBACK, wait_true, wait_until
from .peerlib.voice_caller import wait_for_sound

pytestmark = pytest.mark.peer

MAX_STOP_S = 0.300
USER, PASSWORD = "asterisk", "s3cret"


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


class _Authed(ChanWebSocketAsterisk):
    """websocket_client.conf `username`/`password`: HTTP Basic on the upgrade."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        super().__init__(url, channel_id="1761234567.42")
        self.auth = auth

    async def connect(self) -> None:
        """ChanWebSocketAsterisk.connect with the Authorization header res_websocket_client
        sends for `username`/`password`."""
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        self._ws = await websockets.connect(
            self.url, additional_headers={"Authorization": f"Basic {token}"}
        )
        start = cws.MediaStart(self.connection_id, f"WebSocket/{self.connection_id}/0x7f3c2c004a10",
                               self.channel_id, self.codec, self.frame_size, 20)  # fmt: skip
        await self._event(start)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._playout())]


def test_flush_media_on_barge_in_over_chan_websocket(
    gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    gw = gateway_factory(
        extra_env={
            "CALLBRIDGE_AGENT_GREET": "false",
            "CALLBRIDGE_CHAN_WEBSOCKET_ENABLED": "true",
            "CALLBRIDGE_CHAN_WEBSOCKET_USERNAME": USER,
            "CALLBRIDGE_CHAN_WEBSOCKET_PASSWORD": PASSWORD,
        }
    )
    url = f"ws://{LOOPBACK}:{gw.config.http_port}/asterisk/media"
    wait_until(lambda: gw.events("http.listening") or None, 10, "the HTTP server")

    # Wrong credentials: the upgrade is refused, no call.
    intruder = _Authed(url, (USER, "wrong"))
    with pytest.raises(websockets.InvalidStatus):
        loop_thread.run(intruder.connect())

    peer = _Authed(url, (USER, PASSWORD))
    loop_thread.run(peer.connect())
    caller = ChanWebSocketCaller(loop_thread, peer)
    started = gw.wait_for("call.started", timeout=5, asterisk_channel_id="1761234567.42")[0]
    assert started["transport"] == "chan_websocket", started
    call_id = started["call_id"]
    wait_until(lambda: caller.commands() or None, 5, "ANSWER")
    assert isinstance(caller.commands()[0][1], cws.Answer)

    loop_thread.run(peer.send_dtmf("4"))
    gw.wait_for("call.dtmf", timeout=5, call_id=call_id, digit="4")

    question = speech.piper_speech("what can you do")
    interruption = speech.piper_speech("hold on, I have another question")
    asked = time.time()
    loop_thread.run(peer.stream(ulaw_encode(question)), 30)
    gw.wait_for("agent.heard", timeout=15, call_id=call_id)
    answer_on = wait_for_sound(
        caller, after=asked + speech.duration(question), timeout=15, what="the answer"
    )
    wait_true(lambda: time.time() >= answer_on + 1.5, 5, "1.5 s of the answer")
    onset = time.time()  # the interruption's first frame goes out now, loud from its start
    loop_thread.run(peer.stream(ulaw_encode(speech.trim(interruption, 0.0))), 30)
    wait_until(lambda: gw.events("agent.barge_in", call_id=call_id) or None, 10, "barge-in")
    time.sleep(0.5)  # Asterisk's playout runs on: nothing of the answer may follow
    loop_thread.run(peer.hangup())
    gw.wait_for("call.ended", timeout=10, call_id=call_id)

    flushes = [t for t, c in caller.commands() if isinstance(c, cws.FlushMedia)]
    assert flushes, f"no FLUSH_MEDIA: {caller.commands()}"
    played = caller.frames()
    talking = speech.last_loud_before(played, onset)
    assert talking is not None and onset - talking < 0.2, "the agent was not talking"
    stop = speech.end_of_sound_at(played, onset)
    assert stop is not None
    print(f"FLUSH_MEDIA {1000 * (flushes[0] - onset):.0f} ms, last played agent audio "
          f"{1000 * (stop - onset):.0f} ms after the caller's onset")  # fmt: skip
    # The caller hears silence at once (PAUSE_MEDIA on the first sign of speech); once the
    # barge-in is confirmed, FLUSH_MEDIA drops what Asterisk still held of the answer.
    assert flushes[0] - onset <= 1.0, "FLUSH_MEDIA came late"
    assert stop - onset <= MAX_STOP_S, f"Asterisk played the agent {stop - onset:.3f} s over"
    gw.assert_no_crash()
