"""Reading and sending RTP in the media pass: the socket module (a system call per datagram,
one more that finds none, and the sendto) vs the C drain and send (rtp/_udp.c: one recvmmsg per
drain), on real UDP sockets on loopback.

    .venv/bin/python bench/rtp_read.py [--legs 150,300] [--secs 5]

N legs, each an RtpSocket (rtp.socket) on the process's media clock, whose tick drains its
socket and sends one 172-byte packet back, as a G.711 leg does every 20 ms. A separate
process plays N callers: one packet per 20 ms to each leg at a random phase (real callers'
phases are random), reading what comes back. Only this process's CPU is measured (process
time over wall time, % of one core), so the callers' cost is left out. The first mode is the
baseline; both run in the same process one after the other, twice, and the table gives each
mode's best and worst. No timing is asserted. The C mode needs the native build (`python -m
callbridge.cli.native build`); without it the bench says so and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import multiprocessing.synchronize
import random
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from callbridge import native
from callbridge.core.asyncio_clock import LoopClock
from callbridge.rtp import socket as rtp_socket
from callbridge.rtp.socket import PortAllocator, RtpSocket
from callbridge.transports.media_clock import MediaClock

PACKET = b"\x80\x00" + b"\x00" * 10 + b"\xff" * 160


def callers(ports: list[int], secs: float, ready: mp.synchronize.Event) -> None:
    """N callers in one process: a packet to each port every 20 ms, random phases."""
    socks = []
    for _ in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    start = time.monotonic() + 0.1
    due = [start + random.random() * 0.02 for _ in ports]
    ready.set()
    end = start + secs
    order = sorted(range(len(ports)), key=lambda i: due[i])
    while time.monotonic() < end:
        for i in order:
            wait = due[i] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            socks[i].sendto(PACKET, ("127.0.0.1", ports[i]))
            due[i] += 0.02
            try:  # what the leg sent back: read and drop (a real caller would play it)
                while True:
                    socks[i].recv(2048)
            except BlockingIOError:
                pass


async def run_mode(n: int, secs: float, c_io: bool) -> tuple[float, float]:
    """(CPU % of one core, datagrams read per leg per second) over `secs` after a warm-up."""
    clock = LoopClock()
    media = MediaClock(clock)
    alloc = PortAllocator(30000, 40000)
    got = [0]
    peers: list[tuple[str, int] | None] = [None] * n

    def receiver(i: int) -> Callable[[bytes, tuple[str, int], float], None]:
        def on_rtp(data: bytes, source: tuple[str, int], age: float) -> None:
            got[0] += 1
            peers[i] = source

        return on_rtp

    sockets = [RtpSocket(alloc, receiver(i), lambda d, s, a: None, c_io=c_io) for i in range(n)]
    ports = [await s.open("127.0.0.1") for s in sockets]
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=callers, args=(ports, secs + 2.0, ready))
    proc.start()
    await asyncio.to_thread(ready.wait, 30)
    stop = [False]

    def tick(i: int) -> Callable[[float, int], None]:
        sock = sockets[i]

        def on_tick(now: float, missed: int) -> None:
            sock.drain()
            peer = peers[i]
            if peer is not None:
                sock.send(PACKET, peer)

        return on_tick

    legs = [asyncio.ensure_future(media.ticks(tick(i), lambda: stop[0])) for i in range(n)]
    await asyncio.sleep(1.0)  # warm-up: every caller sending, every leg ticking
    got[0] = 0
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(secs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    read = got[0]
    stop[0] = True
    await asyncio.gather(*legs)
    for s in sockets:
        s.close()
    await asyncio.to_thread(proc.join, 10)
    return 100 * cpu / wall, read / n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legs", default="150,300")
    ap.add_argument("--secs", type=float, default=5.0)
    args = ap.parse_args()
    if rtp_socket._udp is None:
        sys.exit(f"rtp_read: the C module is not loaded ({native.status().reason})")
    modes = (("socket module (baseline)", False), ("C drain and send", True))
    print(f"{'legs':>5} {'mode':<38} {'cpu%':>11} {'pkts/leg/s':>11} {'x baseline':>10}")
    for n in (int(x) for x in args.legs.split(",")):
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(2):
            for _, c_io in modes:
                results[c_io].append(asyncio.run(run_mode(n, args.secs, c_io)))
        base = sum(c for c, _ in results[False]) / 2
        for name, c_io in modes:
            cpus = [c for c, _ in results[c_io]]
            rate = min(r for _, r in results[c_io])
            span = f"{min(cpus):.1f}-{max(cpus):.1f}"
            mean = sum(cpus) / len(cpus)
            print(f"{n:>5} {name:<38} {span:>11} {rate:>11.1f} {mean / base:>10.2f}")


if __name__ == "__main__":
    main()
