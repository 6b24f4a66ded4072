"""Speech recognition in worker processes: the gateway side (see worker_protocol for why).

`WorkerPool` starts its workers on first use (each loads a decoder ahead of the first call),
gives each new recognizer the worker with the fewest open sessions, and replaces a worker that
died or stopped answering: the request that saw it fails with SttError (the call goes on,
without that turn), and each of its recognizers opens a new session on the new worker with its
next request.

With `stateless=True` (Whisper) a call holds no session: `BufferedRecognizer` keeps the turn's
PCM on the gateway side and sends it whole (Op.TRANSCRIBE) to the worker with the fewest
requests in flight when the turn finishes, so N workers serve N concurrent turns, whatever the
number of calls. A worker that dies mid-turn fails only that turn, and is replaced.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Final

from callbridge.core.log import event
from callbridge.stt.base import Recognizer, SttError, Transcript
from callbridge.stt.worker_protocol import (
    REPLY,
    Op,
    ProtocolError,
    pack_request,
    unpack_reply_header,
)

log = logging.getLogger("callbridge.stt.isolated")

REQUEST_TIMEOUT: Final = 10.0  # seconds; a decoder answers in milliseconds
START_TIMEOUT: Final = 60.0  # a new worker: Python, pocketsphinx and the first decoder (~1 s)


class Worker:
    """One worker process; requests to it are serialised (it decodes one thing at a time)."""

    def __init__(
        self,
        command: Sequence[str],
        name: str,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.command = list(command)
        self.name = name
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self.sessions = 0  # open sessions, for the pool's choice
        self.busy = 0  # whole-utterance requests in flight, for the pool's choice
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.generation = 0  # which process: sessions opened on an earlier one are gone

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs (for measurements)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def request(self, op: Op, session: int, payload: bytes = b"") -> str:
        """Send one request and wait for its reply; SttError when the worker fails."""
        return self.session_request(op, session, payload, None)[0]

    def session_request(
        self, op: Op, session: int, payload: bytes, opened_on: int | None
    ) -> tuple[str, int]:
        """`request` for a session opened on process `opened_on` (a generation): if that
        process is gone, the session is opened (and an utterance started) on the current one
        first. Returns the reply's text and the generation that answered."""
        with self._lock:
            fresh = self._proc is None or self._proc.poll() is not None
            if fresh and self._proc is not None:
                self._failed(self._proc.returncode, "the worker exited")
            deadline = time.monotonic() + (self.start_timeout if fresh else self.request_timeout)
            try:
                if fresh:
                    self._spawn()
                steps = [(op, payload)]
                if opened_on is not None and opened_on != self.generation:
                    steps[:0] = [(Op.OPEN, b"")] + ([(Op.START, b"")] if op is not Op.START else [])
                for step, data in steps:
                    ok, text = self._exchange(step, session, data, deadline)
                    if not ok:
                        break
            except (OSError, EOFError, TimeoutError, ProtocolError) as exc:
                self._failed(self._proc.poll() if self._proc is not None else None, repr(exc))
                raise SttError(f"speech recognition worker {self.name} failed: {exc!r}") from exc
            generation = self.generation
        if not ok:
            raise SttError(f"speech recognition worker {self.name}: {text}")
        return text, generation

    def _exchange(self, op: Op, session: int, payload: bytes, deadline: float) -> tuple[bool, str]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(pack_request(op, session, payload))
        proc.stdin.flush()
        ok, length = unpack_reply_header(_read(proc.stdout.fileno(), REPLY.size, deadline))
        return ok, _read(proc.stdout.fileno(), length, deadline).decode("utf-8", "replace")

    def _failed(self, exit_status: int | None, error: str) -> None:
        self._kill()
        event(
            log,
            "stt.worker_failed",
            logging.ERROR,
            worker=self.name,
            exit_status=exit_status,
            error=error,
        )

    def _spawn(self) -> None:
        if self.generation:
            self.restarts += 1
        self.generation += 1
        # stderr is the gateway's: the worker's log lines join the gateway's own.
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        event(log, "stt.worker_started", worker=self.name, pid=self._proc.pid)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        """End the worker: closing its input lets it finish; killed if it does not in 2 s."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.close()
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()


def _read(fd: int, n: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no reply in time")
        data = os.read(fd, n)
        if not data:
            raise EOFError("the worker exited")
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


class WorkerPool:
    """The gateway's recognition workers. Thread-safe; `close()` ends them."""

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
        stateless: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = [
            Worker(
                command, f"stt-{i}", request_timeout=request_timeout, start_timeout=start_timeout
            )
            for i in range(workers)
        ]
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._started = False
        self.stateless = stateless

    def recognizer(self) -> Recognizer:
        """A recognizer for one call: on the least busy worker, or (stateless) on none."""
        self._start_all()
        if self.stateless:
            return BufferedRecognizer(self)
        with self._lock:
            worker = min(self.workers, key=lambda w: w.sessions)
            worker.sessions += 1
            session = next(self._ids) & 0xFFFFFFFF
        try:
            worker.request(Op.OPEN, session)
        except SttError:
            self._release(worker)
            raise
        return IsolatedRecognizer(self, worker, session, worker.generation)

    def _start_all(self) -> None:
        """Start every worker at once, each loading a decoder, so no call waits for one."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threads = [
            threading.Thread(target=self._warm, args=(w,), name=f"{w.name}-warm")
            for w in self.workers
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    def transcribe(self, pcm8k: bytes) -> str:
        """One whole utterance's text, from the worker with the fewest requests in flight."""
        self._start_all()
        with self._lock:
            worker = min(self.workers, key=lambda w: w.busy)
            worker.busy += 1
        try:
            return worker.request(Op.TRANSCRIBE, 0, pcm8k)
        finally:
            with self._lock:
                worker.busy -= 1

    def _warm(self, worker: Worker) -> None:
        session = next(self._ids) & 0xFFFFFFFF
        try:
            if self.stateless:  # the worker loads (and warms) its model before it answers
                worker.request(Op.TRANSCRIBE, 0)
                return
            worker.request(Op.OPEN, session)
            worker.request(Op.CLOSE, session)
        except SttError:
            pass  # logged; the first call on this worker will try again

    def _release(self, worker: Worker) -> None:
        with self._lock:
            worker.sessions -= 1

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


class BufferedRecognizer:
    """A Recognizer (stt.base) for a stateless pool: the turn's audio stays here until
    `finish()` sends it whole. No partial transcripts (a Whisper decode of the growing turn
    would cost as much as the final one, on the cores the other calls' turns need)."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._audio = bytearray()
        self._closed = False

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("recognizer is closed")
        self._audio.clear()

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        if self._closed:
            raise RuntimeError("recognizer is closed")
        self._audio += pcm8k
        return []

    def finish(self) -> Transcript:
        if self._closed:
            raise RuntimeError("recognizer is closed")
        audio, self._audio = bytes(self._audio), bytearray()
        return Transcript(self._pool.transcribe(audio) if audio else "", final=True)

    def close(self) -> None:
        self._closed = True
        self._audio = bytearray()


class IsolatedRecognizer:
    """A Recognizer (stt.base) whose decoder lives in a worker process."""

    def __init__(self, pool: WorkerPool, worker: Worker, session: int, generation: int) -> None:
        self._pool = pool
        self._worker = worker
        self._session = session
        self._generation = generation
        self._closed = False

    def start(self) -> None:
        self._request(Op.START)

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        text = self._request(Op.FEED, pcm8k)
        return [Transcript(text, final=False)] if text else []

    def finish(self) -> Transcript:
        return Transcript(self._request(Op.FINISH), final=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._worker.generation == self._generation:  # else it closed with its process
                self._worker.request(Op.CLOSE, self._session)
        except SttError:
            pass  # a worker that failed has no session to close
        finally:
            self._pool._release(self._worker)

    def _request(self, op: Op, payload: bytes = b"") -> str:
        if self._closed:
            raise RuntimeError("recognizer is closed")
        # A replaced worker has lost this session: it is opened again on the new process,
        # and an utterance under way starts over from there.
        text, self._generation = self._worker.session_request(
            op, self._session, payload, self._generation
        )
        return text
