"""A minimal UDP SIP phone for the in-process integration tests: hand-written messages over
real sockets, parsed answers, every wait with a deadline."""

from __future__ import annotations

import asyncio
import socket

from callbridge.calls.manager import Call
from callbridge.gateway import Gateway
from callbridge.rtp.packet import RtpPacket
from callbridge.sip.message import SipRequest, SipResponse, parse


class Phone:
    """A minimal UDP SIP endpoint for tests: send text, await parsed messages."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.rtp_port = self.rtp.getsockname()[1]

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def send(self, text: str, body: bytes = b"", dest: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        head = text.strip("\n").replace("\n", "\r\n")
        data = head.encode() + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        self.sock.sendto(data, dest)

    async def recv(self, want: str, timeout: float = 5.0) -> SipRequest | SipResponse:
        """Next message whose start matches `want` ("200", "BYE", ...); others are skipped."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(self.sock, 65535)
                msg = parse(data)
                key = msg.method if isinstance(msg, SipRequest) else str(msg.status)
                if key == want:
                    return msg

    async def recv_rtp(self, timeout: float = 5.0) -> RtpPacket:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return RtpPacket.parse(await loop.sock_recv(self.rtp, 2048))


def sdp(port: int, direction: str = "sendrecv", host: str = "127.0.0.1") -> bytes:
    return (
        f"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a={direction}\r\n"
    ).encode()


def headers(
    phone: Phone,
    gw: Gateway,
    method: str,
    cseq: int,
    call_id: str,
    to_tag: str = "",
    branch: str = "",
) -> str:
    host, port = gw.sip.local_addr
    to = f"<sip:echo@{host}:{port}>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:echo@{host}:{port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{branch or method + str(cseq)}{call_id}\n"
        f"From: <sip:phone@127.0.0.1:{phone.port}>;tag=ph\n"
        f"To: {to}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n"
        f"Contact: <sip:phone@127.0.0.1:{phone.port}>\nMax-Forwards: 70"
    )


def ended_future(gw: Gateway) -> asyncio.Future[Call]:
    fut: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    gw.calls.on_end.append(lambda c: None if fut.done() else fut.set_result(c))
    return fut
