"""Asterisk's side of the HTTP server: the chan_websocket media endpoint.

chan_websocket (Asterisk 22.6+/23) dials out to the URL in websocket_client.conf; it
authenticates with HTTP Basic (that file's username/password), never with our API token, so
these routes check `[chan_websocket] username/password` themselves (the bearer guard lets
/asterisk/ through, like Twilio's routes). Refused before the accept, the upgrade gets 403.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
from dataclasses import dataclass, field

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.core.log import event
from callbridge.transports.asterisk.chan_websocket import ChanWebSocketTransport
from callbridge.transports.websocket import SocketClosed

__all__ = ["ASTERISK_MEDIA_PATH", "ASTERISK_PREFIX", "AsteriskWebConfig", "asterisk_routes"]

log = logging.getLogger("callbridge.api.asterisk")

ASTERISK_PREFIX = "/asterisk/"
ASTERISK_MEDIA_PATH = "/asterisk/media"


@dataclass(frozen=True, slots=True)
class AsteriskWebConfig:
    username: str = ""  # "" = no credentials asked
    password: str = field(default="", repr=False)


class WebSocketMedia:
    """A starlette WebSocket as a chan_websocket leg's MediaSocket."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._closed = False

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def _send(self, message: str | bytes) -> None:
        if self._closed:
            raise SocketClosed
        try:
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            else:
                await self.ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
            raise SocketClosed from None

    async def receive(self) -> str | bytes:
        if self._closed:
            raise SocketClosed
        try:
            message = await self.ws.receive()
        except RuntimeError:
            self._closed = True
            raise SocketClosed from None
        if message["type"] == "websocket.disconnect":
            self._closed = True
            raise SocketClosed(message.get("code"), message.get("reason") or "")
        text = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.close(code, reason)


def _authorised(ws: WebSocket, config: AsteriskWebConfig) -> bool:
    if not config.username:
        return True
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{config.username}:{config.password}".encode()
    return hmac.compare_digest(given, expected)


def asterisk_routes(
    config: AsteriskWebConfig, transport: ChanWebSocketTransport | None
) -> list[BaseRoute]:
    async def media(ws: WebSocket) -> None:
        remote = f"{ws.client.host}:{ws.client.port}" if ws.client else ""
        if not _authorised(ws, config):
            event(log, "chan_websocket.refused", logging.WARNING, remote=remote,
                  reason="wrong or missing credentials")  # fmt: skip
            await ws.close(1008)
            return
        if transport is None:
            await ws.close(1013)
            return
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=offered[0] if offered else None)
        route = ws.query_params.get("agent")
        await transport.handle(WebSocketMedia(ws), route, remote)

    return [WebSocketRoute(ASTERISK_MEDIA_PATH, media)]
