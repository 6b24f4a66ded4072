"""All calls' VAD in one batched Silero run per 32 ms tick, on a worker thread.

Each call registers a handle and feeds it caller frames from the event loop (cheap: slicing
and an energy sum). Every tick the pool gathers the chunks that are due from all calls and runs
them as one batch in a single-thread executor, so the loop never carries model time (it would
add the batch time to every call's jitter) and N calls cost about one run of batch N.
Chunks the pre-filter skips (silence) are delivered at once, without waiting for a tick.

Deadlines: a batch that does not come back within `run_timeout` is given up (its chunks are
reported as "failed"); `probabilities()` waits at most its timeout; `aclose()` is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from callbridge.core.clock import Clock
from callbridge.core.errors import AgentError
from callbridge.core.frames import AudioFrame
from callbridge.core.log import event
from callbridge.media.vad import Floats, VadConfig, VadResult, VadStream, gather

__all__ = ["BatchRunner", "VadClosed", "VadHandle", "VadPool"]

log = logging.getLogger("callbridge.agents.vad_pool")

TICK = 0.032  # one Silero chunk at 8 kHz
_RESULT_BUFFER = 512  # ~16 s of chunks kept for a handle nobody reads (never unbounded)


class VadClosed(AgentError):
    """The handle (or its pool) is closed and holds no more results."""


class BatchRunner(Protocol):
    """What the pool needs from the model (SileroVad implements it)."""

    def run(self, x: Floats, state: Floats) -> tuple[Floats, Floats]: ...

    def stream(self, config: VadConfig | None = None) -> VadStream: ...


ResultCallback = Callable[[VadResult], None]


class VadHandle:
    """One call's view of the pool. Used from the event loop only."""

    def __init__(
        self, pool: VadPool, call: str, stream: VadStream, on_result: ResultCallback | None
    ) -> None:
        self.call = call
        self.stream = stream
        self._pool = pool
        self._on_result = on_result
        self._results: deque[VadResult] = deque(maxlen=_RESULT_BUFFER)
        self._ready = asyncio.Event()
        self._closed = False
        self.latest: VadResult | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def feed(self, frame: AudioFrame | bytes, now: float) -> None:
        """Caller audio whose last sample arrived at `now`; evaluated at the next tick."""
        if self._closed:
            raise VadClosed(self.call)
        if isinstance(frame, AudioFrame):
            if frame.sample_rate != self.stream.config.sample_rate:
                raise ValueError(
                    f"{frame.sample_rate} Hz frame for a {self.stream.config.sample_rate} Hz VAD"
                )
            frame = frame.pcm
        self.stream.feed(frame, now)
        self._deliver()  # silent chunks are already decided
        if self.stream.pending:
            self._pool._chunk_due()

    async def probabilities(self, timeout: float) -> list[VadResult]:
        """Results since the last call, in order; waits up to `timeout` s for the first one.

        Returns [] on timeout; raises VadClosed once closed and drained.
        """
        if not self._results and not self._closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        if not self._results and self._closed:
            raise VadClosed(self.call)
        out = list(self._results)
        self._results.clear()
        return out

    def close(self) -> None:
        """Unregister; chunks in flight are dropped when they return."""
        if not self._closed:
            self._closed = True
            self.stream.reset()
            self._pool._forget(self)
            self._ready.set()
            # Usually the call's bound method, whose object holds this handle: a reference
            # cycle that would leave the call's objects for a full garbage collection.
            self._on_result = None

    def _deliver(self) -> None:
        results = self.stream.results()
        if not results or self._closed:
            return
        self.latest = results[-1]
        if self._on_result is None:
            self._results.extend(results)
            self._ready.set()
            return
        for result in results:
            try:
                self._on_result(result)
            except Exception:  # a consumer's bug must not stop every call's VAD
                log.exception("VAD result callback failed (call %s)", self.call)


class VadPool:
    def __init__(
        self,
        runner: BatchRunner,
        clock: Clock,
        *,
        tick: float = TICK,
        run_timeout: float = 0.5,
        max_rounds: int = 4,
        coalesce: float | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        """`executor`: where batches run (default: a thread of the pool's own; a test may
        run them inline on a fake clock)."""
        self._runner = runner
        self._clock = clock
        self._tick = tick
        self._run_timeout = run_timeout
        # A call that fell behind has several chunks due; each needs its predecessor's state,
        # so they take successive runs. Bounded so one tick cannot grow without limit.
        self._max_rounds = max_rounds
        # None: evaluate on the tick only. Else a chunk that becomes due wakes the pool, which
        # waits `coalesce` s for other calls' chunks to join the batch, then runs: a chunk
        # waits ~coalesce instead of half a tick (16 ms) on average, on every turn's end.
        self._coalesce = coalesce
        self._due = asyncio.Event()
        self._handles: dict[int, VadHandle] = {}
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="vad"
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.runs = 0  # batched model runs so far
        self.failures = 0  # runs given up (timeout or error)

    def register(
        self,
        call: str,
        config: VadConfig | None = None,
        on_result: ResultCallback | None = None,
    ) -> VadHandle:
        """A handle for one call; results go to `on_result` if given, else to probabilities()."""
        if self._closed:
            raise VadClosed(call)
        handle = VadHandle(self, call, self._runner.stream(config), on_result)
        self._handles[id(handle)] = handle
        return handle

    def _forget(self, handle: VadHandle) -> None:
        self._handles.pop(id(handle), None)

    @property
    def calls(self) -> int:
        return len(self._handles)

    def _chunk_due(self) -> None:
        if self._coalesce is not None:
            self._due.set()

    async def _sleep_or_due(self, deadline: float) -> bool:
        """Sleep until `deadline`, or less if a chunk becomes due first (True then)."""
        if self._coalesce is None:
            await self._clock.sleep_until(deadline)
            return False
        if not self._due.is_set():
            sleep = asyncio.ensure_future(self._clock.sleep_until(deadline))
            due = asyncio.ensure_future(self._due.wait())
            try:
                await asyncio.wait({sleep, due}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (sleep, due):
                    fut.cancel()
                await asyncio.gather(sleep, due, return_exceptions=True)
        if not self._due.is_set():
            return False
        self._due.clear()
        await self._clock.sleep_until(self._clock.now() + self._coalesce)
        return True

    async def run(self) -> None:
        """Evaluate once per tick on an absolute schedule (and, with `coalesce`, as soon as a
        chunk is due) until cancelled or closed."""
        start = self._clock.now()
        n = 0
        while not self._closed:
            n += 1
            deadline = start + n * self._tick
            if await self._sleep_or_due(deadline):
                await self.evaluate()
                start, n = self._clock.now(), 0  # the tick now runs from this batch
                continue
            now = self._clock.now()
            if now - deadline > 4 * self._tick:
                # Fell behind (overload, stall): re-anchor instead of bursting to catch up.
                start, n = now, 0
            await self.evaluate()

    async def evaluate(self) -> int:
        """One tick's work: batched runs until nothing is due (at most max_rounds)."""
        total = 0
        loop = asyncio.get_running_loop()
        for _ in range(self._max_rounds):
            owners = list(self._handles.values())
            batch = gather(h.stream for h in owners)
            if batch is None:
                break
            job = functools.partial(self._runner.run, batch.x, batch.state)
            try:
                async with asyncio.timeout(self._run_timeout):
                    probs, states = await loop.run_in_executor(self._executor, job)
            except asyncio.CancelledError:
                batch.fail()
                raise
            except Exception as exc:  # TimeoutError included: give up this batch, keep going
                batch.fail()
                self.failures += 1
                event(
                    log, "vad.batch_failed", logging.WARNING, rows=len(batch.rows), error=repr(exc)
                )
                self._deliver(owners)
                break
            self.runs += 1
            batch.apply(probs, states)
            total += len(batch.rows)
            self._deliver(owners)
        return total

    def _deliver(self, handles: list[VadHandle]) -> None:
        for handle in handles:
            handle._deliver()

    async def __aenter__(self) -> VadPool:
        self._task = asyncio.create_task(self.run(), name="vad-pool")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Stop ticking, close every handle, and let the worker thread finish (bounded)."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        for handle in list(self._handles.values()):
            handle.close()
        # The worker may still be inside a run (threads cannot be cancelled): wait for it off
        # the loop, with a deadline.
        loop = asyncio.get_running_loop()
        stop = functools.partial(self._executor.shutdown, wait=True, cancel_futures=True)
        try:
            async with asyncio.timeout(timeout):
                await loop.run_in_executor(None, stop)
        except TimeoutError:
            event(log, "vad.shutdown_timeout", logging.WARNING, seconds=timeout)
