"""The call database's writes: one bounded queue, one writer thread, batched transactions.

Every write of the calls layer (a call's row, its end, its turns, its events, the heartbeat)
is a memory operation on the event loop: it joins one FIFO queue. One thread drains it: it
waits up to `batch_s` after the first queued write for company, then runs up to `max_batch`
writes in ONE transaction, so 300 call setups per second cost ~5 commits per second, not
hundreds. The queue is one FIFO, so a call's writes keep their order (its row before its
turns and events, before its end). Reads (and `flush`) join the same queue: a read runs once
everything written before it is committed, so it sees it.

Nothing is dropped because the database is slow or away:

- a failing database (disk full, SQLite locked, PostgreSQL down) fails the transaction with
  an error the backend calls transient: the same batch is retried with a doubling backoff
  (`retry_s` .. `retry_max_s`) and stays queued meanwhile; reads waiting behind it run out
  of turn (they see what is committed, or fail fast) rather than hang for the outage;
- a statement the database refuses for itself (a duplicate key) is logged and left out; the
  rest of its batch is committed;
- the queue is bounded by admission, not by dropping: from `high` queued writes on, `saturated`
  is true (the calls layer refuses new calls with 503) until it is back at `low`; live calls
  go on writing. Past `max_queued`, only the writes the log holds too are shed (events,
  heartbeats: counted and logged), never a call's row, end or turns;
- `close(deadline_s)` writes what is queued, retrying until the deadline; what it could not
  write is logged with the call ids, never silently.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from callbridge.core.errors import StoreError
from callbridge.core.log import event
from callbridge.store.schema import DbConnection

__all__ = ["BatchWriter", "Write", "WriterClosed", "WriterLimits"]

log = logging.getLogger("callbridge.store.db")  # with the rest of the database's lines

T = TypeVar("T")


def _note(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    # In an empty context: the writer's lines are about the store, not about the call whose
    # write happened to cross a mark (its events table must not get them).
    contextvars.Context().run(event, log, msg, level, **fields)


class WriterClosed(StoreError, RuntimeError):
    """The writer was closed: a read cannot run any more."""


@dataclass(frozen=True, slots=True)
class WriterLimits:
    batch_s: float = 0.2  # how long a write waits for others to share its transaction
    max_batch: int = 1000  # writes per transaction
    high: int = 5000  # queued writes: saturated (new calls refused) from here ...
    low: int = 1000  # ... until back down to here
    max_queued: int = 50_000  # past this, sheddable writes (events, heartbeats) are dropped
    retry_s: float = 0.1  # the first backoff after a transient failure; doubles ...
    retry_max_s: float = 5.0  # ... up to this

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high <= self.max_queued or self.max_batch < 1:
            raise ValueError(f"bad writer limits: {self}")


@dataclass(frozen=True, slots=True)
class Write:
    what: str  # for logs: "call", "call_end", "turn", "event", "heartbeat", ...
    sql: str  # with the backend's placeholders
    params: Sequence[Any]
    call_id: str = ""  # whose record it is ("" for the heartbeat): named if it is lost
    sheddable: bool = False  # the log holds it too: dropped past max_queued


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any]
    urgent: bool  # a read: may run out of turn while the writes before it are retried


_Item = Write | _Job


class BatchWriter:
    """The queue and its thread. `connection()` runs on the thread (a backend may reconnect
    there); `transient(exc)` says whether a failure is the database's state (retry) rather
    than the statement's (leave it out)."""

    def __init__(
        self,
        connection: Callable[[], DbConnection],
        close: Callable[[], None],
        *,
        errors: tuple[type[Exception], ...],
        transient: Callable[[BaseException], bool],
        error_text: Callable[[BaseException], str] = str,
        limits: WriterLimits | None = None,
        name: str = "store-db",
    ) -> None:
        self.limits = limits or WriterLimits()
        self._connection = connection
        self._close = close
        self._errors = errors
        self._transient = transient
        self._error_text = error_text
        self._cond = threading.Condition(threading.RLock())
        self._queue: deque[_Item] = deque()
        self._writes = 0  # writes queued or in the running batch (not committed yet)
        self._queued = 0  # writes queued (not taken yet)
        self._jobs = 0  # jobs queued
        self._first_at = 0.0  # when the oldest queued write arrived (monotonic)
        self._in_flight: list[Write] = []
        self._saturated = False
        self._shed = 0
        self._closing = False
        self._close_by = 0.0
        self._done = False
        self._unsaved: list[str] = []
        self.commits = 0  # transactions committed (bench, tests)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- the loop's side ------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Writes not committed yet."""
        return self._writes

    @property
    def unsaved(self) -> list[str]:
        """After `close`: the calls with writes it could not make."""
        return list(self._unsaved)

    @property
    def saturated(self) -> bool:
        """Past the high-water mark, until back at the low one: take no new calls."""
        return self._saturated

    def write(self, w: Write) -> None:
        """Queue `w`. Never blocks, never raises."""
        with self._cond:
            if self._closing:
                dropped = True
            elif w.sheddable and self._writes >= self.limits.max_queued:
                self._shed += 1
                if self._shed == 1:  # one line per overload, the count when it drains
                    _note("store.writes_shed", logging.WARNING, what=w.what,
                          backlog=self._writes)  # fmt: skip
                return
            else:
                dropped = False
                if not self._queued:  # the next batch's wait for company starts now
                    self._first_at = time.monotonic()
                self._queue.append(w)
                self._queued += 1
                self._writes += 1
                self._check_saturation()
                # Wake the writer only when it waits for this: the first write (it sleeps on
                # an empty queue) or a full batch (it waits for company, on a timeout). A
                # wake-up per write would cost a thread switch per write.
                if len(self._queue) == 1 or self._queued >= self.limits.max_batch:
                    self._cond.notify()
        if dropped:
            _note("store.write_dropped", logging.ERROR, what=w.what,
                  call_ids=[w.call_id] if w.call_id else [])  # fmt: skip

    def submit(self, fn: Callable[[], T], *, urgent: bool = True) -> concurrent.futures.Future[T]:
        """Run `fn` on the thread once the writes queued before it are committed (a read);
        `urgent=False`: never out of turn (a flush)."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                fut.set_exception(WriterClosed("the call database is closed"))
                return fut
            self._queue.append(_Job(fn, fut, urgent))
            self._jobs += 1
            self._cond.notify()
        return fut

    def barrier(self) -> concurrent.futures.Future[None]:
        """Done once every write queued so far is committed (or left out, or lost at close)."""
        fut = self.submit(lambda: None, urgent=False)
        if fut.done() and fut.exception() is not None:  # closed: nothing more will be written
            fut = concurrent.futures.Future()
            fut.set_result(None)
        return fut

    def close(self, deadline_s: float = 10.0) -> list[str]:
        """Write what is queued (retrying failures until `deadline_s`), close the connection,
        stop the thread. Blocking; idempotent. Returns (and logs) the ids of the calls with
        writes that could not be made."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_by = time.monotonic() + deadline_s
            self._cond.notify_all()
        self._thread.join(max(0.0, self._close_by - time.monotonic()) + 0.5)
        with self._cond:
            if self._done:
                return list(self._unsaved)
            # Stuck in a statement past the deadline: say what is not written, leave the
            # (daemon) thread to it.
            lost = list(self._in_flight) + [i for i in self._queue if isinstance(i, Write)]
            jobs = [i for i in self._queue if isinstance(i, _Job)]
            self._queue.clear()
            self._queued = self._jobs = 0
            self._done = True
            self._unsaved = self._lost(lost, "database stuck at shutdown")
        _release(jobs)
        return list(self._unsaved)

    # ---- the thread -----------------------------------------------------------------------

    def _check_saturation(self) -> None:
        # Under the lock. Hysteresis: admission does not flap at the mark.
        n, lim = self._writes, self.limits
        if not self._saturated and n >= lim.high:
            self._saturated = True
            _note("store.saturated", logging.WARNING, backlog=n, high=lim.high, low=lim.low)
        elif self._saturated and n <= lim.low:
            self._saturated = False
            _note("store.drained", backlog=n, shed=self._shed)
        if self._shed and n < lim.max_queued // 2:
            _note("store.writes_shed_total", logging.WARNING, shed=self._shed)
            self._shed = 0

    def _take(self) -> list[Write] | _Job | None:
        """The next batch of writes, or the next job; None once closed and empty."""
        lim = self.limits
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            if isinstance(self._queue[0], Write):
                # Give the first write company, unless a read is waiting or we are closing.
                while not self._closing and not self._jobs and self._queued < lim.max_batch:
                    left = self._first_at + lim.batch_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            head = self._queue[0]
            if isinstance(head, _Job):
                self._queue.popleft()
                self._jobs -= 1
                return head
            batch: list[Write] = []
            while self._queue and len(batch) < lim.max_batch:
                item = self._queue[0]
                if not isinstance(item, Write):
                    break
                batch.append(item)
                self._queue.popleft()
            self._queued -= len(batch)
            self._in_flight = batch
            if self._queued:  # the next batch's wait for company starts now
                self._first_at = time.monotonic()
            return batch

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                break
            if isinstance(taken, _Job):
                self._run_job(taken)
                continue
            committed = self._commit(taken)
            with self._cond:
                self._in_flight = []
                self._writes -= len(taken)
                self._check_saturation()
            if not committed:  # closing, and the database never came back
                self._abandon(taken)
                break
        try:
            self._close()
        except Exception:
            log.exception("closing the call database failed")
        with self._cond:
            self._done = True

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as exc:
            job.future.set_exception(exc)

    def _commit(self, batch: list[Write]) -> bool:
        """Write `batch` in one transaction, retrying transient failures; False when the
        close deadline passed first."""
        delay, attempt, first_failure = self.limits.retry_s, 0, 0.0
        while True:
            try:
                self._transaction(batch)
            except Exception as exc:
                if not isinstance(exc, self._errors) or not self._transient(exc):
                    # Not the database's state (a bug, a refused COMMIT): retrying cannot
                    # help and would hold the queue forever. Logged with its calls.
                    log.error("writing a batch failed", exc_info=exc)
                    self._lost(batch, f"failed: {self._error_text(exc)}")
                    return True
                attempt += 1
                first_failure = first_failure or time.monotonic()
                _note("store.write_retry", logging.ERROR if attempt == 1 else logging.WARNING,
                      attempt=attempt, writes=len(batch), backlog=self._writes,
                      retry_in_s=round(delay, 3), error=self._error_text(exc))  # fmt: skip
                if not self._backoff(delay):
                    return False
                delay = min(2 * delay, self.limits.retry_max_s)
                continue
            if attempt:
                _note("store.db_recovered", attempts=attempt,
                      outage_s=round(time.monotonic() - first_failure, 3))  # fmt: skip
            return True

    def _backoff(self, delay: float) -> bool:
        """Wait `delay` (less when closing), serving the reads meanwhile; False once the close
        deadline has passed."""
        until = time.monotonic() + delay
        while True:
            with self._cond:
                if self._closing:
                    until = min(until, self._close_by)
                    if time.monotonic() >= self._close_by:
                        return False
                urgent = [i for i in self._queue if isinstance(i, _Job) and i.urgent]
                for job in urgent:
                    self._queue.remove(job)
                    self._jobs -= 1
                left = until - time.monotonic()
                if not urgent:
                    if left <= 0:
                        return True
                    self._cond.wait(left)
                    continue
            for job in urgent:  # outside the lock: a read may take its time
                self._run_job(job)

    def _transaction(self, batch: list[Write]) -> None:
        """One transaction for the batch; a statement the database refuses for itself is
        logged and left out, and the rest run again (the transaction it spoiled is gone)."""
        pending = list(batch)
        while pending:
            conn = self._connection()
            conn.execute("BEGIN")
            bad: tuple[int, BaseException] | None = None
            try:
                for i, w in enumerate(pending):
                    try:
                        conn.execute(w.sql, w.params)
                    except self._errors as exc:
                        if self._transient(exc):
                            raise
                        bad = (i, exc)
                        break
                if bad is None:
                    conn.execute("COMMIT")
                    self.commits += 1
                    return
            except BaseException:
                self._rollback(conn)
                raise
            self._rollback(conn)
            w = pending.pop(bad[0])
            _note("store.write_failed", logging.ERROR, what=w.what,
                  call_ids=[w.call_id] if w.call_id else [], error=self._error_text(bad[1]))  # fmt: skip

    def _rollback(self, conn: DbConnection) -> None:
        # No transaction may be left (SQLite rolls back a full disk's itself; a lost
        # PostgreSQL connection has none): nothing to undo then.
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")

    def _abandon(self, batch: list[Write]) -> None:
        with self._cond:
            lost = batch + [i for i in self._queue if isinstance(i, Write)]
            jobs = [i for i in self._queue if isinstance(i, _Job)]
            self._queue.clear()
            self._jobs = 0
            self._queued = 0
            self._writes = 0
        _release(jobs)
        ids = self._lost(lost, "database failing at shutdown")
        with self._cond:
            self._unsaved = ids

    def _lost(self, lost: list[Write], why: str) -> list[str]:
        ids = sorted({w.call_id for w in lost if w.call_id})
        if lost:
            _note("store.unsaved", logging.ERROR, why=why, writes=len(lost), call_ids=ids)
        return ids


def _release(jobs: list[_Job]) -> None:
    """Jobs that will never run: a flush returns (nothing more will be written), a read
    fails."""
    for job in jobs:
        if job.future.set_running_or_notify_cancel():
            if job.urgent:
                job.future.set_exception(WriterClosed("the call database is closed"))
            else:
                job.future.set_result(None)
