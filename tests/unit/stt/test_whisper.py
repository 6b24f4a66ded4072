"""Whisper (the packaged tiny.en) in real worker processes, and its recognizer's bookkeeping."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator

import pytest

from callbridge.config.settings import load_settings
from callbridge.stt.base import SttError
from callbridge.stt.isolated import BufferedRecognizer, WorkerPool
from callbridge.stt.whisper import (
    WhisperOptions,
    WhisperRecognizer,
    _repeats,
    packaged_model_dir,
)
from callbridge.tts.espeak import EspeakSynthesizer
from callbridge.voice_setup import local_stt_pool

WORKER = [
    sys.executable, "-m", "callbridge.cli.stt_worker", "--engine", "whisper",
    "--log-format", "text", "--log-level", "WARNING",
]  # fmt: skip
SILENCE = bytes(2 * 2400)  # 300 ms at 8 kHz, as the VAD's pre-roll leaves before a turn


@pytest.fixture(scope="module")
def time_8k() -> bytes:
    return SILENCE + b"".join(EspeakSynthesizer().synthesize("What time is it?")) + SILENCE


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(WORKER, 1, stateless=True)
    yield p
    p.close()


def _say(recognizer: object, pcm: bytes) -> str:
    assert isinstance(recognizer, BufferedRecognizer)
    recognizer.start()
    for k in range(0, len(pcm), 1600):  # 100 ms at a time, as a call feeds it
        assert recognizer.feed(pcm[k : k + 1600]) == []  # no partials: see BufferedRecognizer
    return recognizer.finish().text


def test_the_packaged_model_hears_what_time_is_it(pool: WorkerPool, time_8k: bytes) -> None:
    r = pool.recognizer()
    text = _say(r, time_8k)
    r.close()
    assert "time" in text.lower(), text
    # pocketsphinx heard "oh what i it" here: the whole question, not only the word
    assert text.lower().strip(" ?.!") == "what time is it", text


def test_a_call_holds_no_model_and_no_worker(pool: WorkerPool, time_8k: bytes) -> None:
    calls = [pool.recognizer() for _ in range(3)]
    assert [w.sessions for w in pool.workers] == [0]  # nothing opened in the worker
    texts = [_say(r, time_8k if k != 1 else SILENCE * 4) for k, r in enumerate(calls)]
    assert "time" in texts[0].lower() and "time" in texts[2].lower(), texts
    assert texts[1] == "", texts  # 1.2 s of silence: no words invented
    for r in calls:
        r.close()
    with pytest.raises(RuntimeError, match="closed"):
        calls[0].start()


def test_a_worker_that_dies_mid_turn_fails_that_turn_and_is_replaced(
    pool: WorkerPool, time_8k: bytes
) -> None:
    worker = pool.workers[0]
    pool.transcribe(SILENCE)  # running
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the request below is in flight when the worker dies
    failed: list[BaseException] = []

    def turn() -> None:
        try:
            pool.transcribe(time_8k)
        except SttError as exc:
            failed.append(exc)

    th = threading.Thread(target=turn)
    th.start()
    th.join(0.3)  # the request is written and its reply awaited
    os.kill(pid, signal.SIGKILL)
    th.join(10)
    assert not th.is_alive()
    assert len(failed) == 1 and "stt-0" in str(failed[0]), failed
    # The next turn (any call's) gets a new worker with the model loaded again.
    r = pool.recognizer()
    assert "time" in _say(r, time_8k).lower()
    r.close()
    assert worker.restarts == 1 and worker.pid != pid


def test_a_model_directory_that_is_not_one_is_a_clear_error(tmp_path: object) -> None:
    bad = WorkerPool([*WORKER, "--model", str(tmp_path)], 1, stateless=True, start_timeout=30)
    with pytest.raises(SttError, match="stt-0"):
        bad.transcribe(SILENCE)
    bad.close()


def test_the_default_settings_start_stateless_whisper_workers() -> None:
    settings = load_settings(environ={"CALLBRIDGE_AGENT_STT_MODEL": "/models/base.en"})
    assert settings.agent.stt == "whisper"
    pool = local_stt_pool(settings)
    command = pool.workers[0].command
    assert pool.stateless and len(pool.workers) == min(8, os.cpu_count() or 1)
    assert command[command.index("--engine") + 1] == "whisper"
    assert command[command.index("--model") + 1] == "/models/base.en"
    light = local_stt_pool(load_settings(environ={"CALLBRIDGE_AGENT_STT": "pocketsphinx"}))
    assert not light.stateless and "pocketsphinx" in light.workers[0].command
    assert (packaged_model_dir() / "model.bin").is_file()


class Counting:
    """An engine that reports how much audio each decode heard."""

    def __init__(self, partial_interval: float) -> None:
        self.options = WhisperOptions(partial_interval=partial_interval)
        self.decoded: list[int] = []

    def transcribe(self, pcm8k: bytes) -> str:
        self.decoded.append(len(pcm8k))
        return f"{len(pcm8k)} bytes"


def test_partials_decode_the_growing_turn_at_most_once_per_interval() -> None:
    engine = Counting(partial_interval=1.0)
    r = WhisperRecognizer(engine)  # type: ignore[arg-type]
    r.start()
    got = [t for _ in range(25) for t in r.feed(bytes(1600))]  # 2.5 s in 100 ms feeds
    assert [t.text for t in got] == ["16000 bytes", "32000 bytes"]
    assert not any(t.final for t in got)
    assert r.finish().text == "40000 bytes"
    r.start()
    assert r.finish().text == "0 bytes"  # each turn starts empty
    quiet = Counting(partial_interval=0.0)
    r2 = WhisperRecognizer(quiet)  # type: ignore[arg-type]
    assert all(r2.feed(bytes(1600)) == [] for _ in range(30))
    assert quiet.decoded == []


@pytest.mark.parametrize(
    ("text", "looping"),
    [
        ("Transfer me, please. Transfer me, please.", True),
        ("Can you repeat that? Can you repeat that? Can you repeat that?", True),
        ("the " * 40, True),
        ("No, no. No.", False),  # different sentences
        ("What time is it?", False),
        ("", False),
    ],
)
def test_a_looping_decode_is_recognised(text: str, looping: bool) -> None:
    assert _repeats(text) is looping
