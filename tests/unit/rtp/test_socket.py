"""The RTP socket pair on loopback: RTP reaches its receiver only through `drain()` (what a leg's
tick calls), RTCP through the loop. Every RTP test runs on both I/O paths: the socket module's
and the C module's (rtp/_udp.c, loaded with the native build), which must behave the same."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time

import pytest

from callbridge import native
from callbridge.core.net import Addr
from callbridge.rtp import socket as rtp_socket
from callbridge.rtp.socket import DRAIN_LIMIT, MAX_DATAGRAM, PortAllocator, RtpSocket


@pytest.fixture(params=[False, True], ids=["socket-module", "c"])
def c_io(request: pytest.FixtureRequest) -> bool:
    """Which I/O path RtpSocket takes. With the native build loaded (always in CI) "c" is the C
    module; interpreted, both run the socket module's (and the C module must be absent)."""
    assert (rtp_socket._udp is not None) == native.status().native
    return bool(request.param)


def _closed_port() -> Addr:
    """An address where nothing listens (a send there is answered by ICMP port unreachable)."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    gone: Addr = closed.getsockname()
    closed.close()
    return gone


async def _collecting(got: list[bytes], low: int, c_io: bool) -> tuple[RtpSocket, int]:
    """An open RtpSocket on 127.0.0.1 whose RTP datagrams land in `got`; and its port."""
    rtp = RtpSocket(PortAllocator(low, low + 100), lambda d, a, t: got.append(d),
                    lambda d, a, t: None, c_io=c_io)  # fmt: skip
    return rtp, await rtp.open("127.0.0.1")


async def test_drain_reads_what_waits_now_without_the_loop(c_io: bool) -> None:
    got: list[tuple[bytes, Addr]] = []
    everything = asyncio.Event()
    total = 3 + DRAIN_LIMIT + 5

    ages: list[float] = []

    def heard(data: bytes, addr: Addr, age: float) -> None:
        got.append((data, addr))
        ages.append(age)
        if len(got) == total:
            everything.set()

    rtp = RtpSocket(PortAllocator(41000, 41100), heard, lambda d, a, t: None, c_io=c_io)
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


async def test_drain_reports_how_long_a_datagram_waited_in_the_kernel(c_io: bool) -> None:
    """The jitter buffer must see when a packet arrived, not when its leg's turn in the media
    pass came: a datagram that waited 30 ms unread is handed on as 30 ms old."""
    ages: list[float] = []
    rtp = RtpSocket(
        PortAllocator(41300, 41400), lambda d, a, t: ages.append(t), lambda d, a, t: None, c_io=c_io
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


async def test_the_loop_never_reads_rtp_but_reads_rtcp(c_io: bool) -> None:
    """A datagram on the RTP port does not wake the loop (50 a second per call, or a flood);
    it waits in the kernel for the leg's next tick. RTCP, one report in seconds, is read by
    the loop: it arriving after the RTP datagram proves the loop ran meanwhile."""
    rtp_got: list[bytes] = []
    rtcp_got = asyncio.Event()
    rtp = RtpSocket(
        PortAllocator(41500, 41600),
        lambda d, a, t: rtp_got.append(d),
        lambda d, a, t: rtcp_got.set(),
        c_io=c_io,
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


async def test_odd_datagrams_are_handed_on_as_they_are(c_io: bool) -> None:
    """An empty datagram is one (b""), an oversized one is cut at MAX_DATAGRAM (the session then
    ignores it as malformed), and a send to a closed port changes nothing for the reads."""
    got: list[bytes] = []
    rtp, port = await _collecting(got, 41700, c_io)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone = _closed_port()
    try:
        rtp.send(b"to nobody", gone)  # answered by an ICMP port unreachable
        peer.sendto(b"", ("127.0.0.1", port))
        peer.sendto(b"y" * (MAX_DATAGRAM + 100), ("127.0.0.1", port))
        peer.sendto(b"z", ("127.0.0.1", port))
        assert rtp.drain() == 3
        assert got == [b"", b"y" * MAX_DATAGRAM, b"z"]
        assert rtp.drain() == 0
        rtp.send(b"again", gone)
        rtp.send(b"x", ("::1", 5))  # another address family: dropped, no error
        peer.sendto(b"w", ("127.0.0.1", port))
        assert rtp.drain() == 1
        assert got[-1] == b"w"
    finally:
        peer.close()
        rtp.close()
    rtp.send(b"closed", ("127.0.0.1", port))  # closed: nothing sent, no error


async def test_a_flood_cannot_hold_the_drain(c_io: bool) -> None:
    """Each drain reads at most DRAIN_LIMIT; the rest wait for the next ticks."""
    got: list[bytes] = []
    rtp, port = await _collecting(got, 41800, c_io)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone = _closed_port()
    try:
        rtp.send(b"to nobody", gone)  # an unconnected socket gets no ICMP error (Linux udp_err)
        for _ in range(3 * DRAIN_LIMIT + 1):
            peer.sendto(b"d", ("127.0.0.1", port))
        reads = [rtp.drain() for _ in range(5)]
        assert reads == [DRAIN_LIMIT, DRAIN_LIMIT, DRAIN_LIMIT, 1, 0]
        assert len(got) == 3 * DRAIN_LIMIT + 1
    finally:
        peer.close()
        rtp.close()


async def test_what_a_receiver_does_to_the_socket_holds_for_the_rest_of_the_drain(
    c_io: bool,
) -> None:
    """A datagram can end the call (a BYE-worthy timeout, DTMF that hangs up): once the receiver
    closes the socket, the datagrams read with it go nowhere, and the port is free again."""
    got: list[bytes] = []
    alloc = PortAllocator(41900, 41910)

    def heard(data: bytes, addr: Addr, age: float) -> None:
        got.append(data)
        if data == b"hang up":
            rtp.close()

    rtp = RtpSocket(alloc, heard, lambda d, a, t: None, c_io=c_io)
    port = await rtp.open("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in (b"one", b"hang up", b"after"):
            peer.sendto(data, ("127.0.0.1", port))
        rtp.drain()
        assert got == [b"one", b"hang up"]
        assert rtp.drain() == 0
        assert alloc.free == 5
    finally:
        peer.close()
        rtp.close()


async def test_ipv6_sources_are_host_and_port(c_io: bool) -> None:
    """The receiver gets (host, port) on IPv6 too, and a reply reaches the peer."""
    got: list[Addr] = []
    rtp = RtpSocket(PortAllocator(42000, 42100), lambda d, a, t: got.append(a), lambda d, a, t: None,
                    c_io=c_io)  # fmt: skip
    port = await rtp.open("::1")
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.bind(("::1", 0))
    try:
        peer.sendto(b"v6", ("::1", port))
        assert rtp.drain() == 1
        assert got == [("::1", peer.getsockname()[1])]
        rtp.send(b"back", got[0])
        assert peer.recv(100) == b"back"
    finally:
        peer.close()
        rtp.close()


def test_the_c_module_rejects_what_is_not_an_address() -> None:
    """Its own checks (the socket path never reaches them with bad values)."""
    udp = rtp_socket._udp
    if udp is None:
        assert not native.status().native  # interpreted: nothing to check
        return
    with pytest.raises(ValueError, match="not a numeric IP address"):
        udp.pack_address("example.com", 5060)
    with pytest.raises(ValueError, match="port out of range"):
        udp.pack_address("127.0.0.1", 70000)
    with pytest.raises(ValueError, match="not from pack_address"):
        udp.send(0, b"x", b"short")
    r, w = os.pipe()
    try:  # not a socket: sendto's errno comes back, drain reads nothing
        assert udp.send(w, b"x", udp.pack_address("127.0.0.1", 9)) == errno.ENOTSOCK
        assert udp.drain(r, 16) == ()
    finally:
        os.close(r)
        os.close(w)


async def test_a_host_name_remote_falls_back_to_the_socket_module() -> None:
    """SDP may name the remote by host name (RFC 8866 §5.7): the C module takes numeric addresses
    only, so the socket falls back to the socket module, which resolves it."""
    got: list[bytes] = []
    rtp = RtpSocket(
        PortAllocator(42100, 42200), lambda d, a, t: got.append(d), lambda d, a, t: None
    )
    port = await rtp.open("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        rtp.send(b"hello", ("localhost", peer.getsockname()[1]))
        assert peer.recv(100) == b"hello"
        peer.sendto(b"reply", ("127.0.0.1", port))
        assert rtp.drain() == 1 and got == [b"reply"]
    finally:
        peer.close()
        rtp.close()
