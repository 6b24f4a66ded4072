"""The SIP user agent core (RFC 3261 §8, §12-§15): calls on top of transactions and dialogs.

Sans-IO. Datagrams and API calls go in with `now`; datagrams to send and call events come out.
The asyncio shell (`sip/endpoint.py`) owns the socket and the timer; the application
(`transports/sip/transport.py`) owns media and reacts to the events by calling the API methods here.

`UserAgent` is the dispatcher: it owns the transaction layer and the call table, answers what
needs no call (malformed or refused requests, out-of-dialog OPTIONS, REGISTER and other
requests of ours) and hands the rest to one module per role:
invite_server (UAS), invite_client (UAC + digest retry) and in_dialog (BYE, re-INVITE,
REFER/NOTIFY, INFO, OPTIONS). The outputs live in ua_events, the call record in calls; both
are re-exported here, the import path for every user of the UA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from callbridge.sip.calls import ALLOW, CallState, CallTable, LocalIdentity, Role, wire
from callbridge.sip.digest import DigestClient
from callbridge.sip.in_dialog import InDialog
from callbridge.sip.invite_client import InviteClient
from callbridge.sip.invite_server import InviteServer
from callbridge.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    new_tag,
    parse,
)
from callbridge.sip.overload import Refusal
from callbridge.sip.refer import SIPFRAG
from callbridge.sip.timers import TimerSettings
from callbridge.sip.transaction import (
    CancelReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    response_address,
    stamp_via,
)
from callbridge.sip.ua_events import (
    Addr,
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    Datagram,
    IncomingCall,
    OptionsAnswer,
    Output,
    ReInvite,
    RequestCompleted,
    UaError,
)
from callbridge.sip.uri import SipUri, UriParseError
from callbridge.sip.validation import UasPolicy, check_request, reject_malformed

_TX_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")


class UserAgent:
    def __init__(
        self,
        local: LocalIdentity,
        timers: TimerSettings | None = None,
        policy: UasPolicy | None = None,
        options_status: Callable[[SipRequest, Addr], OptionsAnswer] | None = None,
        admission: Callable[[str, float], Refusal | None] | None = None,
    ) -> None:
        # §11.2: OPTIONS gets the status an INVITE to the same user would get; the app knows
        # which users exist. A user-less Request-URI is a probe of this node.
        self.options_status = options_status or (lambda request, source: (200, []))
        # New calls: the overload control's verdict before any transaction or state exists.
        self.admission = admission
        self.policy = policy or UasPolicy()
        self._table = CallTable(local, TransactionLayer(timers or TimerSettings()))
        self._in_dialog = InDialog(self._table)
        self._server = InviteServer(self._table, self._in_dialog.send_bye)
        self._client = InviteClient(self._table, self._in_dialog.send_bye)
        self._requests: dict[int, str] = {}  # out-of-dialog requests: id(tx) -> request()'s handle
        self.accepting = True  # False during shutdown: new INVITEs get 503 (§21.5.4)
        # In a dialog with our REFER, NOTIFY (RFC 3515 §2.4.4) and its sipfrag body are
        # acceptable; elsewhere NOTIFY stays a method we do not take.
        self._notify_policy = replace(
            self.policy,
            allowed_methods=self.policy.allowed_methods | {"NOTIFY"},
            accepted_content_types=self.policy.accepted_content_types | {SIPFRAG},
        )
        self.bad_messages = 0

    @property
    def local(self) -> LocalIdentity:
        return self._table.local

    @local.setter
    def local(self, local: LocalIdentity) -> None:
        # The shell learns the real port only after binding (port 0); every role reads it here.
        self._table.local = local

    @property
    def layer(self) -> TransactionLayer:
        return self._table.layer

    @property
    def transfer_timeout(self) -> float:
        """How long a REFER may go without a final NOTIFY before TransferFailed (408)."""
        return self._in_dialog.transfer_timeout

    @transfer_timeout.setter
    def transfer_timeout(self, seconds: float) -> None:
        self._in_dialog.transfer_timeout = seconds

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
            # §18.2.2 + RFC 3581: symmetric response to where the request came from.
            return [Datagram(bytes(reply), source)]
        if isinstance(message, SipRequest) and message.method != "ACK":
            stateless = self._unmatchable(message, source)
            if stateless is not None:
                return [stateless]
            refused = self._refused(message, source, now)
            if refused is not None:
                return refused
        sends, events = self.layer.receive(message, source, now)
        out: list[Output] = [wire(s) for s in sends]
        for ev in events:
            out.extend(self._on_event(ev, now))
        return out

    def _unmatchable(self, request: SipRequest, source: Addr) -> Datagram | None:
        """A request without the headers a transaction is keyed on gets a stateless 400
        (§8.2, RFC 4475 §3.3.1 'insuf') instead of being dropped by the transaction layer."""
        if all(name in request.headers for name in _TX_HEADERS):
            return None
        error = check_request(request, self.policy)
        if error is None or "Via" not in request.headers:
            return None
        self.bad_messages += 1
        return _stateless(request, source, error)

    def _refused(self, request: SipRequest, source: Addr, now: float) -> list[Output] | None:
        """A new call that the admission control refuses gets a stateless 503 with Retry-After
        (§21.5.4; §8.2.7 stateless UAS): no transaction, no timer, no call state, no RTP port,
        so a flood of INVITEs costs a parse and one datagram each."""
        if self.admission is None or request.method != "INVITE" or not self.accepting:
            return None
        if _to_tag(request) is not None or self.layer.has_server_transaction(request):
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
        reply = _stateless(request, source, response)
        return [] if reply is None else [reply]

    def poll(self, now: float) -> list[Output]:
        sends, events = self.layer.poll(now)
        out: list[Output] = [wire(s) for s in sends]
        for ev in events:
            out.extend(self._on_event(ev, now))
        out.extend(self._in_dialog.poll(now))
        return out

    def next_deadline(self) -> float | None:
        deadlines = self._in_dialog.deadlines()
        layer = self.layer.next_deadline()
        if layer is not None:
            deadlines.append(layer)
        return min(deadlines, default=None)

    # ---- API: UAS --------------------------------------------------------------------------

    def ring(self, call_id: str, now: float) -> list[Output]:
        return self._server.ring(call_id, now)

    def set_local_host(self, call_id: str, host: str) -> None:
        """Our address towards this call's peer, when bound to a wildcard address."""
        self._table.calls[call_id].local_host = host

    def answer(self, call_id: str, sdp: bytes, now: float) -> list[Output]:
        """200 OK with our SDP (an answer, or an offer when the INVITE had none)."""
        return self._server.answer(call_id, sdp, now)

    def reject(
        self,
        call_id: str,
        status: int,
        now: float,
        reason: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> list[Output]:
        return self._server.reject(call_id, status, now, reason, extra_headers)

    def answer_reinvite(
        self, call_id: str, sdp: bytes | None, now: float, status: int = 200
    ) -> list[Output]:
        return self._in_dialog.answer_reinvite(call_id, sdp, now, status)

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
        return self._client.invite(
            target,
            dest,
            sdp,
            now,
            from_user=from_user,
            display_name=display_name,
            local_host=local_host,
            from_uri=from_uri,
            route=route,
            auth=auth,
        )

    def request(self, request: SipRequest, dest: Addr, now: float) -> tuple[str, list[Output]]:
        """Send an out-of-dialog non-INVITE request (REGISTER...) in its own client transaction;
        its final response comes back as RequestCompleted with the returned handle."""
        tx, sends = self.layer.send_request(request, dest, now)
        handle = f"r{self._table.next_number()}"
        self._requests[id(tx)] = handle
        return handle, [wire(s) for s in sends]

    # ---- API: both -------------------------------------------------------------------------

    def refer_target(self, call_id: str, target: str) -> str:
        """The Refer-To URI for `target` in this call: a bare user or number goes to the peer's
        host (its From/To URI). Raises ValueError for an unusable target."""
        return self._in_dialog.refer_target(call_id, target)

    def refer(self, call_id: str, refer_to: str, now: float) -> list[Output]:
        """Blind transfer (RFC 3515): ask the peer to call `refer_to` (see refer_target). The
        outcome comes back as TransferProgress / TransferSucceeded / TransferFailed; the call
        itself is untouched (the app hangs up after success, RFC 5589 §6.1)."""
        return self._in_dialog.refer(call_id, refer_to, now)

    def hangup(self, call_id: str, now: float) -> list[Output]:
        """End the call in whatever state it is: BYE, CANCEL, or a final error response."""
        call = self._table.calls.get(call_id)
        if call is None or call.state in (CallState.ENDED, CallState.ENDING):
            return []
        if call.state is CallState.CONFIRMED:
            return self._in_dialog.send_bye(call, now)
        match call.role:
            case Role.UAS:
                return self._server.reject(call_id, 480, now, "Temporarily Unavailable")
            case Role.UAC:
                return self._client.hangup_early(call, now)

    def bye_sent(self, call_id: str) -> bool:
        """Whether this established call's BYE is out (its transaction may still run)."""
        call = self._table.calls.get(call_id)
        return call is not None and call.bye_sent

    def call_ids(self) -> list[str]:
        return list(self._table.calls)

    def sip_ids(self, call_id: str) -> dict[str, str]:
        call = self._table.calls[call_id]
        ids = {"sip_call_id": call.invite.call_id, "local_tag": call.local_tag}
        if call.dialog is not None:
            ids["remote_tag"] = call.dialog.remote_tag
        return ids

    # ---- dispatch --------------------------------------------------------------------------

    def _on_event(self, ev: object, now: float) -> list[Output]:
        match ev:
            case RequestReceived(request=req, source=source, tx=tx):
                return self._on_request(req, source, tx, now)
            case ResponseReceived(response=resp, tx=tx):
                return self._on_response(resp, tx, now)
            case StrayResponse(response=resp):
                return self._client.on_stray_response(resp)
            case CancelReceived(invite_tx=tx):
                return self._server.on_cancel(tx, now)
            case TransactionTimeout(tx=tx):
                return self._on_timeout(tx, now)
            case TransactionTerminated():
                return []
        return []

    def _on_request(
        self, req: SipRequest, source: Addr, tx: ServerTransaction | None, now: float
    ) -> list[Output]:
        if req.method == "ACK":
            return self._server.on_ack(req)
        assert tx is not None
        in_dialog_notify = req.method == "NOTIFY" and _to_tag(req) is not None
        policy = self._notify_policy if in_dialog_notify else self.policy
        error = check_request(req, policy)
        if error is not None:
            return self._table.respond(tx, error, now)
        to_tag = req.to.tag
        if to_tag is not None:
            return self._in_dialog.on_request(req, tx, to_tag, now)
        match req.method:
            case "INVITE":
                if not self.accepting:
                    resp = make_response(req, 503, headers=[("Retry-After", "5")])
                    return self._table.respond(tx, resp, now)
                return self._server.on_invite(req, source, tx, now)
            case "OPTIONS":
                return self._on_options(req, source, tx, now)
            case "BYE":
                return self._table.respond(tx, make_response(req, 481), now)
            case _:
                resp = make_response(req, 405, headers=[("Allow", ALLOW)])
                return self._table.respond(tx, resp, now)

    def _on_options(
        self, req: SipRequest, source: Addr, tx: ServerTransaction, now: float
    ) -> list[Output]:
        """§11.2: an out-of-dialog OPTIONS, answered as an INVITE to that user would be."""
        status, extra = (503, []) if not self.accepting else self.options_status(req, source)
        if status != 200:
            return self._table.respond(tx, make_response(req, status, headers=extra), now)
        headers = [
            ("Allow", ALLOW),
            ("Accept", "application/sdp"),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
            ("Supported", ""),
            ("User-Agent", self.local.user_agent),
        ]
        resp = make_response(req, 200, to_tag=new_tag(), headers=headers)
        return self._table.respond(tx, resp, now)

    def _on_response(self, resp: SipResponse, tx: ClientTransaction, now: float) -> list[Output]:
        handle = self._requests.get(id(tx))
        if handle is not None:
            if resp.status < 200:
                return []
            del self._requests[id(tx)]
            return [RequestCompleted(handle, resp)]
        call = self._table.by_client_tx.get(id(tx))
        if call is None:
            return []
        match resp.cseq.method:
            case "INVITE" | "CANCEL":
                return self._client.on_response(call, resp, tx, now)
            case "BYE" | "REFER":
                return self._in_dialog.on_response(call, resp, tx)
        return []

    def _on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> list[Output]:
        if isinstance(tx, ServerTransaction):
            return self._server.on_timeout(tx, now)
        handle = self._requests.pop(id(tx), None)
        if handle is not None:
            return [RequestCompleted(handle, None)]
        call = self._table.by_client_tx.get(id(tx))
        if call is None:
            return []
        self._table.forget_client_tx(tx)
        if tx.method == "INVITE":
            return self._client.on_timeout(call, tx)
        return self._in_dialog.on_timeout(call, tx)


def _to_tag(req: SipRequest) -> str | None:
    try:
        return req.to.tag
    except (SipParseError, UriParseError):
        return None  # check_request answers 400


def _stateless(request: SipRequest, source: Addr, response: SipResponse) -> Datagram | None:
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
    return Datagram(bytes(response), addr)


__all__ = [
    "ALLOW",
    "Addr",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallProgress",
    "Datagram",
    "IncomingCall",
    "LocalIdentity",
    "OptionsAnswer",
    "Output",
    "ReInvite",
    "RequestCompleted",
    "Role",
    "UaError",
    "UserAgent",
]
