"""ChanWebSocketLeg on a fake socket and a fake clock: ANSWER first, caller audio (µ-law and
slin16), DTMF_END, whole optimal frames paced with a small lead, FLUSH_MEDIA on barge-in
(not in passthrough mode), MEDIA_XOFF/XON, HANGUP both ways; and the transport's handshake."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.asterisk import chan_websocket as cws
from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.testing import FakeClock, LegDriver, settle
from callbridge.transports.asterisk.chan_websocket import ChanWebSocketTransport
from callbridge.transports.asterisk.chan_websocket_leg import (
    ChanWebSocketLeg,
    ChanWebSocketLegConfig,
)
from callbridge.transports.websocket import SocketClosed


def start(fmt: str = "ulaw", size: int | None = None) -> cws.MediaStart:
    frame = cws.OPTIMAL_FRAME_SIZES[fmt] if size is None else size
    return cws.MediaStart("conn1", "WebSocket/conn1/0x1", "1761234567.42", fmt, frame, 20)


class FakeSocket:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.texts: list[str] = []
        self.binary: list[bytes] = []
        self.closed: int | None = None

    async def send_text(self, text: str) -> None:
        if self.closed is not None:
            raise SocketClosed
        self.texts.append(text)

    async def send_bytes(self, data: bytes) -> None:
        if self.closed is not None:
            raise SocketClosed
        self.binary.append(data)

    async def receive(self) -> str | bytes:
        item = await self.incoming.get()
        if item is None:
            raise SocketClosed(1000)
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = code
            self.incoming.put_nowait(None)


def tone(i: int, level: int = 3000) -> bytes:
    t = (np.arange(160) + 160 * i) / 8000
    return (level * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


class Harness(LegDriver):
    def __init__(self, st: cws.MediaStart | None = None) -> None:
        clock = FakeClock()
        self.socket = FakeSocket()
        self.leg: ChanWebSocketLeg = ChanWebSocketLeg(
            self.socket, st or start(), clock, LegInfo("chan_websocket", "inbound"),
            ChanWebSocketLegConfig(),
        )  # fmt: skip
        super().__init__(self.leg, clock)

    async def play_tones(self, frames: int) -> asyncio.Task[None]:
        return await self.play([AudioFrame(tone(i)) for i in range(frames)])


async def test_answer_first_then_caller_audio_and_dtmf() -> None:
    async with Harness() as h:
        assert h.socket.texts[:1] == ["ANSWER"]
        h.socket.incoming.put_nowait(ulaw_encode(tone(0)))
        h.socket.incoming.put_nowait("DTMF_END digit:5 channel_id:1761234567.42")
        await settle()
        frames = [f for f in h.received if isinstance(f, AudioFrame)]
        assert [f.pcm for f in frames] == [ulaw_decode(ulaw_encode(tone(0)))]
        assert DtmfDigit("5", 0) in h.received


async def test_agent_audio_goes_in_whole_optimal_frames_a_little_ahead() -> None:
    async with Harness() as h:
        await h.play_tones(30)
        await h.ticks(1)
        assert len(h.socket.binary) == 3  # 60 ms lead: FLUSH_MEDIA has little to drop
        for n in range(2, 20):
            await h.ticks(1)
            assert len(h.socket.binary) == n + 2
        assert all(len(b) == 160 for b in h.socket.binary)
        assert h.socket.binary[0] == ulaw_encode(tone(0))


async def test_barge_in_flushes_asterisk_queue_at_once() -> None:
    async with Harness() as h:
        player = await h.play_tones(30)
        await h.ticks(5)
        sent = len(h.socket.binary)
        player.cancel()  # the agent stops producing the answer
        h.leg.flush_playout()
        await settle()
        assert h.socket.texts[-1] == "FLUSH_MEDIA"
        await h.ticks(5)
        assert len(h.socket.binary) == sent  # nothing more of the answer
        assert not h.leg.playing


async def test_passthrough_mode_gets_no_flush_media() -> None:
    async with Harness(start("slin16", size=0)) as h:
        h.leg.flush_playout()
        await settle()
        assert "FLUSH_MEDIA" not in h.socket.texts


async def test_xoff_stops_sending_and_xon_resumes() -> None:
    async with Harness() as h:
        await h.play_tones(30)
        h.socket.incoming.put_nowait("MEDIA_XOFF")
        await settle()
        await h.ticks(5)
        assert h.socket.binary == []
        h.socket.incoming.put_nowait("MEDIA_XON")
        await settle()
        await h.ticks(1)
        assert len(h.socket.binary) == 3
        assert h.leg.stats()["xoff"] == 1


async def test_slin16_is_resampled_both_ways_in_640_byte_frames() -> None:
    async with Harness(start("slin16")) as h:
        h.socket.incoming.put_nowait(bytes(640) * 3)
        await settle()
        assert len([f for f in h.received if isinstance(f, AudioFrame)]) in (2, 3)
        await h.play_tones(5)
        await h.ticks(5)
        assert h.socket.binary and all(len(b) == 640 for b in h.socket.binary)


async def test_hangups_both_ways() -> None:
    async with Harness() as h:
        await h.leg.hangup("agent_done")
        assert h.socket.texts[-1] == "HANGUP" and h.socket.closed == 1000
        assert h.leg.end_reason == "agent_done"
    async with Harness() as h:
        h.socket.incoming.put_nowait(None)  # Asterisk closes the socket
        await settle()
        await h.ticks(1)
        assert h.leg.end_reason == "remote_hangup"


async def test_bad_events_are_counted_not_fatal() -> None:
    async with Harness() as h:
        h.socket.incoming.put_nowait("DTMF_END digit:55 channel_id:x")
        h.socket.incoming.put_nowait("SOMETHING_NEW a:b")
        await settle()
        assert not h.leg.ended and h.leg.stats()["bad_events"] == 1


class Calls:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.legs: list[CallLeg] = []
        self.tasks: list[asyncio.Task[None]] = []

    def admit(self, info: LegInfo) -> None:
        if self.refuse:
            raise Rejection(self.refuse)

    def start(self, leg: CallLeg) -> None:
        self.legs.append(leg)
        self.tasks.append(asyncio.create_task(leg.hangup("test")))


async def test_the_transport_needs_media_start_first_and_a_format_it_knows() -> None:
    transport = ChanWebSocketTransport(FakeClock(), Calls(), handshake_timeout=1)
    sock = FakeSocket()
    sock.incoming.put_nowait("MEDIA_XON")
    await transport.handle(sock)
    assert sock.closed == 1008
    sock = FakeSocket()
    sock.incoming.put_nowait(cws.format_event(start("opus", size=0)))
    await transport.handle(sock)
    assert sock.closed == 1008


async def test_the_transport_refuses_with_hangup_and_serves_admitted_calls() -> None:
    transport = ChanWebSocketTransport(FakeClock(), Calls(Rejection.BUSY))
    sock = FakeSocket()
    sock.incoming.put_nowait(cws.format_event(start(), "json"))
    await transport.handle(sock)
    assert [json.loads(t) for t in sock.texts] == [{"command": "HANGUP"}] and sock.closed == 1013
    calls = Calls()
    transport = ChanWebSocketTransport(FakeClock(), calls, route="echo")
    sock = FakeSocket()
    sock.incoming.put_nowait(cws.format_event(start()))
    await asyncio.wait_for(transport.handle(sock, None, "127.0.0.1:4000"), 2)
    info = calls.legs[0].info
    assert (info.transport, info.local_user) == ("chan_websocket", "echo")
    assert info.ids["asterisk_channel_id"] == "1761234567.42"
    assert "HANGUP" in sock.texts


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=700), st.text(max_size=200)), max_size=6))
def test_fuzzed_messages_never_crash_the_leg(messages: list[str | bytes]) -> None:
    async def scenario() -> None:
        async with Harness() as h:
            for message in messages:
                h.socket.incoming.put_nowait(message)
            await settle()
            await h.ticks(2)
        assert h.task.exception() is None

    asyncio.run(scenario())


async def test_a_hold_pauses_asterisk_playout_and_resumes_it() -> None:
    async with Harness() as h:
        await h.play_tones(10)
        await h.ticks(2)
        h.leg.pause_playout(True)
        await settle()
        assert h.socket.texts[-1] == "PAUSE_MEDIA"
        sent = len(h.socket.binary)
        await h.ticks(3)
        assert len(h.socket.binary) == sent  # held: nothing more goes out
        h.leg.pause_playout(False)
        await settle()
        assert h.socket.texts[-1] == "CONTINUE_MEDIA"
        await h.ticks(1)
        assert len(h.socket.binary) > sent


async def test_control_goes_before_audio_and_keeps_its_order() -> None:
    async with Harness() as h:
        await h.play_tones(10)
        await h.ticks(1)  # audio queued for the writer, not yet written
        h.leg.pause_playout(True)
        h.leg.pause_playout(False)
        h.leg.flush_playout()
        await settle()
        assert h.socket.texts[-3:] == ["PAUSE_MEDIA", "CONTINUE_MEDIA", "FLUSH_MEDIA"]


async def test_json_channels_get_json_commands() -> None:
    clock = FakeClock()
    sock = FakeSocket()
    leg = ChanWebSocketLeg(sock, start(), clock, LegInfo("chan_websocket", "inbound"),
                           control_format="json")  # fmt: skip
    task = asyncio.create_task(leg.run())
    await settle()
    leg.flush_playout()
    await settle()
    leg.request_hangup("agent_done")
    await settle()
    await clock.advance(0.05)
    await asyncio.wait_for(task, 1)
    assert [json.loads(t)["command"] for t in sock.texts] == ["ANSWER", "FLUSH_MEDIA", "HANGUP"]
    assert leg.end_reason == "agent_done"
