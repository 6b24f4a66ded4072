"""Settings -> the Asterisk transports (docs/asterisk.md): the AudioSocket server, FastAGI on
top of it, the ARI controller and the chan_websocket media endpoint. One builder per
transport; `AsteriskTransports` starts and stops whichever are enabled, as one part of the
gateway. A sibling of the composition root (gateway.py), which calls `build_asterisk`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from starlette.routing import BaseRoute

from callbridge.api.asterisk import AsteriskWebConfig, asterisk_routes
from callbridge.config.settings import Settings
from callbridge.core.clock import Clock
from callbridge.core.ports import LegAcceptor
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.socket import PortAllocator
from callbridge.sip.access import parse_networks
from callbridge.transports.asterisk.ari import AriConfig, AriController
from callbridge.transports.asterisk.audiosocket import AudioSocketConfig, AudioSocketServer
from callbridge.transports.asterisk.chan_websocket import ChanWebSocketTransport
from callbridge.transports.asterisk.fastagi import FastAgiConfig, FastAgiServer

__all__ = [
    "AsteriskTransports",
    "build_ari",
    "build_asterisk",
    "build_audiosocket",
    "build_chan_websocket",
    "build_fastagi",
]


def build_audiosocket(
    settings: Settings, clock: Clock, calls: LegAcceptor
) -> AudioSocketServer | None:
    a = settings.audiosocket
    if not a.enabled:
        return None
    config = AudioSocketConfig(
        host=a.host, port=a.port, route=a.route, allow_from=parse_networks(a.allow_from)
    )
    return AudioSocketServer(config, clock, calls)


def build_fastagi(
    settings: Settings, audiosocket: AudioSocketServer | None
) -> FastAgiServer | None:
    f = settings.fastagi
    if not f.enabled or audiosocket is None:  # config.checks insists on both
        return None
    config = FastAgiConfig(
        host=f.host,
        port=f.port,
        allow_from=parse_networks(f.allow_from),
        audiosocket_address=f.audiosocket_address,
    )
    return FastAgiServer(config, audiosocket)


def build_ari(
    settings: Settings, clock: Clock, calls: LegAcceptor, ports: PortAllocator
) -> AriController | None:
    """ARI legs take their RTP ports from `ports`, the SIP transport's allocator: one range."""
    a, rtp = settings.ari, settings.rtp
    if not a.enabled:
        return None
    config = AriConfig(
        url=a.url,
        username=a.username,
        password=a.password,
        app=a.app,
        route=a.route,
        rtp_host=a.rtp_host,
        format=a.format,
        transfer_context=a.transfer_context,
        rtp_timeout=rtp.timeout,
        jitter=JitterConfig(min_delay=rtp.jitter_min_ms / 1000, max_delay=rtp.jitter_max_ms / 1000),
    )
    return AriController(config, clock, calls, ports)


def build_chan_websocket(
    settings: Settings, clock: Clock, calls: LegAcceptor
) -> ChanWebSocketTransport | None:
    c = settings.chan_websocket
    return ChanWebSocketTransport(clock, calls, route=c.route) if c.enabled else None


@dataclass(slots=True)
class AsteriskTransports:
    settings: Settings
    audiosocket: AudioSocketServer | None = None
    fastagi: FastAgiServer | None = None
    ari: AriController | None = None
    chan_websocket: ChanWebSocketTransport | None = None

    def web_routes(self) -> list[BaseRoute]:
        """The HTTP routes (chan_websocket's media endpoint), empty when it is off."""
        if self.chan_websocket is None:
            return []
        c = self.settings.chan_websocket
        return asterisk_routes(AsteriskWebConfig(c.username, c.password), self.chan_websocket)

    async def start(self) -> None:
        if self.audiosocket is not None:
            await self.audiosocket.start()
        if self.fastagi is not None:
            await self.fastagi.start()
        if self.ari is not None:
            self.ari.start()  # connects (and reconnects) in the background

    def stop_accepting(self) -> None:
        for part in (self.audiosocket, self.chan_websocket):
            if part is not None:
                part.stop_accepting()
        for other in (self.fastagi, self.ari):
            if other is not None:
                other.accepting = False

    async def shutdown(self, grace: float) -> None:
        self.stop_accepting()
        for part in (self.fastagi, self.audiosocket, self.ari, self.chan_websocket):
            if part is not None:
                with contextlib.suppress(Exception):  # one part's failure must not stop the rest
                    await part.shutdown(grace)


def build_asterisk(
    settings: Settings, clock: Clock, calls: LegAcceptor, ports: PortAllocator
) -> AsteriskTransports:
    audiosocket = build_audiosocket(settings, clock, calls)
    return AsteriskTransports(
        settings,
        audiosocket=audiosocket,
        fastagi=build_fastagi(settings, audiosocket),
        ari=build_ari(settings, clock, calls, ports),
        chan_websocket=build_chan_websocket(settings, clock, calls),
    )
