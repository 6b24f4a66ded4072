"""The agent socket against a real local WebSocket server playing the agent (the app side of
Twilio Media Streams), on a simulated leg that runs the real 20 ms schedule: the exact JSON
callbridge sends, mark echoes against what was played, clear, DTMF, stop, hang-ups, bad input
and the signature on the upgrade. The leg is callbridge.testing's FakeLeg on the loop's clock."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from callbridge.agents.twilio_socket import (
    AgentAudio,
    TwilioSocketAgent,
    TwilioSocketConfig,
    safe_url,
)
from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.config.settings import AgentRoute, Settings, load_settings
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.errors import ConfigError
from callbridge.core.events import DtmfDigit, LegHold
from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import LegInfo, Rejection
from callbridge.gateway import build_gateway
from callbridge.testing import FakeLeg
from callbridge.twilio_streams.signature import compute_signature, verify

Json = dict[str, Any]


def tone(frames: int, amplitude: int = 4000, hz: int = 400) -> bytes:
    t = np.arange(frames * FRAME_SAMPLES)
    return (amplitude * np.sin(2 * np.pi * hz * t / 8000)).astype("<i2").tobytes()


def caller_frame(n: int) -> AudioFrame:
    """A distinct caller frame: a constant level that names it."""
    return AudioFrame(np.full(FRAME_SAMPLES, 100 * (n + 1), "<i2").tobytes())


# ---- a local agent ------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeAgent:
    """The far end: a WebSocket server that records every message callbridge sends."""

    server: Server | None = None
    conn: ServerConnection | None = None
    received: list[Json] = field(default_factory=list)
    raw: list[str | bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""
    close_code: int | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    def url(self, path: str = "/agent") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def handler(self, conn: ServerConnection) -> None:
        self.conn = conn
        assert conn.request is not None
        self.path = conn.request.path
        self.headers = dict(conn.request.headers.raw_items())
        self.connected.set()
        try:
            async for text in conn:
                self.raw.append(text)
                self.arrivals.append(asyncio.get_running_loop().time())
                self.received.append(json.loads(text))
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = conn.close_code
            self.closed.set()
            self._new.set()

    async def send(self, msg: Json | str | bytes) -> None:
        assert self.conn is not None
        await self.conn.send(msg if isinstance(msg, str | bytes) else json.dumps(msg))

    @property
    def stream_sid(self) -> str:
        return str(self.events("start")[0]["streamSid"])

    def events(self, name: str) -> list[Json]:
        return [m for m in self.received if m["event"] == name]

    async def wait(self, check: Callable[[], bool], timeout: float = 2.0, what: str = "") -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._new.clear()
                if check():
                    return
                await self._new.wait()
        assert check(), what

    async def media(self, pcm: bytes) -> None:
        payload = base64.b64encode(ulaw_encode(pcm)).decode()
        await self.send(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def clear(self) -> None:
        await self.send({"event": "clear", "streamSid": self.stream_sid})

    def echoes(self) -> list[str]:
        return [m["mark"]["name"] for m in self.events("mark")]


@contextlib.asynccontextmanager
async def running(
    agent: FakeAgent, leg: FakeLeg, config: TwilioSocketConfig
) -> AsyncIterator[asyncio.Task[None]]:
    """The socket agent on `leg` and the leg's 20 ms pump, both stopped at the end."""
    task = asyncio.create_task(TwilioSocketAgent(config, leg.clock).run(leg))
    pump = asyncio.create_task(leg.run())
    try:
        yield task
    finally:
        await leg.hangup("test_over")
        async with asyncio.timeout(5):
            await task
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


@pytest.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    fake = FakeAgent()
    async with serve(fake.handler, "127.0.0.1", 0, compression=None) as server:
        fake.server = server
        yield fake


@pytest.fixture
def leg() -> FakeLeg:
    """A leg on the real 20 ms schedule whose caller sends only what a test puts."""
    info = LegInfo(
        "sip",
        "inbound",
        local_user="mybot",
        remote_uri="sip:alice@example.com",
        ids={"call_id": "call-1-abc", "sip_call_id": "x@y"},
    )
    return FakeLeg(LoopClock(), info=info, after_script="nothing")


def config_for(agent: FakeAgent, **kw: Any) -> TwilioSocketConfig:
    kw.setdefault("parameters", {"tenant": "acme", "lang": "en"})
    return TwilioSocketConfig(agent.url(), route="mybot", **kw)


async def started(agent: FakeAgent) -> None:
    await agent.wait(lambda: bool(agent.events("start")), what="start")


# ---- what callbridge sends ------------------------------------------------------------------


async def test_handshake_and_media_have_twilio_shapes(agent: FakeAgent, leg: FakeLeg) -> None:
    async with running(agent, leg, config_for(agent)):
        await started(agent)
        for n in range(3):
            leg.put(caller_frame(n))
        await agent.wait(lambda: len(agent.events("media")) == 3, what="3 media")
    connected, start, *media = agent.received[:5]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    sid = start["streamSid"]
    assert re.fullmatch(r"MZ[0-9a-f]{32}", sid)
    assert set(start) == {"event", "sequenceNumber", "start", "streamSid"}
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    body = start["start"]
    assert re.fullmatch(r"AC[0-9a-f]{32}", body["accountSid"])
    assert re.fullmatch(r"CA[0-9a-f]{32}", body["callSid"])
    assert body["streamSid"] == sid
    assert body["tracks"] == ["inbound"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert body["customParameters"] == {
        "tenant": "acme",
        "lang": "en",
        "from": "sip:alice@example.com",
        "to": "mybot",
        "call_id": "call-1-abc",
        "transport": "sip",
        "direction": "inbound",
    }
    for n, msg in enumerate(media):
        assert set(msg) == {"event", "sequenceNumber", "media", "streamSid"}
        assert msg["event"] == "media" and msg["streamSid"] == sid
        assert msg["sequenceNumber"] == str(n + 2)  # strings, as Twilio sends them
        assert set(msg["media"]) == {"track", "chunk", "timestamp", "payload"}
        assert msg["media"]["track"] == "inbound"
        assert msg["media"]["chunk"] == str(n + 1)
        assert msg["media"]["timestamp"] == str(20 * n)
        payload = base64.b64decode(msg["media"]["payload"])
        assert len(payload) == 160
        assert payload == ulaw_encode(caller_frame(n).pcm)
    assert all(isinstance(m, str) for m in agent.raw), "text frames only"
    assert agent.path == "/agent"


async def test_dtmf_then_stop_and_close_when_the_caller_hangs_up(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    async with running(agent, leg, config_for(agent)) as task:
        await started(agent)
        leg.put(DtmfDigit("5", 120))
        leg.put(LegHold(True))  # no Media Streams equivalent: nothing sent
        leg.put(DtmfDigit("#", 80))
        await agent.wait(lambda: len(agent.events("dtmf")) == 2, what="2 dtmf")
        await leg.hangup("caller_bye")
        await agent.wait(agent.closed.is_set, what="the socket closed")
        async with asyncio.timeout(3):
            await task
    sid = agent.stream_sid
    dtmf = agent.events("dtmf")
    assert dtmf[0] == {
        "event": "dtmf",
        "streamSid": sid,
        "sequenceNumber": "2",
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert dtmf[1]["dtmf"]["digit"] == "#" and dtmf[1]["sequenceNumber"] == "3"
    start = agent.events("start")[0]["start"]
    assert agent.received[-1] == {
        "event": "stop",
        "sequenceNumber": "4",
        "stop": {"accountSid": start["accountSid"], "callSid": start["callSid"]},
        "streamSid": sid,
    }
    assert agent.close_code == 1000
    assert leg.end_reason == "caller_bye"


async def test_audio_and_digits_before_the_stream_starts(agent: FakeAgent, leg: FakeLeg) -> None:
    # Queued before the socket exists: stale audio is dropped, the key press is kept.
    for n in range(5):
        leg.put(caller_frame(n))
    leg.put(DtmfDigit("7", 100))
    async with running(agent, leg, config_for(agent)):
        await started(agent)
        leg.put(caller_frame(9))
        await agent.wait(lambda: bool(agent.events("media")), what="media")
    assert [m["event"] for m in agent.received[:4]] == ["connected", "start", "dtmf", "media"]
    assert agent.events("dtmf")[0]["dtmf"]["digit"] == "7"
    first = agent.events("media")[0]["media"]
    assert first["chunk"] == "1"
    assert base64.b64decode(first["payload"]) == ulaw_encode(caller_frame(9).pcm)


# ---- what callbridge honours ----------------------------------------------------------------


async def test_agent_audio_plays_in_frames_and_its_mark_is_echoed_once_played(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    pcm = tone(25)  # 500 ms in one message: more than the leg's queue holds
    async with running(agent, leg, config_for(agent)):
        await started(agent)
        await agent.media(pcm)
        await agent.mark("half-second")
        await agent.wait(lambda: agent.echoes() == ["half-second"], timeout=3, what="the echo")
        echoed_at = agent.arrivals[agent.received.index(agent.events("mark")[0])]
    played = leg.audio_sent(1)
    assert len(played) >= 25
    last_frame_at = played[24].at
    # Not before its audio was played, and at most a couple of ticks after.
    assert echoed_at >= last_frame_at
    assert echoed_at - last_frame_at < 0.1, echoed_at - last_frame_at
    got = b"".join(s.pcm for s in played[:25])
    assert got == ulaw_decode(ulaw_encode(pcm))
    echo = agent.events("mark")[0]
    assert set(echo) == {"event", "sequenceNumber", "streamSid", "mark"}
    assert echo["sequenceNumber"].isdigit() and echo["streamSid"] == agent.stream_sid


async def test_odd_sized_payloads_are_reframed_and_a_partial_tail_plays(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    pcm = tone(3)[: 2 * 410]  # 410 samples: two whole frames and a partial one
    async with running(agent, leg, config_for(agent, partial_wait=0.05)):
        await started(agent)
        await agent.media(pcm[:300])
        await agent.media(pcm[300:])
        await leg.wait_sent(3)
        await agent.mark("end")
        await agent.wait(lambda: agent.echoes() == ["end"], what="the echo")
    frames = [s.pcm for s in leg.audio_sent()]
    assert all(len(f) == FRAME_BYTES for f in frames)
    joined = b"".join(frames)
    assert joined[: len(pcm)] == ulaw_decode(ulaw_encode(pcm))
    assert joined[len(pcm) :] == bytes(len(joined) - len(pcm))  # completed with silence


async def test_a_mark_after_every_odd_chunk_inserts_no_silence(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    # As the OpenAI realtime samples do: each model delta (any length) followed by a mark.
    pcm = tone(30)  # 600 ms as 20 chunks of 30 ms
    async with running(agent, leg, config_for(agent)):
        await started(agent)
        for i in range(20):
            await agent.media(pcm[i * 480 : (i + 1) * 480])
            await agent.mark(f"d{i}")
        await agent.wait(lambda: len(agent.echoes()) == 20, timeout=3, what="20 echoes")
    assert agent.echoes() == [f"d{i}" for i in range(20)]
    got = b"".join(s.pcm for s in leg.audio_sent())
    assert got[: len(pcm)] == ulaw_decode(ulaw_encode(pcm)), "silence was inserted"


async def test_a_partial_frame_waits_while_the_leg_has_audio_to_play(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    pcm = tone(30)
    cut = 25 * FRAME_BYTES + 20  # 500 ms and 10 samples: the rest comes 240 ms later
    async with running(agent, leg, config_for(agent, partial_wait=0.04)):
        await started(agent)
        await agent.media(pcm[:cut])
        await leg.wait_sent(12)  # long past partial_wait, with ~260 ms still queued
        await agent.media(pcm[cut:])
        await agent.mark("end")
        await agent.wait(lambda: agent.echoes() == ["end"], timeout=3, what="the echo")
    got = b"".join(s.pcm for s in leg.audio_sent())
    assert got[: len(pcm)] == ulaw_decode(ulaw_encode(pcm)), "silence was inserted"


@pytest.mark.parametrize("cushion", [0.0, 0.06])
async def test_a_cushion_absorbs_an_agent_that_paces_in_real_time(
    agent: FakeAgent, leg: FakeLeg, cushion: float
) -> None:
    # 40 ms chunks every 40 ms by the agent's own clock (as Pipecat paces), from the 6th on
    # 30 ms late (Pipecat then stays on the late schedule).
    pcm = tone(24)
    async with running(agent, leg, config_for(agent, cushion=cushion)):
        await started(agent)
        t0 = leg.clock.now()
        for i in range(12):
            await leg.clock.sleep_until(t0 + 0.04 * i + (0.03 if i >= 5 else 0.0))
            await agent.media(pcm[i * 2 * FRAME_BYTES : (i + 1) * 2 * FRAME_BYTES])
        await leg.wait_sent(24)
    first = next(n for n, s in enumerate(leg.sent) if s.utterance is not None)
    gaps = sum(s.utterance is None for s in leg.sent[first : first + 24])
    if cushion:
        assert gaps == 0, "a late chunk made a gap despite the cushion"
    else:
        assert gaps >= 1  # what the cushion is for (and that this test can see it)


async def test_clear_flushes_at_once_and_echoes_every_outstanding_mark(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    async with running(agent, leg, config_for(agent)):
        await started(agent)
        await agent.media(tone(100))  # 2 s
        await agent.mark("a")
        await agent.media(tone(50, hz=600))
        await agent.mark("b")
        await leg.wait_sent(10)
        assert agent.echoes() == []
        await agent.clear()
        await agent.wait(lambda: agent.echoes() == ["a", "b"], what="a, b echoed on clear")
        cleared_at = leg.clock.now()
        # After the clear: new audio (a new utterance) plays, its mark waits for it.
        await agent.media(tone(5, hz=800))
        await agent.mark("c")
        await agent.wait(lambda: agent.echoes() == ["a", "b", "c"], timeout=3, what="c")
    assert leg.flushes, "the leg's queue was not flushed"
    flushed_at = leg.flushes[0]
    old = leg.audio_sent(1)
    assert 10 <= len(old) < 60
    # Nothing of the cleared audio went out after the flush (a tick may have been on its way).
    assert all(s.at <= flushed_at + 0.001 for s in old), [s.at - flushed_at for s in old[-3:]]
    assert flushed_at <= cleared_at
    new = leg.audio_sent(2)
    assert len(new) == 5
    assert new[0].at > flushed_at


async def test_agent_closing_the_socket_hangs_up(agent: FakeAgent, leg: FakeLeg) -> None:
    async with running(agent, leg, config_for(agent)) as task:
        await started(agent)
        assert agent.conn is not None
        await agent.conn.close(1000, "bye")
        async with asyncio.timeout(3):
            await task
        assert leg.end_reason == "agent_hangup"
    assert not agent.events("stop"), "no stop on a socket the agent closed"


async def test_malformed_messages_are_logged_and_ignored(
    agent: FakeAgent, leg: FakeLeg, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callbridge.agents.twilio_socket")
    async with running(agent, leg, config_for(agent)) as task:
        await started(agent)
        sid = agent.stream_sid
        junk: list[Json | str | bytes] = [
            "not json",
            b"\x00\x01binary",
            '["a list"]',
            {"event": "media", "streamSid": sid},
            {"event": "media", "streamSid": sid, "media": {"payload": "***"}},
            {"event": "mark", "streamSid": sid, "mark": {}},
            {"event": "clear"},
            {"event": "media", "streamSid": "MZwrong", "media": {"payload": "AAAA"}},
            {"event": "transcript", "streamSid": sid},  # unknown: ignored quietly
        ]
        for bad in junk:
            await agent.send(bad)
        await agent.media(tone(2))
        await agent.mark("ok")
        await agent.wait(lambda: agent.echoes() == ["ok"], what="the echo after the junk")
        assert not task.done() and not leg.ended
    warned = [r for r in caplog.records if r.getMessage() == "agent_socket.bad_message"]
    assert len(warned) == 3  # the first few, one by one; the rest are counted
    errors = [r.fields["error"] for r in warned]  # type: ignore[attr-defined]
    assert "not JSON" in errors[0] and "binary" in errors[1] and "object" in errors[2]
    closed = next(r for r in caplog.records if r.getMessage() == "agent_socket.closed")
    assert closed.fields["bad_messages"] == 8  # type: ignore[attr-defined]
    assert closed.fields["unknown_events"] == 1  # type: ignore[attr-defined]
    assert not leg.flushes, "the clear without a streamSid was not honoured"


async def test_audio_over_the_buffer_limit_drops_the_oldest_and_the_call_goes_on(
    agent: FakeAgent, leg: FakeLeg, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge.agents.twilio_socket")
    pcm = tone(125)  # 2.5 s in one message; 1 s is held
    async with running(agent, leg, config_for(agent, max_buffer=1.0)) as task:
        await started(agent)
        await agent.media(pcm)
        await agent.media(tone(5))  # still over: dropped again, logged once
        await agent.mark("end")
        await agent.wait(lambda: agent.echoes() == ["end"], timeout=4, what="the echo")
        assert not task.done() and not leg.ended
    played = b"".join(s.pcm for s in leg.audio_sent(1))
    assert len(played) == 2 * 8000  # what the buffer held: the newest second
    full = [r for r in caplog.records if r.getMessage() == "agent_socket.buffer_full"]
    assert len(full) == 1
    closed = next(r for r in caplog.records if r.getMessage() == "agent_socket.closed")
    assert closed.fields["buffer_overflows"] == 2  # type: ignore[attr-defined]
    assert closed.fields["audio_dropped_samples"] == 130 * 160 - 8000  # type: ignore[attr-defined]


async def test_a_message_over_max_size_closes_the_agent_socket(
    agent: FakeAgent, leg: FakeLeg
) -> None:
    async with running(agent, leg, config_for(agent, max_message_bytes=4096)) as task:
        await started(agent)
        await agent.media(tone(25))  # 4000 bytes of µ-law: ~5.4 KB of JSON
        async with asyncio.timeout(3):
            await task
        assert leg.end_reason == "agent_hangup"
    assert agent.close_code == 1009


# ---- connecting ---------------------------------------------------------------------------


async def test_upgrade_is_signed_with_the_route_secret(agent: FakeAgent, leg: FakeLeg) -> None:
    url = agent.url("/twilio/stream?tenant=acme")
    async with running(agent, leg, TwilioSocketConfig(url, secret="s3cret")):
        await started(agent)
    header = agent.headers["X-Twilio-Signature"]
    assert header == compute_signature("s3cret", url)
    assert verify("s3cret", url, header)  # what a Twilio app's validator accepts
    assert not verify("other", url, header)
    assert agent.path == "/twilio/stream?tenant=acme"


async def test_no_secret_no_signature(agent: FakeAgent, leg: FakeLeg) -> None:
    async with running(agent, leg, config_for(agent)):
        await started(agent)
    assert "X-Twilio-Signature" not in agent.headers


async def test_unreachable_agent_ends_the_call_with_a_logged_reason(
    leg: FakeLeg, caplog: pytest.LogCaptureFixture
) -> None:
    # A port nothing listens on (bound, then closed).
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    config = TwilioSocketConfig(f"ws://127.0.0.1:{port}/x?token=secret", connect_timeout=2)
    async with asyncio.timeout(3):
        await TwilioSocketAgent(config, leg.clock).run(leg)
    assert leg.end_reason == "agent_unreachable"
    failed = [r for r in caplog.records if r.getMessage() == "agent_socket.connect_failed"]
    assert failed and failed[0].fields["url"] == f"ws://127.0.0.1:{port}/x"  # type: ignore[attr-defined]


async def test_connect_deadline(leg: FakeLeg, caplog: pytest.LogCaptureFixture) -> None:
    # Accepts TCP, never answers the upgrade.
    writers: list[asyncio.StreamWriter] = []
    srv = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    config = TwilioSocketConfig(f"ws://127.0.0.1:{port}/", connect_timeout=0.2)
    t0 = leg.clock.now()
    async with srv:
        async with asyncio.timeout(3):
            await TwilioSocketAgent(config, leg.clock).run(leg)
        for w in writers:
            w.close()
    assert 0.15 < leg.clock.now() - t0 < 1.5
    assert leg.end_reason == "agent_unreachable"
    failed = [r for r in caplog.records if r.getMessage() == "agent_socket.connect_failed"]
    assert "0.2 s" in failed[0].fields["reason"]  # type: ignore[attr-defined]


async def test_agent_refusing_the_upgrade(leg: FakeLeg) -> None:
    async def refuse(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(403, "bad signature\n")

    async with serve(lambda c: asyncio.sleep(0), "127.0.0.1", 0, process_request=refuse) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        config = TwilioSocketConfig(f"ws://127.0.0.1:{port}/", connect_timeout=2)
        async with asyncio.timeout(3):
            await TwilioSocketAgent(config, leg.clock).run(leg)
    assert leg.end_reason == "agent_unreachable"


def test_config_checks_the_scheme() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        TwilioSocketConfig("https://agent.example.com/")
    assert (
        safe_url("wss://u:p@agent.example.com:8443/s?token=x") == "wss://agent.example.com:8443/s"
    )


# ---- the buffer, sans-IO --------------------------------------------------------------------


def test_agent_audio_frames_marks_and_clear() -> None:
    a = AgentAudio()
    assert a.frame() is None and a.due(0) == []
    a.mark("empty")  # no audio before it: due at once
    assert a.due(0) == ["empty"]
    a.audio(bytes(2 * 200))  # 1.25 frames
    a.mark("m1")  # at sample 200, mid-frame: no silence is inserted
    assert a.buffered_samples == 200
    a.audio(bytes(2 * 100))
    assert a.buffered_samples == 300
    f1 = a.frame()
    assert f1 is not None and f1.samples == 160 and a.fed == 160
    assert a.frame() is None and a.partial
    tail = a.frame(pad=True)  # the leg ran dry: the partial frame plays, completed
    assert tail is not None and tail.samples == 160 and a.fed == 320
    assert a.due(199) == [] and a.due(320) == ["m1"]
    a.audio(bytes(2 * 800))
    a.mark("m2")
    a.mark("m3")
    dropped, names = a.clear()
    assert (dropped, names) == (800, ["m2", "m3"])
    assert a.utterance == 2 and a.buffered_samples == 0 and a.marks_pending == 0 and a.fed == 0
    a.audio(bytes(2 * 160))
    a.mark("m4")
    assert a.due(159) == [] and a.due(160) == ["m4"]  # positions restart with the utterance


def test_agent_audio_is_bounded_dropping_the_oldest() -> None:
    a = AgentAudio(max_samples=1000)
    a.audio(bytes(2 * 400))
    f = a.frame()
    assert f is not None and a.fed == 160
    a.mark("early")  # at 400
    assert a.audio(bytes(2 * 400)) == 0  # 640 buffered
    a.mark("middle")  # at 800
    dropped = a.audio(np.full(600, 7, "<i2").tobytes())  # 1240 buffered: 240 oldest go
    assert dropped == 240 and a.dropped == 240 and a.buffered_samples == 1000
    # What is left moves 240 earlier; "early" was inside the dropped audio: due once the
    # 160 samples fed before it have played.
    assert a.due(159) == []
    assert a.due(160) == ["early"]
    assert a.due(800 - 240 - 1) == [] and a.due(800 - 240) == ["middle"]
    frames = [a.frame() for _ in range(6)] + [a.frame(pad=True)]
    held = b"".join(fr.pcm for fr in frames if fr is not None)[: 2 * 1000]
    assert held[-2 * 600 :] == np.full(600, 7, "<i2").tobytes()  # the newest is all kept
    with pytest.raises(ValueError, match="frame"):
        AgentAudio(max_samples=100)


# ---- the route in the config, the router and the gateway ----------------------------------


def _settings(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "callbridge.toml"
    path.write_text(toml)
    return load_settings(path, environ=env or {})


ROUTE = """
default_agent = "mybot"
[agents.mybot]
kind = "twilio-socket"
url = "wss://bot.example.com/media?x=1"
parameters = { tenant = "acme", lang = "en" }
secret = "s3cret"
connect_timeout = 2.5
"""


def test_route_from_the_config_file_reaches_the_router(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ROUTE)
    route = settings.agents["mybot"]
    assert route == AgentRoute(
        "mybot", "twilio-socket", "wss://bot.example.com/media?x=1",
        {"tenant": "acme", "lang": "en"}, "s3cret", 2.5,
    )  # fmt: skip
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(route)
    gateway = build_gateway(settings, http=False)
    router = gateway.calls.router
    assert router.resolve(LegInfo("sip", "inbound", local_user="MyBot")) == "mybot"
    assert router.resolve(LegInfo("sip", "inbound", local_user="agent")) == "mybot"  # default
    assert router.resolve(LegInfo("sip", "inbound", local_user="echo")) == "echo"
    agent = router.agents["mybot"]()
    assert isinstance(agent, TwilioSocketAgent)
    assert agent.config.url == route.url and agent.config.secret == "s3cret"
    assert agent.config.parameters == {"tenant": "acme", "lang": "en"}
    assert agent.config.connect_timeout == 2.5 and agent.config.route == "mybot"
    with pytest.raises(Rejection):
        router.resolve(LegInfo("sip", "inbound", local_user="otherbot"))


def test_a_route_from_the_environment(tmp_path: Path) -> None:
    env = {
        "CALLBRIDGE_AGENTS_MY_BOT_URL": "ws://127.0.0.1:9000/",
        "CALLBRIDGE_AGENTS_MY_BOT_SECRET": "x",
        "CALLBRIDGE_DEFAULT_AGENT": "my_bot",
    }
    settings = load_settings(None, environ=env)
    assert settings.default_agent == "my_bot"
    assert settings.agents["my_bot"].url == "ws://127.0.0.1:9000/"
    assert settings.agents["my_bot"].secret == "x"
    # ... and over a file's route, field by field
    settings = _settings(tmp_path, ROUTE, {"CALLBRIDGE_AGENTS_MYBOT_URL": "ws://10.0.0.1/"})
    assert settings.agents["mybot"].url == "ws://10.0.0.1/"
    assert settings.agents["mybot"].parameters == {"tenant": "acme", "lang": "en"}


@pytest.mark.parametrize(
    ("toml", "field", "says"),
    [
        ('[agents.bot]\nurl = "https://bot.example.com/"', "[agents.bot] url", "wss://"),
        ('[agents.bot]\nurl = "bot.example.com"', "[agents.bot] url", "ws:// or wss://"),
        ("[agents.bot]\nkind = 'twilio-socket'", "[agents.bot] url", "needs the URL"),
        ('[agents.bot]\nkind = "vapi"\nurl = "ws://h/"', "[agents.bot] kind", "twilio-socket"),
        ('[agents.echo]\nurl = "ws://h/"', "[agents.echo]", "built in"),
        ('[agents.Bot]\nurl = "ws://h/"', "[agents.Bot]", "lowercase"),
        ('[agents.bot]\nurl = "ws://h/"\nsecrte = "x"', "[agents.bot] secrte", "'secret'"),
        ('[agents.bot]\nurl = "ws://h/"\nparameters = { n = 1 }', "parameters.n", '"1"'),
        ('[agents.bot]\nurl = "ws://h/"\nconnect_timeout = 0', "connect_timeout", "> 0"),
        ('agents = "ws://h/"', "agents", "[agents.NAME]"),
        ('default_agent = "bot"', "default_agent", "neither"),
    ],
)
def test_bad_routes_name_the_field_and_the_fix(
    tmp_path: Path, toml: str, field: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, toml)
    assert field in err.value.field, err.value
    assert says in err.value.problem, err.value
