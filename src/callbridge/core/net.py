"""Network addresses as every layer passes them."""

from __future__ import annotations

from typing import TypeAlias

Addr: TypeAlias = tuple[str, int]  # (host, port) of a datagram's or a connection's peer
