"""Composition root: settings -> concrete parts -> a running gateway. The only reader of settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from callbridge.agents.conversation import ConversationConfig
from callbridge.agents.echo import EchoAgent
from callbridge.agents.local_audio import LocalAudioAgent, open_device
from callbridge.agents.runtime import VoiceRuntime
from callbridge.agents.twilio_socket import TwilioSocketAgent, TwilioSocketConfig
from callbridge.agents.voice import VoiceAgentConfig
from callbridge.api.app import ApiConfig, create_app
from callbridge.api.calls import ApiError, calls_routes
from callbridge.api.observers import connect_observers
from callbridge.api.openapi import openapi_routes
from callbridge.api.server import HttpServer
from callbridge.api.twilio import TwilioWebConfig, media_stream_url
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.config.settings import AgentRoute, Settings, http_wanted
from callbridge.config.validators import auth_users
from callbridge.core.clock import Clock
from callbridge.core.clocks import LoopClock
from callbridge.core.errors import ConfigError
from callbridge.core.log import event, event_fields
from callbridge.core.ports import Agent
from callbridge.llm.anthropic import AnthropicBrain
from callbridge.llm.base import DEFAULT_SYSTEM_PROMPT, Brain
from callbridge.llm.demo import DemoBrain
from callbridge.llm.openai_compat import OpenAICompatBrain
from callbridge.media.bargein import BargeInConfig
from callbridge.media.turns import TurnConfig
from callbridge.mediastream import twiml
from callbridge.observability.metrics import Metrics
from callbridge.observability.webhooks import WebhookConfig, WebhookSender
from callbridge.rtp.jitter import JitterConfig
from callbridge.sip.access import InboundPolicy, parse_networks
from callbridge.sip.digest_server import DigestServer
from callbridge.sip.overload import GuardConfig
from callbridge.sip.registration import SipAccount
from callbridge.sip.timers import TimerSettings
from callbridge.store.service import Store, StoreConfig, build_store
from callbridge.stt.base import Recognizer
from callbridge.stt.isolated import WorkerPool
from callbridge.stt.openai_compat import OpenAICompatRecognizer
from callbridge.transports.sip import (
    CallFailed,
    SipTransport,
    SipTransportConfig,
    local_address_towards,
)
from callbridge.transports.sip_leg import SipLeg
from callbridge.transports.twilio import TwilioTransport
from callbridge.transports.twilio_leg import TwilioLeg, TwilioLegConfig
from callbridge.transports.twilio_rest import TwilioCallFailed, TwilioRest
from callbridge.tts.base import Synthesizer
from callbridge.tts.factory import default_synthesizer
from callbridge.tts.openai_compat import OpenAICompatSynthesizer

log = logging.getLogger("callbridge")


@dataclass(slots=True)
class Gateway:
    settings: Settings
    calls: CallManager
    sip: SipTransport
    voice: VoiceRuntime | None = None
    twilio: TwilioTransport | None = None
    http: HttpServer | None = None
    metrics: Metrics | None = None
    webhooks: WebhookSender | None = None

    async def start(self) -> None:
        # Before the loop gets busy: a one-off directory creation, not a per-call operation.
        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        if self.metrics is not None:
            self.metrics.install()
        if self.webhooks is not None:
            self.webhooks.start()
        started = time.monotonic()
        if self.voice is not None:
            # The one slow step of a start: say so before it, not only after.
            a = self.settings.agent
            event(log, "gateway.loading", models=f"Silero VAD, {a.stt} recognizer, {a.tts} voice",
                  expect_s=10 if a.tts == "piper" else 2)  # fmt: skip
            await self.voice.start()  # models load before the first call can arrive
        if self.http is not None:
            await self.http.start()
        await self.sip.start()
        self._ready(time.monotonic() - started)

    def _ready(self, seconds: float) -> None:
        """One line that says how to reach the gateway, now that it can be reached."""
        host, port = self.sip.local_addr
        if host in ("0.0.0.0", "::"):
            host = self.settings.sip.public_host or local_address_towards("192.0.2.1")
        routes = sorted(self.calls.router.agents)
        fields: dict[str, object] = {
            # `agent` is the public name of the default route, whatever agent it is
            "call": f"sip:agent@{host}:{port}",
            "routes": ",".join(routes),
            "seconds": round(seconds, 1),
            "data": self.settings.data_dir,  # recordings, transcripts and the call database
        }
        if self.http is not None:
            fields["api"] = f"http://{self.settings.http.host}:{self.http.port}"
        event_fields(log, "gateway.ready", fields)

    async def stop(self) -> None:
        """Graceful: refuse new calls (503), BYE the live ones, wait a bounded time, close."""
        event(log, "gateway.stopping", live_calls=len(self.calls.calls))
        self.calls.accepting = False
        self.sip.stop_accepting()
        if self.twilio is not None:
            self.twilio.stop_accepting()
        await self.sip.shutdown(self.settings.shutdown_grace)
        if self.twilio is not None:
            await self.twilio.shutdown(self.settings.shutdown_grace)
        await self.calls.shutdown(self.settings.shutdown_grace)
        if self.http is not None:
            await self.http.stop()
        if self.voice is not None:
            await self.voice.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose(self.settings.shutdown_grace)  # the calls' last events
        if self.metrics is not None:
            self.metrics.uninstall()
        event(log, "gateway.stopped")


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


def guard_config(settings: Settings) -> GuardConfig:
    """[limits] -> the SIP port's admission control. Provider accounts' own networks
    (`allow_from`) are trusted like `limits.trusted`: a trunk's call rate is its business."""
    lim = settings.limits
    trusted = parse_networks(lim.trusted) + tuple(
        net for a in settings.accounts.values() for net in parse_networks(a.allow_from)
    )
    return GuardConfig(
        max_calls=lim.max_calls,
        max_unconfirmed=lim.max_unconfirmed,
        calls_per_second=lim.calls_per_second,
        calls_per_second_per_source=lim.calls_per_second_per_source,
        pike_rate=lim.requests_per_second_per_source,
        ban_time=lim.ban_seconds,
        auth_failures=lim.auth_failures,
        auth_user_failures=lim.auth_user_failures,
        auth_window=lim.auth_window,
        retry_after=lim.retry_after,
        max_loop_lag=lim.max_loop_lag_ms / 1000,
        trusted=trusted,
    )


def inbound_policy(settings: Settings) -> InboundPolicy:
    """sip.allow_from, each account's allow_from (for INVITEs to its username), auth_routes."""
    return InboundPolicy(
        allow_from=parse_networks(settings.sip.allow_from),
        trunk_allow={
            a.username: parse_networks(a.allow_from)
            for a in settings.accounts.values()
            if a.allow_from
        },
        auth_routes=frozenset(r.strip() for r in settings.sip.auth_routes.split(",") if r.strip()),
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


def _sip_public_host(settings: Settings) -> str:
    """Where Twilio's <Dial><Sip> reaches our SIP endpoint ("" = the host it called us at)."""
    s = settings.sip
    if s.public_host:
        return s.public_host
    if s.host not in ("0.0.0.0", "::"):
        return s.host
    return urlsplit(settings.public_url).hostname or ""


def build_http(
    settings: Settings,
    calls: CallManager,
    twilio: TwilioTransport,
    sip: SipTransport | None = None,
    metrics: Metrics | None = None,
    *,
    twilio_http_client: Any = None,
) -> HttpServer:
    t = settings.twilio

    async def via_twilio(to: str, agent: str, answer_timeout: float) -> str:
        """POST /calls with `via: twilio`: the started call's id."""
        try:
            check_twilio_call_settings(settings)
        except ConfigError as exc:
            raise ApiError(422, str(exc), "via") from None
        try:
            leg = await twilio_originate(
                settings,
                twilio,
                to,
                agent,
                http_client=twilio_http_client,
                answer_timeout=answer_timeout,
            )
        except TwilioCallFailed as exc:
            status = 504 if exc.status is None else 502
            raise ApiError(status, exc.reason, twilio_status=exc.status) from None
        return leg.info.ids["call_id"]

    api = create_app(
        ApiConfig(
            api_token=settings.api_token,
            max_body_bytes=settings.http.max_body_bytes,
            twilio=TwilioWebConfig(
                public_url=settings.public_url,
                auth_token=t.auth_token,
                validate=t.validate,
                sip_host=_sip_public_host(settings),
                sip_port=settings.sip.port,
            ),
        ),
        calls=calls,
        twilio=twilio,
        extra_routes=[*calls_routes(calls, sip, metrics, via_twilio), *openapi_routes()],
    )
    return HttpServer(
        api,
        settings.http.host,
        settings.http.port,
        ws_max_size=settings.twilio.max_message_bytes,
    )


def build_route(route: AgentRoute, clock: Clock) -> Callable[[], Agent]:
    """The agent factory of one `[agents.NAME]` route (one agent per call)."""
    config = TwilioSocketConfig(
        url=route.url,
        parameters=route.parameters,
        secret=route.secret,
        route=route.name,
        connect_timeout=route.connect_timeout,
    )
    return lambda: TwilioSocketAgent(config, clock)


def build_call_store(settings: Settings) -> Store:
    """The call database (calls, events, turns) plus recordings and transcripts, under
    data_dir."""
    r, st = settings.recording, settings.store
    return build_store(
        StoreConfig(
            Path(settings.data_dir),
            url=st.url,
            recording=r.enabled,
            transcripts=r.transcripts,
            events=st.events,
            gateway_id=st.gateway_id or f"{socket.gethostname()}:{settings.sip.port}",
        )
    )


def build_gateway(
    settings: Settings, *, http: bool | None = None, twilio_http_client: Any = None
) -> Gateway:
    """`http` forces the HTTP server on or off (default: settings.http.enabled);
    `twilio_http_client` replaces the twilio package's HTTP client (tests)."""
    clock = LoopClock()
    voice = build_voice(settings, clock) if settings.default_agent == "voice" else None
    agents: dict[str, Callable[[], Agent]] = {"echo": lambda: EchoAgent(settings.echo.delay_ms)}
    if voice is not None:
        agents["voice"] = voice.new_agent
    for name, route in settings.agents.items():
        agents[name] = build_route(route, clock)
    accounts = tuple(
        SipAccount(
            name=a.name,
            registrar=a.registrar,
            username=a.username,
            password=a.password,
            domain=a.domain,
            auth_username=a.auth_username,
            expires=a.expires,
            register=a.register,
            outbound_proxy=a.outbound_proxy,
        )
        for a in settings.accounts.values()
    )
    # Calls to a registered account's username (our Contact at the provider) reach its agent.
    aliases = {a.username: a.agent for a in settings.accounts.values()}
    router = Router(agents, settings.default_agent, aliases)
    calls = CallManager(router, clock)
    calls.store = build_call_store(settings)
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
        accounts=accounts,
        dns_servers=tuple(d.strip() for d in s.dns_servers.split(",") if d.strip()),
        inbound=inbound_policy(settings),
        auth=(
            DigestServer(
                s.auth_realm, auth_users(s.auth_users), algorithms=s.auth_algorithms.split(",")
            )
            if s.auth_users
            else None
        ),
        guard=guard_config(settings),
    )
    sip = SipTransport(config, clock, calls)
    twilio = TwilioTransport(
        clock, calls, TwilioLegConfig(max_message_bytes=settings.twilio.max_message_bytes)
    )
    metrics = Metrics(
        active_calls=lambda: len(calls.calls),
        registrations=lambda: [(r.account, r.state.value) for r in sip.registrations()],
        sip_guard=lambda: sip.guard.counters,
    )
    w = settings.webhooks
    webhooks = (
        WebhookSender(WebhookConfig(w.url, w.secret, tries=w.tries, timeout=w.timeout))
        if w.url
        else None
    )
    connect_observers(calls, sip, metrics, webhooks)
    serve_http = http_wanted(settings) if http is None else http
    server = (
        build_http(settings, calls, twilio, sip, metrics, twilio_http_client=twilio_http_client)
        if serve_http
        else None
    )
    return Gateway(settings, calls, sip, voice, twilio, server, metrics, webhooks)


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


def check_twilio_call_settings(settings: Settings) -> None:
    """What `callbridge call --via twilio` needs; raises ConfigError naming the first gap."""
    t = settings.twilio
    needs = [
        ("twilio.account_sid", t.account_sid, "TWILIO_ACCOUNT_SID"),
        ("twilio.auth_token", t.auth_token, "TWILIO_AUTH_TOKEN"),
        ("twilio.from_number", t.from_number, "CALLBRIDGE_TWILIO_FROM_NUMBER (a Twilio number)"),
        ("public_url", settings.public_url, "CALLBRIDGE_PUBLIC_URL (where Twilio reaches us)"),
    ]
    for name, value, env in needs:
        if not value:
            raise ConfigError(name, f"calling through Twilio needs it: set {env}")


async def _twilio_call(
    gateway: Gateway, target: str, agent_name: str, http_client: Any, answer_timeout: float
) -> TwilioLeg | None:
    """Create the call over REST with <Connect><Stream> TwiML and wait for its media stream."""
    assert gateway.twilio is not None
    try:
        return await twilio_originate(
            gateway.settings,
            gateway.twilio,
            target,
            agent_name,
            http_client=http_client,
            answer_timeout=answer_timeout,
        )
    except TwilioCallFailed:
        return None  # logged


async def twilio_originate(
    settings: Settings,
    transport: TwilioTransport,
    target: str,
    agent_name: str,
    *,
    http_client: Any = None,
    answer_timeout: float = 90.0,
) -> TwilioLeg:
    """A call through Twilio's REST API whose media comes back on our WebSocket: the leg,
    once the stream is connected (the transport has started the call with `agent_name`).
    Raises TwilioCallFailed (logged as call.failed) when refused or never connected."""
    t = settings.twilio
    rest = TwilioRest(t.account_sid, t.auth_token, http_client=http_client)
    document = twiml.connect_stream(
        media_stream_url(settings.public_url),
        {"agent": agent_name, "direction": "outbound", "from": t.from_number, "to": target},
    )
    try:
        call_sid = await rest.create_call(target, t.from_number, document)
    except TwilioCallFailed as exc:
        event(
            log, "call.failed", logging.ERROR, target=target, status=exc.status, reason=exc.reason
        )
        raise
    event(log, "twilio.call_created", call_sid=call_sid, target=target, agent=agent_name)
    try:
        return await transport.wait_for_stream(call_sid, answer_timeout)
    except TimeoutError:
        event(
            log,
            "call.failed",
            logging.ERROR,
            target=target,
            call_sid=call_sid,
            reason="no media stream",
        )
        with contextlib.suppress(TwilioCallFailed):
            await rest.end_call(call_sid)
        raise TwilioCallFailed(None, "no media stream (not answered in time)") from None


async def place_call(
    settings: Settings,
    target: str,
    agent_name: str,
    duration: float | None,
    *,
    via: str = "sip",
    account: str | None = None,
    twilio_http_client: Any = None,
    answer_timeout: float = 90.0,
    listen: str | None = None,
) -> int:
    """`callbridge call`: start the gateway, place one call with an agent, wait for it to end.

    `listen` (a device name, "" for the default) puts the call on this machine's speakers and
    microphone instead of an agent; the device is opened before anything is dialled, so a
    machine without one gets AudioDeviceError, not a call nobody hears.

    `via="twilio"` places it through Twilio's REST API (`twilio_http_client` replaces the
    twilio package's HTTP client); the call's media then comes back on our WebSocket."""
    if via == "twilio":
        if listen is not None:
            raise ConfigError("--listen", "works with SIP calls (not --via twilio)")
        check_twilio_call_settings(settings)
    device = open_device(listen or None) if listen is not None else None
    gateway = build_gateway(settings, http=True if via == "twilio" else None)
    await gateway.start()
    ended: asyncio.Future[Call] = asyncio.get_running_loop().create_future()

    def on_end(call: Call) -> None:
        if not ended.done():
            ended.set_result(call)

    gateway.calls.on_end.append(on_end)
    signals = asyncio.ensure_future(_until_signal())
    try:
        leg: SipLeg | TwilioLeg
        if via == "twilio":
            attempt = asyncio.ensure_future(
                _twilio_call(gateway, target, agent_name, twilio_http_client, answer_timeout)
            )
            await asyncio.wait({attempt, signals}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                attempt.cancel()
                return 1
            placed = attempt.result()
            if placed is None:
                return 1
            leg = placed  # the transport started the call with the agent named in the TwiML
        else:
            you = LocalAudioAgent(listen or None, stream=device) if device is not None else None
            try:
                leg = await gateway.sip.call(
                    target,
                    account=account,
                    timeout=answer_timeout,
                    on_early_media=you.early if you else None,
                )
            except CallFailed as exc:
                event(
                    log,
                    "call.failed",
                    logging.ERROR,
                    target=target,
                    result=exc.result,
                    status=exc.status,
                    reason=exc.reason,
                )
                if you is not None:
                    you.discard()
                return 1
            if you is not None:
                gateway.calls.start_call(leg, agent=you, agent_name="listen")
            else:
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
