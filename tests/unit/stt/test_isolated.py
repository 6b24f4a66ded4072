"""Recognition in worker processes: real pocketsphinx workers, and workers that misbehave."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest

from callbridge.stt.base import SttError
from callbridge.stt.isolated import WorkerPool
from callbridge.tts.espeak import EspeakSynthesizer

WORKER = [sys.executable, "-m", "callbridge.cli.stt_worker", "--log-format", "text"]


@pytest.fixture(scope="module")
def digits_8k() -> bytes:
    return b"".join(EspeakSynthesizer().synthesize("one two three four five"))


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(WORKER, 2)
    yield p
    p.close()


def _decode(pool: WorkerPool, pcm: bytes) -> str:
    r = pool.recognizer()
    try:
        r.start()
        for k in range(0, len(pcm), 1600):
            r.feed(pcm[k : k + 1600])
        return r.finish().text
    finally:
        r.close()


def test_a_worker_recognises_speech_with_partials(pool: WorkerPool, digits_8k: bytes) -> None:
    r = pool.recognizer()
    r.start()
    partials = [t for k in range(0, len(digits_8k), 1600) for t in r.feed(digits_8k[k : k + 1600])]
    final = r.finish()
    r.close()
    assert final.final and "three" in final.text and "five" in final.text, final
    assert partials and not any(p.final for p in partials), partials


def test_sessions_spread_over_the_workers_and_come_back(pool: WorkerPool) -> None:
    a, b = pool.recognizer(), pool.recognizer()
    assert {w.sessions for w in pool.workers} == {1}
    a.close()
    b.close()
    b.close()  # idempotent
    assert [w.sessions for w in pool.workers] == [0, 0]
    with pytest.raises(RuntimeError, match="closed"):
        a.start()


def test_a_worker_that_dies_fails_its_sessions_and_is_replaced(
    pool: WorkerPool, digits_8k: bytes
) -> None:
    r = pool.recognizer()
    r.start()
    worker = next(w for w in pool.workers if w.sessions)
    assert worker._proc is not None
    os.kill(worker._proc.pid, signal.SIGKILL)
    with pytest.raises(SttError, match="stt-"):
        r.feed(digits_8k[:1600])  # the utterance under way is lost
    # The call goes on: its recognizer carries on on a new worker from its next request.
    r.start()
    for k in range(0, len(digits_8k), 1600):
        r.feed(digits_8k[k : k + 1600])
    assert "three" in r.finish().text
    r.close()
    assert worker.restarts == 1
    assert "three" in _decode(pool, digits_8k)  # and new calls use it too


def test_a_worker_that_is_not_a_worker_is_an_error_not_a_hang() -> None:
    garbage = WorkerPool([sys.executable, "-c", "print('hello from the wrong program')"], 1)
    with pytest.raises(SttError, match="stt-0"):
        garbage.recognizer()
    garbage.close()
    silent = WorkerPool([sys.executable, "-c", "import time; time.sleep(30)"], 1, start_timeout=0.5)
    with pytest.raises(SttError, match="TimeoutError"):
        silent.recognizer()
    assert silent.workers[0].sessions == 0
    silent.close()
    missing = WorkerPool(["/nonexistent/callbridge-stt-worker"], 1)
    with pytest.raises(SttError):
        missing.recognizer()
    missing.close()
