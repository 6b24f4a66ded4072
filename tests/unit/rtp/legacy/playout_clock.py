# Frozen copy of the pre-issue-12 implementation: the reference the equivalence tests
# drive side by side with the optimised one. Do not optimise or edit.
# ruff: noqa
# mypy: ignore-errors
"""Relation between a sender's RTP clock and local time, for playout scheduling. Sans-IO.

All quantities are in RTP timestamp units (samples) so no division happens per packet.
"transit" is `now * rate - timestamp` (RFC 3550 §6.4.1): an unknown constant clock offset
plus the packet's one-way delay, which includes its own packetisation time. Its minimum
over a sliding window is the "base": the delay of the fastest recent packet. A sample with
timestamp `ts` can therefore be expected no earlier than `(ts + base) / rate`, and playing
it `target` later absorbs every packet whose extra delay (`transit - base`) is below
`target`.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PlayoutClock", "WindowExtremum"]


class WindowExtremum:
    """Sliding-window minimum or maximum over time, in O(1) per sample.

    The window is split into `buckets` time buckets holding one extremum each, so old
    values leave in bucket-sized steps (at most `window / buckets` late).
    """

    __slots__ = ("_bucket", "_buckets", "_is_min", "_value", "_window")

    def __init__(self, window: float, buckets: int = 4, *, minimum: bool) -> None:
        if window <= 0 or buckets <= 0:
            raise ValueError("window and buckets must be positive")
        self._window = window
        self._bucket = window / buckets
        self._is_min = minimum
        self._buckets: deque[list[float]] = deque()  # [bucket start time, extremum]
        self._value: float | None = None

    @property
    def value(self) -> float | None:
        return self._value

    def reset(self) -> None:
        self._buckets.clear()
        self._value = None

    def add(self, now: float, value: float) -> None:
        b = self._buckets
        expired = False
        while b and b[0][0] + self._bucket <= now - self._window:
            b.popleft()
            expired = True
        better = min if self._is_min else max
        if b and now - b[-1][0] < self._bucket:
            b[-1][1] = better(b[-1][1], value)
        else:
            b.append([now, value])
        if expired or self._value is None:
            self._value = better(x[1] for x in b)
        else:
            self._value = better(self._value, value)


class PlayoutClock:
    """Base transit, RFC 3550 interarrival jitter, transit spikes, and the target delay.

    Target delay = clamp(max(jitter_factor * J, max extra delay over `spike_window`),
    min_delay, max_delay), all in samples. The spike term makes the buffer deepen after a
    burst of delayed packets (which the smoothed J barely registers) and relax once the
    window has passed without one.
    """

    __slots__ = (
        "_base",
        "_jitter",
        "_jitter_factor",
        "_last_transit",
        "_max",
        "_min",
        "_rate",
        "_spike",
        "_target",
    )

    def __init__(
        self,
        rate: int,
        min_delay: float,
        max_delay: float,
        *,
        base_window: float = 2.0,
        spike_window: float = 10.0,
        jitter_factor: float = 3.0,
    ) -> None:
        self._rate = rate
        self._min = min_delay * rate
        self._max = max_delay * rate
        self._jitter_factor = jitter_factor
        self._base = WindowExtremum(base_window, 8, minimum=True)
        self._spike = WindowExtremum(spike_window, 10, minimum=False)
        self._jitter = 0.0
        self._last_transit: float | None = None
        self._target = self._min

    @property
    def anchored(self) -> bool:
        return self._base.value is not None

    @property
    def base(self) -> float:
        """Smallest recent transit (samples); 0.0 before the first packet."""
        v = self._base.value
        return 0.0 if v is None else v

    @property
    def jitter(self) -> float:
        """RFC 3550 interarrival jitter J, in samples."""
        return self._jitter

    @property
    def target(self) -> float:
        """Target playout delay beyond the base, in samples."""
        return self._target

    def reanchor(self, *, path_changed: bool = False) -> None:
        """Forget the timestamp-to-time relation.

        For a new stream on the same path, jitter and spike history describe the network
        and are kept. When the path itself changed (`path_changed`), the spikes were
        measured against the old base and are meaningless, so they go too.
        """
        self._base.reset()
        self._last_transit = None
        if path_changed:
            self._spike.reset()

    def observe(self, now: float, timestamp: int) -> float:
        """Account one arrival; returns its extra delay over the base (samples, >= 0)."""
        transit = float(now) * self._rate - timestamp
        if self._last_transit is not None:
            # RFC 3550 §6.4.1 / A.8: J += (|D| - J) / 16, in arrival order.
            d = abs(transit - self._last_transit)
            self._jitter += (d - self._jitter) / 16.0
        self._last_transit = transit
        self._base.add(now, transit)
        extra = transit - self.base
        self._spike.add(now, extra)
        spike = self._spike.value or 0.0
        want = max(self._jitter_factor * self._jitter, spike)
        self._target = min(max(want, self._min), self._max)
        return extra

    def position(self, now: float) -> float:
        """Timestamp that should be playing at `now` to honour the target delay."""
        return now * self._rate - self.base - self.target
