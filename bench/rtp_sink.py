"""The load bench's callers' ears: binds the RTP and RTCP ports SIPp's callers announce in
their SDP and never reads them, as a phone elsewhere on the network would take the gateway's
packets.

    python bench/rtp_sink.py HOST FIRST_PORT COUNT STEP

SIPp's play_pcap_audio sends from a raw socket and binds no port for the calls it places
(only its own `-mp` port, the first call's). Without this, every RTP packet the gateway sent
to a caller hit a closed port: the kernel answered each with an ICMP port unreachable, in
the gateway's own sendto on loopback, and charged it to the gateway's CPU. A tiny receive
buffer keeps the kernel's memory small: packets beyond it are dropped at the socket.
"""

from __future__ import annotations

import resource
import signal
import socket
import sys


def main() -> None:
    host, first, count, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    socks = []
    # The first call's port is SIPp's own -mp socket (bound by SIPp, with +2): leave it.
    for k in range(1, count):
        for port in (first + k * step, first + k * step + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((host, port))
            socks.append(s)
    print(f"sink ready: {len(socks)} ports", file=sys.stderr, flush=True)
    while True:  # until the bench stops it (SIGTERM)
        signal.pause()


if __name__ == "__main__":
    main()
