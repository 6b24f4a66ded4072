"""The gateway's speech factories reach OpenAI-compatible STT/TTS servers when configured
(over real HTTP, to the fake server of the unit tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from callbridge.config.settings import load_settings
from callbridge.stt.isolated import WorkerPool
from callbridge.stt.openai_compat import OpenAICompatRecognizer
from callbridge.tts.openai_compat import OpenAICompatSynthesizer
from callbridge.voice_setup import build_speech
from tests.unit.openai_fake_server import FakeSpeechServer


async def test_openai_stt_and_tts_from_settings() -> None:
    with FakeSpeechServer(transcript="hello there") as server:
        settings = load_settings(
            environ={
                "CALLBRIDGE_AGENT_STT": "openai",
                "CALLBRIDGE_AGENT_TTS": "openai",
                "CALLBRIDGE_STT_BASE_URL": server.base_url,
                "CALLBRIDGE_TTS_BASE_URL": server.base_url,
                "CALLBRIDGE_TTS_VOICE": "nova",
            }
        )
        closers: list[Callable[[], Awaitable[None]]] = []
        make_tts, make_stt = build_speech(settings, closers)
        tts, stt = make_tts(), make_stt()
        assert isinstance(tts, OpenAICompatSynthesizer)
        assert isinstance(stt, OpenAICompatRecognizer)

        def work() -> tuple[bytes, str]:
            audio = b"".join(tts.synthesize("Hello there."))
            stt.start()
            stt.feed((np.sin(np.arange(8000) / 3) * 8000).astype("<i2").tobytes())
            return audio, stt.finish().text

        audio, text = await asyncio.to_thread(work)
        assert len(audio) > 1600 and text == "hello there"
        stt.close()
        tts.close()
        for close in closers:
            await close()
    paths = [r.path for r in server.requests]
    assert paths == ["/v1/audio/speech", "/v1/audio/transcriptions"]


def test_local_engines_by_default() -> None:
    closers: list[Callable[[], Awaitable[None]]] = []
    _, make_stt = build_speech(load_settings(environ={"CALLBRIDGE_STT_WORKERS": "3"}), closers)
    # pocketsphinx in worker processes, started on first use (none here), ended by the closer
    pool = getattr(make_stt, "__self__", None)
    assert isinstance(pool, WorkerPool) and make_stt == pool.recognizer
    assert len(pool.workers) == 3 and all(w.generation == 0 for w in pool.workers)
    assert pool.workers[0].command[1:3] == ["-m", "callbridge.cli.stt_worker"]
    assert len(closers) == 1
