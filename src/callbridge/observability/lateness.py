"""How late the media ran over a process's life: one `media.lateness` line when it stops.

The transport samples the media clock's lateness every 100 ms (the latest pass start of each
period; transports.sip.transport `_watch_load`) and `/metrics` has them as a histogram. A
histogram is gone with the process, and a load test or an operator reading logs wants the
whole run at a glance: how many periods had a pass start 20 ms late or more (a tick late:
every call's audio that much late) and the worst. Fixed 1 ms buckets: O(1) per sample and a
few KB however long the process runs.

`LatePeriods` says when, and why: a `media.late` line for a period with a pass 20 ms late or
more (at most one a second; the ones not logged are counted in the next), with where the
event loop's thread spent the period: running (`cpu_ms`), runnable but waiting for a core
that other processes or threads had (`waited_ms`, Linux's per-thread schedstat), or neither
(idle in the poll, or blocked: a lock, the GIL, a slow system call). A gateway whose own work
is too much shows cpu_ms near the period; a machine with too few cores for what runs on it
shows waited_ms.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from callbridge.core.log import event

__all__ = ["LATE_MS", "LatePeriods", "LatenessTally", "ThreadWait"]

log = logging.getLogger("callbridge.media")

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


class ThreadWait:
    """The calling thread's run-queue wait so far (seconds): the second field of
    /proc/thread-self/schedstat (Linux, CONFIG_SCHED_INFO). The file is opened once, so it
    keeps measuring the thread that made it; `read()` is None where there is no such file."""

    def __init__(self, path: str = "/proc/thread-self/schedstat") -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    def read(self) -> float | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LatePeriods:
    """Logs the periods whose media ran late, with how the loop thread spent each one.

    `observe(late)` is called from the event loop's thread once a period (the transport's
    100 ms samples); the first call starts the measure (and opens the thread's schedstat)."""

    def __init__(
        self,
        *,
        every: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
        waited: Callable[[], ThreadWait] = ThreadWait,
        on_late: Callable[[dict[str, float | int]], None] | None = None,
    ) -> None:
        self.every = every
        self.timer = timer
        self.cpu = cpu
        self._open_wait = waited
        self._waited: ThreadWait | None = None
        self.on_late = on_late or _log_late
        self.logged = 0
        self._unlogged = 0  # late periods since the last line
        self._last_line = float("-inf")
        self._at = 0.0
        self._cpu_at = 0.0
        self._wait_at: float | None = None

    def observe(self, seconds: float) -> None:
        now, cpu = self.timer(), self.cpu()
        if self._waited is None:  # the first sample: the baseline, from the loop's thread
            self._waited = self._open_wait()
            self._at, self._cpu_at, self._wait_at = now, cpu, self._waited.read()
            return
        wait = self._waited.read()
        period, ran = now - self._at, cpu - self._cpu_at
        waited = wait - self._wait_at if wait is not None and self._wait_at is not None else None
        self._at, self._cpu_at, self._wait_at = now, cpu, wait
        if seconds * 1000.0 < LATE_MS:
            return
        if now - self._last_line < self.every:
            self._unlogged += 1
            return
        fields: dict[str, float | int] = {
            "late_ms": round(seconds * 1000.0, 1),
            "period_ms": round(period * 1000.0, 1),
            "cpu_ms": round(ran * 1000.0, 1),
        }
        if waited is not None:
            fields["waited_ms"] = round(waited * 1000.0, 1)
        fields["unlogged"] = self._unlogged  # late periods since the last line
        self._unlogged = 0
        self._last_line = now
        self.logged += 1
        self.on_late(fields)

    def close(self) -> None:
        if self._waited is not None:
            self._waited.close()


def _log_late(fields: dict[str, float | int]) -> None:
    event(log, "media.late", logging.WARNING, **fields)
