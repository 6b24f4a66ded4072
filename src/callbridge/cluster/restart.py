"""When a crashed worker is started again: exponential backoff on fake-able time (the
supervisor passes `now`), forgiven once a worker has stayed up for a while. A worker that
exits with status 0 was asked to (a drain, a signal) and is not restarted."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RestartPolicy", "WorkerState"]


@dataclass(slots=True)
class WorkerState:
    started_at: float | None = None  # None: not running
    failures: int = 0  # crashes in a row, each one short of `stable_after`
    restart_at: float | None = None  # when to start it again; None: not scheduled


@dataclass(slots=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 30.0  # up this long: its next crash starts the backoff afresh
    workers: dict[int, WorkerState] = field(default_factory=dict)

    def started(self, worker: int, now: float) -> None:
        state = self.workers.setdefault(worker, WorkerState())
        state.started_at = now
        state.restart_at = None

    def exited(self, worker: int, now: float, status: int, *, stopping: bool) -> float | None:
        """The worker's process ended; returns when to start it again (None: never, because
        the cluster is stopping or the worker exited cleanly)."""
        state = self.workers.setdefault(worker, WorkerState())
        ran = now - state.started_at if state.started_at is not None else 0.0
        state.started_at = None
        if stopping or status == 0:
            state.restart_at = None
            return None
        if ran >= self.stable_after:
            state.failures = 0
        delay = min(self.max_delay, self.first_delay * 2**state.failures)
        state.failures += 1
        state.restart_at = now + delay
        return state.restart_at

    def due(self, now: float) -> list[int]:
        """Workers whose restart time has come (each reported once)."""
        out = [
            w for w, s in self.workers.items() if s.restart_at is not None and s.restart_at <= now
        ]
        for w in out:
            self.workers[w].restart_at = None
        return out

    def next_deadline(self) -> float | None:
        times = [s.restart_at for s in self.workers.values() if s.restart_at is not None]
        return min(times) if times else None
