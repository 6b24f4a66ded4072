"""TwilioLeg on a fake socket and a fake clock: caller audio, pacing lead, marks and played,
clear semantics, pause, DTMF both ways, every way the leg ends, and the stream's limits
(message size and rate, caller audio ahead of real time, `stop` behind a burst)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from callbridge.audio.g711 import ulaw_encode
from callbridge.audio.tones import dtmf_tone
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegInput
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo
from callbridge.testing import FakeClock, LegDriver, settle
from callbridge.transports.twilio.leg import TwilioLeg, TwilioLegConfig
from callbridge.transports.websocket import SocketClosed
from callbridge.twilio_streams.messages import Dtmf, Mark, Media, Start, Stop, dumps

SID = "MZ" + "0" * 32
START = Start(1, SID, "AC" + "1" * 32, "CA" + "2" * 32)


class FakeSocket:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.close_reason = ""

    async def send_text(self, text: str) -> None:
        if self.closed is not None:
            raise SocketClosed
        self.sent.append(json.loads(text))

    async def receive_text(self) -> str | bytes:
        item = await self.incoming.get()
        if item is None:
            raise SocketClosed
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed, self.close_reason = code, reason
            self.incoming.put_nowait(None)

    # what Twilio would send
    def media(self, n: int, payload: bytes = b"\xff" * 160) -> None:
        self.incoming.put_nowait(dumps(Media(n + 2, SID, "inbound", n + 1, 20 * n, payload)))

    def echo(self, name: str) -> None:
        self.incoming.put_nowait(dumps(Mark(99, SID, name)))

    # what the leg sent
    def events(self) -> list[str]:
        return [m["event"] for m in self.sent]

    def media_out(self) -> list[bytes]:
        return [base64.b64decode(m["media"]["payload"]) for m in self.sent if m["event"] == "media"]

    def marks(self) -> list[str]:
        return [m["mark"]["name"] for m in self.sent if m["event"] == "mark"]


class Harness(LegDriver):
    def __init__(self, config: TwilioLegConfig | None = None) -> None:
        clock = FakeClock()
        self.socket = FakeSocket()
        self.leg: TwilioLeg = TwilioLeg(
            self.socket, START, clock, LegInfo("twilio", "inbound"), config
        )
        super().__init__(self.leg, clock)

    async def queue(self, frames: int, utterance: int = 1, level: int = 3000) -> asyncio.Task[None]:
        """A player task queueing `frames` frames of a tone (play() waits when full)."""
        return await self.play([AudioFrame(tone_pcm(i, level)) for i in range(frames)], utterance)


def tone_pcm(i: int, level: int = 3000) -> bytes:
    t = (np.arange(160) + 160 * i) / 8000
    return (level * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


# ---- caller audio ---------------------------------------------------------------------------


async def test_caller_audio_is_delivered_as_it_arrives() -> None:
    async with Harness() as h:
        h.socket.media(0, ulaw_encode(tone_pcm(0)))
        await settle()
        assert len(h.frames()) == 1  # no tick needed: barge-in latency
        h.socket.media(1)
        await settle()
        assert [f.concealed for f in h.frames()] == [False, False]


async def test_a_stalled_socket_still_yields_one_frame_per_20ms() -> None:
    async with Harness(TwilioLegConfig(jitter_slack=0.04)) as h:
        h.socket.media(0)
        await settle()
        await h.ticks(10)  # 200 ms without media
        frames = h.frames()
        assert 8 <= len(frames) <= 10
        assert all(f.concealed for f in frames[1:])
        assert h.leg.stats()["frames_concealed"] == len(frames) - 1


async def test_dtmf_from_twilio_becomes_a_digit() -> None:
    async with Harness() as h:
        h.socket.incoming.put_nowait(dumps(Dtmf(3, SID, "5")))
        await settle()
        assert h.received == [DtmfDigit("5", 0)]


async def test_bad_and_unknown_messages_are_counted_not_fatal() -> None:
    async with Harness() as h:
        h.socket.incoming.put_nowait("{not json")
        h.socket.incoming.put_nowait(b"\x00binary")
        h.socket.incoming.put_nowait('{"event": "future-thing"}')
        h.socket.media(0)
        await settle()
        assert not h.leg.ended
        assert len(h.frames()) == 1
        stats = h.leg.stats()
        assert (stats["bad_messages"], stats["unknown_events"]) == (2, 1)


# ---- agent audio: pacing, marks, played ---------------------------------------------------------


async def test_agent_audio_is_paced_with_a_small_lead() -> None:
    async with Harness() as h:
        player = await h.queue(60)
        await h.ticks(1)
        assert len(h.socket.media_out()) == 5  # 100 ms ahead at once: quick first audio
        for n in range(2, 40):
            await h.ticks(1)
            sent = len(h.socket.media_out())
            # Never more than the lead (100 ms) ahead of real time.
            assert sent * 0.02 <= (n - 1) * 0.02 + 0.1 + 1e-9, (n, sent)
            assert sent == n + 4
        assert h.leg.samples_played == 43 * 160
        await h.ticks(30)
        await player
        assert h.socket.media_out()[0] == ulaw_encode(tone_pcm(0))


async def test_marks_every_100ms_and_at_the_end_of_the_utterance() -> None:
    async with Harness() as h:
        await h.queue(12, utterance=7)
        await h.ticks(20)
        events = h.socket.events()
        # media x5, mark, media x5, mark, media x2, mark (the end of the utterance)
        assert events == ["media"] * 5 + ["mark"] + ["media"] * 5 + ["mark"] + ["media"] * 2 + [
            "mark"
        ]
        assert all(m["streamSid"] == SID for m in h.socket.sent)
        assert h.leg.played(7) == 0  # sent is not heard
        names = h.socket.marks()
        h.socket.echo(names[0])
        await settle()
        assert h.leg.played(7) == 800
        h.socket.echo(names[2])
        await settle()
        assert h.leg.played(7) == 12 * 160


async def test_a_new_utterance_closes_the_previous_one_with_a_mark() -> None:
    async with Harness() as h:
        await h.queue(2, utterance=1)
        await h.queue(2, utterance=2)
        await h.ticks(3)
        assert h.socket.events() == ["media", "media", "mark", "media", "media", "mark"]
        first, _ = h.socket.marks()
        h.socket.echo(first)
        await settle()
        assert (h.leg.played(1), h.leg.played(2)) == (320, 0)


async def test_play_waits_when_the_queue_is_full() -> None:
    async with Harness(TwilioLegConfig(playout_limit_frames=4)) as h:
        player = await h.queue(20)
        assert not player.done()
        await h.ticks(30)
        assert player.done()
        assert len(h.socket.media_out()) == 20


async def test_playing_covers_what_twilio_still_buffers() -> None:
    async with Harness() as h:
        assert not h.leg.playing
        await h.queue(3)
        assert h.leg.playing
        await h.ticks(1)  # all 3 frames sent: 60 ms in Twilio's buffer
        assert h.leg.playing
        await h.ticks(1)
        assert h.leg.playing
        (name,) = h.socket.marks()
        h.socket.echo(name)
        await h.ticks(3)
        assert not h.leg.playing


# ---- barge-in: clear, pause ------------------------------------------------------------------------


async def test_flush_sends_clear_at_once_and_cancels_outstanding_marks() -> None:
    async with Harness() as h:
        player = await h.queue(40, utterance=3)
        await h.ticks(7)  # 11 frames sent: marks after 5 and 10
        first, second = h.socket.marks()
        h.socket.echo(first)
        await settle()
        assert h.leg.played(3) == 800
        player.cancel()  # the agent cancels its speech, then flushes (barge-in)
        before = len(h.socket.sent)
        dropped = h.leg.flush_playout()
        await settle()  # no clock tick: control does not wait for the 20 ms schedule
        assert h.socket.sent[before:] == [{"event": "clear", "streamSid": SID}]
        assert dropped == 20 * 160  # the local queue (full: 20 frames) is gone
        # Twilio answers the clear by echoing the outstanding mark: not played.
        h.socket.echo(second)
        await settle()
        assert h.leg.played(3) == 800
        assert h.leg.stats()["marks_cancelled"] == 1
        assert h.leg.stats()["clears"] == 1
        await h.ticks(5)
        assert h.socket.events()[before:] == ["clear"]  # nothing of the dropped answer
        assert not h.leg.playing


async def test_flush_drops_audio_not_yet_written() -> None:
    async with Harness() as h:
        await h.queue(10)
        gate = asyncio.Event()
        real_send = h.socket.send_text

        async def slow_send(text: str) -> None:
            await gate.wait()
            await real_send(text)

        h.socket.send_text = slow_send  # type: ignore[method-assign]
        await h.ticks(1)  # 5 media messages queued behind a stuck socket
        h.leg.flush_playout()
        gate.set()
        await settle()
        # The one message already being written goes out; then the clear; nothing else.
        assert h.socket.events() == ["media", "clear"]


async def test_pause_withholds_media_and_resumes_where_it_stopped() -> None:
    async with Harness() as h:
        await h.queue(20)
        await h.ticks(2)
        sent = len(h.socket.media_out())
        h.leg.pause_playout(True)
        await settle()  # at once, not at the next tick
        # Twilio drops the <= 100 ms it holds: the caller hears silence now.
        assert h.socket.events()[-1] == "clear"
        await h.ticks(5)
        assert len(h.socket.media_out()) == sent  # nothing more while held
        assert h.socket.events().count("clear") == 1
        assert h.leg.playing  # the local queue is kept
        h.leg.pause_playout(False)
        await h.ticks(1)
        assert len(h.socket.media_out()) == 6 + sent - 1
        assert h.socket.media_out()[sent] == ulaw_encode(tone_pcm(sent))


async def test_pause_with_nothing_at_twilio_sends_no_clear() -> None:
    async with Harness() as h:
        await h.queue(3)
        h.leg.pause_playout(True)
        await h.ticks(3)
        assert h.socket.events() == []


async def test_flush_releases_a_pause() -> None:
    async with Harness() as h:
        h.leg.pause_playout(True)
        await h.queue(3)
        h.leg.flush_playout()
        await h.queue(2, utterance=2)
        await h.ticks(2)
        assert h.socket.events() == ["clear", "media", "media", "mark"]


# ---- DTMF out ----------------------------------------------------------------------------------


async def test_send_dtmf_plays_tones_ahead_of_queued_audio() -> None:
    async with Harness() as h:
        await h.queue(5)
        await h.leg.send_dtmf("1#")
        await h.ticks(25)
        out = h.socket.media_out()
        tones = ulaw_encode(dtmf_tone("1") + dtmf_tone("#"))
        assert b"".join(out[:20]) == tones
        assert out[20] == ulaw_encode(tone_pcm(0))
        with pytest.raises(ValueError, match="DTMF"):
            await h.leg.send_dtmf("1x")


def test_dtmf_tone_has_the_q23_pair() -> None:
    pcm = np.frombuffer(dtmf_tone("5"), "<i2")[:800].astype(float)
    spectrum = np.abs(np.fft.rfft(pcm))
    freqs = np.fft.rfftfreq(pcm.size, 1 / 8000)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([770, 1336], abs=10)


# ---- ending -----------------------------------------------------------------------------------


async def inputs_end(leg: TwilioLeg) -> list[LegInput]:
    out = []
    it: AsyncIterator[LegInput] = leg.inputs()
    async for item in it:
        out.append(item)
    return out


async def test_stop_ends_the_leg() -> None:
    async with Harness() as h:
        h.socket.incoming.put_nowait(dumps(Stop(9, SID, START.account_sid, START.call_sid)))
        await settle()
        await h.ticks(1)
        assert h.leg.ended and h.leg.end_reason == "twilio_stop"
        assert h.inputs_done
        assert h.socket.closed == 1000
        with pytest.raises(CallEnded):
            await h.leg.play(AudioFrame.silence())


async def test_socket_close_ends_the_leg() -> None:
    async with Harness() as h:
        h.socket.incoming.put_nowait(None)
        await settle()
        assert h.leg.ended and h.leg.end_reason == "socket_closed"


async def test_hangup_closes_the_socket() -> None:
    async with Harness() as h:
        await h.leg.hangup("agent_done")
        assert h.socket.closed == 1000
        assert h.leg.end_reason == "agent_done"
        await h.ticks(2)
        assert h.task.done()


async def test_media_timeout() -> None:
    async with Harness(TwilioLegConfig(media_timeout=1.0)) as h:
        await h.ticks(45)
        assert not h.leg.ended
        await h.ticks(10)
        assert h.leg.end_reason == "media_timeout"


async def test_a_play_waiting_for_room_fails_when_the_call_ends() -> None:
    async with Harness(TwilioLegConfig(playout_limit_frames=2)) as h:
        player = await h.queue(10)
        h.socket.incoming.put_nowait(None)
        await settle()
        with pytest.raises(CallEnded):
            await player


# ---- limits (issue 9, D7) ------------------------------------------------------------------------


def stop_message() -> str:
    return dumps(Stop(9, SID, START.account_sid, START.call_sid))


def limit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__["fields"] for r in caplog.records if r.msg == "twilio.stream_limit"]


@pytest.mark.parametrize("binary", [False, True])
async def test_a_message_over_the_size_limit_closes_with_1009(
    caplog: pytest.LogCaptureFixture, binary: bool
) -> None:
    caplog.set_level(logging.INFO)
    async with Harness(TwilioLegConfig(max_message_bytes=4096)) as h:
        h.socket.media(0)
        big = dumps(Media(3, SID, "inbound", 2, 20, b"\xff" * 4000))
        h.socket.incoming.put_nowait(big.encode() if binary else big)
        h.socket.media(2)  # never read: the stream is over
        await settle()
        await h.ticks(1)
        assert h.leg.end_reason == "message_too_big"
        assert h.socket.closed == 1009
        assert h.socket.close_reason == f"message too big: {len(big)} bytes, limit 4096"
        assert len(h.frames()) == 1
    (line,) = limit_lines(caplog)
    assert line["code"] == 1009


async def test_the_servers_own_1009_ends_the_leg_as_too_big(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with Harness() as h:

        async def refused() -> str | bytes:
            raise SocketClosed(1009, "frame with 1048576 bytes exceeds limit of 65536 bytes")

        h.socket.receive_text = refused  # type: ignore[method-assign]
        h.socket.incoming.put_nowait("wake")  # the reader is parked on the old receive
        await settle()
        assert h.leg.end_reason == "message_too_big"
    (line,) = limit_lines(caplog)
    assert "65536" in line["reason"]


async def test_more_than_500_messages_in_a_second_close_with_1008(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with Harness() as h:
        for n in range(400):
            h.socket.media(n)
        await settle()
        await h.ticks(55)  # 1.1 s later the window has moved on: 400 more are fine
        for n in range(400, 800):
            h.socket.media(n)
        await settle()
        assert not h.leg.ended
        for n in range(800, 901):  # 501 within one second
            h.socket.media(n)
        await settle()
        await h.ticks(1)
        assert h.leg.end_reason == "rate_limit"
        assert (h.socket.closed, h.socket.close_reason) == (1008, "rate limit: over 500 messages/s")
    assert len(limit_lines(caplog)) == 1


async def test_stop_after_a_burst_of_media_acts_within_one_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """400 media messages at once (8 s of audio, all allowed by the rate limit), then `stop`:
    about 1 s of it is delivered, the rest dropped undecoded, and the leg ends at the next
    tick with little work done."""
    caplog.set_level(logging.INFO)
    async with Harness() as h:
        h.socket.media(0)
        await settle()
        before = time.process_time()
        for n in range(1, 400):
            h.socket.media(n, ulaw_encode(tone_pcm(n)))
        h.socket.incoming.put_nowait(stop_message())
        await settle()
        spent = time.process_time() - before
        await h.ticks(1)
        assert h.leg.ended and h.leg.end_reason == "twilio_stop"
        assert h.socket.closed == 1000
        assert h.task.done()
        stats = h.leg.stats()
        assert stats["frames_in"] == 50  # 1 s ahead of real time, no more
        assert stats["payloads_ahead"] == 350
        assert len(h.frames()) == 50
    assert spent < 0.1, spent
    dropped = [r for r in caplog.records if r.msg == "twilio.caller_audio_dropped"]
    assert len(dropped) == 1  # logged once, counted in stats


async def test_a_flood_of_one_second_payloads_is_bounded() -> None:
    """60 payloads of 1 s each (the most a payload may hold), then stop: 1 s is decoded."""
    async with Harness() as h:
        before = time.process_time()
        for n in range(60):
            h.socket.incoming.put_nowait(
                dumps(Media(n + 2, SID, "inbound", n + 1, 1000 * n, b"\xff" * 8000))
            )
        h.socket.incoming.put_nowait(stop_message())
        await settle()
        spent = time.process_time() - before
        await h.ticks(1)
        assert h.leg.end_reason == "twilio_stop"
        assert len(h.frames()) == 50
        assert h.leg.stats()["payloads_ahead"] == 59
    assert spent < 0.1, spent


async def test_a_payload_longer_than_a_second_is_dropped_undecoded() -> None:
    async with Harness() as h:
        h.socket.media(0, b"\xff" * 8001)
        h.socket.media(1)
        await settle()
        assert not h.leg.ended
        assert h.leg.stats()["payloads_oversized"] == 1
        assert len(h.frames()) == 1


async def test_caller_audio_keeps_flowing_in_real_time_after_a_flood() -> None:
    async with Harness() as h:
        for n in range(200):  # 4 s at once: 1 s is taken
            h.socket.media(n)
        await settle()
        assert len(h.frames()) == 50
        for n in range(200, 300):  # then real time: every frame is delivered as it comes
            await h.ticks(1)
            h.socket.media(n)
            await settle()
        assert len(h.frames()) >= 148
        assert h.leg.stats()["payloads_ahead"] == 150
