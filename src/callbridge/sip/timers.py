"""SIP transaction timer values (RFC 3261 §17, Table 4; RFC 6026 Timers L and M)."""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.core.errors import ConfigError

# RFC 3261 §17.1.1.2, Table 4: Timer D is "> 32 s for UDP". It is a wall-clock constant rather than
# a multiple of our T1 because it has to outlast the *server's* final-response retransmissions.
_TIMER_D_UDP = 32.0


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """Per-endpoint timer configuration (all values in seconds).

    Only T1, T2 and T4 are free parameters; every lettered timer derives from them exactly as in
    RFC 3261 Table 4 (UDP values, since callbridge's SIP transport is UDP).
    """

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # cap on retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum time a message stays in the network
    # RFC 3261 §17.2.1: an INVITE server transaction MUST send 100 Trying unless the TU answers
    # within 200 ms. None disables the automatic 100 (the TU then owns that duty).
    trying_delay: float | None = 0.2

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "must be a positive number of seconds")
        if self.t2 < self.t1:
            raise ConfigError("t2", "must not be smaller than t1")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ConfigError("trying_delay", "must be >= 0 or None")

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval (initial), doubles each time."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Wait time for INVITE final-response retransmissions (client, UDP)."""
        return _TIMER_D_UDP

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval (initial), doubles up to T2."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE final-response retransmit interval (initial), doubles up to T2."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt."""
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        """Wait time for ACK retransmissions (server, UDP)."""
        return self.t4

    @property
    def timer_j(self) -> float:
        """Wait time for non-INVITE request retransmissions (server, UDP)."""
        return 64 * self.t1

    @property
    def timer_k(self) -> float:
        """Wait time for non-INVITE response retransmissions (client, UDP)."""
        return self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026: INVITE server transaction lifetime in Accepted (absorbs INVITE retransmits)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026: INVITE client transaction lifetime in Accepted (forwards 2xx retransmits)."""
        return 64 * self.t1


def next_interval(current: float, cap: float) -> float:
    """Exponential back-off used by Timers A (uncapped: pass inf), E, G and 2xx retransmission."""
    return min(2 * current, cap)
