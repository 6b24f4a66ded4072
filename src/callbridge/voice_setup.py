"""Settings -> the voice agent's shared parts: the brain, speech recognition (local worker
processes or an OpenAI-compatible server), speech synthesis, and the conversation's timing.

Split from the composition root (gateway.py) because it is one concept of its own — everything
the `voice` agent needs, and what to close at shutdown — and the largest one."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

import httpx

from callbridge.agents.conversation import ConversationConfig
from callbridge.agents.runtime import VoiceRuntime
from callbridge.agents.voice import VoiceAgentConfig
from callbridge.config.settings import Settings
from callbridge.core.clock import Clock
from callbridge.llm.anthropic import AnthropicBrain
from callbridge.llm.base import DEFAULT_SYSTEM_PROMPT, Brain
from callbridge.llm.demo import DemoBrain
from callbridge.llm.openai_compat import OpenAICompatBrain
from callbridge.media.bargein import BargeInConfig
from callbridge.media.turns import TurnConfig
from callbridge.stt.base import Recognizer
from callbridge.stt.isolated import WorkerPool
from callbridge.stt.openai_compat import OpenAICompatRecognizer
from callbridge.tts.base import Synthesizer
from callbridge.tts.factory import default_synthesizer
from callbridge.tts.openai_compat import OpenAICompatSynthesizer


def build_brain_factory(
    settings: Settings,
) -> tuple[Callable[[], Brain], list[Callable[[], Awaitable[None]]]]:
    """The configured brain, one per call; plus what to close at shutdown (shared HTTP client)."""
    llm = settings.llm
    prompt = llm.system_prompt or DEFAULT_SYSTEM_PROMPT
    if llm.provider == "demo":
        transfer_to = settings.agent.transfer_to
        return (lambda: DemoBrain(transfer_to=transfer_to)), []
    client = httpx.AsyncClient()
    closers: list[Callable[[], Awaitable[None]]] = [client.aclose]
    if llm.provider == "openai":
        return (
            lambda: OpenAICompatBrain(
                llm.base_url,
                llm.model,
                llm.api_key or None,
                system_prompt=prompt,
                timeout=llm.timeout,
                client=client,
            ),
            closers,
        )
    return (
        lambda: AnthropicBrain(
            llm.api_key,
            llm.model,
            system_prompt=prompt,
            base_url=llm.base_url or "https://api.anthropic.com",
            timeout=llm.timeout,
            client=client,
        ),
        closers,
    )


def local_stt_pool(settings: Settings) -> WorkerPool:
    """The local recognizer in worker processes (pocketsphinx holds the GIL while decoding;
    Whisper's decodes are long and heavy: neither runs in the gateway's own process), started
    on first use, logging like the gateway. Whisper workers are stateless: one model each, any
    worker decodes any call's turn; each gets its share of the cores as CTranslate2 threads."""
    cores = os.cpu_count() or 1
    workers = settings.stt.workers or min(8, cores)
    engine = ["--engine", settings.agent.stt]
    if settings.agent.stt == "whisper":
        engine += ["--threads", str(max(1, cores // workers)), "--model", settings.agent.stt_model]
    command = [
        sys.executable, "-m", "callbridge.cli.stt_worker", *engine,
        "--log-format", settings.log.format, "--log-level", settings.log.level,
    ]  # fmt: skip
    return WorkerPool(command, workers, stateless=settings.agent.stt == "whisper")


def build_speech(
    settings: Settings, closers: list[Callable[[], Awaitable[None]]]
) -> tuple[Callable[[], Synthesizer], Callable[[], Recognizer]]:
    """The synthesizer factory (one instance serves every call) and the recognizer factory
    (one per call): local engines, or OpenAI-compatible servers from [stt] / [tts]."""
    a, st, tt = settings.agent, settings.stt, settings.tts

    def local_tts() -> Synthesizer:
        return default_synthesizer(prefer=a.tts)

    def remote_tts() -> Synthesizer:
        return OpenAICompatSynthesizer(
            tt.base_url, tt.model, tt.api_key, voice=tt.voice, timeout=tt.timeout
        )

    if a.stt != "openai":
        pool = local_stt_pool(settings)

        async def close_pool() -> None:
            await asyncio.to_thread(pool.close)

        closers.append(close_pool)
        return (remote_tts if a.tts == "openai" else local_tts), pool.recognizer
    shared = httpx.Client()  # every call's recognizer reuses its connections

    async def close_stt() -> None:
        await asyncio.to_thread(shared.close)

    closers.append(close_stt)

    def remote_stt() -> Recognizer:
        return OpenAICompatRecognizer(
            st.base_url,
            st.model,
            st.api_key,
            language=st.language,
            timeout=st.timeout,
            client=shared,
        )

    return (remote_tts if a.tts == "openai" else local_tts), remote_stt


def build_voice(settings: Settings, clock: Clock) -> VoiceRuntime:
    a = settings.agent
    brain, closers = build_brain_factory(settings)
    synthesizer, recognizer = build_speech(settings, closers)
    return VoiceRuntime(
        clock=clock,
        synthesizer=synthesizer,
        recognizer=recognizer,
        brain=brain,
        conversation=ConversationConfig(
            turn=TurnConfig(min_speech=a.min_speech_ms / 1000, end_silence=a.end_silence_ms / 1000),
            bargein=BargeInConfig(min_speech=a.barge_in_min_ms / 1000),
            allow_barge_in=a.barge_in,
            prepare_after=a.prepare_ms / 1000 if 0 < a.prepare_ms < a.end_silence_ms else None,
            end_silence_max=a.end_silence_max_ms / 1000,
        ),
        turn_model=a.turn_model,
        agent=VoiceAgentConfig(greet=a.greet),
        on_close=closers,
    )
