"""Asyncio shell: the UDP socket pair (RTP on an even port, RTCP on the next, RFC 3550 §11)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator

from callbridge.core.errors import TransportError
from callbridge.core.net import Addr

try:  # the drain and send in C (rtp/_udp.c), when the native build is loaded
    from callbridge.rtp import _udp
except ImportError:
    _udp = None  # type: ignore[assignment]

# (datagram, source, age): age = seconds since the kernel received it (0: just now, or unknown)
Receiver = Callable[[bytes, Addr, float], None]


class NoFreePort(TransportError):
    pass


# Bigger than any RTP packet of a voice call over UDP (an MTU is ~1,500 bytes); a longer
# datagram is cut here and then ignored as a malformed packet.
MAX_DATAGRAM = 4096
# At most this many datagrams per drain: a flood on one port cannot hold the media pass.
DRAIN_LIMIT = 16
# Linux's SO_TIMESTAMPNS (the socket module does not name it): each datagram carries the
# kernel's receive time (CLOCK_REALTIME, struct timespec) as ancillary data.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_SOL_SOCKET = socket.SOL_SOCKET
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _ignore(data: bytes, source: Addr, age: float) -> None:
    """A closed socket's receiver: the leg it fed is gone."""


class PortAllocator:
    """Hands out even RTP ports from a range, avoiding ones in use by this process.

    O(1) per take and release, O(k) per k candidates: a call setup must not walk the whole
    range (thousands of ports) when hundreds of calls start each second."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low + (low % 2)
        self.high = high
        self._free = list(range(self.low, self.high, 2))
        self._slot = {port: i for i, port in enumerate(self._free)}

    def candidates(self, limit: int = 200) -> Iterator[int]:
        """Up to `limit` distinct free ports in random order: unpredictable ports resist RTP
        injection. Drawn one at a time, as the caller tries them: the first one binds almost
        always, and drawing all 200 up front was ~2 % of a worker's call setups."""
        free = self._free  # read afresh at each draw: ports taken meanwhile are not given
        given: set[int] = set()
        while len(given) < min(limit, len(free)):
            port = free[random.randrange(len(free))]
            if port not in given:
                given.add(port)
                yield port

    def take(self, port: int) -> None:
        i = self._slot.pop(port, None)
        if i is None:
            return
        last = self._free.pop()
        if last != port:  # move the last free port into the taken one's slot
            self._free[i] = last
            self._slot[last] = i

    def release(self, port: int) -> None:
        if port in self._slot or not (self.low <= port < self.high) or port % 2:
            return
        self._slot[port] = len(self._free)
        self._free.append(port)

    @property
    def free(self) -> int:
        return len(self._free)


class RtpSocket:
    def __init__(
        self,
        allocator: PortAllocator,
        on_rtp: Receiver,
        on_rtcp: Receiver,
        *,
        c_io: bool = True,  # the C drain and send when built (False: the socket module's)
    ) -> None:
        self.allocator = allocator
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.port = 0
        # Both are plain non-blocking sockets, written with sendto. RTP is read only by
        # drain(), in the leg's tick: a reader on the loop woke it once per datagram (50 a
        # second per call), and bench/rtp_read.py measured reading in the tick alone at ~0.6
        # of that CPU; a flood on a media port now costs at most DRAIN_LIMIT reads per tick
        # and never wakes the loop (the kernel drops what overflows the socket's buffer).
        # RTCP (one report in 5 s) is read by the loop (add_reader). No asyncio transport:
        # no transport, protocol and handles per call for the garbage collector to walk.
        self._rtp_sock: socket.socket | None = None
        self._rtcp_sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # With the C module: the RTP socket's descriptor (-1 when closed) and the remote last
        # sent to, packed once (a call sends to one address for its whole life).
        self._fd = -1
        self._to: Addr | None = None
        self._to_packed = b""
        self._c = _udp if c_io else None

    async def open(self, host: str) -> int:
        loop = asyncio.get_running_loop()
        for port in self.allocator.candidates():
            try:
                rtp_sock = _bound(host, port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            try:
                rtcp_sock = _bound(host, port + 1)
            except OSError:
                rtp_sock.close()
                continue
            try:
                loop.add_reader(rtcp_sock.fileno(), self._rtcp_readable)
            except BaseException:
                rtp_sock.close()
                rtcp_sock.close()
                raise
            self.port = port
            self._rtp_sock, self._rtcp_sock, self._loop = rtp_sock, rtcp_sock, loop
            self._fd = rtp_sock.fileno()
            self.allocator.take(port)
            return port
        raise NoFreePort(f"no free RTP port pair in {self.allocator.low}-{self.allocator.high}")

    def drain(self, limit: int = DRAIN_LIMIT) -> int:
        """Read the RTP datagrams waiting now, at once (non-blocking), and hand them on with
        how long ago the kernel received each. Returns how many were handed on.

        This is the only reader of RTP: the leg's tick calls it (the media clock's pass, every
        20 ms), so a packet is heard in the tick that plays it, and the event loop never wakes
        for one. The kernel's receive time keeps the jitter buffer's view of the network true:
        stamped when read, a packet would look as late as its leg's place in the pass, or as
        long as a stall of the whole process (a garbage collection), and the buffer would
        deepen for delay that is our own.

        With the C module it is one system call (recvmmsg) for the whole drain; the socket
        module needs one per datagram and one more that finds none. Either way every datagram
        goes to the receiver current when it is handed on (a receiver may close the socket)."""
        c = self._c
        if c is not None:
            if self._fd < 0:
                return 0
            got = c.drain(self._fd, limit)
            for data, addr, age in got:
                self.on_rtp(data, addr, age)
            return len(got)
        sock = self._rtp_sock
        if sock is None:
            return 0
        n = 0
        wall = 0.0
        for _ in range(limit):  # bounded: a flood on one port cannot hold the pass
            try:
                data, anc, _, addr = sock.recvmsg(MAX_DATAGRAM, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # a pending socket error: read, so it is gone
                continue
            n += 1
            age = 0.0
            if anc:  # the socket asks for one kind of ancillary data only: the timestamp
                level, kind, value = anc[0]
                if level == _SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    wall = wall or time.time()
                    age = wall - (sec + nsec * 1e-9)
                    if age < 0.0:  # noqa: PLR1730 - the wall clock stepped back; no call per packet
                        age = 0.0
            self.on_rtp(data, addr if len(addr) == 2 else (addr[0], addr[1]), age)
        return n

    def _rtcp_readable(self) -> None:
        sock = self._rtcp_sock
        if sock is None:
            return
        try:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
        except OSError:  # nothing after all, or a pending socket error (now read, so gone)
            return
        self.on_rtcp(data, (addr[0], addr[1]), 0.0)

    def send(self, data: bytes, addr: Addr) -> None:
        c = self._c
        if c is not None:
            if self._fd < 0:
                return
            if addr != self._to:
                try:
                    self._to_packed = c.pack_address(addr[0], addr[1])
                except ValueError:  # not a numeric address: what sendto would make of it
                    self._c = None
                    self.send(data, addr)
                    return
                self._to = addr
            # 0, or the errno of a send that failed (a full buffer): dropped, as below
            c.send(self._fd, data, self._to_packed)
            return
        sock = self._rtp_sock
        if sock is None:
            return
        try:  # noqa: SIM105 - contextlib.suppress costs a context manager per packet
            sock.sendto(data, addr)
        except OSError:
            # A full send buffer (a packet a tick late is worth nothing: dropped, as the
            # network would), or any other send error (an unconnected UDP socket never hears the
            # peer's ICMP errors on Linux): media goes on.
            pass

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        sock = self._rtcp_sock
        if sock is not None:
            with contextlib.suppress(OSError):  # as for RTP: a report lost is not an error
                sock.sendto(data, addr)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        for sock in (self._rtp_sock, self._rtcp_sock):
            if sock is None:
                continue
            if loop is not None and not loop.is_closed() and sock is self._rtcp_sock:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._rtp_sock = self._rtcp_sock = None
        self._fd = -1
        # The receivers are the leg's bound methods: the leg holds this socket, so keeping
        # them would make a reference cycle that only a full garbage collection frees.
        self.on_rtp = self.on_rtcp = _ignore
        if self.port:
            self.allocator.release(self.port)
            self.port = 0


def _bound(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port), of the host's address family."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.bind(addr)
        with contextlib.suppress(OSError):  # not Linux: datagrams count as received when read
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except BaseException:
        sock.close()
        raise
    return sock
