"""Locating a SIP server by DNS SRV (RFC 3263 §4.2, RFC 2782). Sans-IO: the records come in,
the order to try them goes out; the shell (transports/sip/dns.py) asks DNS.

A host name without a port is looked up as `_sip._udp.<host>` first: providers publish their
servers (and ports) there. A numeric address, or a name with an explicit port, is used as it
is (RFC 3263 §4.2: the SRV step applies only when no port was given).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["SrvRecord", "needs_srv", "srv_order"]


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # a host name, without the trailing dot


def needs_srv(host: str, port: int | None) -> bool:
    if port is not None:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "." in host  # a bare name ("localhost") has no domain to publish records in
    return False


def srv_order(
    records: Iterable[SrvRecord], rand: Callable[[], float] = random.random
) -> list[SrvRecord]:
    """RFC 2782's order: lowest priority first; within a priority, a weighted random draw
    repeated over the records left: weight-0 records first, the first whose running sum of
    weights reaches the draw is next (so weight 0 only wins a draw of exactly 0)."""
    usable = [r for r in records if r.target not in ("", ".")]  # "." = service not offered
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rand() * total if total else 0.0
            running = 0
            chosen = group[0]
            for r in group:
                running += r.weight
                if running >= pick:
                    chosen = r
                    break
            out.append(chosen)
            group.remove(chosen)
    return out
