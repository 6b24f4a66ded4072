"""Calls from web phones: an INVITE over a WebSocket flow (RFC 7118) whose SDP is a WebRTC
offer (ICE candidates, DTLS fingerprint, `a=setup`, rtcp-mux, RTP/SAVPF; RFC 8829, RFC 8834)
becomes a WebRTC leg on the route the Request-URI names, like a UDP INVITE's RTP leg.

The SIP transport cannot make WebRTC media itself (transports never import each other): the
composition root hands it a `BrowserMedia`, which answers the offer and puts the leg on the
calls layer once ICE and DTLS are up (gateway.py fills it from transports.webrtc). Here the
signalling is the same as for UDP calls: the inbound gate (ACL, digest), 180 and a 200 with
the answer SDP, the dialog's BYE from either side; CANCEL before the answer ends the
half-made media session. A closed connection ends its calls (the BYE could not be delivered;
the leg's end reason is `remote_hangup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from callbridge.core.errors import TransportError
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, Rejection
from callbridge.sip.message import SipRequest
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded
from callbridge.sip.ua import (
    CallConfirmed,
    CallEnded,
    IncomingCall,
    Output,
    ReInvite,
    UserAgent,
)
from callbridge.transports.background import Background
from callbridge.transports.sip.inbound import REJECT_STATUS, InboundGate, request_user
from callbridge.transports.sip.ws_flow import Flow, FlowEndpoint, Flows, is_flow_addr

__all__ = ["BrowserMedia", "BrowserSession", "WsCalls"]

log = logging.getLogger("callbridge.transports.sip.ws")


class BrowserSession(Protocol):
    """One answered WebRTC offer: its leg reaches the calls layer when connected."""

    @property
    def answer_sdp(self) -> str: ...

    async def wait_ended(self) -> str:
        """Until the media session is over; the leg's end reason ("" if it never connected)."""
        ...

    async def hang_up(self, reason: str) -> None:
        """The signalling ended the call (BYE, CANCEL, the connection closed, shutdown)."""
        ...


class BrowserMedia(Protocol):
    async def answer(self, offer_sdp: str, info: LegInfo) -> BrowserSession:
        """Answer a WebRTC offer for `info.local_user`'s route. Raises Rejection (no such
        route, busy, shutting down) or TransportError (an offer it cannot answer)."""
        ...


@dataclass(slots=True, eq=False)
class _WsCall:
    cid: str  # the UA's call id
    flow: Flow
    info: LegInfo
    session: BrowserSession | None = None
    sip_ended: bool = False  # the dialog is over (BYE, CANCEL, the flow closed)
    watcher: asyncio.Task[None] | None = None

    def over(self) -> bool:
        """The dialog ended (read after an await: a CANCEL may have come meanwhile)."""
        return self.sip_ended


class WsCalls:
    """The UA's calls whose INVITE came over a WebSocket flow."""

    def __init__(
        self,
        ua: UserAgent,
        endpoint: FlowEndpoint,
        flows: Flows,
        gate: InboundGate,
        background: Background,
        *,
        local_host_for: Callable[[str], str] = lambda ip: "",
    ) -> None:
        self.ua = ua
        self.local_host_for = local_host_for  # our address towards a peer, for our Contact
        self.endpoint = endpoint
        self.flows = flows
        self.gate = gate
        self._background = background
        self.media: BrowserMedia | None = None  # set by the composition root
        self.calls: dict[str, _WsCall] = {}
        flows.on_close.append(self._flow_closed)

    def __len__(self) -> int:
        return len(self.calls)

    def handle(self, out: Output) -> bool:
        """Take the UA's events about WebSocket calls; False: not one of ours."""
        match out:
            case IncomingCall(source=source) if is_flow_addr(source):
                self._arrived(out)
                return True
            case CallEnded(call=cid, reason=reason) if cid in self.calls:
                self._sip_ended(self.calls[cid], reason)
                return True
            case ReInvite(call=cid) if cid in self.calls:
                # A re-INVITE would renegotiate ICE/DTLS; web phones send one for hold only.
                self.endpoint.run(lambda now: self.ua.answer_reinvite(cid, None, now, status=488))
                return True
            case (
                CallConfirmed(call=cid)
                | TransferProgress(call=cid)
                | TransferSucceeded(call=cid)
                | TransferFailed(call=cid)
            ) if cid in self.calls:
                return True
        return False

    # ---- an INVITE from a flow ----------------------------------------------------------------

    def _arrived(self, ev: IncomingCall) -> None:
        """Entered at once, not when its task runs: a CANCEL (or the connection's end) in
        between must find the call."""
        cid, req = ev.call, ev.request
        flow = self.flows.get(ev.source)
        if flow is None:  # the connection closed already: nowhere to answer
            self._hangup(cid)
            return
        info = LegInfo(
            transport="wss" if flow.secure else "ws",
            direction="inbound",
            local_user=request_user(req),
            remote_uri=str(req.from_.uri),
            ids={
                "sip_call_id": req.call_id,
                "remote_tag": req.from_.tag or "",
                "remote_addr": flow.label,
            },
        )
        call = self.calls[cid] = _WsCall(cid, flow, info)
        self._background.spawn(self._incoming(call, req))

    def _refuse(
        self,
        call: _WsCall,
        status: int,
        reason: str | None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.calls.pop(call.cid, None)
        if call.sip_ended:  # CANCELled meanwhile: the UA answered 487 already
            return
        self.endpoint.run(
            lambda now: self.ua.reject(call.cid, status, now, reason, extra_headers=headers)
        )

    async def _incoming(self, call: _WsCall, req: SipRequest) -> None:
        cid, flow, info, user = call.cid, call.flow, call.info, call.info.local_user
        refused = self.gate.check_invite(req, user, flow.remote[0], info)
        if refused is not None:
            self._refuse(call, refused.status, None, refused.headers)
            if refused.failed_user is not None:
                self.gate.auth_failed(flow.remote[0], refused.failed_user)
            return
        media = self.media
        if media is None:
            self._refuse(call, 488, "WebRTC media is switched off")
            return
        if req.content_type != "application/sdp" or not req.body:
            # RFC 3264 §5: an offerless INVITE wants our offer; a browser always sends its own.
            self._refuse(call, 488, "An SDP offer is required")
            return
        if call.sip_ended:  # CANCELled before we began: nothing to set up (§9.2)
            self.calls.pop(cid, None)
            event(log, "sip.ws_call_cancelled", sip_call_id=req.call_id, user=user)
            return
        try:
            session = await media.answer(req.body.decode("utf-8", "replace"), info)
        except Rejection as rej:
            self._failed(call, REJECT_STATUS.get(rej.kind, 480), rej.kind)
            return
        except TransportError as exc:  # the offer: not WebRTC audio we can answer
            self._failed(call, 488, str(exc))
            return
        except Exception as exc:  # RFC 3261 §8.2: every INVITE gets a final answer
            log.exception("call.setup_failed", extra={"fields": {"sip_call_id": req.call_id}})
            self._failed(call, 500, f"internal error: {type(exc).__name__}")
            return
        call.session = session
        if call.over():  # CANCELled (or the flow closed) while ICE gathered: §9.2
            event(log, "sip.ws_call_cancelled", sip_call_id=req.call_id, user=user)
            await session.hang_up("cancelled")
            self.calls.pop(cid, None)
            return
        if local_host := self.local_host_for(flow.remote[0]):
            self.ua.set_local_host(cid, local_host)
        info.ids.update(self.ua.sip_ids(cid))
        self.endpoint.run(lambda now: self.ua.ring(cid, now))
        self.endpoint.run(lambda now: self.ua.answer(cid, session.answer_sdp.encode(), now))
        info.ids.update(self.ua.sip_ids(cid))
        event(log, "sip.ws_call_answered", sip_call_id=req.call_id, user=user,
              remote=flow.label)  # fmt: skip
        call.watcher = self._background.spawn(self._watch(call, session))

    def _failed(self, call: _WsCall, status: int, reason: str) -> None:
        event(log, "call.rejected", sip_call_id=call.info.ids.get("sip_call_id", ""),
              transport=call.info.transport, status=status, reason=reason[:200])  # fmt: skip
        self._refuse(call, status, reason[:100])

    async def _watch(self, call: _WsCall, session: BrowserSession) -> None:
        """The media session ended: if the dialog is still up, it was our side (the agent
        hung up, media timeout, ICE never connected): BYE over the flow."""
        try:
            reason = await session.wait_ended()
        finally:
            self.calls.pop(call.cid, None)
        if not call.sip_ended:
            call.sip_ended = True
            event(log, "sip.ws_call_hangup", sip_call_id=call.info.ids.get("sip_call_id", ""),
                  reason=reason or "not_connected")  # fmt: skip
            self._hangup(call.cid)

    def _hangup(self, cid: str) -> None:
        self.endpoint.run(lambda now: self.ua.hangup(cid, now))

    # ---- the dialog ends ----------------------------------------------------------------------

    def _sip_ended(self, call: _WsCall, reason: str, leg_reason: str | None = None) -> None:
        if call.sip_ended:
            return
        call.sip_ended = True
        session = call.session
        if session is not None:  # else _incoming sees sip_ended once the answer is ready
            self._background.spawn(session.hang_up(leg_reason or reason))

    def _flow_closed(self, flow: Flow) -> None:
        """RFC 7118 §5: the connection was the only way to the phone; its calls are over. The
        UA's dialog ends too (its BYE goes nowhere: the flow is gone)."""
        for call in [c for c in self.calls.values() if c.flow is flow]:
            self._sip_ended(call, "remote_hangup", "remote_hangup")
            self._hangup(call.cid)

    async def shutdown(self, grace: float) -> None:
        """BYE every call (while the flows are still open) and end its media, bounded."""
        calls = list(self.calls.values())
        for call in calls:
            if not call.sip_ended:
                call.sip_ended = True
                self._hangup(call.cid)
                if call.session is not None:
                    self._background.spawn(call.session.hang_up("shutdown"))
        watchers = [c.watcher for c in calls if c.watcher is not None]
        if watchers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.wait(watchers)
