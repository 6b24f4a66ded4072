"""The RTP socket pair on loopback: RTP reaches its receiver only through `drain()` (what a leg's
tick calls), RTCP through the loop."""

from __future__ import annotations

import asyncio
import socket
import time

from callbridge.core.net import Addr
from callbridge.rtp.socket import DRAIN_LIMIT, PortAllocator, RtpSocket


async def test_drain_reads_what_waits_now_without_the_loop() -> None:
    got: list[tuple[bytes, Addr]] = []
    everything = asyncio.Event()
    total = 3 + DRAIN_LIMIT + 5

    ages: list[float] = []

    def heard(data: bytes, addr: Addr, age: float) -> None:
        got.append((data, addr))
        ages.append(age)
        if len(got) == total:
            everything.set()

    rtp = RtpSocket(PortAllocator(41000, 41100), heard, lambda d, a, t: None)
    port = await rtp.open("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert rtp.drain() == 0  # nothing waiting: returns at once
        for i in range(3):
            peer.sendto(bytes([0x80, 0, 0, i]), ("127.0.0.1", port))
        # No await: the loop never ran, so only drain() can have read them (loopback UDP
        # is delivered within the sendto call).
        assert rtp.drain() == 3
        assert [d[3] for d, _ in got] == [0, 1, 2]
        assert all(0.0 <= age < 1.0 for age in ages)  # the kernel's receive time: just now
        assert got[0][1] == ("127.0.0.1", peer.getsockname()[1])
        for _ in range(DRAIN_LIMIT + 5):
            peer.sendto(b"x", ("127.0.0.1", port))
        assert rtp.drain() == DRAIN_LIMIT  # bounded: a flood cannot hold the pass
        assert rtp.drain() == 5  # the rest at the next tick
        assert everything.is_set()
    finally:
        peer.close()
        rtp.close()
    assert rtp.drain() == 0  # closed: nothing to read, no error


async def test_ports_come_back_to_the_allocator() -> None:
    alloc = PortAllocator(41200, 41210)
    rtp = RtpSocket(alloc, lambda d, a, t: None, lambda d, a, t: None)
    free = alloc.free
    await rtp.open("127.0.0.1")
    assert alloc.free == free - 1
    rtp.close()
    assert alloc.free == free


async def test_drain_reports_how_long_a_datagram_waited_in_the_kernel() -> None:
    """The jitter buffer must see when a packet arrived, not when its leg's turn in the media
    pass came: a datagram that waited 30 ms unread is handed on as 30 ms old."""
    ages: list[float] = []
    rtp = RtpSocket(
        PortAllocator(41300, 41400), lambda d, a, t: ages.append(t), lambda d, a, t: None
    )
    port = await rtp.open("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.sendto(b"warm-up", ("127.0.0.1", port))  # the kernel turns timestamps on lazily
        rtp.drain()
        peer.sendto(b"late", ("127.0.0.1", port))
        # The loop is busy (a long media pass), so nobody reads the socket: block it on purpose.
        time.sleep(0.03)  # noqa: ASYNC251
        assert rtp.drain() == 1
        assert 0.025 <= ages[-1] < 1.0, ages
    finally:
        peer.close()
        rtp.close()


async def test_the_loop_never_reads_rtp_but_reads_rtcp() -> None:
    """A datagram on the RTP port does not wake the loop (50 a second per call, or a flood);
    it waits in the kernel for the leg's next tick. RTCP, one report in seconds, is read by
    the loop: it arriving after the RTP datagram proves the loop ran meanwhile."""
    rtp_got: list[bytes] = []
    rtcp_got = asyncio.Event()
    rtp = RtpSocket(
        PortAllocator(41500, 41600),
        lambda d, a, t: rtp_got.append(d),
        lambda d, a, t: rtcp_got.set(),
    )
    port = await rtp.open("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.sendto(b"rtp", ("127.0.0.1", port))
        peer.sendto(b"rtcp", ("127.0.0.1", port + 1))
        await asyncio.wait_for(rtcp_got.wait(), 2)
        assert rtp_got == []
        assert rtp.drain() == 1
        assert rtp_got == [b"rtp"]
    finally:
        peer.close()
        rtp.close()
