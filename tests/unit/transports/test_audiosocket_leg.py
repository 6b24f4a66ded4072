"""AudioSocketLeg on a fake stream and a fake clock: caller audio (8 and 16 kHz), DTMF, one
frame written per tick (silence when idle), barge-in drops at once, the socket backlog, every
way the leg ends (Asterisk closing, our hang-up frame, garbage, media timeout), the tap."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.asterisk.audiosocket import (
    TO_ASTERISK,
    Audio,
    AudioSocketDecoder,
    Dtmf,
    Hangup,
    Kind,
    encode,
)
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import FRAME_BYTES, AudioFrame
from callbridge.core.ports import LegInfo
from callbridge.testing import FakeClock, LegDriver, settle
from callbridge.transports.asterisk.audiosocket_leg import AudioSocketLeg, AudioSocketLegConfig

UUID = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")


class FakeStream:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.written = bytearray()
        self.closed = False
        self.backlog = 0

    async def read(self, n: int) -> bytes:
        data = await self.incoming.get()
        assert len(data) <= n
        return data

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.written += data

    def buffered(self) -> int:
        return self.backlog

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.incoming.put_nowait(b"")

    def frames(self) -> list[object]:
        """What Asterisk would read from us (its own decoder: audio and hangup only)."""
        return list(AudioSocketDecoder(TO_ASTERISK).feed(bytes(self.written)))

    def audio(self) -> list[Audio]:
        return [f for f in self.frames() if isinstance(f, Audio)]


def tone(i: int, rate: int = 8000, level: int = 3000) -> bytes:
    n = rate // 50
    t = (np.arange(n) + n * i) / rate
    return (level * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


class Harness(LegDriver):
    def __init__(self, config: AudioSocketLegConfig | None = None) -> None:
        clock = FakeClock()
        self.stream = FakeStream()
        info = LegInfo("audiosocket", "inbound", ids={"audiosocket_uuid": str(UUID)})
        self.leg: AudioSocketLeg = AudioSocketLeg(
            self.stream, AudioSocketDecoder(), clock, info, config
        )
        super().__init__(self.leg, clock)

    def send(self, data: bytes) -> None:
        self.stream.incoming.put_nowait(data)

    async def play_tones(self, frames: int) -> asyncio.Task[None]:
        return await self.play([AudioFrame(tone(i)) for i in range(frames)])


async def test_caller_audio_and_dtmf_reach_the_agent_at_once() -> None:
    async with Harness() as h:
        h.send(encode(Audio(tone(0))) + encode(Dtmf("7")) + encode(Audio(tone(1))))
        await settle()
        assert [f.pcm for f in h.frames()] == [tone(0), tone(1)]
        assert DtmfDigit("7", 0) in h.received


async def test_a_frame_split_across_reads_is_reassembled() -> None:
    async with Harness() as h:
        data = encode(Audio(tone(0)))
        h.send(data[:2])
        h.send(data[2:100])
        await settle()
        assert not h.frames()
        h.send(data[100:])
        await settle()
        assert [f.pcm for f in h.frames()] == [tone(0)]


async def test_slin16_in_is_resampled_and_answered_in_slin16() -> None:
    async with Harness() as h:
        for i in range(5):
            h.send(encode(Audio(tone(i, 16000), 16000)))
        await settle()
        assert len(h.frames()) in (4, 5)  # the resampler withholds 2 ms at first
        assert all(len(f.pcm) == FRAME_BYTES for f in h.frames())
        await h.ticks(3)
        out = h.stream.audio()
        assert out and all(a.sample_rate == 16000 for a in out)
        assert h.leg.info.ids["audiosocket_rate"] == "16000"


async def test_one_frame_per_tick_agent_audio_then_silence() -> None:
    async with Harness() as h:
        await h.play_tones(3)
        for n in range(1, 6):
            await h.ticks(1)
            assert len(h.stream.audio()) == n  # never ahead of real time: nothing to recall
        out = h.stream.audio()
        assert [a.pcm for a in out[:3]] == [tone(0), tone(1), tone(2)]
        assert out[3].pcm == out[4].pcm == bytes(FRAME_BYTES)  # the line never goes quiet
        assert all(a.sample_rate == 8000 for a in out)
        assert h.leg.samples_played == 3 * 160


async def test_flush_stops_the_agent_on_the_next_tick() -> None:
    async with Harness() as h:
        player = await h.play_tones(15)
        await h.ticks(2)
        dropped = h.leg.flush_playout()
        assert dropped > 0
        await h.ticks(3)
        out = h.stream.audio()
        assert [a.pcm for a in out[:2]] == [tone(0), tone(1)]
        assert all(a.pcm == bytes(FRAME_BYTES) for a in out[2:])
        await player


async def test_a_backlogged_socket_gets_no_more_frames() -> None:
    async with Harness() as h:
        await h.play_tones(5)
        h.stream.backlog = 10_000
        await h.ticks(3)
        assert h.stream.audio() == []
        assert h.leg.stats()["socket_backlog"] == 3
        h.stream.backlog = 0
        await h.ticks(1)
        assert [a.pcm for a in h.stream.audio()] == [tone(0)]  # nothing was lost meanwhile


async def test_asterisk_closing_the_socket_is_a_remote_hangup() -> None:
    async with Harness() as h:
        h.send(b"")
        await settle()
        await h.ticks(1)
        assert h.leg.ended and h.leg.end_reason == "remote_hangup"
        assert h.inputs_done
        assert not any(isinstance(f, Hangup) for f in h.stream.frames())


async def test_our_hangup_sends_the_hangup_frame_and_closes() -> None:
    async with Harness() as h:
        await h.leg.hangup("agent_done")
        assert h.stream.written.endswith(bytes((Kind.HANGUP, 0, 0)))
        assert h.stream.closed
        assert h.leg.end_reason == "agent_done"


async def test_garbage_ends_the_call_cleanly() -> None:
    async with Harness() as h:
        h.send(encode(Audio(tone(0))))
        h.send(b"\x42\x00\x01x")
        await settle()
        await h.ticks(1)
        assert h.leg.end_reason == "protocol_error"
        assert len(h.frames()) == 1  # what came before the garbage was delivered
        assert h.leg.stats()["protocol_errors"] == 1
    assert h.task.exception() is None


async def test_silence_from_asterisk_is_concealed_for_the_turn_detector() -> None:
    async with Harness(AudioSocketLegConfig(slack_frames=2)) as h:
        h.send(encode(Audio(tone(0))))
        await settle()
        await h.ticks(10)
        frames = h.frames()
        assert 8 <= len(frames) <= 10
        assert not frames[0].concealed and all(f.concealed for f in frames[1:])


async def test_nothing_from_asterisk_for_the_timeout_ends_the_leg() -> None:
    async with Harness(AudioSocketLegConfig(media_timeout=0.5)) as h:
        await h.ticks(30)
        assert h.leg.end_reason == "media_timeout"


class Tap:
    def __init__(self) -> None:
        self.ticks: list[tuple[bytes | None, bytes | None]] = []

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None:
        self.ticks.append((caller, agent))


async def test_the_tap_sees_both_sides_once_per_tick() -> None:
    async with Harness() as h:
        tap = Tap()
        h.leg.set_tap(tap)
        await h.play_tones(2)
        h.send(encode(Audio(tone(5))))
        await settle()
        await h.ticks(3)
        assert tap.ticks[0] == (tone(5), tone(0))
        assert tap.ticks[1][1] == tone(1)
        assert tap.ticks[2][1] is None  # silence on the wire is not the agent talking


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=6))
def test_fuzzed_bytes_never_crash_the_leg(chunks: list[bytes]) -> None:
    """Whatever arrives, the leg either goes on or ends with a reason; run() never raises."""

    async def scenario() -> None:
        async with Harness() as h:
            h.send(encode(Audio(tone(0))))
            for chunk in chunks:
                if chunk:
                    h.send(chunk)
            await settle()
            await h.ticks(2)
            assert h.leg.end_reason in ("", "protocol_error", "remote_hangup", "remote_error")
        assert h.task.exception() is None

    asyncio.run(scenario())
