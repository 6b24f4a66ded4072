"""The SIP transport: where the SIP user agent and RTP meet and become CallLegs.

Signalling (sip/), session descriptions (sdp/) and media (rtp/) know nothing of each other;
this module translates between them: an INVITE's SDP offer becomes RtpParams, an RtpSession
becomes the audio of a CallLeg.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from callbridge.core.clock import Clock
from callbridge.core.errors import ConfigError, TransportError
from callbridge.core.log import event
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.socket import NoFreePort, PortAllocator
from callbridge.sdp.offer_answer import (
    Codec,
    LocalMedia,
    NoCommonCodec,
    apply_answer,
    create_answer,
    create_offer,
)
from callbridge.sdp.session import SdpError
from callbridge.sdp.session import parse as parse_sdp
from callbridge.sip.access import InboundPolicy
from callbridge.sip.digest import DigestClient
from callbridge.sip.digest_server import AuthOutcome, DigestServer
from callbridge.sip.endpoint import SipEndpoint
from callbridge.sip.message import SipRequest
from callbridge.sip.overload import Guard, GuardConfig, Refusal
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded
from callbridge.sip.registration import (
    Action,
    RegistrationStatus,
    RegState,
    SendRegister,
    SipAccount,
    StatusChanged,
)
from callbridge.sip.registration import Registration as _Registration
from callbridge.sip.timers import TimerSettings
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
from callbridge.transports.dns import SipResolver
from callbridge.transports.sip_leg import SipLeg

log = logging.getLogger("callbridge.transports.sip")

Addr = tuple[str, int]
_REJECT_STATUS = {Rejection.NOT_FOUND: 404, Rejection.BUSY: 486, Rejection.UNAVAILABLE: 503}
_CODECS = {"PCMU": Codec("PCMU", 0), "PCMA": Codec("PCMA", 8)}


class CallFailed(TransportError):
    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"call failed: {status or ''} {reason}".strip())
        self.status = status
        self.reason = reason

    @property
    def result(self) -> str:
        """What a person would call it: busy, no_answer, rejected, unreachable or failed."""
        status = self.status
        if status in (486, 600):  # Busy Here, Busy Everywhere (RFC 3261 §21.4.24, §21.6.1)
            return "busy"
        if status in (408, 480, 487):  # our ring timeout, Temporarily Unavailable, cancelled
            return "no_answer"
        if status is not None and (status in (403, 404, 410, 603, 604) or 400 <= status < 500):
            return "rejected"
        if status is None and self.reason.startswith(("cannot resolve", "bad target")):
            return "unreachable"
        return "failed"


@dataclass(frozen=True, slots=True)
class SipTransportConfig:
    host: str = "0.0.0.0"
    port: int = 5060
    public_host: str = ""
    rtp_port_min: int = 10000
    rtp_port_max: int = 20000
    rtp_timeout: float = 30.0
    jitter: JitterConfig = JitterConfig()
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    user_agent: str = "callbridge"
    timers: TimerSettings = TimerSettings()
    accounts: tuple[SipAccount, ...] = ()  # provider accounts: registration, trunk credentials
    unregister_wait: float = 2.0  # shutdown waits at most this long for unREGISTER answers
    dns_servers: tuple[str, ...] = ()  # for SRV and address lookups; () = the system's
    inbound: InboundPolicy = InboundPolicy()  # source ACLs, routes that need digest auth
    auth: DigestServer | None = None  # the users those routes accept
    guard: GuardConfig = GuardConfig()  # admission limits, flood and guessing bans

    def __post_init__(self) -> None:
        names = [a.name for a in self.accounts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError("accounts", f"duplicate account names {duplicates}")


@dataclass(eq=False)
class _Registrar:
    """The asyncio side of one account's Registration: its next hop and its timer."""

    reg: _Registration
    dest: tuple[str, int] | None = None
    public_addr: tuple[str, int] | None = None  # what the registrar saw of us (NAT), logged
    timer: asyncio.TimerHandle | None = None
    unregistered: asyncio.Future[None] | None = field(default=None, repr=False)


async def _bounded(waits: Sequence[Awaitable[None]], timeout: float) -> None:
    if waits:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def local_address_towards(peer: str) -> str:
    """The source address the kernel would use to reach `peer` (a connected UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class SipTransport:
    def __init__(self, config: SipTransportConfig, clock: Clock, acceptor: LegAcceptor) -> None:
        self.config = config
        self.clock = clock
        self.acceptor = acceptor
        self.ports = PortAllocator(config.rtp_port_min, config.rtp_port_max)
        ident_host = config.public_host or config.host
        self.guard = Guard(config.guard)
        self.ua = UserAgent(
            LocalIdentity(ident_host, config.port, config.user_agent),
            config.timers,
            options_status=self._options_status,
            admission=self._admission,
        )
        self.endpoint = SipEndpoint(self.ua, clock, self._on_event, self.guard)
        self._overload_logged: dict[str, tuple[float, int]] = {}  # limit -> (last log, since)
        self._legs: dict[str, SipLeg] = {}
        # Inbound calls not yet confirmed by an ACK: what an INVITE flood leaves behind.
        self._unconfirmed: set[str] = set()
        self.resolver = SipResolver(config.dns_servers)
        self._pending_answer: dict[str, asyncio.Future[CallAnswered]] = {}
        # Outbound calls that want early media: the 183's SDP goes to this handler.
        self._early: dict[str, Callable[[bytes], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.accounts = {a.name: a for a in config.accounts}
        self._registrars = {
            a.name: _Registrar(
                _Registration(a, local_port=config.port, user_agent=config.user_agent)
            )
            for a in config.accounts
            if a.register
        }
        for registrar in self._registrars.values():
            registrar.reg.learn_address = not config.public_host  # an explicit address wins
        self._register_requests: dict[str, _Registrar] = {}  # UA request handle -> registrar
        self._closing = False
        # Listeners for registration changes (webhooks, metrics); called after the log line.
        self.on_registration: list[Callable[[RegistrationStatus], None]] = []

    @property
    def local_addr(self) -> tuple[str, int]:
        return self.endpoint.local_addr

    async def start(self) -> None:
        await self.endpoint.start(self.config.host, self.config.port)
        if self.config.port == 0:  # ephemeral port for tests: advertise the real one
            self.ua.local = LocalIdentity(
                self.ua.local.host, self.endpoint.local_addr[1], self.config.user_agent
            )
        event(log, "sip.listening", host=self.local_addr[0], port=self.local_addr[1],
              transport="udp", receive_buffer=self.endpoint.receive_buffer)  # fmt: skip
        for registrar in self._registrars.values():
            registrar.reg.local_port = self.ua.local.port
            self._spawn(self._register(registrar))
        if self.config.guard.max_loop_lag > 0:
            self._spawn(self._watch_load())

    async def _watch_load(self, period: float = 0.1) -> None:
        """Feed the guard how late the loop runs a timer: the lateness every call's 20 ms media
        tick suffers too. New calls are refused while it is high (sip/overload.py)."""
        while True:
            due = self.clock.now() + period
            await self.clock.sleep_until(due)
            self.guard.loop_lag_sample(self.clock.now() - due)

    def _options_status(self, req: SipRequest, source: Addr) -> OptionsAnswer:
        """§11.2: OPTIONS gets the answer an INVITE to the same user would get. A user-less
        Request-URI is a probe of this node (load balancers): 200. Where the route needs
        digest auth, an unauthenticated OPTIONS is challenged whether the route exists or not,
        so route names cannot be listed (svwar) without a password."""
        try:
            user = req.request_uri.user or ""
        except UriParseError:
            user = ""
        if not user:
            return 200, []
        if self.config.inbound.refusal(user, source[0]) is not None:
            return 403, []
        auth = self.config.auth
        if auth is not None and self.config.inbound.needs_auth(user):
            now = time.time()
            result = auth.check("OPTIONS", req.headers.get_all("Authorization"), now)
            if result.outcome is AuthOutcome.FAILED:
                self._auth_failed(source[0], result.username)
                return 403, []
            if result.outcome is not AuthOutcome.OK:
                stale = result.outcome is AuthOutcome.STALE
                return 401, [("WWW-Authenticate", c) for c in auth.challenges(now, stale=stale)]
        try:
            self.acceptor.admit(LegInfo(transport="sip", direction="inbound", local_user=user))
        except Rejection as rej:
            return _REJECT_STATUS.get(rej.kind, 480), []
        return 200, []

    def _admission(self, source: str, now: float) -> Refusal | None:
        """New calls: the guard's limits (a refusal becomes a stateless 503 in the UA)."""
        refusal = self.guard.admit_call(source, len(self._legs), now, len(self._unconfirmed))
        if refusal is not None:
            # One line per limit per second at most: a flood must not become a log flood.
            last, since = self._overload_logged.get(refusal.limit, (-1.0, 0))
            if now - last >= 1.0:
                event(log, "sip.overload", logging.WARNING, limit=refusal.limit,
                      reason=refusal.reason, refused=since + 1, source=source)  # fmt: skip
                self._overload_logged[refusal.limit] = (now, 0)
            else:
                self._overload_logged[refusal.limit] = (last, since + 1)
        return refusal

    def _auth_failed(self, source: str, user: str) -> None:
        self.guard.auth_failed(source, user, self.clock.now())
        self.endpoint.report_bans()

    def stop_accepting(self) -> None:
        self.ua.accepting = False

    async def shutdown(self, grace: float) -> None:
        """Hang up every live leg and remove our registrations (expires=0), wait (bounded) for
        both, close the socket."""
        self.stop_accepting()
        self._closing = True
        legs = list(self._legs.values())
        for leg in legs:
            leg.request_hangup("shutdown")
        unregistering = [self._unregister(r) for r in self._registrars.values()]
        await asyncio.gather(
            _bounded(unregistering, min(grace, self.config.unregister_wait)),
            _bounded([leg.wait_ended() for leg in legs], grace),
        )
        for registrar in self._registrars.values():
            self._apply(registrar, registrar.reg.abandon("no answer to the unREGISTER"))
            if registrar.timer is not None:
                registrar.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        self.endpoint.close()

    # ---- registrations -----------------------------------------------------------------------

    def registrations(self) -> list[RegistrationStatus]:
        """Every registering account's state, for the API and `callbridge doctor`."""
        return [r.reg.status() for r in self._registrars.values()]

    async def _register(self, registrar: _Registrar) -> None:
        """(Re)resolve the next hop, then register; a failure is retried by the core's timer."""
        reg = registrar.reg
        host, port = reg.account.hop
        try:
            dest = await self.resolver.resolve(host, port)
        except OSError as exc:
            if not self._closing:
                self._apply(registrar, reg.fail(self.clock.now(), f"cannot resolve {host}: {exc}"))
            return
        if self._closing:
            return
        registrar.dest = dest
        reg.local_host = self._local_host_for(registrar.dest[0])
        self._apply(registrar, reg.start(self.clock.now()))

    def _unregister(self, registrar: _Registrar) -> asyncio.Future[None]:
        """Send the unREGISTER; the future is done once the account is UNREGISTERED."""
        if registrar.timer is not None:
            registrar.timer.cancel()
            registrar.timer = None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        registrar.unregistered = done
        self._apply(registrar, registrar.reg.stop(self.clock.now()))
        return done

    def _apply(self, registrar: _Registrar, actions: list[Action]) -> None:
        public = registrar.reg.public_addr
        if public != registrar.public_addr:
            registrar.public_addr = public
            event(log, "sip.nat_detected" if public else "sip.nat_cleared",
                  account=registrar.reg.account.name,
                  local=f"{registrar.reg.local_host}:{registrar.reg.local_port}",
                  public=f"{public[0]}:{public[1]}" if public else "")  # fmt: skip
        for action in actions:
            match action:
                case SendRegister(request=request):
                    dest = registrar.dest
                    if dest is None:  # cannot happen: the core sends only after start()
                        continue
                    handle = ""

                    def send(
                        now: float, request: SipRequest = request, dest: Addr = dest
                    ) -> list[Output]:
                        nonlocal handle
                        handle, outs = self.ua.request(request, dest, now)
                        return outs

                    self.endpoint.run(send)
                    self._register_requests[handle] = registrar
                case StatusChanged(status=status):
                    self._log_registration(status)
                    for listener in self.on_registration:
                        try:
                            listener(status)
                        except Exception:
                            log.exception("sip.registration_listener_error")
                    done = registrar.unregistered
                    if status.state is RegState.UNREGISTERED and done and not done.done():
                        done.set_result(None)
        self._arm_registration(registrar)

    def _arm_registration(self, registrar: _Registrar) -> None:
        if registrar.timer is not None:
            registrar.timer.cancel()
            registrar.timer = None
        deadline = registrar.reg.next_deadline()
        if deadline is not None and not self._closing:
            delay = max(0.0, deadline - self.clock.now())
            registrar.timer = asyncio.get_running_loop().call_later(
                delay, self._registration_due, registrar
            )

    def _registration_due(self, registrar: _Registrar) -> None:
        registrar.timer = None
        if registrar.reg.state is RegState.FAILED:
            self._spawn(self._register(registrar))  # resolve again: the provider may have moved
        else:
            self._apply(registrar, registrar.reg.poll(self.clock.now()))

    def _log_registration(self, status: RegistrationStatus) -> None:
        level = logging.WARNING if status.state is RegState.FAILED else logging.INFO
        now = self.clock.now()
        event(
            log,
            "sip.registration",
            level,
            account=status.account,
            state=status.state.value,
            aor=status.aor,
            registrar=status.registrar,
            reason=status.reason,
            status=status.status,
            expires=status.expires,
            retry_in=None if status.retry_at is None else round(status.retry_at - now, 1),
        )

    # ---- our address towards a peer --------------------------------------------------------

    def _local_host_for(self, peer_ip: str) -> str:
        if self.config.public_host:
            return self.config.public_host
        for registrar in self._registrars.values():
            # Behind NAT, a provider reaches us at the address its registrar saw (RFC 3581).
            public = registrar.reg.public_addr
            if public is not None and registrar.dest is not None and registrar.dest[0] == peer_ip:
                return public[0]
        if not _is_wildcard(self.config.host):
            return self.config.host
        return local_address_towards(peer_ip)

    def _rtp_bind_host(self) -> str:
        return self.config.host if not _is_wildcard(self.config.host) else "0.0.0.0"

    def local_media(self, host: str, port: int) -> LocalMedia:
        return LocalMedia(
            address=host, port=port, codecs=tuple(_CODECS[c] for c in self.config.codecs)
        )

    def _new_leg(self, ua_call: str, info: LegInfo, local_host: str) -> SipLeg:
        leg = SipLeg(
            ua_call=ua_call,
            info=info,
            transport=self,
            clock=self.clock,
            ports=self.ports,
            bind_host=self._rtp_bind_host(),
            local_host=local_host,
            jitter=self.config.jitter,
            rtp_timeout=self.config.rtp_timeout,
        )
        self._legs[ua_call] = leg
        return leg

    def forget(self, leg: SipLeg) -> None:
        self._legs.pop(leg.ua_call, None)
        self._unconfirmed.discard(leg.ua_call)

    # ---- events from the UA -------------------------------------------------------------------

    def _on_event(self, out: Output) -> None:
        match out:
            case IncomingCall():
                self._spawn(self._incoming(out))
            case CallConfirmed(call=cid, sdp=sdp):
                self._unconfirmed.discard(cid)
                leg = self._legs.get(cid)
                if leg is not None:
                    leg.confirmed(sdp)
            case ReInvite(call=cid, request=req):
                leg = self._legs.get(cid)
                if leg is None:
                    self.endpoint.run(
                        lambda now: self.ua.answer_reinvite(cid, None, now, status=481)
                    )
                else:
                    leg.reinvite(req.body if req.content_type == "application/sdp" else b"")
            case CallAnswered(call=cid):
                fut = self._pending_answer.pop(cid, None)
                if fut is not None and not fut.done():
                    fut.set_result(out)
            case CallProgress(call=cid, status=status, reason=reason, sdp=sdp):
                leg = self._legs.get(cid)
                if leg is not None:
                    event(
                        log,
                        "call.progress",
                        call_id=leg.info.ids.get("call_id"),
                        status=status,
                        reason=reason,
                        early_media=bool(sdp),
                    )
                    early = self._early.get(cid)
                    if sdp and early is not None:
                        early(sdp)
            case CallEnded(call=cid, reason=reason, status=status, detail=detail):
                fut = self._pending_answer.pop(cid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(CallFailed(status, detail or reason))
                leg = self._legs.get(cid)
                if leg is not None:
                    leg.ended_by_signalling(reason, status)
            case (
                TransferProgress(call=cid) | TransferSucceeded(call=cid) | TransferFailed(call=cid)
            ):
                leg = self._legs.get(cid)
                if leg is not None:
                    leg.transfer_event(out)
            case RequestCompleted(request=handle, response=response):
                registrar = self._register_requests.pop(handle, None)
                if registrar is not None:
                    now = self.clock.now()
                    reg = registrar.reg
                    actions = (
                        reg.on_timeout(now) if response is None else reg.on_response(response, now)
                    )
                    self._apply(registrar, actions)
            case _:
                pass

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("sip.task_failed", exc_info=exc)

    async def _incoming(self, ev: IncomingCall) -> None:
        cid, req = ev.call, ev.request
        try:
            user = req.request_uri.user or ""
        except UriParseError:
            user = ""
        info = LegInfo(
            transport="sip",
            direction="inbound",
            local_user=user,
            remote_uri=str(req.from_.uri),
            ids={
                "sip_call_id": req.call_id,
                "remote_tag": req.from_.tag or "",
                "remote_addr": f"{ev.source[0]}:{ev.source[1]}",
            },
        )
        if not self._admitted_by_policy(cid, req, user, ev.source[0], info):
            return
        try:
            self.acceptor.admit(info)
        except Rejection as rej:
            refused = _REJECT_STATUS.get(rej.kind, 480)
            event(log, "call.rejected", sip_call_id=req.call_id, user=user, status=refused,
                  reason=rej.kind)  # fmt: skip
            self.endpoint.run(lambda now: self.ua.reject(cid, refused, now))
            return
        local_host = self._local_host_for(ev.source[0])
        self.ua.set_local_host(cid, local_host)
        leg = self._new_leg(cid, info, local_host)
        self._unconfirmed.add(cid)
        status: int | None = 500
        reason = "internal error"
        sdp = b""
        try:
            sdp = await self._answer_offer(leg, req, local_host)
            status = None
        except SdpError as exc:
            status, reason = (488 if isinstance(exc, NoCommonCodec) else 400), str(exc)
        except NoFreePort as exc:
            status, reason = 503, str(exc)
        except Exception as exc:  # §8.2: every INVITE gets a final answer, whatever went wrong
            log.exception("call.setup_failed", extra={"fields": {"sip_call_id": req.call_id}})
            reason = f"internal error: {type(exc).__name__}"
        finally:
            if status is not None:  # also on cancellation: the RTP ports go back at once
                leg.close_media()
                self.forget(leg)
        if status is not None:
            event(log, "call.rejected", sip_call_id=req.call_id, status=status,
                  reason=reason[:200])  # fmt: skip
            self.endpoint.run(lambda now: self.ua.reject(cid, status, now))
            return
        info.ids.update(self.ua.sip_ids(cid))
        self.endpoint.run(lambda now: self.ua.ring(cid, now))
        self.endpoint.run(lambda now: self.ua.answer(cid, sdp, now))
        info.ids.update(self.ua.sip_ids(cid))
        self.acceptor.start(leg)

    async def _answer_offer(self, leg: SipLeg, req: SipRequest, local_host: str) -> bytes:
        """Open the leg's RTP ports and answer the INVITE's offer (or make ours, §13.2.1)."""
        port = await leg.open_media()
        local = self.local_media(local_host, port)
        if req.body:
            answer, plan = create_answer(parse_sdp(req.body), local)
            leg.apply_plan(plan)
            return bytes(answer)
        # §13.2.1: no offer in the INVITE, so the 2xx carries ours and the ACK answers
        leg.pending_offer = create_offer(local)
        return bytes(leg.pending_offer)

    def _admitted_by_policy(
        self, cid: str, req: SipRequest, user: str, source: str, info: LegInfo
    ) -> bool:
        """The ACLs, then digest auth where the route needs it; answers 403 / 401 if not."""
        policy = self.config.inbound
        refusal = policy.refusal(user, source)
        if refusal is not None:
            event(log, "call.rejected", logging.WARNING, sip_call_id=req.call_id, user=user,
                  status=403, reason=refusal)  # fmt: skip
            self.endpoint.run(lambda now: self.ua.reject(cid, 403, now))
            return False
        auth = self.config.auth
        if auth is None or not policy.needs_auth(user):
            return True
        now = time.time()  # nonces carry wall time: they outlive a restart's monotonic clock
        result = auth.check("INVITE", req.headers.get_all("Authorization"), now)
        if result.outcome is AuthOutcome.OK:
            info.ids["auth_user"] = result.username
            return True
        if result.outcome is AuthOutcome.FAILED:
            event(log, "call.auth_failed", logging.WARNING, sip_call_id=req.call_id, user=user,
                  auth_user=result.username, source=source, reason=result.reason)  # fmt: skip
            self.endpoint.run(lambda now: self.ua.reject(cid, 403, now))
            self._auth_failed(source, result.username)
            return False
        # §22.1: 401 with our challenges; the caller resends the INVITE with credentials.
        challenges = [
            ("WWW-Authenticate", c)
            for c in auth.challenges(now, stale=result.outcome is AuthOutcome.STALE)
        ]
        event(log, "call.challenged", sip_call_id=req.call_id, user=user,
              stale=result.outcome is AuthOutcome.STALE)  # fmt: skip
        self.endpoint.run(lambda t: self.ua.reject(cid, 401, t, extra_headers=challenges))
        return False

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
        bare number or user ("+15551234" -> sip:+15551234@domain)."""
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
        leg = self._new_leg("", info, local_host)
        port = await leg.open_media()
        offer = create_offer(self.local_media(local_host, port))
        fut: asyncio.Future[CallAnswered] = asyncio.get_running_loop().create_future()
        ua_call = ""

        def place(now: float) -> list[Output]:
            nonlocal ua_call
            ua_call, outs = self.ua.invite(
                uri,
                dest,
                bytes(offer),
                now,
                from_user=trunk.username if trunk is not None else from_user,
                local_host=local_host,
                from_uri=from_uri,
                route=trunk.route if trunk is not None else None,
                auth=DigestClient(trunk.auth_user, trunk.password) if trunk is not None else None,
            )
            return outs

        self.endpoint.run(place)
        self._legs.pop("", None)
        leg.ua_call = ua_call
        self._legs[ua_call] = leg
        self._pending_answer[ua_call] = fut
        info.ids.update(self.ua.sip_ids(ua_call))
        if on_leg is not None:
            on_leg(leg)
        if on_early_media is not None:

            def early(sdp: bytes, callback: Callable[[SipLeg], None] = on_early_media) -> None:
                if leg.early_media:
                    return  # a second 183: the media is already flowing
                try:
                    plan = apply_answer(offer, parse_sdp(sdp))
                except SdpError as exc:
                    event(log, "call.early_media_refused", logging.WARNING, reason=str(exc))
                    return
                leg.apply_plan(plan)
                leg.start_early_media()
                callback(leg)

            self._early[ua_call] = early
        try:
            async with asyncio.timeout(timeout):
                answered = await fut
        except TimeoutError:
            self._early.pop(ua_call, None)
            self.endpoint.run(lambda now: self.ua.hangup(ua_call, now))
            leg.stop_early_media("no_answer")
            leg.close_media()
            self.forget(leg)
            raise CallFailed(408, "no answer") from None
        except CallFailed:
            self._early.pop(ua_call, None)
            leg.stop_early_media("failed")
            leg.close_media()
            self.forget(leg)
            raise
        self._early.pop(ua_call, None)
        try:
            plan = apply_answer(offer, parse_sdp(answered.response.body))
        except SdpError as exc:
            self.endpoint.run(lambda now: self.ua.hangup(ua_call, now))
            leg.close_media()
            self.forget(leg)
            raise CallFailed(488, f"unusable SDP answer: {exc}") from None
        info.ids.update(self.ua.sip_ids(ua_call))
        leg.apply_plan(plan)
        return leg


__all__ = [
    "CallFailed",
    "RegistrationStatus",
    "SipAccount",
    "SipLeg",
    "SipTransport",
    "SipTransportConfig",
]
