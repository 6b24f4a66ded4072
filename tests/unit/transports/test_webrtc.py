"""WebRtcTransport with real aiortc on both ends, in this process, on 127.0.0.1 only: an
aiortc "browser" offers (Opus or G.711 only), the transport answers, media flows both ways
through ICE, DTLS-SRTP and the codecs, DTMF and hang-up go over the data channel, the stats
come from getStats, and bad offers are refused before anything is set up."""

from __future__ import annotations

import asyncio
import fractions
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import FRAME_SAMPLES, PIPELINE_RATE, AudioFrame
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.transports.webrtc import transport as webrtc
from callbridge.transports.webrtc.leg import WebRtcLeg
from callbridge.transports.webrtc.peer import mono_pcm
from callbridge.transports.webrtc.transport import (
    BadOffer,
    WebRtcConfig,
    WebRtcTransport,
    parse_ice_servers,
)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both ends gather 127.0.0.1 and nothing else: no packet leaves loopback."""
    monkeypatch.setattr(webrtc, "_original_host_addresses", lambda **kw: [])
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda **kw: ["127.0.0.1"])
    yield


def tone(freq: float, n: int, rate: int, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


class ToneTrack(MediaStreamTrack):
    """The browser's microphone: a 440 Hz tone, paced in real time, 20 ms at 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
        due = self.t0 + self.n / 48000
        await asyncio.sleep(max(0.0, due - loop.time()))
        frame = av.AudioFrame.from_ndarray(
            tone(440, 960, 48000, self.n).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, self.n
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 960
        return frame


@dataclass
class Browser:
    """An aiortc peer standing in for the page: offers, hears, sends keys."""

    codecs: tuple[str, ...] = ("audio/opus",)
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    heard: list[np.ndarray] = field(default_factory=list)
    heard_rate: int = 0
    messages: list[dict[str, object]] = field(default_factory=list)

    async def offer(self) -> str:
        sender = self.pc.addTrack(ToneTrack())
        caps = RTCRtpSender.getCapabilities("audio")
        assert caps is not None
        prefs = [c for name in self.codecs for c in caps.codecs if c.mimeType == name]
        (t,) = [t for t in self.pc.getTransceivers() if t.sender is sender]
        t.setCodecPreferences(prefs)
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def listen() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                assert isinstance(frame, av.AudioFrame)
                self.heard_rate = frame.sample_rate
                self.heard.append(np.frombuffer(mono_pcm(frame), "<i2"))

        self._listener = asyncio.ensure_future(listen())

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


class Calls:
    """The calls layer: admits `agent`, runs each leg with an agent that plays 1 kHz."""

    def __init__(self) -> None:
        self.legs: list[WebRtcLeg] = []
        self.inputs: list[object] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()

    def admit(self, info: LegInfo) -> None:
        if info.local_user != "agent":
            raise Rejection(Rejection.NOT_FOUND, info.local_user)

    def start(self, leg: CallLeg) -> None:
        assert isinstance(leg, WebRtcLeg)
        self.legs.append(leg)
        self.tasks.append(asyncio.ensure_future(leg.run()))
        self.tasks.append(asyncio.ensure_future(self._agent(leg)))
        self.started.set()

    async def _agent(self, leg: CallLeg) -> None:
        async def listen() -> None:
            async for item in leg.inputs():
                self.inputs.append(item)

        listener = asyncio.ensure_future(listen())
        n = 0
        try:
            while True:
                await leg.play(AudioFrame(tone(1000, FRAME_SAMPLES, PIPELINE_RATE, n).tobytes()))
                n += FRAME_SAMPLES
        except CallEnded:
            pass
        await listener


@pytest.fixture
async def calls() -> AsyncIterator[Calls]:
    c = Calls()
    yield c
    for t in c.tasks:
        t.cancel()
    await asyncio.gather(*c.tasks, return_exceptions=True)


async def connect(
    calls: Calls, codecs: tuple[str, ...] = ("audio/opus",)
) -> tuple[WebRtcTransport, Browser, str]:
    transport = WebRtcTransport(LoopClock(), calls, WebRtcConfig())
    browser = Browser(codecs)
    session, answer = await transport.offer(await browser.offer(), "agent", "127.0.0.1:5")
    assert "a=candidate:" in answer and "127.0.0.1" in answer  # non-trickle: all in the answer
    assert "a=setup:active" in answer and "a=rtcp-mux" in answer  # DTLS client, RFC 8842 §5
    await browser.answer(answer)
    await asyncio.wait_for(calls.started.wait(), 10)
    return transport, browser, session


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Real media on a real loop: poll what aiortc's tasks change (they signal nothing)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("codecs", "codec", "rate"),
    [(("audio/opus",), "opus", 48000), (("audio/PCMU",), "PCMU", 8000)],
)
async def test_audio_both_ways_dtmf_stats_and_the_browser_hanging_up(
    calls: Calls, codecs: tuple[str, ...], codec: str, rate: int
) -> None:
    transport, browser, session = await connect(calls, codecs)
    (leg,) = calls.legs
    assert leg.info.transport == "webrtc" and leg.info.ids["codec"] == codec
    assert leg.info.ids["webrtc_session"] == session
    assert leg.peer.sample_rate == rate

    # The caller's 440 Hz reaches the agent as 20 ms frames at 8 kHz.
    await wait_for(lambda: sum(isinstance(i, AudioFrame) for i in calls.inputs) >= 40)
    frames = [i for i in calls.inputs if isinstance(i, AudioFrame)]
    assert all(f.samples == FRAME_SAMPLES and f.sample_rate == PIPELINE_RATE for f in frames)
    caller = np.frombuffer(b"".join(f.pcm for f in frames[-25:]), "<i2")
    assert abs(dominant(caller, PIPELINE_RATE) - 440) < 20
    assert np.sqrt(np.mean(caller.astype(np.float64) ** 2)) > 2000

    # The agent's 1 kHz reaches the browser.
    await wait_for(lambda: len(browser.heard) >= 40)
    heard = np.concatenate(browser.heard[-25:])
    assert abs(dominant(heard, browser.heard_rate) - 1000) < 20

    # Keys from the page arrive as DtmfDigit; ours go to the page as messages.
    browser.channel.send(json.dumps({"type": "dtmf", "digit": "5", "duration": 120}))
    await wait_for(lambda: DtmfDigit("5", 120) in calls.inputs)
    await leg.send_dtmf("1#")
    await wait_for(lambda: len(browser.messages) >= 2)
    assert browser.messages[:2] == [{"type": "dtmf", "digit": "1"}, {"type": "dtmf", "digit": "#"}]

    await wait_for(lambda: leg.stats().get("rtp_packets_in", 0) > 0, 3)
    stats = leg.stats()
    assert stats["bytes_in"] > 0 and stats["bytes_out"] > 0 and stats["rtp_packets_out"] > 0
    assert stats["jitter_ms"] >= 0 and stats["frames_in"] >= 40 and stats["dtmf_in"] == 1

    # The page hangs up.
    assert await transport.hangup(session)
    assert leg.ended and leg.end_reason == "remote_bye"
    await browser.pc.close()
    await wait_for(lambda: not transport.sessions)


async def test_agent_hangs_up_and_the_page_is_told(calls: Calls) -> None:
    transport, browser, _ = await connect(calls)
    (leg,) = calls.legs
    await wait_for(lambda: browser.channel.readyState == "open")
    await leg.hangup("agent_done")
    assert leg.end_reason == "agent_done"
    await wait_for(lambda: {"type": "hangup", "reason": "agent_done"} in browser.messages)
    await wait_for(lambda: not transport.sessions)
    await browser.pc.close()


async def test_browser_closing_its_connection_ends_the_leg(calls: Calls) -> None:
    transport, browser, _ = await connect(calls)
    (leg,) = calls.legs
    await wait_for(lambda: len(browser.heard) > 5)
    await browser.pc.close()
    await wait_for(lambda: leg.ended, 10)
    assert leg.end_reason in ("remote_bye", "media_timeout")
    await transport.shutdown(2)


async def test_flush_drops_what_the_peer_holds(calls: Calls) -> None:
    _, browser, _ = await connect(calls)
    (leg,) = calls.legs
    await wait_for(lambda: len(browser.heard) > 5)
    leg.flush_playout()
    assert len(leg.peer.outbound._queue) == 0  # type: ignore[attr-defined]
    assert leg.stats()["flushes"] == 1
    await leg.hangup("done")
    await browser.pc.close()


async def test_offers_refused_before_any_media_is_set_up(calls: Calls) -> None:
    transport = WebRtcTransport(LoopClock(), calls, WebRtcConfig())
    browser = Browser()
    offer = await browser.offer()
    with pytest.raises(Rejection) as rej:
        await transport.offer(offer, "nobody")
    assert rej.value.kind == Rejection.NOT_FOUND
    for bad in ("", "v=0\r\n", "hello", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n", "x" * 70000):
        with pytest.raises(BadOffer):
            await transport.offer(bad, "agent")
    # A video-only offer has no audio to answer.
    video = offer.replace("m=audio", "m=video")
    with pytest.raises(BadOffer):
        await transport.offer(video, "agent")
    transport.stop_accepting()
    with pytest.raises(Rejection) as rej:
        await transport.offer(offer, "agent")
    assert rej.value.kind == Rejection.UNAVAILABLE
    assert not transport.sessions and not calls.legs
    await browser.pc.close()


def test_ice_server_urls() -> None:
    assert parse_ice_servers("") == ()
    assert parse_ice_servers(" stun:a.example:3478 , turn:b.example?transport=tcp") == (
        "stun:a.example:3478",
        "turn:b.example?transport=tcp",
    )
    with pytest.raises(ValueError, match="http://x"):
        parse_ice_servers("stun:a, http://x")
    servers = webrtc._ice_servers(
        WebRtcConfig(ice_servers=("stun:a", "turn:b"), ice_username="u", ice_credential="p")
    )
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        ("stun:a", None, None),
        ("turn:b", "u", "p"),
    ]


def test_nothing_external_by_default() -> None:
    # aiortc's own default (iceServers None) is a public STUN server: we never pass None.
    assert webrtc._ice_servers(WebRtcConfig()) == []


def test_loopback_is_gathered_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webrtc, "_original_host_addresses", lambda **kw: ["192.0.2.7"])
    webrtc.allow_loopback_candidates()
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == [
        "192.0.2.7",
        "127.0.0.1",
    ]
    assert aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True) == ["192.0.2.7"]
