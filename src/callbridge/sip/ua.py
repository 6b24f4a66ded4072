"""The SIP user agent core (RFC 3261 §8, §12-§15): calls on top of transactions and dialogs.

Sans-IO. Datagrams and API calls go in with `now`; datagrams to send and call events come out.
The asyncio shell (`sip/endpoint.py`) owns the socket and the timer; the application
(`transports/sip.py`) owns media and reacts to the events by calling the API methods here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from callbridge.sip.client_transaction import make_cancel
from callbridge.sip.dialog import Dialog
from callbridge.sip.digest import (
    AuthHeader,
    DigestClient,
    DigestError,
    UnsupportedChallenge,
    select_challenge,
    with_credentials,
)
from callbridge.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    Via,
    make_response,
    new_branch,
    new_tag,
    parse,
)
from callbridge.sip.overload import Refusal
from callbridge.sip.refer import (
    SIPFRAG,
    TRANSFER_TIMEOUT,
    Transfer,
    TransferFailed,
    TransferProgress,
    TransferSucceeded,
    refer_to_uri,
)
from callbridge.sip.timers import TimerSettings
from callbridge.sip.transaction import (
    CancelReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerTransaction,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    response_address,
    stamp_via,
)
from callbridge.sip.uri import NameAddr, SipUri, UriParseError
from callbridge.sip.validation import UasPolicy, check_request, reject_malformed

Addr = tuple[str, int]
# The answer to an out-of-dialog OPTIONS: a status and extra headers (a 401's challenges).
OptionsAnswer = tuple[int, list[tuple[str, str]]]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
_TX_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")


# ---- what comes out -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendDatagram:
    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE. The app must ring(), answer() or reject() it."""

    call: str
    request: SipRequest
    source: Addr


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived. `sdp` is the answer when our 2xx carried the offer (§13.2.1)."""

    call: str
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class CallProgress:
    call: str
    status: int
    reason: str
    # RFC 3261 §13.2.1 / RFC 3960: an SDP answer in a provisional (183) brings early media.
    sdp: bytes = b""


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """Our INVITE got a 2xx; the ACK has been sent."""

    call: str
    response: SipResponse


@dataclass(frozen=True, slots=True)
class ReInvite:
    """A target-refresh / hold / resume offer in the dialog. Answer with answer_reinvite()."""

    call: str
    request: SipRequest


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The dialog (or attempt) is over. `status` is the failure status for failed attempts."""

    call: str
    reason: str  # "remote_bye" | "local_bye" | "cancelled" | "rejected" | "failed" | "no_ack" | "timeout" | "auth_failed"
    status: int | None = None
    detail: str = ""  # for people: why authentication failed, for instance


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """The final response to a request sent with request(); None when it timed out (408)."""

    request: str
    response: SipResponse | None


Output = (
    SendDatagram
    | IncomingCall
    | CallConfirmed
    | CallProgress
    | CallAnswered
    | ReInvite
    | CallEnded
    | RequestCompleted
    | TransferProgress
    | TransferSucceeded
    | TransferFailed
)


class UaError(Exception):
    """An API call that does not fit the call's state (e.g. answering a cancelled call)."""


class _State(Enum):
    EARLY = "early"  # INVITE in progress
    CONFIRMED = "confirmed"  # 2xx sent/received
    ENDING = "ending"  # BYE sent, waiting
    ENDED = "ended"


@dataclass(slots=True)
class _Call:
    id: str
    role: str  # "uas" | "uac"
    invite: SipRequest
    peer: Addr  # where requests outside the route set go (source of the INVITE / target of ours)
    local_tag: str
    state: _State = _State.EARLY
    server_tx: ServerTransaction | None = None
    client_tx: ClientTransaction | None = None
    dialog: Dialog | None = None
    ack: SipRequest | None = None  # our ACK for a 2xx, resent on 2xx retransmissions (§13.2.2.4)
    reinvite_tx: ServerTransaction | None = None
    got_provisional: bool = False
    cancel_pending: bool = False
    bye_sent: bool = False  # §15.1.1: the session is over for us from here
    pending: list[ClientTransaction] = field(default_factory=list)
    local_host: str | None = None  # our address as seen on the path to this peer (Contact, Via)
    auth: DigestClient | None = None  # credentials for 401/407 on our INVITE
    credentials: dict[tuple[str, str], AuthHeader] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # nonces we answered
    challenges: int = 0
    transfer: Transfer | None = None  # our REFER in progress (or the last one, when done)


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """How we appear on the wire: the bound or advertised (NAT) address goes in Via/Contact."""

    host: str
    port: int
    user_agent: str = "callbridge"

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


class UserAgent:
    def __init__(
        self,
        local: LocalIdentity,
        timers: TimerSettings | None = None,
        policy: UasPolicy | None = None,
        options_status: Callable[[SipRequest, Addr], OptionsAnswer] | None = None,
        admission: Callable[[str, float], Refusal | None] | None = None,
    ) -> None:
        self.local = local
        # §11.2: OPTIONS gets the status an INVITE to the same user would get; the app knows
        # which users exist. A user-less Request-URI is a probe of this node.
        self.options_status = options_status or (lambda request, source: (200, []))
        # New calls: the overload control's verdict before any transaction or state exists.
        self.admission = admission
        self.layer = TransactionLayer(timers or TimerSettings())
        self.policy = policy or UasPolicy()
        self._calls: dict[str, _Call] = {}
        self._by_dialog: dict[tuple[str, str, str], _Call] = {}
        self._by_server_tx: dict[int, _Call] = {}
        self._by_client_tx: dict[int, _Call] = {}
        self._requests: dict[int, str] = {}  # out-of-dialog requests: id(tx) -> request()'s handle
        self._ids = itertools.count(1)
        self.accepting = True  # False during shutdown: new INVITEs get 503 (§21.5.4)
        self.transfer_timeout = TRANSFER_TIMEOUT
        # In a dialog with our REFER, NOTIFY (RFC 3515 §2.4.4) and its sipfrag body are
        # acceptable; elsewhere NOTIFY stays a method we do not take.
        self._notify_policy = replace(
            self.policy,
            allowed_methods=self.policy.allowed_methods | {"NOTIFY"},
            accepted_content_types=self.policy.accepted_content_types | {SIPFRAG},
        )
        self.bad_messages = 0

    # ---- inputs ---------------------------------------------------------------------------

    def receive(self, data: bytes, source: Addr, now: float) -> list[Output]:
        if not data.strip(b"\r\n"):  # RFC 5626 §3.5.1 CRLF keep-alive
            return []
        try:
            message = parse(data)
        except SipParseError as exc:
            self.bad_messages += 1
            reply = reject_malformed(data, exc)
            if reply is None:
                return []
            return [SendDatagram(bytes(reply), self._response_addr(reply, source))]
        if isinstance(message, SipRequest) and message.method != "ACK":
            stateless = self._unmatchable(message, source)
            if stateless is not None:
                return [stateless]
            refused = self._refused(message, source, now)
            if refused is not None:
                return refused
        sends, events = self.layer.receive(message, source, now)
        out: list[Output] = [self._wire(s) for s in sends]
        for ev in events:
            out.extend(self._on_event(ev, now))
        return out

    def _unmatchable(self, request: SipRequest, source: Addr) -> SendDatagram | None:
        """A request without the headers a transaction is keyed on gets a stateless 400
        (§8.2, RFC 4475 §3.3.1 'insuf') instead of being dropped by the transaction layer."""
        if all(name in request.headers for name in _TX_HEADERS):
            return None
        error = check_request(request, self.policy)
        if error is None or "Via" not in request.headers:
            return None
        self.bad_messages += 1
        return self._stateless(request, source, error)

    def _refused(self, request: SipRequest, source: Addr, now: float) -> list[Output] | None:
        """A new call that the admission control refuses gets a stateless 503 with Retry-After
        (§21.5.4; §8.2.7 stateless UAS): no transaction, no timer, no call state, no RTP port,
        so a flood of INVITEs costs a parse and one datagram each."""
        if self.admission is None or request.method != "INVITE" or not self.accepting:
            return None
        if self._to_tag(request) is not None or self.layer.has_server_transaction(request):
            return None  # in-dialog, or a retransmission of a call already admitted
        refusal = self.admission(source[0], now)
        if refusal is None:
            return None
        if refusal.silent:
            return []
        try:
            key = f"{request.call_id}|{request.vias[0].branch}".encode()
        except (SipParseError, UriParseError, IndexError):
            return None  # the transaction layer drops it as well
        # §8.2.7: a stateless UAS makes the To tag the same for every retransmission.
        tag = hashlib.blake2s(key, digest_size=8).hexdigest()
        response = make_response(
            request,
            refusal.status,
            to_tag=tag,
            headers=[("Retry-After", str(refusal.retry_after))],
        )
        reply = self._stateless(request, source, response)
        return [] if reply is None else [reply]

    @staticmethod
    def _stateless(request: SipRequest, source: Addr, response: SipResponse) -> SendDatagram | None:
        try:
            stamped = stamp_via(request, source)
            addr = response_address(stamped.vias[0], source)
        except (SipParseError, UriParseError, IndexError):
            return None
        response = SipResponse(
            response.status,
            response.reason,
            response.headers.set("Via", str(stamped.vias[0])),
            response.body,
        )
        return SendDatagram(bytes(response), addr)

    def poll(self, now: float) -> list[Output]:
        sends, events = self.layer.poll(now)
        out: list[Output] = [self._wire(s) for s in sends]
        for ev in events:
            out.extend(self._on_event(ev, now))
        for call in list(self._calls.values()):
            if call.transfer is not None:
                out.extend(call.transfer.on_timeout(now))
        return out

    def next_deadline(self) -> float | None:
        deadlines = [
            call.transfer.deadline
            for call in self._calls.values()
            if call.transfer is not None and not call.transfer.done
        ]
        layer = self.layer.next_deadline()
        if layer is not None:
            deadlines.append(layer)
        return min(deadlines, default=None)

    # ---- API: UAS --------------------------------------------------------------------------

    def ring(self, call_id: str, now: float) -> list[Output]:
        call = self._early_uas(call_id)
        assert call.server_tx is not None
        resp = make_response(
            call.invite, 180, to_tag=call.local_tag, headers=self._contact_hdr(call)
        )
        return self._respond(call.server_tx, resp, now)

    def set_local_host(self, call_id: str, host: str) -> None:
        """Our address towards this call's peer, when bound to a wildcard address."""
        self._calls[call_id].local_host = host

    def answer(self, call_id: str, sdp: bytes, now: float) -> list[Output]:
        """200 OK with our SDP (an answer, or an offer when the INVITE had none)."""
        call = self._early_uas(call_id)
        assert call.server_tx is not None
        resp = make_response(
            call.invite,
            200,
            to_tag=call.local_tag,
            headers=[
                *self._contact_hdr(call),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
            body=sdp,
        )
        dialog = Dialog.from_uas(call.invite, call.local_tag, self._contact(call))
        call.dialog = dialog
        call.state = _State.CONFIRMED
        self._by_dialog[dialog.id] = call
        return self._respond(call.server_tx, resp, now)

    def reject(
        self,
        call_id: str,
        status: int,
        now: float,
        reason: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> list[Output]:
        call = self._early_uas(call_id)
        assert call.server_tx is not None
        headers: list[tuple[str, str]] = list(extra_headers)  # e.g. WWW-Authenticate on a 401
        if status == 405:
            headers.append(("Allow", ALLOW))
        resp = make_response(call.invite, status, reason, to_tag=call.local_tag, headers=headers)
        out = self._respond(call.server_tx, resp, now)
        out.append(self._end(call, "rejected", status))
        return out

    def answer_reinvite(
        self, call_id: str, sdp: bytes | None, now: float, status: int = 200
    ) -> list[Output]:
        call = self._calls.get(call_id)
        if call is None or call.reinvite_tx is None:
            raise UaError(f"no re-INVITE pending on {call_id}")
        tx, call.reinvite_tx = call.reinvite_tx, None
        req = tx.request
        if status >= 300:
            return self._respond(tx, make_response(req, status), now)
        headers = [*self._contact_hdr(call), ("Allow", ALLOW)]
        if sdp is not None:
            headers.append(("Content-Type", "application/sdp"))
        return self._respond(tx, make_response(req, 200, headers=headers, body=sdp or b""), now)

    # ---- API: UAC --------------------------------------------------------------------------

    def invite(
        self,
        target: SipUri,
        dest: Addr,
        sdp: bytes,
        now: float,
        *,
        from_user: str = "callbridge",
        display_name: str | None = None,
        local_host: str | None = None,
        from_uri: SipUri | None = None,
        route: str | None = None,
        auth: DigestClient | None = None,
    ) -> tuple[str, list[Output]]:
        """Place a call (§8.1.1). `dest` is the resolved next hop (an IP literal and port).

        Through a trunk: `from_uri` is the account's address-of-record, `route` the preloaded
        Route to its outbound proxy (§8.1.2) and `auth` answers the trunk's 401/407 (§22.2)."""
        host = local_host or self.local.host
        me = LocalIdentity(host, self.local.port)
        call_id = f"{new_tag()}{next(self._ids)}@{host}"
        tag = new_tag()
        uri = from_uri or SipUri("sip", host, user=from_user, port=self.local.port)
        from_ = NameAddr(uri, display_name)
        routes = (("Route", route),) if route else ()
        headers = Headers(
            (
                ("Via", f"SIP/2.0/UDP {me.hostport};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                *routes,
                ("From", str(from_.with_tag(tag))),
                ("To", str(NameAddr(target))),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:{from_user}@{me.hostport}>"),
                ("Allow", ALLOW),
                ("User-Agent", self.local.user_agent),
                ("Content-Type", "application/sdp"),
            )
        )
        request = SipRequest("INVITE", str(target), headers, sdp)
        cid = self._new_call_id()
        call = _Call(cid, "uac", request, dest, tag, local_host=local_host, auth=auth)
        tx, sends = self.layer.send_request(request, dest, now)
        call.client_tx = tx
        self._calls[cid] = call
        self._by_client_tx[id(tx)] = call
        return cid, [self._wire(s) for s in sends]

    def request(self, request: SipRequest, dest: Addr, now: float) -> tuple[str, list[Output]]:
        """Send an out-of-dialog non-INVITE request (REGISTER...) in its own client transaction;
        its final response comes back as RequestCompleted with the returned handle."""
        tx, sends = self.layer.send_request(request, dest, now)
        handle = f"r{next(self._ids)}"
        self._requests[id(tx)] = handle
        return handle, [self._wire(s) for s in sends]

    # ---- API: both -------------------------------------------------------------------------

    def refer_target(self, call_id: str, target: str) -> str:
        """The Refer-To URI for `target` in this call: a bare user or number goes to the peer's
        host (its From/To URI). Raises ValueError for an unusable target."""
        call = self._calls.get(call_id)
        if call is None or call.dialog is None:
            raise UaError(f"call {call_id} has no dialog")
        remote = call.dialog.remote_uri.uri
        peer = remote if isinstance(remote, SipUri) else call.dialog.remote_target
        return refer_to_uri(target, peer)

    def refer(self, call_id: str, refer_to: str, now: float) -> list[Output]:
        """Blind transfer (RFC 3515): ask the peer to call `refer_to` (see refer_target). The
        outcome comes back as TransferProgress / TransferSucceeded / TransferFailed; the call
        itself is untouched (the app hangs up after success, RFC 5589 §6.1)."""
        call = self._calls.get(call_id)
        if call is None or call.state is not _State.CONFIRMED or call.dialog is None:
            raise UaError(f"call {call_id} is not established")
        if call.transfer is not None and not call.transfer.done:
            raise UaError(f"a transfer is already in progress on {call_id}")
        local = call.dialog.local_uri
        refer, hop = call.dialog.create_request(
            "REFER",
            via=Via.parse(self._via_value(call)),
            extra_headers=(
                # Angle brackets always: a URI with ';' or '?' would otherwise be misread (§2.1).
                ("Refer-To", f"<{refer_to}>"),
                ("Referred-By", f"<{local.uri}>"),  # RFC 3892: who asked for the transfer
                ("User-Agent", self.local.user_agent),
            ),
        )
        tx, sends = self.layer.send_request(refer, self._dialog_dest(call, hop), now)
        call.transfer = Transfer(call.id, refer.cseq.number, now + self.transfer_timeout)
        self._by_client_tx[id(tx)] = call
        return [self._wire(s) for s in sends]

    def hangup(self, call_id: str, now: float) -> list[Output]:
        """End the call in whatever state it is: BYE, CANCEL, or a final error response."""
        call = self._calls.get(call_id)
        if call is None or call.state in (_State.ENDED, _State.ENDING):
            return []
        if call.state is _State.CONFIRMED:
            return self._send_bye(call, now)
        if call.role == "uas":
            return self.reject(call_id, 480, now, "Temporarily Unavailable")
        # UAC early: CANCEL once a provisional arrived (§9.1), else remember to.
        if not call.got_provisional:
            call.cancel_pending = True
            return []
        return self._send_cancel(call, now)

    def bye_sent(self, call_id: str) -> bool:
        """Whether this established call's BYE is out (its transaction may still run)."""
        call = self._calls.get(call_id)
        return call is not None and call.bye_sent

    def call_ids(self) -> list[str]:
        return list(self._calls)

    def sip_ids(self, call_id: str) -> dict[str, str]:
        call = self._calls[call_id]
        ids = {"sip_call_id": call.invite.call_id, "local_tag": call.local_tag}
        if call.dialog is not None:
            ids["remote_tag"] = call.dialog.remote_tag
        return ids

    # ---- internals -------------------------------------------------------------------------

    def _on_event(self, ev: object, now: float) -> list[Output]:
        match ev:
            case RequestReceived(request=req, source=source, tx=tx):
                return self._on_request(req, source, tx, now)
            case ResponseReceived(response=resp, tx=tx):
                return self._on_response(resp, tx, now)
            case StrayResponse(response=resp):
                return self._on_stray_response(resp)
            case CancelReceived(invite_tx=tx):
                call = self._by_server_tx.get(id(tx))
                if call is None or call.state is not _State.EARLY:
                    return []
                resp = make_response(call.invite, 487, to_tag=call.local_tag)
                out = self._respond(tx, resp, now)
                out.append(self._end(call, "cancelled", 487))
                return out
            case TransactionTimeout(tx=tx):
                return self._on_timeout(tx, now)
            case TransactionTerminated():
                return []
        return []

    def _on_request(
        self, req: SipRequest, source: Addr, tx: ServerTransaction | None, now: float
    ) -> list[Output]:
        if req.method == "ACK":
            return self._on_ack(req)
        assert tx is not None
        in_dialog_notify = req.method == "NOTIFY" and self._to_tag(req) is not None
        policy = self._notify_policy if in_dialog_notify else self.policy
        error = check_request(req, policy)
        if error is not None:
            return self._respond(tx, error, now)
        to_tag = req.to.tag
        if to_tag is not None:
            return self._on_in_dialog(req, tx, to_tag, now)
        match req.method:
            case "INVITE":
                if not self.accepting:
                    return self._respond(
                        tx, make_response(req, 503, headers=[("Retry-After", "5")]), now
                    )
                problem = self._dialog_problem(req)
                if problem is not None:
                    return self._respond(tx, make_response(req, 400, problem), now)
                cid = self._new_call_id()
                call = _Call(cid, "uas", req, source, new_tag(), server_tx=tx)
                self._calls[cid] = call
                self._by_server_tx[id(tx)] = call
                # §17.2.1: 100 at once so the caller stops retransmitting while we set up media.
                out = self._respond(tx, make_response(req, 100), now)
                out.append(IncomingCall(cid, req, source))
                return out
            case "OPTIONS":
                status, extra = (
                    (503, []) if not self.accepting else self.options_status(req, source)
                )
                if status != 200:
                    return self._respond(tx, make_response(req, status, headers=extra), now)
                headers = [
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Accept-Encoding", "identity"),
                    ("Accept-Language", "en"),
                    ("Supported", ""),
                    ("User-Agent", self.local.user_agent),
                ]
                return self._respond(
                    tx, make_response(req, 200, to_tag=new_tag(), headers=headers), now
                )
            case "BYE":
                return self._respond(tx, make_response(req, 481), now)
            case _:
                return self._respond(tx, make_response(req, 405, headers=[("Allow", ALLOW)]), now)

    def _on_in_dialog(
        self, req: SipRequest, tx: ServerTransaction, to_tag: str, now: float
    ) -> list[Output]:
        key = (req.call_id, to_tag, req.from_.tag or "")
        call = self._by_dialog.get(key)
        if call is None or call.dialog is None:
            return self._respond(tx, make_response(req, 481), now)  # §12.2.2
        error = call.dialog.check_remote_request(req)
        if error is not None:
            return self._respond(tx, error, now)
        match req.method:
            case "BYE":
                out = self._respond(tx, make_response(req, 200), now)
                if call.state is not _State.ENDED:
                    out.append(self._end(call, "remote_bye"))
                return out
            case "INVITE":
                if call.reinvite_tx is not None:  # §14.2: glare on our side
                    return self._respond(
                        tx, make_response(req, 500, headers=[("Retry-After", "1")]), now
                    )
                call.reinvite_tx = tx
                return [ReInvite(call.id, req)]
            case "NOTIFY":
                return self._on_notify(call, req, tx, now)
            case "OPTIONS" | "INFO" | "UPDATE":
                return self._respond(tx, make_response(req, 200), now)
            case _:
                return self._respond(tx, make_response(req, 405, headers=[("Allow", ALLOW)]), now)

    def _on_notify(
        self, call: _Call, req: SipRequest, tx: ServerTransaction, now: float
    ) -> list[Output]:
        transfer = call.transfer
        if transfer is None or not transfer.matches(req):
            # RFC 6665 §4.1.3: a NOTIFY for no subscription of ours (an unknown package
            # gets 489, §8.2.1).
            event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
            status = 489 if event and event != "refer" else 481
            return self._respond(tx, make_response(req, status), now)
        status, reason, events = transfer.on_notify(req)
        headers = [("Accept", SIPFRAG)] if status == 415 else []
        out = self._respond(tx, make_response(req, status, reason, headers=headers), now)
        out.extend(events)
        return out

    @staticmethod
    def _to_tag(req: SipRequest) -> str | None:
        try:
            return req.to.tag
        except (SipParseError, UriParseError):
            return None  # check_request answers 400

    def _on_ack(self, ack: SipRequest) -> list[Output]:
        try:
            key = (ack.call_id, ack.to.tag or "", ack.from_.tag or "")
        except (SipParseError, UriParseError):
            return []
        call = self._by_dialog.get(key)
        if call is None or call.role != "uas":
            return []
        first = call.ack is None
        call.ack = ack
        if not first:
            return []
        sdp = ack.body if ack.body and ack.content_type == "application/sdp" else None
        return [CallConfirmed(call.id, sdp)]

    def _on_response(self, resp: SipResponse, tx: ClientTransaction, now: float) -> list[Output]:
        handle = self._requests.get(id(tx))
        if handle is not None:
            if resp.status < 200:
                return []
            del self._requests[id(tx)]
            return [RequestCompleted(handle, resp)]
        call = self._by_client_tx.get(id(tx))
        if call is None:
            return []
        method = resp.cseq.method
        if method == "INVITE":
            return self._on_invite_response(call, resp, now)
        if method == "BYE" and resp.status >= 200:
            self._forget_client_tx(tx)
            if call.state is not _State.ENDED:
                return [self._end(call, "local_bye")]
        if method == "CANCEL" and resp.status >= 200:
            self._forget_client_tx(tx)
        if method == "REFER" and resp.status >= 200:
            self._forget_client_tx(tx)
            if call.dialog is not None:
                call.dialog.on_target_refresh_response(resp)
            if call.transfer is not None and call.state is _State.CONFIRMED:
                return list(call.transfer.on_refer_response(resp.status, resp.reason))
        return []

    def _on_invite_response(self, call: _Call, resp: SipResponse, now: float) -> list[Output]:
        status = resp.status
        if status < 200:
            if status > 100:
                call.got_provisional = True
                if call.cancel_pending:
                    call.cancel_pending = False
                    return self._send_cancel(call, now)
                sdp = resp.body if resp.content_type == "application/sdp" else b""
                return [CallProgress(call.id, status, resp.reason, sdp)]
            return []
        if status >= 300:
            if call.state is _State.ENDED:
                return []
            challenged = status in (401, 407) and call.auth is not None
            if challenged and call.state is _State.EARLY and not call.cancel_pending:
                return self._answer_challenge(call, resp, now)
            reason = "cancelled" if status == 487 else "rejected"
            return [self._end(call, reason, status)]
        # 2xx: dialog + ACK (§13.2.2.4); a second 2xx only needs the ACK again.
        if call.dialog is not None:
            return [SendDatagram(bytes(call.ack), call.peer)] if call.ack else []
        dialog = Dialog.from_uac(call.invite, resp)
        call.dialog = dialog
        self._by_dialog[dialog.id] = call
        ack, hop = dialog.create_ack(call.invite.cseq.number, Via.parse(self._via_value(call)))
        call.ack = ack
        call.peer = self._hop_addr(hop, call.peer)
        out: list[Output] = [SendDatagram(bytes(ack), call.peer)]
        if call.cancel_pending or call.state is _State.ENDED:
            # We wanted out before the answer: confirm then BYE (§15).
            call.state = _State.CONFIRMED
            out.extend(self._send_bye(call, now))
            return out
        call.state = _State.CONFIRMED
        out.append(CallAnswered(call.id, resp))
        return out

    def _answer_challenge(self, call: _Call, resp: SipResponse, now: float) -> list[Output]:
        """§22.2: resend the INVITE with credentials (same Call-ID and tags, CSeq + 1, a new
        transaction; the transaction layer has ACKed the 401/407, §17.1.1.3)."""
        assert call.auth is not None
        try:
            challenge = select_challenge(resp)
        except DigestError as exc:
            kind = "unsupported" if isinstance(exc, UnsupportedChallenge) else "unreadable"
            return [self._end(call, "auth_failed", resp.status, f"{kind} challenge: {exc}")]
        if (
            challenge.nonce in call.answered and not challenge.stale
        ) or call.challenges >= 3:  # our answer to this nonce was refused: wrong credentials
            detail = f"authentication rejected ({resp.status} {resp.reason})"
            return [self._end(call, "auth_failed", resp.status, detail)]
        call.answered.add(challenge.nonce)
        call.challenges += 1
        header = call.auth.authorize(challenge, "INVITE", call.invite.uri)
        call.credentials[(header.name, header.realm)] = header  # a proxy's and a UAS's realm
        invite = with_credentials(call.invite, list(call.credentials.values()))
        tx, sends = self.layer.send_request(invite, call.peer, now)
        if call.client_tx is not None:
            self._by_client_tx.pop(id(call.client_tx), None)
        call.client_tx = tx
        call.invite = tx.request
        call.got_provisional = False
        self._by_client_tx[id(tx)] = call
        return [self._wire(s) for s in sends]

    def _on_stray_response(self, resp: SipResponse) -> list[Output]:
        if resp.status // 100 != 2:
            return []
        try:
            if resp.cseq.method != "INVITE":
                return []
            key = (resp.call_id, resp.from_.tag or "", resp.to.tag or "")
        except (SipParseError, UriParseError):
            return []
        call = self._by_dialog.get(key)
        if call is not None and call.ack is not None and call.role == "uac":
            return [SendDatagram(bytes(call.ack), call.peer)]
        return []

    def _on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> list[Output]:
        if isinstance(tx, ServerTransaction):
            call = self._by_server_tx.get(id(tx))
            if call is None or call.state is not _State.CONFIRMED or call.ack is not None:
                return []
            # §13.3.1.4: no ACK for our 2xx within 64*T1 — confirm and immediately end with BYE.
            out = self._send_bye(call, now)
            out.append(self._end(call, "no_ack", 408))
            return out
        handle = self._requests.pop(id(tx), None)
        if handle is not None:
            return [RequestCompleted(handle, None)]
        call = self._by_client_tx.get(id(tx))
        if call is None:
            return []
        self._forget_client_tx(tx)
        if tx.method == "INVITE" and call.state is _State.EARLY:
            return [self._end(call, "timeout", 408)]
        if tx.method == "BYE" and call.state is not _State.ENDED:
            return [self._end(call, "local_bye", 408)]
        if tx.method == "REFER" and call.transfer is not None:
            return list(call.transfer.on_refer_timeout())
        return []

    def _send_bye(self, call: _Call, now: float) -> list[Output]:
        assert call.dialog is not None
        bye, hop = call.dialog.create_request("BYE", via=Via.parse(self._via_value(call)))
        bye = SipRequest(
            bye.method, bye.uri, bye.headers.set("User-Agent", self.local.user_agent), bye.body
        )
        call.state = _State.ENDING
        call.bye_sent = True
        tx, sends = self.layer.send_request(bye, self._dialog_dest(call, hop), now)
        self._by_client_tx[id(tx)] = call
        call.pending.append(tx)
        return [self._wire(s) for s in sends]

    def _dialog_dest(self, call: _Call, hop: SipUri) -> Addr:
        assert call.dialog is not None
        if call.role == "uas" and not call.dialog.route_set:
            # Symmetric signalling: the caller's Contact may be a private address behind NAT,
            # the INVITE's source is what we can reach (as RFC 3581 does for responses).
            return call.peer
        return self._hop_addr(hop, call.peer)

    def _send_cancel(self, call: _Call, now: float) -> list[Output]:
        cancel = make_cancel(call.invite)  # §9.1
        call.state = _State.ENDING
        tx, sends = self.layer.send_request(cancel, call.peer, now)
        self._by_client_tx[id(tx)] = call
        return [self._wire(s) for s in sends]

    def _end(
        self, call: _Call, reason: str, status: int | None = None, detail: str = ""
    ) -> CallEnded:
        call.state = _State.ENDED
        self._calls.pop(call.id, None)
        if call.dialog is not None:
            self._by_dialog.pop(call.dialog.id, None)
        if call.server_tx is not None:
            self._by_server_tx.pop(id(call.server_tx), None)
        if call.client_tx is not None:
            self._by_client_tx.pop(id(call.client_tx), None)
        # Pending BYE/CANCEL transactions keep their mapping until their response so the
        # transaction layer can finish; they no longer produce events for an ended call.
        return CallEnded(call.id, reason, status, detail)

    def _forget_client_tx(self, tx: ClientTransaction) -> None:
        self._by_client_tx.pop(id(tx), None)

    def _respond(self, tx: ServerTransaction, resp: SipResponse, now: float) -> list[Output]:
        if "User-Agent" not in resp.headers and resp.status >= 200:
            resp = SipResponse(
                resp.status,
                resp.reason,
                resp.headers.add("Server", self.local.user_agent),
                resp.body,
            )
        return [self._wire(s) for s in self.layer.respond(tx, resp, now)]

    @staticmethod
    def _dialog_problem(invite: SipRequest) -> str | None:
        """Why this INVITE cannot create a dialog (checked before we ring, not when answering)."""
        if not invite.contacts and (invite.vias[0].branch or "").startswith("z9hG4bK"):
            return "Missing Contact"  # §8.1.1.8: an RFC 3261 INVITE must have one
        try:
            Dialog.from_uas(invite, "probe", NameAddr(SipUri("sip", "invalid")))
        except (ValueError, SipParseError, UriParseError) as exc:
            return f"Bad Contact or Record-Route: {exc}"[:100]
        return None

    def _early_uas(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None or call.role != "uas" or call.state is not _State.EARLY:
            raise UaError(f"call {call_id} is not an unanswered incoming call")
        return call

    def _contact(self, call: _Call) -> NameAddr:
        try:
            user = call.invite.request_uri.user if call.role == "uas" else None
        except UriParseError:
            user = None
        host = call.local_host or self.local.host
        return NameAddr(SipUri("sip", host, user=user or "callbridge", port=self.local.port))

    def _contact_hdr(self, call: _Call) -> list[tuple[str, str]]:
        return [("Contact", str(self._contact(call)))]

    def _via_value(self, call: _Call | None = None) -> str:
        # RFC 3581 §3: ask for rport so responses come back through NATs.
        host = (call.local_host if call else None) or self.local.host
        hostport = LocalIdentity(host, self.local.port).hostport
        return f"SIP/2.0/UDP {hostport};branch={new_branch()};rport"

    def _hop_addr(self, hop: SipUri, fallback: Addr) -> Addr:
        host = hop.host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return fallback  # no DNS in the core (RFC 3263 resolution is a later step)
        return (host, hop.port or 5060)

    def _new_call_id(self) -> str:
        return f"c{next(self._ids)}"

    @staticmethod
    def _wire(send: SendMessage) -> SendDatagram:
        return SendDatagram(bytes(send.message), send.addr)

    @staticmethod
    def _response_addr(resp: SipResponse, source: Addr) -> Addr:
        # §18.2.2 + RFC 3581: symmetric response to where the request came from.
        return source
