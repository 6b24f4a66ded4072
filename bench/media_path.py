"""Per-call media cost: how much CPU one call's 20 ms frame costs on the receive and send paths,
one whole SIP leg tick with the echo agent on it (the leg's socket read, jitter buffer,
the agent's frame, packetise, send: everything but the syscalls, which a fake wire stands in for),
and the voice agent's listening work per caller frame (its VAD stream with the noise gate, the
turn and barge-in detectors; the model's answer for the chunks it would see is given inline,
as the batched model runs on another thread).

    .venv/bin/python bench/media_path.py [--frames N]

Prints a table with a baseline measured in the same run (bare RTP parse + serialise of the
same packets), so the numbers compare across machines: what matters is the ratio and the
calls-per-core estimate (one core = 1 s of CPU per second; a call needs 50 frames/s each way).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import numpy as np

from callbridge.agents.echo import EchoAgent
from callbridge.audio.g711 import ulaw_encode
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.net import Addr
from callbridge.core.ports import LegInfo
from callbridge.media.listening import Listener
from callbridge.media.vad import VadStream
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.session import RtpParams, RtpSession
from callbridge.rtp.socket import Receiver
from callbridge.sdp.offer_answer import PCMU, MediaPlan
from callbridge.sip.message import parse
from callbridge.sip.ua import LocalIdentity, UserAgent
from callbridge.testing import FakeClock
from callbridge.transports.sip.leg import NO_DIALOG, SipLeg

SRC = ("127.0.0.1", 40000)


def packets(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    pcm = (rng.normal(0, 3000, n * FRAME_SAMPLES)).clip(-32768, 32767).astype("<i2").tobytes()
    out = []
    for i in range(n):
        payload = ulaw_encode(pcm[i * 320 : (i + 1) * 320])
        out.append(bytes(RtpPacket(0, i & 0xFFFF, i * 160, 0xABCDEF, payload)))
    return out


class BenchWire:
    """The leg's socket pair without syscalls: each drain hands on the next packet (one per
    tick, as a caller sends), sends are counted."""

    def __init__(self, data: list[bytes], on_rtp: Receiver) -> None:
        self.data = data
        self.on_rtp = on_rtp
        self.i = 0
        self.sent = 0

    async def open(self, host: str) -> int:
        return 40000

    def send(self, data: bytes, addr: Addr) -> None:
        self.sent += 1

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        pass

    def drain(self) -> int:
        if self.i >= len(self.data):
            return 0
        self.on_rtp(self.data[self.i], SRC, 0.0)
        self.i += 1
        return 1

    def close(self) -> None:
        pass


def echo_leg_ticks(data: list[bytes]) -> Callable[[], None]:
    """A SIP leg with the echo agent on it, ticked once per packet (fake clock, fake wire)."""

    def run() -> None:
        async def main() -> None:
            clock = FakeClock()
            wires: list[BenchWire] = []

            def wire(on_rtp: Receiver, on_rtcp: Receiver) -> BenchWire:
                wires.append(BenchWire(data, on_rtp))
                return wires[-1]

            leg = SipLeg(info=LegInfo("sip", "inbound"), dialog=NO_DIALOG, clock=clock,
                         wire=wire, bind_host="127.0.0.1", jitter=JitterConfig(),
                         rtp_timeout=3600.0)  # fmt: skip
            await leg.open_media()
            leg.apply_plan(MediaPlan(SRC[0], SRC[1], PCMU, 101, 20, "sendrecv", False))
            agent = asyncio.create_task(EchoAgent().run(leg))
            await asyncio.sleep(0)  # the agent listens
            start = clock.now()
            for i in range(len(data)):
                now = clock._now = start + i * 0.02  # the packet arrives, then the tick
                leg._tick(now, 0)
            assert wires[0].sent >= len(data) - 1
            leg.ended_by_signalling("done")
            await agent

        asyncio.run(main())

    return run


def listening(frames: list[bytes]) -> Callable[[], None]:
    """The voice agent's per-frame listening work on a caller's line noise (what
    agents.conversation does in each tick: the listener's frame, the VAD stream's chunking,
    level and noise gate, then each chunk's verdict through the turn and barge-in detectors).
    A chunk the gate lets through gets "not speech" at once, in place of the batched model."""

    def run() -> None:
        stream = VadStream()
        listener = Listener()
        silent = -float("inf")
        for i, pcm in enumerate(frames):
            now = i * 0.02
            listener.frame(pcm, now)
            stream.feed(pcm, now)
            while (chunk := stream.next_chunk()) is not None:
                stream.resolve(chunk, 0.0, stream.state_for(chunk))
            for result in stream.results():
                listener.vad(result, agent_speaking=False, agent_dbfs=silent)

    return run


def timed(fn: Callable[[], None], repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=3000)
    n = ap.parse_args().frames
    data = packets(n)
    frame = AudioFrame(bytes(range(256)) * 1 + bytes(64))

    def baseline() -> None:
        for d in data:
            bytes(RtpPacket.parse(d))

    def receive_path() -> None:
        s = RtpSession(RtpParams(SRC, "PCMU", 0, 101), 0.0)
        for i, d in enumerate(data):
            now = i * 0.02
            s.receive(d, SRC, now)
            s.tick(now)

    def send_path() -> None:
        s = RtpSession(RtpParams(SRC, "PCMU", 0, 101), 0.0)
        for i in range(n):
            s.send_frame(frame, i * 0.02)

    invite = (
        b"INVITE sip:agent@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-%d\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: %d\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:a@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )

    def sip_parse() -> None:
        for i in range(200):
            parse(invite % (i, i))

    def sip_invite() -> None:
        ua = UserAgent(LocalIdentity("127.0.0.1", 5060))
        for i in range(200):
            ua.receive(invite % (i, i), SRC, 0.0)

    base = timed(baseline) / n
    rx = timed(receive_path) / n
    tx = timed(send_path) / n
    sp = timed(sip_parse) / 200
    si = timed(sip_invite) / 200
    leg = timed(echo_leg_ticks(data)) / n
    rng = np.random.default_rng(2)
    noise = [  # line noise around -50 dBFS: the gate's usual case on an idle caller
        (rng.normal(0, 100, FRAME_SAMPLES)).astype("<i2").tobytes() for _ in range(n)
    ]
    listen = timed(listening(noise)) / n
    per_call = (rx + tx) * 50  # CPU seconds per second of call
    rows = [
        ("RTP parse+serialise (baseline)", base * 1e6, 1.0),
        ("receive: parse, decode, jitter push+pop", rx * 1e6, rx / base),
        ("send: encode, packetise", tx * 1e6, tx / base),
        ("SIP leg tick, echo agent (no syscalls)", leg * 1e6, leg / base),
        ("voice agent listening, per frame (noise)", listen * 1e6, listen / base),
        ("SIP parse (INVITE)", sp * 1e6, sp / base),
        ("SIP INVITE through the UA (100 Trying)", si * 1e6, si / base),
    ]
    print(f"{'path':44} {'us/op':>9} {'x baseline':>11}")
    for name, us, ratio in rows:
        print(f"{name:44} {us:9.1f} {ratio:11.1f}")
    print(
        f"\nmedia CPU per call: {per_call * 100:.2f}% of a core -> ~{int(1 / per_call)} calls per core (media only)"
    )


if __name__ == "__main__":
    main()
