"""aiortc's audio receive buffer holds one frame, not five (transports/webrtc/receive_buffer.py)."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from callbridge.transports.webrtc.receive_buffer import _ATTR, make_shallow


def packets(n: int) -> list[RtpPacket]:
    return [
        RtpPacket(payload_type=0, sequence_number=i, timestamp=160 * i, payload=b"\xff" * 160)
        for i in range(n)
    ]


def released(buffer: JitterBuffer, n: int) -> list[int]:
    """After each of n packets in order: the timestamp of the frame it released (or -1)."""
    out = []
    for p in packets(n):
        p._data = p.payload  # type: ignore[attr-defined]  # what aiortc's receiver sets
        _, frame = buffer.add(p)
        out.append(frame.timestamp if frame is not None else -1)
    return out


def test_aiortc_default_holds_four_frames_and_ours_one() -> None:
    # The defect this works around: with prefetch=4 a frame leaves when the 4th after it
    # arrives (80 ms behind); with 1, when the next one does (20 ms).
    assert released(JitterBuffer(capacity=16, prefetch=4), 6) == [-1, -1, -1, -1, 0, 160]
    assert released(JitterBuffer(capacity=16, prefetch=1), 3) == [-1, 0, 160]


async def test_an_audio_receiver_gets_the_shallow_buffer() -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        assert getattr(receiver, _ATTR)._prefetch == 4  # aiortc's default, still there
        assert make_shallow(receiver)
        buffer = getattr(receiver, _ATTR)
        assert (buffer._prefetch, buffer.capacity) == (1, 16)
        assert not make_shallow(object())  # not an aiortc receiver: left alone
    finally:
        await asyncio.wait_for(pc.close(), 5)
