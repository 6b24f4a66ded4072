"""SIP over WebSocket (RFC 7118) in the SIP transport: the flows, the registrar and the web
phones' calls, behind the three calls the HTTP side makes per connection (api/sip_ws.py):
`open_flow`, `message` for each WebSocket message, `close_flow`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.sip.message import SipResponse
from callbridge.sip.ua import UserAgent
from callbridge.transports.background import Background
from callbridge.transports.sip.inbound import InboundGate
from callbridge.transports.sip.webrtc_calls import BrowserMedia, WsCalls
from callbridge.transports.sip.ws_flow import Flow, FlowEndpoint
from callbridge.transports.sip.ws_registrar import WsRegistrar

__all__ = ["SipOverWebSocket"]

log = logging.getLogger("callbridge.transports.sip.ws")


class SipOverWebSocket:
    def __init__(
        self,
        ua: UserAgent,
        endpoint: FlowEndpoint,
        gate: InboundGate,
        clock: Clock,
        *,
        background: Background,
        local_host_for: Callable[[str], str],
    ) -> None:
        self.endpoint = endpoint
        self.flows = endpoint.flows
        self.registrar = WsRegistrar(gate, clock, self._send)
        self.calls = WsCalls(
            ua, endpoint, self.flows, gate, background, local_host_for=local_host_for
        )
        endpoint.intercept = self.registrar.handle
        self.flows.on_close.append(self.registrar.flow_closed)

    @property
    def media(self) -> BrowserMedia | None:
        return self.calls.media

    @media.setter
    def media(self, media: BrowserMedia | None) -> None:
        """What answers web phones' WebRTC offers (the composition root sets it)."""
        self.calls.media = media

    def open_flow(self, remote: Addr, *, secure: bool = False) -> Flow:
        flow = self.flows.open(remote, secure=secure)
        event(log, "sip.ws_open", remote=flow.label, flow=flow.addr[0], secure=secure)
        return flow

    def message(self, data: bytes, flow: Flow) -> None:
        """One WebSocket message (one SIP message, RFC 7118 §4.2) from `flow`."""
        self.endpoint.from_flow(data, flow)

    def close_flow(self, flow: Flow) -> None:
        event(log, "sip.ws_closed", remote=flow.label, flow=flow.addr[0])
        self.flows.closed(flow)

    def real_host(self, host: str) -> str:
        """The peer's IP address for a flow's pseudo host (itself for a UDP peer's)."""
        return self.flows.real((host, 0))[0] if host.endswith(".invalid") else host

    async def shutdown(self, grace: float) -> None:
        await self.calls.shutdown(grace)
        for flow in self.flows.all():
            flow.close()

    def _send(self, message: SipResponse, flow: Flow) -> None:
        self.endpoint.send_to_flow(message, flow)
