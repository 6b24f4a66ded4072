"""Twilio's side of the HTTP API: voice/SIP/status webhooks and the Media Streams WebSocket.

Every request must carry a valid X-Twilio-Signature, computed over the public URL (config:
Twilio signed the URL it called, which behind a proxy is not the one this server sees) plus
the path and query; an invalid one gets 403 and a `twilio.signature_rejected` log line that
says why. Twilio routes never use the API bearer token.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.core.log import event
from callbridge.transports.twilio.transport import TwilioTransport
from callbridge.transports.websocket import SocketClosed
from callbridge.twilio_streams import twiml
from callbridge.twilio_streams.signature import SIGNATURE_HEADER, verify

__all__ = [
    "MEDIA_PATH",
    "TwilioWebConfig",
    "WebSocketText",
    "media_stream_url",
    "public_url",
    "twilio_routes",
]

log = logging.getLogger("callbridge.api.twilio")

MEDIA_PATH = "/twilio/media"
_XML = "application/xml"


@dataclass(frozen=True, slots=True)
class TwilioWebConfig:
    public_url: str = ""  # https://host[/prefix] as Twilio calls it; "" = as requested
    auth_token: str = field(default="", repr=False)
    validate: bool = True
    sip_host: str = ""  # our SIP endpoint for <Dial><Sip>; "" = the host Twilio called
    sip_port: int = 5060


class WebSocketText:
    """A starlette WebSocket as the TextSocket a TwilioLeg talks over."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._closed = False

    async def send_text(self, text: str) -> None:
        if self._closed:
            raise SocketClosed
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
            raise SocketClosed from None

    async def receive_text(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except RuntimeError:
            raise SocketClosed from None
        if message["type"] == "websocket.disconnect":
            self._closed = True
            # 1009 here is the server refusing a frame over its ws_max_size (api/server.py).
            raise SocketClosed(message.get("code"), message.get("reason") or "")
        text = message.get("text")
        # A binary frame is handed on as bytes: the parser reports it as not Media Streams.
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.close(code, reason)


def public_url(conn: HTTPConnection, base: str) -> str:
    """The URL Twilio requested: the configured public base + this request's path and query
    (raw, as sent), or the URL as this server saw it when no base is configured."""
    if not base:
        return str(conn.url)
    if conn.scope["type"] == "websocket":
        base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
    raw = conn.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else conn.url.path
    query = conn.scope.get("query_string", b"").decode("latin-1")
    return base.rstrip("/") + path + (f"?{query}" if query else "")


def media_stream_url(base: str) -> str:
    """wss://<public host>/twilio/media for public base URL `base` (ws:// for plain http)."""
    root = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
    return root.rstrip("/") + MEDIA_PATH


def _check(
    conn: HTTPConnection,
    config: TwilioWebConfig,
    params: Sequence[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> bool:
    if not config.validate:
        return True
    url = public_url(conn, config.public_url)
    result = verify(
        config.auth_token, url, conn.headers.get(SIGNATURE_HEADER), params=params, body=body
    )
    if not result.ok:
        reason = result.reason
        if reason == "no auth token configured":
            reason += (
                " (set TWILIO_AUTH_TOKEN, or CALLBRIDGE_TWILIO_VALIDATE=false for local tests)"
            )
        event(
            log,
            "twilio.signature_rejected",
            logging.WARNING,
            path=conn.url.path,
            url=url,
            reason=reason,
            remote=conn.client.host if conn.client else "",
        )
    return result.ok


async def _signed_form(
    request: Request, config: TwilioWebConfig
) -> tuple[dict[str, str], Response | None]:
    """The webhook's parameters once its signature checks out, else a 403 response."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        ok = _check(request, config, body=body)
        pairs: list[tuple[str, str]] = []
    else:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        ok = _check(request, config, params=pairs)
    if not ok:
        return {}, PlainTextResponse("invalid Twilio signature", status_code=403)
    return dict(pairs), None


def twilio_routes(config: TwilioWebConfig, transport: TwilioTransport | None) -> list[BaseRoute]:
    async def voice(request: Request) -> Response:
        params, denied = await _signed_form(request, config)
        if denied is not None:
            return denied
        agent = request.query_params.get("agent", "agent")
        direction = "outbound" if params.get("Direction", "").startswith("outbound") else "inbound"
        document = twiml.connect_stream(
            media_stream_url(config.public_url or str(request.base_url)),
            {
                "agent": agent,
                "direction": direction,
                "from": params.get("From", ""),
                "to": params.get("To", ""),
            },
        )
        event(log, "twilio.voice", call_sid=params.get("CallSid", ""), agent=agent)
        return Response(document, media_type=_XML)

    async def sip(request: Request) -> Response:
        params, denied = await _signed_form(request, config)
        if denied is not None:
            return denied
        agent = request.query_params.get("agent", "agent")
        target = f"{config.sip_host or request.url.hostname}:{config.sip_port}"
        event(log, "twilio.sip", call_sid=params.get("CallSid", ""), agent=agent, target=target)
        return Response(twiml.dial_sip(f"sip:{agent}@{target}"), media_type=_XML)

    async def status(request: Request) -> Response:
        params, denied = await _signed_form(request, config)
        if denied is not None:
            return denied
        event(
            log,
            "twilio.status",
            call_sid=params.get("CallSid", ""),
            status=params.get("CallStatus", ""),
            direction=params.get("Direction", ""),
            duration=params.get("CallDuration", ""),
            sequence=params.get("SequenceNumber", ""),
        )
        return Response(status_code=204)

    async def media(ws: WebSocket) -> None:
        # Refused before the accept, the upgrade is answered 403.
        if not _check(ws, config):
            await ws.close(1008)
            return
        if transport is None:
            await ws.close(1013)
            return
        await ws.accept()
        remote = f"{ws.client.host}:{ws.client.port}" if ws.client else ""
        await transport.handle(WebSocketText(ws), remote=remote)

    return [
        Route("/twilio/voice", voice, methods=["POST"]),
        Route("/twilio/sip", sip, methods=["POST"]),
        Route("/twilio/status", status, methods=["POST"]),
        WebSocketRoute(MEDIA_PATH, media),
    ]
