"""WebRtcLeg on a fake peer and a fake clock: one exact 20 ms frame per tick at the codec's
rate (silence when idle), caller audio cut into 8 kHz frames, flush and pause empty the
peer's queue at once, DTMF both ways on the data channel, the tap, the stats, and every way
the leg ends (peer closed, connection failed, page hang-up, media timeout, ours)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegInput
from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import LegInfo
from callbridge.testing.fake_time import drain
from callbridge.transports.webrtc.leg import (
    MAX_MESSAGE_CHARS,
    PeerClosed,
    PeerEvent,
    PeerMessage,
    PeerState,
    WebRtcLeg,
    WebRtcLegConfig,
    parse_message,
)


class FakePeer:
    def __init__(self, rate: int = 48000, depth: int = 2) -> None:
        self.sample_rate = rate
        self.codec = "opus" if rate == 48000 else "PCMU"
        self.depth = depth
        self.queue: list[bytes] = []
        self.sent: list[bytes] = []  # every frame handed over, in order
        self.messages: list[dict[str, object]] = []
        self.audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.events: asyncio.Queue[PeerEvent | None] = asyncio.Queue()
        self.closed = False
        self.stats_calls = 0

    def send(self, pcm: bytes) -> None:
        self.sent.append(pcm)
        self.queue.append(pcm)
        del self.queue[: -self.depth]

    def clear(self) -> int:
        n = len(self.queue)
        self.queue.clear()
        return n

    async def receive(self) -> bytes:
        item = await self.audio.get()
        if item is None:
            raise PeerClosed
        return item

    async def next_event(self) -> PeerEvent:
        item = await self.events.get()
        if item is None:
            raise PeerClosed
        return item

    def send_message(self, text: str) -> None:
        self.messages.append(json.loads(text))

    async def stats(self) -> dict[str, int | float]:
        self.stats_calls += 1
        return {"rtp_packets_in": 10 * self.stats_calls, "jitter_ms": 1.5}

    async def close(self) -> None:
        self.closed = True


class Tap:
    def __init__(self) -> None:
        self.ticks: list[tuple[bytes | None, bytes | None]] = []

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None:
        self.ticks.append((caller, agent))


class Harness:
    def __init__(self, rate: int = 48000, config: WebRtcLegConfig | None = None) -> None:
        self.clock = FakeClock()
        self.peer = FakePeer(rate)
        self.leg = WebRtcLeg(self.peer, self.clock, LegInfo("webrtc", "inbound"), config)
        self.received: list[LegInput] = []
        self.t0 = self.clock.now()
        self.ticked = 0

    async def __aenter__(self) -> Harness:
        self.run = asyncio.ensure_future(self.leg.run())
        self.reader = asyncio.ensure_future(self._read())
        await drain()
        return self

    async def _read(self) -> None:
        async for item in self.leg.inputs():
            self.received.append(item)

    async def ticks(self, n: int) -> None:
        """Run exactly `n` more ticks (each lands 1 ms after its 20 ms deadline)."""
        for _ in range(n):
            self.ticked += 1
            await self.clock.advance(self.t0 + 0.02 * self.ticked + 0.001 - self.clock.now())
            await drain()

    async def __aexit__(self, *exc: object) -> None:
        self.run.cancel()
        self.reader.cancel()
        await asyncio.gather(self.run, self.reader, return_exceptions=True)


def tone(freq: float, n: int, rate: int = 8000, amp: float = 8000) -> bytes:
    t = np.arange(n) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness() as harness:
        yield harness


async def test_idle_ticks_send_exact_frames_of_silence(h: Harness) -> None:
    await h.ticks(10)
    assert len(h.peer.sent) == 10
    assert all(f == bytes(2 * 960) for f in h.peer.sent)
    assert not h.leg.playing and not h.leg.ended


@pytest.mark.parametrize(("rate", "size"), [(48000, 960), (8000, 160)])
async def test_agent_audio_goes_out_at_the_codec_rate_one_frame_a_tick(
    rate: int, size: int
) -> None:
    async with Harness(rate) as h:
        pcm = tone(1000, 10 * FRAME_SAMPLES)
        for i in range(10):
            await h.leg.play(AudioFrame(pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]), 1)
        await h.ticks(12)
        assert [len(f) for f in h.peer.sent] == [2 * size] * 12
        out = np.frombuffer(b"".join(h.peer.sent[:10]), "<i2").astype(np.float64)
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(np.argmax(spectrum) * rate / len(out) - 1000) < 10
        assert h.leg.played(1) == 10 * FRAME_SAMPLES and h.leg.samples_played == 1600
        assert h.leg.stats()["frames_out"] == 10
        # After the run: the resampler's tail, then silence.
        assert h.peer.sent[11] == bytes(2 * size)


async def test_flush_empties_the_peer_queue_at_once(h: Harness) -> None:
    for _ in range(15):
        await h.leg.play(AudioFrame(tone(500, FRAME_SAMPLES)), 1)
    await h.ticks(3)
    assert len(h.peer.queue) == 2  # what the peer still holds
    dropped = h.leg.flush_playout()
    assert dropped == 12 * FRAME_SAMPLES and h.peer.queue == []
    await h.ticks(1)
    assert (
        h.peer.sent[-1] == bytes(2 * 960)
        or np.abs(np.frombuffer(h.peer.sent[-1], "<i2")).max() < 3000
    )  # at most the resampler's 2 ms tail
    assert h.leg.stats()["flushes"] == 1


async def test_pause_silences_now_and_resumes_where_it_was(h: Harness) -> None:
    for _ in range(5):
        await h.leg.play(AudioFrame(tone(500, FRAME_SAMPLES)), 2)
    await h.ticks(2)
    h.leg.pause_playout(True)
    assert h.peer.queue == []
    await h.ticks(3)
    assert h.leg.played(2) == 2 * FRAME_SAMPLES
    h.leg.pause_playout(False)
    await h.ticks(3)
    assert h.leg.played(2) == 5 * FRAME_SAMPLES


async def test_caller_audio_becomes_8khz_frames_with_any_chunking(h: Harness) -> None:
    pcm = tone(440, 48000 // 2, 48000)  # 0.5 s at 48 kHz, in odd-sized pieces
    for i in range(0, len(pcm), 2 * 700):
        h.peer.audio.put_nowait(pcm[i : i + 2 * 700])
    await drain()
    frames = [f for f in h.received if isinstance(f, AudioFrame)]
    assert len(frames) in (24, 25)  # the resampler withholds 2 ms
    assert all(f.samples == FRAME_SAMPLES for f in frames)
    x = np.frombuffer(b"".join(f.pcm for f in frames), "<i2").astype(np.float64)
    assert abs(np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x) - 440) < 20
    assert h.leg.stats()["frames_in"] == len(frames)


async def test_dtmf_from_the_page_and_to_it(h: Harness) -> None:
    h.peer.events.put_nowait(PeerMessage(json.dumps({"type": "dtmf", "digit": "7"})))
    h.peer.events.put_nowait(PeerMessage(json.dumps({"type": "dtmf", "digit": "x"})))
    h.peer.events.put_nowait(PeerMessage("not json"))
    await drain()
    assert [i for i in h.received if isinstance(i, DtmfDigit)] == [DtmfDigit("7", 0)]
    assert h.leg.stats()["bad_messages"] == 2
    await h.leg.send_dtmf("4*")
    assert h.peer.messages == [{"type": "dtmf", "digit": "4"}, {"type": "dtmf", "digit": "*"}]
    await h.ticks(3)
    assert np.abs(np.frombuffer(h.peer.sent[0], "<i2")).max() > 3000  # the tones, in-band
    with pytest.raises(ValueError):
        await h.leg.send_dtmf("5x")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (PeerState("closed"), "remote_bye"),
        (PeerState("failed"), "media_timeout"),
        (PeerMessage('{"type": "hangup"}'), "remote_bye"),
        (None, "remote_bye"),
    ],
)
async def test_the_far_end_ends_the_leg(event: PeerEvent | None, reason: str) -> None:
    async with Harness() as h:
        h.peer.events.put_nowait(PeerState("connecting"))
        h.peer.events.put_nowait(event)
        await drain()
        await h.ticks(1)
        assert h.leg.ended and h.leg.end_reason == reason
        await drain()
        assert h.run.done() and h.peer.closed
        with pytest.raises(CallEnded):
            await h.leg.play(AudioFrame.silence())


async def test_caller_audio_stopping_is_a_media_timeout() -> None:
    async with Harness(config=WebRtcLegConfig(media_timeout=0.5)) as h:
        h.peer.audio.put_nowait(bytes(1920))
        await h.ticks(20)
        assert not h.leg.ended
        await h.ticks(10)
        assert h.leg.end_reason == "media_timeout"


async def test_our_hangup_tells_the_page_and_closes(h: Harness) -> None:
    await h.leg.hangup("agent_done")
    assert h.leg.end_reason == "agent_done" and h.peer.closed
    assert h.peer.messages == [{"type": "hangup", "reason": "agent_done"}]
    result = await h.leg.transfer("sip:x@example.com")
    assert not result.ok


async def test_stats_are_refreshed_and_kept_after_the_end(h: Harness) -> None:
    await h.ticks(51)
    assert h.leg.stats()["rtp_packets_in"] >= 10 and h.leg.stats()["jitter_ms"] == 1.5
    await h.leg.hangup("done")
    assert h.leg.stats()["rtp_packets_in"] == 10 * h.peer.stats_calls  # the last, at close


async def test_the_tap_sees_both_sides_per_tick(h: Harness) -> None:
    tap = Tap()
    h.leg.set_tap(tap)
    h.peer.audio.put_nowait(tone(300, 960 * 3, 48000))
    await drain()
    await h.leg.play(AudioFrame(tone(700, FRAME_SAMPLES)), 1)
    await h.ticks(4)
    assert len(tap.ticks) == 4
    assert tap.ticks[0][1] is not None and len(tap.ticks[0][1]) == FRAME_BYTES
    assert all(a is None for _, a in tap.ticks[1:])
    callers = [c for c, _ in tap.ticks if c is not None]
    assert 2 <= len(callers) <= 3 and all(len(c) == FRAME_BYTES for c in callers)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        WebRtcLegConfig(playout_limit_frames=0)
    with pytest.raises(ValueError):
        WebRtcLegConfig(media_timeout=0.001)


@given(st.text(max_size=600))
def test_any_message_parses_or_is_dropped(text: str) -> None:
    result = parse_message(text)
    assert result is None or result == "hangup" or isinstance(result, DtmfDigit)


def test_messages() -> None:
    assert parse_message('{"type":"dtmf","digit":"a","duration":80}') == DtmfDigit("A", 80)
    assert parse_message('{"type":"dtmf","digit":"1","duration":true}') == DtmfDigit("1", 0)
    assert parse_message('{"type":"dtmf","digit":"12"}') is None
    assert parse_message('{"type":"dtmf","digit":"1","duration":99999999}') == DtmfDigit(
        "1", 10_000
    )
    assert parse_message("[1]") is None
    assert parse_message('{"type":"hangup"}') == "hangup"
    padded = '{"type":"hangup","x":"' + "y" * MAX_MESSAGE_CHARS + '"}'
    assert parse_message(padded) is None
