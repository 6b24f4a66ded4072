"""What the SIP transport is configured with, and how an outbound call fails."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from callbridge.core.errors import ConfigError, TransportError
from callbridge.rtp.jitter import JitterConfig
from callbridge.sip.access import InboundPolicy
from callbridge.sip.digest_server import DigestServer
from callbridge.sip.overload import GuardConfig
from callbridge.sip.registration import SipAccount
from callbridge.sip.timers import TimerSettings

__all__ = ["CallFailed", "SipTransportConfig", "is_wildcard", "local_address_towards"]


class CallFailed(TransportError):
    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"call failed: {status or ''} {reason}".strip())
        self.status = status
        self.reason = reason

    @property
    def result(self) -> str:
        """What a person would call it: busy, no_answer, rejected, unreachable or failed."""
        status = self.status
        if status in (486, 600):  # Busy Here, Busy Everywhere (RFC 3261 §21.4.24, §21.6.1)
            return "busy"
        if status in (408, 480, 487):  # our ring timeout, Temporarily Unavailable, cancelled
            return "no_answer"
        if status is not None and (status in (403, 404, 410, 603, 604) or 400 <= status < 500):
            return "rejected"
        if status is None and self.reason.startswith(("cannot resolve", "bad target")):
            return "unreachable"
        return "failed"


@dataclass(frozen=True, slots=True)
class SipTransportConfig:
    host: str = "0.0.0.0"
    port: int = 5060
    public_host: str = ""
    rtp_port_min: int = 10000
    rtp_port_max: int = 20000
    rtp_timeout: float = 30.0
    jitter: JitterConfig = JitterConfig()
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    user_agent: str = "callbridge"
    timers: TimerSettings = TimerSettings()
    accounts: tuple[SipAccount, ...] = ()  # provider accounts: registration, trunk credentials
    unregister_wait: float = 2.0  # shutdown waits at most this long for unREGISTER answers
    dns_servers: tuple[str, ...] = ()  # for SRV and address lookups; () = the system's
    inbound: InboundPolicy = InboundPolicy()  # source ACLs, routes that need digest auth
    auth: DigestServer | None = None  # the users those routes accept
    guard: GuardConfig = GuardConfig()  # admission limits, flood and guessing bans

    def __post_init__(self) -> None:
        names = [a.name for a in self.accounts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError("accounts", f"duplicate account names {duplicates}")


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def local_address_towards(peer: str) -> str:
    """The source address the kernel would use to reach `peer` (a connected UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
