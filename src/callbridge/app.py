"""Composition root: settings -> concrete parts -> a running gateway. The only reader of settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from callbridge.agents.conversation import ConversationConfig
from callbridge.agents.echo import EchoAgent
from callbridge.agents.runtime import VoiceRuntime
from callbridge.agents.voice import VoiceAgentConfig
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.config.settings import Settings
from callbridge.core.clock import Clock
from callbridge.core.clocks import LoopClock
from callbridge.core.log import event
from callbridge.core.ports import Agent
from callbridge.llm.anthropic import AnthropicBrain
from callbridge.llm.base import DEFAULT_SYSTEM_PROMPT, Brain
from callbridge.llm.demo import DemoBrain
from callbridge.llm.openai_compat import OpenAICompatBrain
from callbridge.media.bargein import BargeInConfig
from callbridge.media.turns import TurnConfig
from callbridge.rtp.jitter import JitterConfig
from callbridge.sip.timers import TimerSettings
from callbridge.stt.pocketsphinx import PocketsphinxRecognizer
from callbridge.transports.sip import CallFailed, SipTransport, SipTransportConfig
from callbridge.tts.factory import default_synthesizer

log = logging.getLogger("callbridge")


@dataclass(slots=True)
class Gateway:
    settings: Settings
    calls: CallManager
    sip: SipTransport
    voice: VoiceRuntime | None = None

    async def start(self) -> None:
        # Before the loop gets busy: a one-off directory creation, not a per-call operation.
        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        if self.voice is not None:
            await self.voice.start()  # models load before the first call can arrive
        await self.sip.start()

    async def stop(self) -> None:
        """Graceful: refuse new calls (503), BYE the live ones, wait a bounded time, close."""
        event(log, "gateway.stopping", live_calls=len(self.calls.calls))
        self.calls.accepting = False
        self.sip.stop_accepting()
        await self.sip.shutdown(self.settings.shutdown_grace)
        await self.calls.shutdown(self.settings.shutdown_grace)
        if self.voice is not None:
            await self.voice.aclose()
        event(log, "gateway.stopped")


def build_brain_factory(
    settings: Settings,
) -> tuple[Callable[[], Brain], list[Callable[[], Awaitable[None]]]]:
    """The configured brain, one per call; plus what to close at shutdown (shared HTTP client)."""
    llm = settings.llm
    prompt = llm.system_prompt or DEFAULT_SYSTEM_PROMPT
    if llm.provider == "demo":
        return DemoBrain, []
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


def build_voice(settings: Settings, clock: Clock) -> VoiceRuntime:
    a = settings.agent
    brain, closers = build_brain_factory(settings)
    return VoiceRuntime(
        clock=clock,
        synthesizer=(lambda: default_synthesizer(prefer=a.tts)),
        recognizer=PocketsphinxRecognizer,
        brain=brain,
        conversation=ConversationConfig(
            turn=TurnConfig(min_speech=a.min_speech_ms / 1000, end_silence=a.end_silence_ms / 1000),
            bargein=BargeInConfig(min_speech=a.barge_in_min_ms / 1000),
            allow_barge_in=a.barge_in,
            prepare_after=a.prepare_ms / 1000 if 0 < a.prepare_ms < a.end_silence_ms else None,
        ),
        agent=VoiceAgentConfig(greet=a.greet),
        on_close=closers,
    )


def build_gateway(settings: Settings) -> Gateway:
    clock = LoopClock()
    voice = build_voice(settings, clock) if settings.default_agent == "voice" else None
    agents: dict[str, Callable[[], Agent]] = {"echo": lambda: EchoAgent(settings.echo.delay_ms)}
    if voice is not None:
        agents["voice"] = voice.new_agent
    router = Router(agents, settings.default_agent)
    calls = CallManager(router, clock)
    s = settings.sip
    config = SipTransportConfig(
        host=s.host,
        port=s.port,
        public_host=s.public_host,
        rtp_port_min=settings.rtp.port_min,
        rtp_port_max=settings.rtp.port_max,
        rtp_timeout=settings.rtp.timeout,
        jitter=JitterConfig(
            min_delay=settings.rtp.jitter_min_ms / 1000, max_delay=settings.rtp.jitter_max_ms / 1000
        ),
        codecs=tuple(c.strip().upper() for c in settings.rtp.codecs.split(",")),
        user_agent=s.user_agent,
        timers=TimerSettings(t1=s.t1, t2=s.t2, t4=s.t4),
    )
    sip = SipTransport(config, clock, calls)
    return Gateway(settings, calls, sip, voice)


async def _until_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings) -> None:
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        await _until_signal()
    finally:
        await gateway.stop()


async def place_call(
    settings: Settings, target: str, agent_name: str, duration: float | None
) -> int:
    """`callbridge call`: start the gateway, place one call with an agent, wait for it to end."""
    gateway = build_gateway(settings)
    await gateway.start()
    ended: asyncio.Future[Call] = asyncio.get_running_loop().create_future()

    def on_end(call: Call) -> None:
        if not ended.done():
            ended.set_result(call)

    gateway.calls.on_end.append(on_end)
    signals = asyncio.ensure_future(_until_signal())
    try:
        try:
            leg = await gateway.sip.call(target)
        except CallFailed as exc:
            event(
                log,
                "call.failed",
                logging.ERROR,
                target=target,
                status=exc.status,
                reason=exc.reason,
            )
            return 1
        gateway.calls.start_call(leg, agent_name=agent_name)
        waits: set[asyncio.Future[object]] = {ended, signals}  # type: ignore[arg-type]
        if duration is not None:
            waits.add(asyncio.ensure_future(asyncio.sleep(duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not leg.ended:
            await leg.hangup("local")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await ended
        return 0
    finally:
        signals.cancel()
        await gateway.stop()
