"""An INVITE flooder for the overload tests, run as its own process (so it gets its own core
and GIL): `python flooder.py HOST:PORT --source 127.0.0.2 --rate 1000 --seconds 10`.

Each INVITE is a new call (own Call-ID and branch), paced on an absolute schedule; a thread
counts the answers. At the end it prints one JSON line: sent, answers by status, when the
last answer came. Deliberately independent of callbridge's SIP code. Loopback only."""

from __future__ import annotations

import argparse
import collections
import contextlib
import ipaddress
import json
import socket
import threading
import time


def invite(target: str, source: tuple[str, int], user: str, n: int) -> bytes:
    host, port = source
    body = (
        f"v=0\r\no=flood {n} 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:{user}@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-flood-{n};rport\r\n"
        f"From: <sip:flood@{host}>;tag=f{n}\r\nTo: <sip:{user}@{target}>\r\n"
        f"Call-ID: flood-{n}@{host}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{host}:{port}>\r\n"
        f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--source", default="127.0.0.2")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--user", default="echo")
    ap.add_argument(
        "--sources", type=int, default=1, help="spread over N addresses from --source up"
    )
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    for addr in (host, a.source):
        if not ipaddress.ip_address(addr).is_loopback:
            raise SystemExit(f"{addr}: the flooder only targets loopback")
    first = ipaddress.ip_address(a.source)
    socks = []
    for i in range(a.sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((str(first + i), 0))
        s.settimeout(0.2)
        socks.append(s)
    answers: collections.Counter[int] = collections.Counter()
    last_answer = [0.0]
    stop = threading.Event()
    start = time.monotonic()

    def receive() -> None:
        import selectors

        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                try:
                    data = key.fileobj.recv(65535)  # type: ignore[union-attr]
                except OSError:
                    continue
                if data.startswith(b"SIP/2.0 "):
                    answers[int(data[8:11])] += 1
                    last_answer[0] = time.monotonic() - start

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    total = int(a.rate * a.seconds)
    dest = (host, int(port))
    for n in range(total):
        due = start + n / a.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock = socks[n % len(socks)]
        with contextlib.suppress(BlockingIOError):  # our send buffer full: a flood does not wait
            sock.sendto(invite(a.target, sock.getsockname(), a.user, n), dest)
    sent_for = time.monotonic() - start
    time.sleep(1.0)  # answers in flight
    stop.set()
    reader.join(2)
    for s in socks:
        s.close()
    print(json.dumps({
        "sent": total, "seconds": round(sent_for, 2),
        "answers": {str(k): v for k, v in sorted(answers.items())},
        "last_answer_s": round(last_answer[0], 3),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
