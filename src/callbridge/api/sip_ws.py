"""SIP over WebSocket (RFC 7118) at `/sip` on the gateway's HTTP server: `ws://HOST:PORT/sip`.

Only the handshake and the socket are here; SIP is the SIP transport's (transports.sip.ws_sip):
each accepted connection becomes a flow, each WebSocket message one SIP message for it.

- RFC 7118 §4.1: the client must ask for the `sip` subprotocol and we must answer with it; a
  handshake without it is refused (closed before it is accepted: HTTP 403).
- §4.2: one SIP message per WebSocket message, text (UTF-8) or binary; a message over
  MAX_FRAME_BYTES closes the connection (1009). uvicorn refuses a bigger frame before
  buffering it (`ws_max_size`, api/server.py).
- Authentication: SIP's own (digest and ACLs, as for UDP SIP), not the API token, which a
  browser's WebSocket cannot send; the path is open in api/app.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.core.log import event
from callbridge.transports.sip.transport import SipTransport
from callbridge.transports.sip.ws_flow import MAX_FRAME_BYTES, Flow

__all__ = ["SIP_WS_PATH", "SUBPROTOCOL", "sip_ws_routes"]

log = logging.getLogger("callbridge.api.sip_ws")

SIP_WS_PATH = "/sip"
SUBPROTOCOL = "sip"  # RFC 7118 §4.1 (IANA WebSocket Subprotocol Name Registry)


async def _write(ws: WebSocket, flow: Flow) -> None:
    """The flow's only writer: messages in order, then the close it asks for."""
    try:
        while (data := await flow.outbox.get()) is not None:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                await ws.send_bytes(data)  # §4.2: binary for what is not UTF-8
            else:
                await ws.send_text(text)
        await ws.close(1000)
    except (WebSocketDisconnect, RuntimeError, OSError):
        flow.close()  # the peer went away under us; the reader reports the end


def sip_ws_routes(sip: SipTransport | None) -> list[BaseRoute]:
    async def endpoint(ws: WebSocket) -> None:
        offered = [p.strip() for p in ws.scope.get("subprotocols", [])]
        remote = (ws.client.host, ws.client.port) if ws.client else ("", 0)
        if SUBPROTOCOL not in offered:
            event(log, "sip.ws_refused", logging.WARNING, remote=f"{remote[0]}:{remote[1]}",
                  reason="no 'sip' subprotocol", offered=",".join(offered)[:100])  # fmt: skip
            await ws.close(1002)  # before accept: the handshake fails with 403
            return
        if sip is None:
            await ws.close(1013)
            return
        await ws.accept(subprotocol=SUBPROTOCOL)
        flow = sip.ws.open_flow(remote, secure=ws.url.scheme == "wss")
        writer = asyncio.get_running_loop().create_task(_write(ws, flow), name="sip-ws-writer")
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("bytes")
                if data is None:
                    data = (msg.get("text") or "").encode("utf-8")
                if len(data) > MAX_FRAME_BYTES:
                    event(log, "sip.ws_too_large", logging.WARNING, remote=flow.label,
                          size=len(data))  # fmt: skip
                    flow.close()
                    break
                sip.ws.message(data, flow)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sip.ws.close_flow(flow)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer  # sends the close the flow asked for
            writer.cancel()

    return [WebSocketRoute(SIP_WS_PATH, endpoint)]
