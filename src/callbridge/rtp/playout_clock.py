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

    __slots__ = ("_bucket", "_buckets", "_first", "_is_min", "_last", "_value", "_window")

    def __init__(self, window: float, buckets: int = 4, *, minimum: bool) -> None:
        if window <= 0 or buckets <= 0:
            raise ValueError("window and buckets must be positive")
        self._window = window
        self._bucket = window / buckets
        self._is_min = minimum
        self._buckets: deque[_Bucket] = deque()
        # The deque's ends, kept as attributes: a sample reads both, and indexing a deque
        # from compiled code is a call through the C API (~4 % of a worker at 800 calls,
        # with the [start, extremum] lists each bucket was).
        self._first: _Bucket | None = None
        self._last: _Bucket | None = None
        self._value: float | None = None

    @property
    def value(self) -> float | None:
        return self._value

    def reset(self) -> None:
        self._buckets.clear()
        self._first = self._last = None
        self._value = None

    def add(self, now: float, value: float) -> None:
        # Called twice per packet: min()/max() are spelled out as comparisons (same results,
        # ties keep the older value) to save the builtin calls.
        expired = False
        first = self._first
        if first is not None:
            limit = now - self._window
            bucket = self._bucket
            if first.start + bucket <= limit:
                b = self._buckets
                while b and b[0].start + bucket <= limit:
                    b.popleft()
                expired = True
                first = self._first = b[0] if b else None
                if first is None:
                    self._last = None
        is_min = self._is_min
        last = self._last
        if last is not None and now - last.start < self._bucket:
            if value < last.value if is_min else value > last.value:
                last.value = value
        else:
            last = self._last = _Bucket(now, value)
            self._buckets.append(last)
            if first is None:
                self._first = last
        current = self._value
        if expired or current is None:
            if is_min:
                self._value = min(x.value for x in self._buckets)
            else:
                self._value = max(x.value for x in self._buckets)
        elif value < current if is_min else value > current:
            self._value = value


class _Bucket:
    """One time bucket of a WindowExtremum: when it started, and its extremum so far."""

    __slots__ = ("start", "value")

    def __init__(self, start: float, value: float) -> None:
        self.start = start
        self.value = value


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
        last = self._last_transit
        if last is not None:
            # RFC 3550 §6.4.1 / A.8: J += (|D| - J) / 16, in arrival order.
            d = abs(transit - last)
            self._jitter += (d - self._jitter) / 16.0
        self._last_transit = transit
        base = self._base
        base.add(now, transit)
        v = base._value
        extra = transit - (0.0 if v is None else v)
        spike = self._spike
        spike.add(now, extra)
        peak = spike._value or 0.0
        want = self._jitter_factor * self._jitter
        if peak > want:  # noqa: PLR1730 - max(want, peak) without the builtin call per packet
            want = peak
        if self._min > want:  # noqa: PLR1730 - then min(max(want, min), max), likewise
            want = self._min
        self._target = self._max if self._max < want else want
        return extra

    def position(self, now: float) -> float:
        """Timestamp that should be playing at `now` to honour the target delay."""
        base = self._base._value
        return now * self._rate - (0.0 if base is None else base) - self._target
