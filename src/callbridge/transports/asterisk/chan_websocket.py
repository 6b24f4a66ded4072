"""chan_websocket as a transport: Asterisk dials out to our media WebSocket, each connection
becomes a call.

`Dial(WebSocket/<connection>)` (websocket_client.conf names our URL, e.g.
ws://host:8080/asterisk/media?agent=ROUTE) connects and sends MEDIA_START first
(chan_websocket.c:197-260). The web layer (api/asterisk.py) checks the credentials and
accepts the upgrade; this reads MEDIA_START (bounded in time), refuses formats we cannot
carry, asks the calls layer to admit the leg, and serves it until it ends. The route is the
URL's `agent` parameter, else the `[chan_websocket] route` setting ("" = the default agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from callbridge.asterisk import chan_websocket as cws
from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.transports.asterisk.chan_websocket_leg import (
    ChanWebSocketLeg,
    ChanWebSocketLegConfig,
    MediaSocket,
    format_rate,
)
from callbridge.transports.websocket import SocketClosed

__all__ = ["ChanWebSocketTransport", "read_media_start"]

log = logging.getLogger("callbridge.transports.asterisk.chan_websocket")

_CLOSE_REFUSED = 1008  # RFC 6455 §7.4.1 policy violation
_CLOSE_BUSY = 1013  # try again later


async def read_media_start(
    socket: MediaSocket, timeout: float
) -> tuple[cws.MediaStart, cws.ControlFormat]:
    """The first TEXT message, MEDIA_START, and the control format it came in (plain text or
    JSON: our commands must use the same). Raises ChanWebSocketError, TimeoutError or
    SocketClosed."""
    async with asyncio.timeout(timeout):
        while True:
            message = await socket.receive()
            if isinstance(message, bytes):
                continue  # audio before MEDIA_START carries nothing we can place
            fmt: cws.ControlFormat = "json" if message.lstrip()[:1] == "{" else "plain-text"
            ev = cws.parse_event(message, fmt)
            if isinstance(ev, cws.MediaStart):
                return ev, fmt
            raise cws.ChanWebSocketError(f"{type(ev).__name__} before MEDIA_START")


class ChanWebSocketTransport:
    def __init__(
        self,
        clock: Clock,
        acceptor: LegAcceptor,
        config: ChanWebSocketLegConfig | None = None,
        *,
        route: str = "",
        handshake_timeout: float = 5.0,
    ) -> None:
        self.clock = clock
        self.acceptor = acceptor
        self.config = config or ChanWebSocketLegConfig()
        self.route = route
        self.handshake_timeout = handshake_timeout
        self.accepting = True
        self.legs: set[ChanWebSocketLeg] = set()

    def stop_accepting(self) -> None:
        self.accepting = False

    async def handle(self, socket: MediaSocket, route: str | None = None, remote: str = "") -> None:
        """Serve one accepted connection until its call ends; never raises for the peer."""
        try:
            start, fmt = await read_media_start(socket, self.handshake_timeout)
            format_rate(start.format)
        except (cws.ChanWebSocketError, ValueError, TimeoutError, SocketClosed) as exc:
            event(log, "chan_websocket.refused", logging.WARNING, remote=remote,
                  reason=str(exc) or type(exc).__name__)  # fmt: skip
            await socket.close(_CLOSE_REFUSED)
            return
        name = self.route if route is None else route
        ids = {
            "asterisk_channel_id": start.channel_id,
            "asterisk_channel": start.channel,
            "ws_connection_id": start.connection_id,
            "format": start.format,
        }
        if remote:
            ids["remote_addr"] = remote
        info = LegInfo("chan_websocket", "inbound", name, start.channel, ids)
        try:
            if not self.accepting:
                raise Rejection(Rejection.UNAVAILABLE, "shutting down")
            self.acceptor.admit(info)
        except Rejection as rej:
            event(log, "call.rejected", transport="chan_websocket",
                  asterisk_channel_id=start.channel_id, user=name, reason=rej.kind)  # fmt: skip
            with contextlib.suppress(SocketClosed):
                await socket.send_text(cws.format_command(cws.Hangup(), fmt))
            busy = rej.kind != Rejection.NOT_FOUND
            await socket.close(_CLOSE_BUSY if busy else _CLOSE_REFUSED)
            return
        leg = ChanWebSocketLeg(socket, start, self.clock, info, self.config, control_format=fmt)
        self.legs.add(leg)
        try:
            self.acceptor.start(leg)
            await leg.wait_ended()
        finally:
            self.legs.discard(leg)
            leg.request_hangup("error")  # no-op once ended
            await leg.aclose()

    async def shutdown(self, grace: float) -> None:
        self.stop_accepting()
        legs = list(self.legs)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(leg.hangup("shutdown") for leg in legs))
