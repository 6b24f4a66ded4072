"""Who may call in: source-network ACLs and which routes need digest auth. Sans-IO.

Checked on each new INVITE before it reaches a route (RFC 3261 §8.2 leaves admission to the
UAS; §21.4.4 403 for a caller we refuse, §22.1 401 for one that must authenticate):
- `allow_from`: the networks any INVITE may come from (empty: any);
- `trunk_allow`: for INVITEs to a provider account's user (the Request-URI user a provider
  sends to the contact we registered), the networks of that provider only, so a stranger
  who learns the address cannot call in as the provider;
- `auth_routes`: the Request-URI users (route names) whose callers must answer a digest
  challenge; "*" stands for every route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from callbridge.sip.headers import Via

__all__ = ["InboundPolicy", "Network", "caller_address", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """ "10.0.0.0/8, 203.0.113.7" -> networks (a bare address is a /32 or /128).
    Raises ValueError naming the item that is not one."""
    out: list[Network] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an address or network (e.g. 203.0.113.0/24)"
            ) from None
    return tuple(out)


def caller_address(
    vias: list[Via], source: tuple[str, int], proxies: tuple[Network, ...]
) -> tuple[str, int] | None:
    """Where the caller really is when the request came through one of our own proxies (the
    built-in dispatcher, Kamailio): the Via the proxy pushed is on top, the caller's is next,
    with the address the proxy saw it from in `received`/`rport` (RFC 3261 §18.2.1, RFC 3581
    §4) or else its sent-by. None when `source` is not such a proxy (the source is the caller)
    or the request carries no second Via. Only the proxy's word is taken, never the caller's."""
    if not proxies or len(vias) < 2 or not _inside(source[0], proxies):
        return None
    via = vias[1]
    host = via.param("received") or via.host
    rport = via.param("rport")
    port = int(rport) if rport else via.sent_by[1]
    return host, port


def _inside(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    allow_from: tuple[Network, ...] = ()
    trunk_allow: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)
    auth_routes: frozenset[str] = frozenset()
    proxies: tuple[Network, ...] = ()  # sip.trusted_proxies: see caller_address

    def refusal(self, user: str, source: str) -> str | None:
        """Why an INVITE to `user` from `source` (an IP address) is refused, or None."""
        if self.allow_from and not _inside(source, self.allow_from):
            return f"source {source} not in sip.allow_from"
        trunk = self.trunk_allow.get(user)
        if trunk and not _inside(source, trunk):
            return f"source {source} not in the allow_from of the account for {user!r}"
        return None

    def needs_auth(self, user: str) -> bool:
        return "*" in self.auth_routes or user in self.auth_routes
