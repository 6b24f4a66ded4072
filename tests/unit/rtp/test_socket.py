"""The RTP socket pair on loopback: datagrams reach the receivers through the loop or, at once,
through `drain()` (what the media pass calls before a leg's tick)."""

from __future__ import annotations

import asyncio
import socket

from callbridge.core.net import Addr
from callbridge.rtp.socket import DRAIN_LIMIT, PortAllocator, RtpSocket


async def test_drain_reads_what_waits_now_without_the_loop() -> None:
    got: list[tuple[bytes, Addr]] = []
    everything = asyncio.Event()
    total = 3 + DRAIN_LIMIT + 5

    def heard(data: bytes, addr: Addr) -> None:
        got.append((data, addr))
        if len(got) == total:
            everything.set()

    rtp = RtpSocket(PortAllocator(41000, 41100), heard, lambda d, a: None)
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
        assert got[0][1] == ("127.0.0.1", peer.getsockname()[1])
        for _ in range(DRAIN_LIMIT + 5):
            peer.sendto(b"x", ("127.0.0.1", port))
        assert rtp.drain() == DRAIN_LIMIT  # bounded: a flood cannot hold the pass
        await asyncio.wait_for(everything.wait(), 2)  # the rest come through the loop's reader
    finally:
        peer.close()
        rtp.close()
    assert rtp.drain() == 0  # closed: nothing to read, no error


async def test_ports_come_back_to_the_allocator() -> None:
    alloc = PortAllocator(41200, 41210)
    rtp = RtpSocket(alloc, lambda d, a: None, lambda d, a: None)
    free = alloc.free
    await rtp.open("127.0.0.1")
    assert alloc.free == free - 1
    rtp.close()
    assert alloc.free == free
