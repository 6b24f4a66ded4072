"""Composition root: settings -> concrete parts -> a running gateway. The only reader of settings
(with its two siblings: voice_setup.py builds the voice agent's parts, originate.py places
calls through Twilio). The CLI's use cases (serve, call) live in cli/, above this module."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callbridge import native
from callbridge.agents.echo import EchoAgent
from callbridge.agents.runtime import VoiceRuntime
from callbridge.agents.twilio_socket import TwilioSocketAgent, TwilioSocketConfig
from callbridge.api.app import ApiConfig, create_app
from callbridge.api.calls import ApiError, calls_routes
from callbridge.api.dashboard import EventHub, dashboard_routes, event_hub
from callbridge.api.dashboard_relay import WorkerRelay
from callbridge.api.forward import Forwarding
from callbridge.api.observers import connect_observers
from callbridge.api.openapi import openapi_routes
from callbridge.api.server import HttpServer
from callbridge.api.sip_ws import sip_ws_routes
from callbridge.api.softphone import webrtc_routes
from callbridge.api.twilio import TwilioWebConfig
from callbridge.asterisk_setup import AsteriskTransports, build_asterisk
from callbridge.calls.manager import CallManager
from callbridge.calls.routing import Router
from callbridge.config.schema import http_required
from callbridge.config.settings import AgentRoute, Settings, http_wanted
from callbridge.config.sip_admission import guard_config, inbound_policy
from callbridge.config.validators import auth_users
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.bus import Bus, default_bus
from callbridge.core.clock import Clock
from callbridge.core.errors import ConfigError
from callbridge.core.log import event, event_fields
from callbridge.core.ports import Agent, LegInfo
from callbridge.observability.lateness import LatenessTally, LatePeriods
from callbridge.observability.logging import print_events
from callbridge.observability.metrics import Metrics
from callbridge.observability.webhooks import WebhookConfig, WebhookSender
from callbridge.originate import check_twilio_call_settings, twilio_originate
from callbridge.rtp.jitter import JitterConfig
from callbridge.sip.digest_server import DigestServer
from callbridge.sip.registration import SipAccount
from callbridge.sip.timers import TimerSettings
from callbridge.store.service import Store, StoreConfig, build_store
from callbridge.transports.sip.transport import (
    SipTransport,
    SipTransportConfig,
    local_address_towards,
)
from callbridge.transports.twilio.leg import TwilioLegConfig
from callbridge.transports.twilio.rest import TwilioCallFailed
from callbridge.transports.twilio.transport import TwilioTransport
from callbridge.transports.webrtc.transport import WebRtcConfig, WebRtcTransport, parse_ice_servers
from callbridge.transports.websocket import free_closed_connections
from callbridge.voice_setup import build_voice

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
    webrtc: WebRtcTransport | None = None  # the softphone page's calls
    asterisk: AsteriskTransports | None = None  # AudioSocket, FastAGI, ARI (docs/asterisk.md)
    events: EventHub | None = None  # the dashboard's live stream (GET /events)
    # A cluster worker's internal API (cluster/plan.py): a busy port costs the forwarding of
    # this worker's live-call actions, not the worker (which would only be restarted into the
    # same busy port, again and again).
    http_optional: bool = False
    # How late the media ran, for one `media.lateness` line at the stop (observability/lateness)
    lateness: LatenessTally = field(default_factory=LatenessTally)
    # ... and when, with where the loop's time went: a `media.late` line (at most one a second)
    late_periods: LatePeriods = field(default_factory=LatePeriods)

    async def start(self) -> None:
        # Before the loop gets busy: a one-off directory creation, not a per-call operation.
        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        if self.metrics is not None:
            self.metrics.install(self.calls.bus)
        if self.events is not None:
            self.events.install()
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
            try:
                await self.http.start()
            except OSError as exc:
                if http_required(self.settings) and not self.http_optional:
                    raise
                # Served only because the host is loopback (the softphone page): a second
                # gateway on this machine starts without it rather than not at all.
                h = self.settings.http
                fix = (
                    f"free {h.host}:{h.port} (http.port + 1 + the worker's index) and restart "
                    "the cluster; until then worker 0 answers 503 to actions on this worker's "
                    "live calls"
                    if self.http_optional
                    else "set CALLBRIDGE_HTTP_PORT to a free port"
                )
                event(log, "http.unavailable", logging.WARNING, error=str(exc), port=h.port,
                      fix=fix)  # fmt: skip
                self.http = None
        if self.asterisk is not None:
            await self.asterisk.start()
        self.sip.on_media_lateness.append(self.lateness.observe)
        self.sip.on_media_lateness.append(self.late_periods.observe)
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
            "media_path": native.status().summary,  # how this process runs the frame code
        }
        if self.http is not None:
            scheme = "https" if self.http.tls else "http"
            fields["api"] = f"{scheme}://{self.settings.http.host}:{self.http.port}"
            if self.webrtc is not None:  # the softphone page
                fields["web"] = f"{scheme}://{self.settings.http.host}:{self.http.port}/"
            ws = "wss" if self.http.tls else "ws"  # web phones: SIP over WebSocket
            fields["sip_ws"] = f"{ws}://{self.settings.http.host}:{self.http.port}/sip"
        event_fields(log, "gateway.ready", fields)

    def _refuse_new_calls(self) -> None:
        self.calls.accepting = False
        self.sip.stop_accepting()  # 503 to INVITE and to OPTIONS probes
        if self.twilio is not None:
            self.twilio.stop_accepting()
        if self.webrtc is not None:
            self.webrtc.stop_accepting()

    async def drain(self, timeout: float) -> None:
        """Take no new calls and let the live ones end by themselves, up to `timeout`
        seconds: a dispatcher's OPTIONS probe gets 503 and sends new calls elsewhere."""
        event(log, "gateway.draining", live_calls=len(self.calls.calls), timeout=timeout)
        self._refuse_new_calls()
        left = await self.calls.drain(timeout)
        event(log, "gateway.drained", live_calls=left)

    async def stop(self) -> None:
        """Graceful: refuse new calls (503), BYE the live ones, wait a bounded time, close."""
        event(log, "gateway.stopping", live_calls=len(self.calls.calls))
        self._refuse_new_calls()
        await self.sip.shutdown(self.settings.shutdown_grace)
        if self.twilio is not None:
            await self.twilio.shutdown(self.settings.shutdown_grace)
        if self.webrtc is not None:
            await self.webrtc.shutdown(self.settings.shutdown_grace)
        if self.asterisk is not None:
            await self.asterisk.shutdown(self.settings.shutdown_grace)
        await self.calls.shutdown(self.settings.shutdown_grace)
        if self.events is not None:
            self.events.close()  # its streams never end by themselves
        if self.http is not None:
            await self.http.stop()
        if self.voice is not None:
            await self.voice.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose(self.settings.shutdown_grace)  # the calls' last events
        if self.metrics is not None:
            self.metrics.uninstall()
        # samples (one per 100 ms), late_20ms, p50_ms, p99_ms, max_ms: the bench reads it
        event_fields(log, "media.lateness", self.lateness.summary())
        self.late_periods.close()
        event(log, "gateway.stopped")


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
    webrtc: WebRtcTransport | None = None,
    asterisk: AsteriskTransports | None = None,
    events: EventHub | None = None,
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
        extra_routes=[
            # serve --workers: what the supervisor gave worker 0 (None anywhere else)
            *calls_routes(calls, sip, metrics, via_twilio, Forwarding.from_environ()),
            *openapi_routes(),
            *webrtc_routes(webrtc, ["agent", "echo", *settings.agents]),
            *(asterisk.web_routes() if asterisk is not None else []),
            *dashboard_routes(events),
            *sip_ws_routes(sip),
        ],
    )
    return HttpServer(
        api,
        settings.http.host,
        settings.http.port,
        ws_max_size=settings.twilio.max_message_bytes,
        tls=(settings.http.tls_cert, settings.http.tls_key) if settings.http.tls_cert else None,
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
    # Every TCP connection (the API's, an agent socket's, a Media Stream's) goes by reference
    # counting once closed, not by a full garbage collection (a pause of every call).
    free_closed_connections()
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
    # The gateway's own bus: its metrics and webhooks hear only its calls; the process-wide
    # bus above it (log printer, call store) hears everything.
    calls = CallManager(router, clock, bus=Bus(default_bus(), name="gateway"))
    print_events()
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
    sip.on_media_lateness.append(metrics.media_lateness.observe)
    w = settings.webhooks
    webhooks = (
        WebhookSender(WebhookConfig(w.url, w.secret, tries=w.tries, timeout=w.timeout))
        if w.url
        else None
    )
    connect_observers(calls, sip, webhooks)
    serve_http = http_wanted(settings) if http is None else http
    webrtc = build_webrtc(settings, clock, calls) if serve_http else None
    if webrtc is not None:  # web phones' calls over SIP over WebSocket get WebRTC legs
        sip.ws.media = WebRtcForSip(webrtc)
    asterisk = build_asterisk(settings, clock, calls, sip.ports)
    events = event_hub(calls) if serve_http else None
    cluster = Forwarding.from_environ()  # serve --workers: what the supervisor gave worker 0
    if events is not None and cluster is not None:
        events.relays = [
            WorkerRelay(gateway_id, base, cluster.token)
            for gateway_id, base in cluster.apis.items()
        ]
    server = (
        build_http(
            settings,
            calls,
            twilio,
            sip,
            metrics,
            twilio_http_client=twilio_http_client,
            webrtc=webrtc,
            asterisk=asterisk,
            events=events,
        )
        if serve_http
        else None
    )
    gateway = Gateway(settings, calls, sip, voice, twilio, server, metrics, webhooks)
    gateway.webrtc = webrtc
    gateway.asterisk = asterisk
    gateway.events = events
    return gateway


class _WebRtcSession:
    """A SIP-signalled WebRTC session (transports.sip.webrtc_calls.BrowserSession)."""

    def __init__(self, webrtc: WebRtcTransport, session_id: str, answer: str) -> None:
        self.webrtc = webrtc
        self.session_id = session_id
        self.answer_sdp = answer
        self._session = webrtc.sessions.get(session_id)

    async def wait_ended(self) -> str:
        session = self._session
        if session is None or session.task is None:
            return ""
        await asyncio.wait([session.task])  # never cancels the session from here
        return session.leg.end_reason if session.leg is not None else ""

    async def hang_up(self, reason: str) -> None:
        await self.webrtc.hangup(self.session_id, reason)


class WebRtcForSip:
    """The WebRTC transport as the SIP transport's media for web phones
    (transports.sip.webrtc_calls.BrowserMedia): transports never import each other, so the
    composition root joins them."""

    def __init__(self, webrtc: WebRtcTransport) -> None:
        self.webrtc = webrtc

    async def answer(self, offer_sdp: str, info: LegInfo) -> _WebRtcSession:
        remote = info.ids.get("remote_addr", "")
        session_id, answer = await self.webrtc.offer(offer_sdp, info.local_user, remote, info)
        return _WebRtcSession(self.webrtc, session_id, answer)


def build_webrtc(settings: Settings, clock: Clock, calls: CallManager) -> WebRtcTransport | None:
    """The softphone's calls (`[webrtc]`); None when switched off."""
    w = settings.webrtc
    if not w.enabled:
        return None
    config = WebRtcConfig(
        ice_servers=parse_ice_servers(w.ice_servers),
        ice_username=w.ice_username,
        ice_credential=w.ice_credential,
    )
    return WebRtcTransport(clock, calls, config)
