"""How late the media ran over a process's life: one `media.lateness` line when it stops.

The transport samples the media clock's lateness every 100 ms (the latest pass start of each
period; transports.sip.transport `_watch_load`) and `/metrics` has them as a histogram. A
histogram is gone with the process, and a load test or an operator reading logs wants the
whole run at a glance: how many periods had a pass start 20 ms late or more (a tick late:
every call's audio that much late) and the worst. Fixed 1 ms buckets: O(1) per sample and a
few KB however long the process runs.
"""

from __future__ import annotations

__all__ = ["LATE_MS", "LatenessTally"]

LATE_MS = 20  # a pass this late started after the next one was due
_LIMIT_MS = 1000  # the last bucket holds everything from here on


class LatenessTally:
    def __init__(self) -> None:
        self._counts = [0] * (_LIMIT_MS + 1)
        self.samples = 0
        self.max_ms = 0.0

    def observe(self, seconds: float) -> None:
        ms = max(0.0, seconds * 1000.0)
        self._counts[min(int(ms), _LIMIT_MS)] += 1
        self.samples += 1
        self.max_ms = max(self.max_ms, ms)

    def quantile_ms(self, q: float) -> float:
        """The bucket's upper edge (ms) below which a fraction `q` of the samples lie."""
        if not self.samples:
            return 0.0
        need = q * self.samples
        seen = 0
        for ms, count in enumerate(self._counts):
            seen += count
            if seen >= need and count:
                return float(min(ms + 1, _LIMIT_MS))
        return float(_LIMIT_MS)

    def summary(self) -> dict[str, int | float]:
        late = sum(self._counts[LATE_MS:])
        worst = round(self.max_ms, 1)
        return {  # a quantile is its bucket's upper edge, but never above the worst sample
            "samples": self.samples,
            "late_20ms": late,
            "p50_ms": min(self.quantile_ms(0.50), worst),
            "p99_ms": min(self.quantile_ms(0.99), worst),
            "max_ms": worst,
        }
