"""Which workers take new calls, as the dispatcher sees it: the supervisor's process state
(running, draining) and OPTIONS probes like Kamailio's ds_probing (a worker answering 503 is
draining or overloaded; one that stops answering is stuck). Pure state, time passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Liveness"]


@dataclass(slots=True)
class _Worker:
    running: bool = False
    draining: bool = False
    ok_at: float | None = None  # the last 2xx to a probe
    refused: bool = False  # the last answer was not a 2xx


@dataclass(slots=True)
class Liveness:
    count: int
    interval: float = 1.0  # seconds between probes of one worker
    timeout: float = 2.5  # no 2xx in this long: not live
    _workers: list[_Worker] = field(default_factory=list)
    _next_probe: float = 0.0
    _seq: int = 0

    def __post_init__(self) -> None:
        self._workers = [_Worker() for _ in range(self.count)]

    def set_running(self, worker: int, running: bool) -> None:
        """The process started (not live until it answers a probe) or ended."""
        w = self._workers[worker]
        w.running, w.draining, w.ok_at, w.refused = running, False, None, False

    def set_draining(self, worker: int) -> None:
        """The supervisor told it to drain: no new calls from this moment, before any probe
        could tell."""
        self._workers[worker].draining = True

    def answered(self, worker: int, status: int, now: float) -> None:
        w = self._workers[worker]
        if 200 <= status < 300:
            w.ok_at, w.refused = now, False
        elif status >= 300:
            w.refused = True

    def live(self, now: float) -> tuple[int, ...]:
        return tuple(
            i
            for i, w in enumerate(self._workers)
            if w.running
            and not w.draining
            and not w.refused
            and w.ok_at is not None
            and now - w.ok_at <= self.timeout
        )

    def probes_due(self, now: float) -> list[tuple[int, int]]:
        """(worker, sequence number) for each running worker to probe now."""
        if now < self._next_probe:
            return []
        self._next_probe = now + self.interval
        self._seq += 1
        return [(i, self._seq) for i, w in enumerate(self._workers) if w.running]

    def next_deadline(self) -> float:
        return self._next_probe
