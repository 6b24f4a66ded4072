"""Network addresses as every layer passes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

Addr: TypeAlias = tuple[str, int]  # (host, port) of a datagram's or a connection's peer


@dataclass(frozen=True, slots=True)
class Datagram:
    """Bytes to put on the wire to `addr`: what a sans-IO core (SIP's user agent, an RTP
    session) hands its socket shell."""

    data: bytes
    addr: Addr
