"""Overload control and source bans for a SIP port on the internet. Sans-IO: `now` comes in.

Three questions, asked at three places, cheapest first:

1. `datagram(source, now)`, before a datagram is parsed: is the source banned? A flood costs
   a dict lookup per datagram once it is banned. Every source's datagram rate is tracked with
   a decaying counter (Kamailio's `pike` idea: a hash of source addresses, counters that
   decay; here an exponential decay with time constant `pike_window`), and a source whose rate
   stays above `pike_rate` is banned for `ban_time` and dropped silently: answering a flood
   only helps it (RFC 5390 §4: the server protects itself first).
2. `admit_call(source, live_calls, now)`, for an INVITE that would start a call: the global
   limits (concurrent calls, the process's own load measured as event-loop lag, new calls per
   second) and a per-source new-call rate. A refusal
   is a 503 with Retry-After (RFC 3261 §21.5.4), sent statelessly so a refused INVITE holds
   no transaction, no timer and no RTP port.
3. `auth_failed(source, user, now)`: failed digest answers per source and per user (the
   fail2ban idea). A source with `auth_failures` failures within `auth_window` is banned; a
   user with `auth_user_failures` failures from all sources is "under attack" for the window,
   during which a source's first failure on that user bans it (slow, distributed guessing),
   while a caller who knows the password still gets in from a clean source.

Sources in `trusted` (a provider's or an SBC's networks, Kamailio in front) skip the
per-source limits and bans; the global limits still apply to them. Every table is bounded
(`max_sources`, oldest forgotten first), so a flood of spoofed addresses cannot grow memory.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import math
from dataclasses import dataclass, field

from callbridge.sip.access import Network

__all__ = [
    "Ban",
    "Guard",
    "GuardConfig",
    "Refusal",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class GuardConfig:
    max_calls: int = 0  # concurrent calls; 0 = no limit but the RTP port range
    # Calls set up but not yet confirmed by an ACK. A caller's ACK follows our 200 within a
    # round trip, so few are pending at any time; a flood never ACKs, and each of its calls
    # would hold media and an agent for 64*T1 = 32 s (RFC 3261 §13.3.1.4). The SYN-flood rule.
    max_unconfirmed: int = 50  # 0 = no limit
    calls_per_second: float = 100.0  # new calls per second, all sources together; 0 = off
    calls_per_second_per_source: float = 20.0  # new calls per second from one address; 0 = off
    pike_rate: float = 200.0  # datagrams per second from one address before a ban; 0 = off
    pike_window: float = 2.0  # seconds the rate is averaged over (decay time constant)
    ban_time: float = 300.0  # seconds a banned source is dropped
    auth_failures: int = 5  # failed digest answers from one source within auth_window -> ban
    auth_user_failures: int = 20  # failures on one user from all sources -> "under attack"
    auth_window: float = 60.0
    retry_after: int = 5  # seconds, in the 503's Retry-After
    # The process is overloaded while its event loop runs this late (seconds, smoothed): new
    # calls get 503 until it is back under half of it, so live calls keep their 20 ms ticks.
    max_loop_lag: float = 0.025  # 0 = off
    trusted: tuple[Network, ...] = ()
    max_sources: int = 65_536

    def __post_init__(self) -> None:
        for name in ("calls_per_second", "calls_per_second_per_source", "pike_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("pike_window", "ban_time", "auth_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


class Verdict(enum.Enum):
    PASS = "pass"
    DROP = "drop"  # banned: drop silently


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new call is refused: the 503 to send, or nothing when `status` is 0 (a source
    just banned, from now on dropped before parsing)."""

    status: int
    reason: str
    retry_after: int
    limit: str  # max_calls | max_unconfirmed | overload | calls_per_second[_per_source] | banned

    @property
    def silent(self) -> bool:
        return self.status == 0


@dataclass(frozen=True, slots=True)
class Ban:
    """A source just banned (reported once per ban, for the log line and the metric)."""

    source: str
    cause: str  # flood | auth
    until: float
    detail: str


class _Rate:
    """A decaying event counter: `value` is events in about the last `tau` seconds."""

    __slots__ = ("at", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.at = -math.inf

    def add(self, now: float, tau: float, amount: float = 1.0) -> float:
        if now > self.at:
            elapsed = now - self.at
            self.value = self.value * math.exp(-elapsed / tau) if elapsed < 50 * tau else 0.0
            self.at = now
        self.value += amount
        return self.value


class _Bucket:
    """Token bucket: `rate` per second, `burst` deep (new-call admission)."""

    __slots__ = ("at", "tokens")

    def __init__(self, burst: float) -> None:
        self.tokens = burst
        self.at = -math.inf

    def take(self, now: float, rate: float, burst: float) -> bool:
        if now > self.at:
            self.tokens = min(burst, self.tokens + (now - self.at) * rate)
            self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class _Source:
    datagrams: _Rate = field(default_factory=_Rate)
    calls: _Bucket | None = None
    refusals: _Rate = field(default_factory=_Rate)
    auth_failures: collections.deque[float] = field(default_factory=collections.deque)
    banned_until: float = -math.inf


class Guard:
    """Per-source and global admission; counters for /metrics."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()
        self._trusted_cache: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._global_calls = _Bucket(self._global_burst)
        self._user_failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self.counters: collections.Counter[str] = collections.Counter()
        self.new_bans: list[Ban] = []
        self.loop_lag = 0.0
        self.overloaded = False

    # ---- sizes --------------------------------------------------------------------------------

    # One second's worth: a burst costs a call each (RTP ports, an agent), so it stays small.
    @property
    def _global_burst(self) -> float:
        return max(1.0, self.config.calls_per_second)

    @property
    def _source_burst(self) -> float:
        return max(1.0, self.config.calls_per_second_per_source)

    def banned(self, now: float) -> list[str]:
        return [ip for ip, s in self._sources.items() if s.banned_until > now]

    # ---- 1. every datagram ------------------------------------------------------------------

    def datagram(self, source: str, now: float, size: int = 0) -> tuple[Verdict, Ban | None]:
        """Before parsing. (DROP, None) for a banned source; (DROP, Ban) when this datagram
        got it banned; (PASS, None) otherwise. Parsing costs about 1 us per byte, so a big
        datagram weighs more: one more datagram's worth per 2 KiB (SIP over UDP stays under
        the MTU, RFC 3261 §18.1.1; a 64 KiB one counts as 33)."""
        entry = self._sources.get(source)
        if entry is not None and entry.banned_until > now:
            self._sources.move_to_end(source)
            self.counters["dropped_banned"] += 1
            return Verdict.DROP, None
        c = self.config
        if c.pike_rate <= 0 or self.trusted(source):
            return Verdict.PASS, None
        if entry is None:
            entry = self._source(source)
        # value ~ rate * window at steady state; allow a burst of one window's worth first
        if entry.datagrams.add(now, c.pike_window, 1 + size // 2048) > c.pike_rate * c.pike_window:
            ban = self._ban(source, entry, now, "flood", f"over {c.pike_rate:g} datagrams/s")
            self.counters["dropped_banned"] += 1
            return Verdict.DROP, ban
        return Verdict.PASS, None

    # ---- 2. new calls -----------------------------------------------------------------------

    def admit_call(
        self, source: str, live_calls: int, now: float, unconfirmed: int = 0
    ) -> Refusal | None:
        c = self.config
        if c.max_calls and live_calls >= c.max_calls:
            return self._refuse("max_calls", f"{live_calls} calls in progress (limits.max_calls)")
        if c.max_unconfirmed and unconfirmed >= c.max_unconfirmed:
            return self._refuse(
                "max_unconfirmed",
                f"{unconfirmed} calls awaiting their ACK (limits.max_unconfirmed)",
            )
        if self.overloaded:
            return self._refuse(
                "overload", f"event loop {self.loop_lag * 1000:.0f} ms late (limits.max_loop_lag)"
            )
        if not self.trusted(source) and c.calls_per_second_per_source > 0:
            entry = self._source(source)
            if entry.banned_until > now:
                self.counters["rejected_banned"] += 1
                return Refusal(0, "banned", c.retry_after, "banned")
            if entry.calls is None:
                entry.calls = _Bucket(self._source_burst)
            if not entry.calls.take(now, c.calls_per_second_per_source, self._source_burst):
                # A source that goes on after its 503s ignores Retry-After: it is flooding.
                ignored = entry.refusals.add(now, c.pike_window)
                if ignored > max(10.0, self._source_burst):
                    self._ban(source, entry, now, "flood", "new calls after 503 + Retry-After")
                    self.counters["rejected_banned"] += 1
                    return Refusal(0, "banned: new calls after 503", c.retry_after, "banned")
                return self._refuse(
                    "calls_per_second_per_source",
                    f"over {c.calls_per_second_per_source:g} new calls/s from {source}",
                )
        if c.calls_per_second > 0 and not self._global_calls.take(
            now, c.calls_per_second, self._global_burst
        ):
            return self._refuse(
                "calls_per_second", f"over {c.calls_per_second:g} new calls/s in all"
            )
        self.counters["admitted"] += 1
        return None

    def _refuse(self, limit: str, reason: str) -> Refusal:
        self.counters[f"rejected_{limit}"] += 1
        return Refusal(503, reason, self.config.retry_after, limit)

    # ---- the process's own load -------------------------------------------------------------

    def loop_lag_sample(self, lag: float) -> None:
        """How late the event loop ran a timer (seconds), sampled about every 100 ms. Smoothed
        (EWMA, ~0.5 s) so one slow turn does not refuse calls; hysteresis so it does not flap."""
        limit = self.config.max_loop_lag
        if limit > 0:
            lag = min(lag, 2 * limit)  # one long stall (a GC, a model load) is not a trend
        self.loop_lag += 0.2 * (max(0.0, lag) - self.loop_lag)
        if limit <= 0:
            return
        if not self.overloaded and self.loop_lag > limit:
            self.overloaded = True
            self.counters["overload_episodes"] += 1
        elif self.overloaded and self.loop_lag < limit / 2:
            self.overloaded = False

    # ---- 3. failed authentication -----------------------------------------------------------

    def auth_failed(self, source: str, user: str, now: float) -> Ban | None:
        """Count a failed digest answer; a Ban when this failure bans the source."""
        c = self.config
        self.counters["auth_failures"] += 1
        user_fails = self._window(self._user_failures, user, now)
        under_attack = c.auth_user_failures > 0 and len(user_fails) >= c.auth_user_failures
        if under_attack and len(user_fails) == c.auth_user_failures:
            self.counters["users_under_attack"] += 1
        if self.trusted(source) or c.auth_failures <= 0:
            return None
        entry = self._source(source)
        fails = entry.auth_failures
        fails.append(now)
        while fails and fails[0] <= now - c.auth_window:
            fails.popleft()
        if len(fails) >= c.auth_failures:
            return self._ban(source, entry, now, "auth", f"{len(fails)} failed digest answers")
        if under_attack:
            return self._ban(source, entry, now, "auth", f"user {user!r} under attack")
        return None

    def user_under_attack(self, user: str, now: float) -> bool:
        fails = self._user_failures.get(user)
        window = self.config.auth_window
        recent = sum(1 for t in fails or () if t > now - window)
        return 0 < self.config.auth_user_failures <= recent

    def _window(
        self, table: collections.OrderedDict[str, collections.deque[float]], key: str, now: float
    ) -> collections.deque[float]:
        fails = table.get(key)
        if fails is None:
            fails = table[key] = collections.deque(maxlen=max(1, self.config.auth_user_failures))
            while len(table) > self.config.max_sources:
                table.popitem(last=False)
        fails.append(now)
        while fails and fails[0] <= now - self.config.auth_window:
            fails.popleft()
        return fails

    # ---- tables -----------------------------------------------------------------------------

    def trusted(self, source: str) -> bool:
        if not self.config.trusted:
            return False
        known = self._trusted_cache.get(source)
        if known is None:
            try:
                ip = ipaddress.ip_address(source)
            except ValueError:
                known = False
            else:
                known = any(ip in net for net in self.config.trusted)
            self._trusted_cache[source] = known
            if len(self._trusted_cache) > self.config.max_sources:
                self._trusted_cache.popitem(last=False)
        return known

    def _source(self, source: str) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
            self._evict()
        else:
            self._sources.move_to_end(source)
        return entry

    def _evict(self) -> None:
        # The source heard from least recently goes first: a banned source that keeps sending
        # is touched by every datagram, so a flood of other addresses cannot push it out.
        while len(self._sources) > self.config.max_sources:
            self._sources.popitem(last=False)

    def _ban(self, source: str, entry: _Source, now: float, cause: str, detail: str) -> Ban:
        entry.banned_until = now + self.config.ban_time
        entry.auth_failures.clear()
        entry.datagrams = _Rate()
        entry.refusals = _Rate()
        self.counters[f"bans_{cause}"] += 1
        ban = Ban(source, cause, entry.banned_until, detail)
        self.new_bans.append(ban)
        return ban

    def take_bans(self) -> list[Ban]:
        """Bans made since the last call, each reported once (for the log line)."""
        bans, self.new_bans = self.new_bans, []
        return bans
