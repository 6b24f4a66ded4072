"""Issue 9, D5: with `sip.auth_routes = "*"`, an unauthenticated OPTIONS (or INVITE) to an
existing route and to an unknown one get the same answer, a 401 challenge, so route names
cannot be listed (svwar's method) without a password. A user-less OPTIONS (a load balancer's
probe) still gets 200."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from pathlib import Path

from callbridge.sip.message import SipResponse, parse

from .gateways import echo_settings, running


def options(port: int, user: str, branch: str, auth: str = "") -> bytes:
    uri = f"sip:{user}@127.0.0.1" if user else "sip:127.0.0.1"
    return (
        f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:svwar@127.0.0.1>;tag=w\r\nTo: <{uri}>\r\nCall-ID: {branch}\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


async def ask(sock: socket.socket, dest: tuple[str, int], data: bytes) -> SipResponse:
    loop = asyncio.get_running_loop()
    sock.sendto(data, dest)
    async with asyncio.timeout(5):
        msg = parse(await loop.sock_recv(sock, 65535))
    assert isinstance(msg, SipResponse)
    return msg


def digest(challenge: str, user: str, password: str, uri: str, nc: int) -> str:
    realm = re.search(r'realm="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"OPTIONS:{uri}")
    response = md5(f"{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}")
    return (
        f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc:08x}, '
        f'cnonce="c0ffee"\r\n'
    )


async def test_routes_cannot_be_enumerated_without_the_password(tmp_path: Path) -> None:
    settings = echo_settings(
        tmp_path, (43400, 43440), auth_routes="*", auth_users="alice:s3cret", auth_algorithms="MD5"
    )
    async with running(settings) as gw:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port, dest = sock.getsockname()[1], gw.sip.local_addr
        try:
            existing = await ask(sock, dest, options(port, "echo", "a"))
            unknown = await ask(sock, dest, options(port, "nosuchroute", "b"))
            assert existing.status == unknown.status == 401
            assert existing.reason == unknown.reason
            assert [n for n, _ in existing.headers.items] == [n for n, _ in unknown.headers.items]
            probe = await ask(sock, dest, options(port, "", "c"))
            assert probe.status == 200
            # With the password the truth comes out: 200 for a route, 404 for none.
            challenge = existing.headers.get("WWW-Authenticate") or ""
            uri = "sip:echo@127.0.0.1"
            good = await ask(
                sock, dest, options(port, "echo", "d", digest(challenge, "alice", "s3cret", uri, 1))
            )
            assert good.status == 200
            uri = "sip:nosuchroute@127.0.0.1"
            none = await ask(
                sock,
                dest,
                options(port, "nosuchroute", "e", digest(challenge, "alice", "s3cret", uri, 2)),
            )
            assert none.status == 404
            wrong = await ask(
                sock,
                dest,
                options(
                    port, "echo", "f", digest(challenge, "alice", "x", "sip:echo@127.0.0.1", 3)
                ),
            )
            assert wrong.status == 403
            assert gw.sip.guard.counters["auth_failures"] == 1
        finally:
            sock.close()
