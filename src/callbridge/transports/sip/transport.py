"""The SIP transport: where the SIP user agent and RTP meet and become CallLegs.

Signalling (sip/), session descriptions (sdp/) and media (rtp/) know nothing of each other;
this module routes the user agent's events to each call's SipDialog (transports.sip_dialog),
which asks the call's negotiator for offer/answer (transports.sip_media) and hands the plans
to its SipLeg. Registrations run beside it (transports.sip_registrations); who may call in
is decided in transports.sip_inbound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.rtp.socket import NoFreePort, PortAllocator, RtpSocket
from callbridge.sdp.offer_answer import Codec, MediaPlan
from callbridge.sip.access import caller_address
from callbridge.sip.digest import DigestClient
from callbridge.sip.endpoint import SipEndpoint
from callbridge.sip.message import SipRequest
from callbridge.sip.overload import Guard, Refusal
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded
from callbridge.sip.registration import RegistrationStatus, SipAccount
from callbridge.sip.ua import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    IncomingCall,
    LocalIdentity,
    OptionsAnswer,
    Output,
    ReInvite,
    RequestCompleted,
    UserAgent,
)
from callbridge.sip.uri import SipUri, UriParseError
from callbridge.transports.background import Background
from callbridge.transports.media_clock import for_clock
from callbridge.transports.sip.config import (
    CallFailed,
    SipTransportConfig,
    is_wildcard,
    local_address_towards,
)
from callbridge.transports.sip.dialog import SipDialog
from callbridge.transports.sip.dns import SipResolver
from callbridge.transports.sip.inbound import REJECT_STATUS, InboundGate, Refused, request_user
from callbridge.transports.sip.leg import Receiver, RtpWire, SipDialogHandle, SipLeg
from callbridge.transports.sip.media import Refuse, Reply, Unusable
from callbridge.transports.sip.registrations import SipRegistrations
from callbridge.transports.sip.ws_flow import FlowEndpoint, Flows
from callbridge.transports.sip.ws_sip import SipOverWebSocket

log = logging.getLogger("callbridge.transports.sip.transport")

_CODECS = {"PCMU": Codec("PCMU", 0), "PCMA": Codec("PCMA", 8)}


async def _bounded(waits: Sequence[Awaitable[None]], timeout: float) -> None:
    if waits:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)


class SipTransport:
    def __init__(self, config: SipTransportConfig, clock: Clock, acceptor: LegAcceptor) -> None:
        self.config = config
        self.clock = clock
        self.acceptor = acceptor
        self.ports = PortAllocator(config.rtp_port_min, config.rtp_port_max)
        self.guard = Guard(config.guard)
        self.ua = UserAgent(
            LocalIdentity(config.public_host or config.host, config.port, config.user_agent),
            config.timers,
            options_status=self._options_status,
            admission=self._admission,
        )
        # SIP over WebSocket (RFC 7118): each connection is a flow the UA sees as an address.
        endpoint = FlowEndpoint(self.ua, clock, self._on_event, self.guard, Flows())
        self.endpoint: SipEndpoint = endpoint
        self.gate = InboundGate(
            policy=config.inbound,
            auth=config.auth,
            acceptor=acceptor,
            guard=self.guard,
            clock=clock,
            report_bans=self.endpoint.report_bans,
        )
        self._background = Background(log, "sip.task_failed")
        # Each 100 ms sample of how late the media runs (seconds): metrics.
        self.on_media_lateness: list[Callable[[float], None]] = []
        # Web phones (RFC 7118): api/sip_ws.py hands each connection to `ws`.
        self.ws = SipOverWebSocket(
            self.ua,
            endpoint,
            self.gate,
            clock,
            background=self._background,
            local_host_for=self._local_host_for,
        )
        self.resolver = SipResolver(config.dns_servers)
        self.accounts = {a.name: a for a in config.accounts}
        self._codecs = tuple(_CODECS[c] for c in config.codecs)
        # Every call with a leg, by the UA's call id (the name the integration tests read).
        self._legs: dict[str, SipDialog] = {}
        # Inbound calls not yet confirmed by an ACK: what an INVITE flood leaves behind.
        self._unconfirmed: set[str] = set()
        self._pending_answer: dict[str, asyncio.Future[CallAnswered]] = {}
        self._registrations = SipRegistrations(
            config.accounts,
            clock=clock,
            resolver=self.resolver,
            send=self._send_request,
            local_host_for=self._local_host_for,
            local_port=config.port,
            user_agent=config.user_agent,
            learn_address=not config.public_host,  # an explicit address wins
        )

    @property
    def local_addr(self) -> tuple[str, int]:
        return self.endpoint.local_addr

    @property
    def on_registration(self) -> list[Callable[[RegistrationStatus], None]]:
        """Listeners for registration changes (webhooks, metrics); called after the log line."""
        return self._registrations.listeners

    async def start(self) -> None:
        await self.endpoint.start(self.config.host, self.config.port)
        if self.config.port == 0:  # ephemeral port for tests: advertise the real one
            self.ua.local = LocalIdentity(
                self.ua.local.host, self.endpoint.local_addr[1], self.config.user_agent
            )
        event(log, "sip.listening", host=self.local_addr[0], port=self.local_addr[1],
              transport="udp", receive_buffer=self.endpoint.receive_buffer)  # fmt: skip
        self._registrations.start(self.ua.local.port)
        self._background.spawn(self._watch_load())

    async def _watch_load(self, period: float = 0.1) -> None:
        """Measure how late the media runs, every `period`: while calls are up, how late the
        media clock's passes started (a pass longer than a tick delays the next: every call's
        audio is late); with none, how late the loop runs a timer. The guard refuses new
        calls while it is high (sip/overload.py, when `max_loop_lag` is on); the listeners
        (metrics) hear every sample. A timer's own lateness is no measure with calls up: it
        may wake just behind a pass over hundreds of legs that still ended in time."""
        media = for_clock(self.clock)
        guarded = self.config.guard.max_loop_lag > 0
        while True:
            due = self.clock.now() + period
            await self.clock.sleep_until(due)
            late = media.take_lateness()
            sample = late if late is not None else self.clock.now() - due
            if guarded:
                self.guard.loop_lag_sample(sample)
            for listener in self.on_media_lateness:
                listener(sample)

    def _options_status(self, req: SipRequest, source: Addr) -> OptionsAnswer:
        return self.gate.options_status(req, self.ws.flows.real(source))

    def _admission(self, source: str, now: float) -> Refusal | None:
        source = self.ws.real_host(source)  # rates count the peer, not its connection
        calls = len(self._legs) + len(self.ws.calls)
        return self.gate.admission(source, now, calls, len(self._unconfirmed))

    def stop_accepting(self) -> None:
        self.ua.accepting = False

    async def shutdown(self, grace: float) -> None:
        """Hang up every live leg and remove our registrations (expires=0), wait (bounded) for
        both, close the socket."""
        self.stop_accepting()
        legs = [dialog.leg for dialog in self._legs.values()]
        for leg in legs:
            leg.request_hangup("shutdown")
        await asyncio.gather(
            self._registrations.shutdown(min(grace, self.config.unregister_wait)),
            _bounded([leg.wait_ended() for leg in legs], grace),
            self.ws.shutdown(grace),
        )
        self._background.cancel()
        self.endpoint.close()

    def registrations(self) -> list[RegistrationStatus]:
        """Every registering account's state, for the API and `callbridge doctor`."""
        return self._registrations.statuses()

    def _send_request(self, request: SipRequest, dest: Addr) -> str:
        handle = ""

        def send(now: float) -> list[Output]:
            nonlocal handle
            handle, outs = self.ua.request(request, dest, now)
            return outs

        self.endpoint.run(send)
        return handle

    # ---- our address towards a peer --------------------------------------------------------

    def _local_host_for(self, peer_ip: str) -> str:
        if self.config.public_host:
            return self.config.public_host
        public = self._registrations.public_host(peer_ip)
        if public is not None:
            return public
        if not is_wildcard(self.config.host):
            return self.config.host
        return local_address_towards(peer_ip)

    def _rtp_bind_host(self) -> str:
        return self.config.host if not is_wildcard(self.config.host) else "0.0.0.0"

    # ---- the calls -----------------------------------------------------------------------------

    def _new_dialog(self, ua_call: str, info: LegInfo, local_host: str) -> SipDialog:
        """A call's dialog and leg; the caller enters it in `_legs` once it has a UA call."""

        def rtp_socket(on_rtp: Receiver, on_rtcp: Receiver) -> RtpWire:
            return RtpSocket(self.ports, on_rtp, on_rtcp)

        def leg(handle: SipDialogHandle) -> SipLeg:
            return SipLeg(
                info=info,
                dialog=handle,
                clock=self.clock,
                wire=rtp_socket,
                bind_host=self._rtp_bind_host(),
                jitter=self.config.jitter,
                rtp_timeout=self.config.rtp_timeout,
                name=ua_call,
            )

        return SipDialog(
            ua=self.ua,
            endpoint=self.endpoint,
            ua_call=ua_call,
            local_host=local_host,
            codecs=self._codecs,
            leg=leg,
            forget=self._forget,
        )

    def _forget(self, dialog: SipDialog) -> None:
        if self._legs.get(dialog.ua_call) is dialog:
            del self._legs[dialog.ua_call]
        self._unconfirmed.discard(dialog.ua_call)

    # ---- events from the UA -------------------------------------------------------------------

    def _on_event(self, out: Output) -> None:
        if self.ws.calls.handle(out):
            return
        match out:
            case IncomingCall():
                self._background.spawn(self._incoming(out))
            case CallConfirmed(call=cid, sdp=sdp):
                self._unconfirmed.discard(cid)
                if (dialog := self._legs.get(cid)) is not None:
                    dialog.confirmed(sdp)
            case ReInvite(call=cid, request=req):
                if (dialog := self._legs.get(cid)) is not None:
                    dialog.reinvite(req.body if req.content_type == "application/sdp" else b"")
                else:
                    self.endpoint.run(
                        lambda now: self.ua.answer_reinvite(cid, None, now, status=481)
                    )
            case CallAnswered(call=cid):
                fut = self._pending_answer.pop(cid, None)
                if fut is not None and not fut.done():
                    fut.set_result(out)
            case CallProgress(call=cid, status=status, reason=reason, sdp=sdp):
                if (dialog := self._legs.get(cid)) is not None:
                    dialog.progress(status, reason, sdp)
            case CallEnded(call=cid, reason=reason, status=status, detail=detail):
                fut = self._pending_answer.pop(cid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(CallFailed(status, detail or reason))
                if (dialog := self._legs.get(cid)) is not None:
                    dialog.ended(reason, status)
            case (
                TransferProgress(call=cid) | TransferSucceeded(call=cid) | TransferFailed(call=cid)
            ):
                if (dialog := self._legs.get(cid)) is not None:
                    dialog.transfer(out)
            case RequestCompleted(request=handle, response=response):
                self._registrations.completed(handle, response)
            case _:
                pass

    # ---- inbound -------------------------------------------------------------------------------

    def _refuse(self, cid: str, refused: Refused | Refuse) -> None:
        headers = refused.headers if isinstance(refused, Refused) else []
        status = refused.status
        self.endpoint.run(lambda now: self.ua.reject(cid, status, now, extra_headers=headers))

    async def _incoming(self, ev: IncomingCall) -> None:
        cid, req = ev.call, ev.request
        user = request_user(req)
        ids = {"sip_call_id": req.call_id, "remote_tag": req.from_.tag or ""}
        caller = caller_address(req.vias, ev.source, self.config.inbound.proxies)
        if caller is not None:  # through our own proxy: the record names the caller, and it
            ids["via_proxy"] = f"{ev.source[0]}:{ev.source[1]}"
        where = caller or ev.source
        ids["remote_addr"] = f"{where[0]}:{where[1]}"
        info = LegInfo(
            transport="sip", direction="inbound", local_user=user,
            remote_uri=str(req.from_.uri), ids=ids,
        )  # fmt: skip
        refused = self.gate.check_invite(req, user, ev.source[0], info)
        if refused is not None:
            self._refuse(cid, refused)
            if refused.failed_user is not None:
                self.gate.auth_failed(ev.source[0], refused.failed_user)
            return
        try:
            self.acceptor.admit(info)
        except Rejection as rej:
            status = REJECT_STATUS.get(rej.kind, 480)
            event(log, "call.rejected", sip_call_id=req.call_id, user=user, status=status,
                  reason=rej.kind)  # fmt: skip
            self._refuse(cid, Refused(status, []))
            return
        local_host = self._local_host_for(ev.source[0])
        self.ua.set_local_host(cid, local_host)
        dialog = self._new_dialog(cid, info, local_host)
        self._legs[cid] = dialog
        self._unconfirmed.add(cid)
        outcome: Reply | Refuse = Refuse(500, "internal error")
        try:
            media = await dialog.open_media()
            outcome = media.answer_invite(req.body)
        except NoFreePort as exc:
            outcome = Refuse(503, str(exc))
        except Exception as exc:  # RFC 3261 §8.2: every INVITE gets a final answer, whatever
            log.exception("call.setup_failed", extra={"fields": {"sip_call_id": req.call_id}})
            outcome = Refuse(500, f"internal error: {type(exc).__name__}")
        finally:
            if not isinstance(outcome, Reply):  # also on cancellation: the ports go back at once
                dialog.release()
        leg = dialog.leg
        if leg.ended:  # CANCELled while the ports opened (§9.2): the UA answered 487 already
            dialog.release()
            return
        if isinstance(outcome, Refuse):
            event(log, "call.rejected", sip_call_id=req.call_id, status=outcome.status,
                  reason=outcome.reason[:200])  # fmt: skip
            self._refuse(cid, outcome)
            return
        sdp, plan = outcome.sdp, outcome.plan
        if plan is not None:
            leg.apply_plan(plan)
        info.ids.update(self.ua.sip_ids(cid))
        # Answered at once, so no 180 first: a 180 sent in the same breath as the 200 says
        # nothing, and a proxy with several processes (Kamailio's UDP children) may deliver
        # it after the 200, which a strict caller (SIPp) takes for an error. RFC 3261 §13.3.1
        # lets a UAS answer without a provisional response (the transaction's 100 is sent).
        self.endpoint.run(lambda now: self.ua.answer(cid, sdp, now))
        info.ids.update(self.ua.sip_ids(cid))
        self.acceptor.start(leg)

    # ---- outbound -------------------------------------------------------------------------------

    async def call(
        self,
        target: str,
        *,
        from_user: str = "callbridge",
        account: str | None = None,
        timeout: float = 60.0,
        on_leg: Callable[[SipLeg], None] | None = None,
        on_early_media: Callable[[SipLeg], None] | None = None,
    ) -> SipLeg:
        """Place a call; returns the answered leg or raises CallFailed (with the SIP status).

        With `account`, the call goes through that trunk: to its outbound proxy or registrar,
        From its address-of-record, answering its 401/407 challenges; `target` may then be a
        bare number or user ("+15551234" -> sip:+15551234@domain).

        Whatever ends it before the answer (no answer, a failure, an unusable answer, the
        caller's cancellation) takes one path out: the UA call is hung up (CANCEL, or BYE
        after an answer), the leg ends, its RTP ports go back, its entry goes."""
        trunk: SipAccount | None = None
        if account is not None:
            trunk = self.accounts.get(account)
            if trunk is None:
                raise CallFailed(None, f"unknown account {account!r}")
            if ":" not in target:
                target = f"sip:{target}@{trunk.domain_host}"
        try:
            uri = SipUri.parse(target)
            from_uri = SipUri.parse(trunk.aor) if trunk is not None else None
        except UriParseError as exc:
            raise CallFailed(None, f"bad target URI {target!r}: {exc}") from None
        dest_host, dest_port = trunk.hop if trunk is not None else (uri.host.strip("[]"), uri.port)
        try:
            dest = await self.resolver.resolve(dest_host, dest_port)
        except OSError as exc:
            raise CallFailed(None, f"cannot resolve {dest_host}: {exc}") from None
        local_host = self._local_host_for(dest[0])
        info = LegInfo(
            transport="sip", direction="outbound", local_user=from_user, remote_uri=str(uri)
        )
        dialog = self._new_dialog("", info, local_host)
        answered = False
        reason = "failed"
        try:
            media = await dialog.open_media()
            offer = media.offer()

            def place(now: float) -> list[Output]:
                dialog.ua_call, outs = self.ua.invite(
                    uri,
                    dest,
                    offer,
                    now,
                    from_user=trunk.username if trunk is not None else from_user,
                    local_host=local_host,
                    from_uri=from_uri,
                    route=trunk.route if trunk is not None else None,
                    auth=DigestClient(trunk.auth_user, trunk.password) if trunk else None,
                )
                return outs

            self.endpoint.run(place)
            ua_call = dialog.ua_call
            self._legs[ua_call] = dialog
            fut = self._pending_answer[ua_call] = asyncio.get_running_loop().create_future()
            info.ids.update(self.ua.sip_ids(ua_call))
            if on_leg is not None:
                on_leg(dialog.leg)
            dialog.on_early = on_early_media
            try:
                async with asyncio.timeout(timeout):
                    answer = await fut
            except TimeoutError:
                reason = "no_answer"
                raise CallFailed(408, "no answer") from None
            dialog.on_early = None
            match media.final_answer(answer.response.body):
                case Unusable(error=error):
                    raise CallFailed(488, f"unusable SDP answer: {error}")
                case MediaPlan() as plan:
                    pass
            info.ids.update(self.ua.sip_ids(ua_call))
            dialog.leg.apply_plan(plan)
            answered = True
            return dialog.leg
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        finally:
            self._pending_answer.pop(dialog.ua_call, None)
            if not answered:
                dialog.abandon(reason)


__all__ = [
    "CallFailed",
    "RegistrationStatus",
    "SipAccount",
    "SipLeg",
    "SipTransport",
    "SipTransportConfig",
    "local_address_towards",
]
