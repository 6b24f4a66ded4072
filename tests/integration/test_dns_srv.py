"""DNS SRV for real: a DNS server on loopback (dnslib) publishes `_sip._udp.trunk.test`
pointing at a gateway's SIP port; a call to sip:echo@trunk.test (no port) reaches it. Without
a record the name's own address and port 5060 are used; without DNS at all, the system's."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, SRV, A, DNSRecord  # type: ignore[import-untyped]
from dnslib.server import BaseResolver, DNSServer  # type: ignore[import-untyped]

from callbridge.gateway import Gateway
from callbridge.transports.sip.dns import SipResolver

from .gateways import echo_settings, running


class Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: dict[tuple[str, str], list[RR]]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name, qtype = str(request.q.qname).rstrip("."), QTYPE[request.q.qtype]
        self.asked.append((name, qtype))
        for rr in self.records.get((name, qtype), []):
            reply.add_answer(rr)
        return reply


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dns_zone() -> Iterator[tuple[Zone, int]]:
    zone = Zone({})
    port = free_udp_port()
    server = DNSServer(zone, port=port, address="127.0.0.1")
    server.start_thread()
    try:
        yield zone, port
    finally:
        server.stop()


def a(name: str, ip: str = "127.0.0.1") -> RR:
    return RR(name, QTYPE.A, rdata=A(ip), ttl=60)


def srv(name: str, target: str, port: int, priority: int = 10, weight: int = 10) -> RR:
    return RR(name, QTYPE.SRV, rdata=SRV(priority, weight, port, target), ttl=60)


async def test_srv_then_address_then_fallbacks(dns_zone: tuple[Zone, int]) -> None:
    zone, port = dns_zone
    zone.records = {
        ("_sip._udp.trunk.test", "SRV"): [
            srv("_sip._udp.trunk.test", "down.trunk.test", 5062, priority=5),  # no address
            srv("_sip._udp.trunk.test", "gw.trunk.test", 5070, priority=10),
        ],
        ("gw.trunk.test", "A"): [a("gw.trunk.test", "127.0.0.2")],
        ("plain.test", "A"): [a("plain.test", "127.0.0.3")],
    }
    resolver = SipResolver([f"127.0.0.1:{port}"], timeout=1.0)
    assert await resolver.resolve("trunk.test", None) == ("127.0.0.2", 5070)
    assert ("down.trunk.test", "A") in zone.asked  # priority 5 was tried first
    assert await resolver.resolve("plain.test", None) == ("127.0.0.3", 5060)  # no SRV: 5060
    assert await resolver.resolve("plain.test", 5099) == ("127.0.0.3", 5099)
    assert await resolver.resolve("127.0.0.9", None) == ("127.0.0.9", 5060)
    with pytest.raises(OSError):
        await resolver.resolve("nowhere.test", None)


@pytest.fixture
async def callee(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(echo_settings(tmp_path / "callee", (44400, 44500))) as gw:
        yield gw


async def test_a_call_to_a_domain_goes_where_its_srv_record_says(
    dns_zone: tuple[Zone, int], callee: Gateway, tmp_path: Path
) -> None:
    zone, port = dns_zone
    _, callee_port = callee.sip.local_addr
    zone.records = {
        ("_sip._udp.trunk.test", "SRV"): [
            srv("_sip._udp.trunk.test", "gw.trunk.test", callee_port)
        ],
        ("gw.trunk.test", "A"): [a("gw.trunk.test")],
    }
    settings = echo_settings(tmp_path / "caller", (44600, 44700), dns_servers=f"127.0.0.1:{port}")
    async with running(settings) as caller:
        leg = await caller.sip.call("sip:echo@trunk.test", timeout=5)
        assert leg.info.ids["rtp_remote"].startswith("127.0.0.1:")
        assert ("_sip._udp.trunk.test", "SRV") in zone.asked
        await leg.hangup("local")
