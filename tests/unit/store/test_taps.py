"""The media tap of both transports' legs, driven in-process: SipLeg over real loopback RTP
(a test socket is the far end), TwilioLeg on a fake socket and clock. One tap call per tick,
caller frames as the jitter buffer / timeline gave them, agent frames as they went to the
wire: silent while paused, flushed, during a DTMF event, and on hold."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import LegInfo
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.socket import PortAllocator, RtpSocket
from callbridge.sdp.offer_answer import PCMU, MediaPlan
from callbridge.testing import settle
from callbridge.transports.sip.leg import Receiver, SipLeg
from tests.unit.transports.test_twilio_leg import Harness, tone_pcm

Tick = tuple[bytes | None, bytes | None]


class ListTap:
    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None:
        self.ticks.append((caller, agent))
        for n, fut in self._waiters:
            if len(self.ticks) >= n and not fut.done():
                fut.set_result(None)

    async def wait(self, more: int) -> int:
        """Until `more` more ticks were seen; returns the index of the first of them."""
        first = len(self.ticks)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((first + more, fut))
        async with asyncio.timeout(10):
            await fut
        return first


def level(value: int) -> bytes:
    return np.full(FRAME_SAMPLES, value, dtype="<i2").tobytes()


# ---- SIP --------------------------------------------------------------------------------------


class FakeDialog:
    """What a SipLeg asks of its signalling (nothing here needs real signalling)."""

    def hangup(self) -> bool:
        return True

    def refer(self, target: str) -> str:
        return target

    def closed(self) -> None:
        pass


def rtp_socket(on_rtp: Receiver, on_rtcp: Receiver) -> RtpSocket:
    return RtpSocket(PortAllocator(46000, 46400), on_rtp, on_rtcp)


@pytest.fixture
async def far_end() -> AsyncIterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    yield s
    s.close()


def plan(port: int, *, hold: bool = False) -> MediaPlan:
    return MediaPlan("127.0.0.1", port, PCMU, 101, 20, "recvonly" if hold else "sendrecv", hold)


async def send_rtp(sock: socket.socket, dest: tuple[str, int], frames: list[bytes]) -> None:
    """The far end's phone: one PCMU packet per 20 ms on an absolute schedule."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, pcm in enumerate(frames):
        await asyncio.sleep(max(0.0, start + 0.02 * i - loop.time()))
        header = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, i, 160 * i, 0x1234)
        sock.sendto(header + ulaw_encode(pcm), dest)


def in_order(found: list[bytes], sent: list[bytes]) -> bool:
    it = iter(sent)
    return all(any(f == s for s in it) for f in found)


async def test_sip_leg_taps_each_tick_with_the_jitter_buffer_frame_and_what_was_sent(
    far_end: socket.socket,
) -> None:
    clock = LoopClock()
    leg = SipLeg(
        name="c1", info=LegInfo("sip", "inbound"), dialog=FakeDialog(), clock=clock,
        wire=rtp_socket, bind_host="127.0.0.1", jitter=JitterConfig(), rtp_timeout=30.0,
    )  # fmt: skip
    port = await leg.open_media()
    leg.apply_plan(plan(far_end.getsockname()[1]))
    tap = ListTap()
    leg.set_tap(tap)
    # What the caller says: distinct levels, as G.711 carries them.
    said = [ulaw_decode(ulaw_encode(level(40 * (i + 1)))) for i in range(120)]
    first = [level(-100 * (i + 1)) for i in range(10)]
    for f in first:
        await leg.play(AudioFrame(f))
    media = asyncio.create_task(leg.run())
    phone = asyncio.create_task(send_rtp(far_end, ("127.0.0.1", port), said))
    await tap.wait(25)

    # paused: the caller hears nothing from the next tick on, then the rest, one per tick
    leg.pause_playout(True)
    second = [level(-7 * (i + 1)) for i in range(5)]
    for f in second:
        await leg.play(AudioFrame(f))
    paused_at = await tap.wait(8)
    leg.pause_playout(False)
    resumed_at = await tap.wait(10)

    # a DTMF event holds the line: audio waits behind it
    third = [level(-3 * (i + 1)) for i in range(3)]
    await leg.send_dtmf("5")
    for f in third:
        await leg.play(AudioFrame(f))
    dtmf_at = await tap.wait(25)

    # on hold: silence on both channels, whatever arrives
    leg.apply_plan(plan(far_end.getsockname()[1], hold=True))
    held_at = await tap.wait(10)
    leg.ended_by_signalling("remote_bye", None)
    async with asyncio.timeout(2):
        await media
    phone.cancel()

    t = tap.ticks
    agent = [a for _, a in t]
    # 1. the first answer: one frame per tick from the first tick, in order
    assert agent[:10] == first and agent[10:paused_at] == [None] * (paused_at - 10)
    # 2. paused: nothing; resumed: the held frames, in order, at once
    assert agent[paused_at:resumed_at] == [None] * (resumed_at - paused_at)
    assert agent[resumed_at : resumed_at + 5] == second
    # 3. the DTMF event (~160 ms + 100 ms gap) goes first, the audio after it
    sent_third = [i for i in range(dtmf_at, held_at) if agent[i] is not None]
    assert [agent[i] for i in sent_third] == third
    assert sent_third[0] - dtmf_at >= 8, sent_third
    # 4. on hold: both channels silent
    assert t[held_at:] == [(None, None)] * (len(t) - held_at)
    # the caller channel: what the far end sent, in order (concealment aside), one per tick
    caller = [c for c, _ in t[:held_at] if c is not None]
    real = [c for c in caller if c in said]
    assert in_order(real, said)
    assert len(real) >= 0.8 * len(caller) and len(caller) >= held_at - 10
    assert real[0] == said[0]


async def test_sip_leg_without_a_tap_runs_as_before(far_end: socket.socket) -> None:
    leg = SipLeg(
        name="c2", info=LegInfo("sip", "inbound"), dialog=FakeDialog(), clock=LoopClock(),
        wire=rtp_socket, bind_host="127.0.0.1", jitter=JitterConfig(), rtp_timeout=30.0,
    )  # fmt: skip
    await leg.open_media()
    leg.apply_plan(plan(far_end.getsockname()[1]))
    tap = ListTap()
    leg.set_tap(tap)
    leg.set_tap(None)
    await leg.play(AudioFrame(level(5)))
    media = asyncio.create_task(leg.run())
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(far_end, 2048), 2)
    assert ulaw_decode(data[12:]) == ulaw_decode(ulaw_encode(level(5)))
    leg.ended_by_signalling("remote_bye", None)
    await asyncio.wait_for(media, 2)
    assert tap.ticks == []


# ---- Twilio -----------------------------------------------------------------------------------


async def test_twilio_leg_taps_caller_frames_and_agent_audio_as_twilio_plays_it() -> None:
    async with Harness() as h:
        tap = ListTap()
        h.leg.set_tap(tap)
        await h.queue(12, utterance=1)
        said = [tone_pcm(i, 1000 + 100 * i) for i in range(6)]
        for i, pcm in enumerate(said):
            h.socket.media(i, ulaw_encode(pcm))
            await settle()
            await h.ticks(1)
        await h.ticks(4)
        # the agent's audio went to Twilio up to 100 ms ahead; the tap plays it in real time
        assert len(h.socket.media_out()) >= 9
        agent = [a for _, a in tap.ticks]
        assert agent == [tone_pcm(i, 3000) for i in range(10)]
        caller = [c for c, _ in tap.ticks]
        assert caller[:6] == [ulaw_decode(ulaw_encode(p)) for p in said]
        # a flush (barge-in): Twilio clears what it had not played; so does the tap
        h.leg.flush_playout()
        await h.ticks(3)
        assert [a for _, a in tap.ticks[10:]] == [None, None, None]
        assert all(len(c) == FRAME_BYTES for c, _ in tap.ticks if c is not None)
