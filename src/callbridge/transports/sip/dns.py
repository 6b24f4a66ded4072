"""Where to send SIP for a host: DNS SRV first when RFC 3263 says so (sip/srv.py), else the
host's address; the system resolver, or `sip.dns_servers`. Every lookup has a deadline, and a
DNS failure falls back to a plain address lookup rather than failing the call."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from callbridge.core.log import event
from callbridge.sip.srv import SrvRecord, needs_srv, srv_order

__all__ = ["SipResolver"]

log = logging.getLogger("callbridge.transports.sip.dns")

DEFAULT_PORT = 5060


def _nameserver(text: str) -> dns.nameserver.Nameserver:
    """ "192.0.2.53" or "192.0.2.53:5353" (a local resolver on another port)."""
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return dns.nameserver.Do53Nameserver(host, int(port) if port else 53)


class SipResolver:
    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 2.0) -> None:
        self.nameservers = tuple(nameservers)
        self.timeout = timeout
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _dns(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.nameservers:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = [_nameserver(n) for n in self.nameservers]
            else:
                try:
                    r = dns.asyncresolver.Resolver()
                except dns.resolver.NoResolverConfiguration:
                    r = dns.asyncresolver.Resolver(configure=False)
                    r.nameservers = ["127.0.0.1"]
            r.lifetime = self.timeout
            self._resolver = r
        return self._resolver

    async def resolve(self, host: str, port: int | None) -> tuple[str, int]:
        """(address, port) for SIP to `host` (`port` None: none was given). Raises OSError
        when nothing resolves (the caller reports "cannot resolve")."""
        if needs_srv(host, port):
            for record in await self._srv(host):
                address = await self._address(record.target)
                if address is not None:
                    event(log, "sip.dns_srv", host=host, target=record.target,
                          address=address, port=record.port)  # fmt: skip
                    return address, record.port
        address = await self._address(host)
        if address is None:
            raise OSError(f"no address for {host}")
        return address, port or DEFAULT_PORT

    async def _srv(self, host: str) -> list[SrvRecord]:
        try:
            answer = await self._dns().resolve(f"_sip._udp.{host}", "SRV")
        except (dns.exception.DNSException, OSError):
            return []  # none published (or no DNS): the host's own address, port 5060
        records = [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
            for r in answer
        ]
        return srv_order(records)

    async def _address(self, host: str) -> str | None:
        if self.nameservers:
            try:
                answer = await self._dns().resolve(host, "A")
                return str(answer[0].address)
            except (dns.exception.DNSException, OSError):
                pass  # not in those servers: the system's own lookup (hosts file, literals)
        try:
            async with asyncio.timeout(self.timeout * 2):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host.strip("[]"), DEFAULT_PORT, type=socket.SOCK_DGRAM
                )
        except (OSError, TimeoutError):
            return None
        return str(infos[0][4][0])
