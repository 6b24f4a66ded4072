"""The user agent's call records and the table the role modules share (RFC 3261 §12-§15).

`CallTable` is the state `UserAgent` owns and lends to its role modules (invite_server,
invite_client, in_dialog): the transaction layer, our identity on the wire, every call and the
indexes that find a call from a dialog or a transaction. It also builds what every role puts in
its messages (Contact, Via, the Server header) and ends calls, so the indexes stay consistent
whichever role ends a call.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from callbridge.sip.challenge import ChallengeAnswerer
from callbridge.sip.dialog import Dialog
from callbridge.sip.digest import AuthHeader
from callbridge.sip.message import SipRequest, SipResponse, new_branch
from callbridge.sip.refer import Transfer
from callbridge.sip.transaction import (
    ClientTransaction,
    SendMessage,
    ServerTransaction,
    TransactionLayer,
)
from callbridge.sip.ua_events import Addr, CallEnded, Datagram, Output
from callbridge.sip.uri import NameAddr, SipUri, UriParseError

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


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


class Role(StrEnum):
    """Which side created the call: its INVITE came in (UAS) or went out (UAC)."""

    UAS = "uas"
    UAC = "uac"


class CallState(Enum):
    EARLY = "early"  # INVITE in progress
    CONFIRMED = "confirmed"  # 2xx sent/received
    ENDING = "ending"  # BYE or CANCEL sent, waiting
    ENDED = "ended"


@dataclass(slots=True)
class Outgoing:
    """What only the caller side keeps: our INVITE's transaction and how it is answered."""

    tx: ClientTransaction  # the current INVITE transaction (a new one per digest retry)
    auth: ChallengeAnswerer | None = None  # answers 401/407 to our INVITE (§22.2)
    # One per (header, realm): a proxy's and the UAS's credentials go in together.
    credentials: dict[tuple[str, str], AuthHeader] = field(default_factory=dict)
    got_provisional: bool = False  # §9.1: CANCEL only after a provisional response
    cancel_pending: bool = False  # hung up before one arrived: CANCEL when it does


@dataclass(slots=True)
class Call:
    id: str
    role: Role
    invite: SipRequest
    peer: Addr  # where requests outside the route set go (source of the INVITE / target of ours)
    local_tag: str
    state: CallState = CallState.EARLY
    dialog: Dialog | None = None
    # UAS: the ACK that confirmed our 2xx; UAC: our ACK, resent on 2xx retransmissions
    # (§13.2.2.4).
    ack: SipRequest | None = None
    reinvite_tx: ServerTransaction | None = None
    bye_sent: bool = False  # §15.1.1: the session is over for us from here
    local_host: str | None = None  # our address as seen on the path to this peer (Contact, Via)
    transfer: Transfer | None = None  # our REFER in progress (or the last one, when done)
    server_tx: ServerTransaction | None = None  # UAS only: the INVITE's server transaction
    outgoing: Outgoing | None = None  # UAC only

    @property
    def attempt(self) -> Outgoing:
        """The UAC side's INVITE attempt (only UAC calls have one)."""
        assert self.outgoing is not None, f"{self.role} call {self.id} has no outgoing INVITE"
        return self.outgoing


class CallTable:
    """Every call of one UserAgent and the indexes to find them; shared by the role modules."""

    def __init__(self, local: LocalIdentity, layer: TransactionLayer) -> None:
        self.local = local
        self.layer = layer
        self.calls: dict[str, Call] = {}
        self.by_dialog: dict[tuple[str, str, str], Call] = {}
        self.by_server_tx: dict[int, Call] = {}
        self.by_client_tx: dict[int, Call] = {}
        self._ids = itertools.count(1)

    def next_number(self) -> int:
        """A fresh number for call handles, request handles and our Call-IDs."""
        return next(self._ids)

    def new_call_id(self) -> str:
        return f"c{self.next_number()}"

    def add(self, call: Call) -> None:
        self.calls[call.id] = call
        if call.server_tx is not None:
            self.by_server_tx[id(call.server_tx)] = call
        if call.outgoing is not None:
            self.by_client_tx[id(call.outgoing.tx)] = call

    def set_dialog(self, call: Call, dialog: Dialog) -> None:
        call.dialog = dialog
        self.by_dialog[dialog.id] = call

    def send(
        self, call: Call, request: SipRequest, dest: Addr, now: float
    ) -> tuple[ClientTransaction, list[Output]]:
        """Send a request of this call in a new client transaction whose responses come back
        to the call."""
        tx, sends = self.layer.send_request(request, dest, now)
        self.by_client_tx[id(tx)] = call
        return tx, [wire(s) for s in sends]

    def forget_client_tx(self, tx: ClientTransaction) -> None:
        self.by_client_tx.pop(id(tx), None)

    def respond(self, tx: ServerTransaction, resp: SipResponse, now: float) -> list[Output]:
        if "User-Agent" not in resp.headers and resp.status >= 200:
            resp = SipResponse(
                resp.status,
                resp.reason,
                resp.headers.add("Server", self.local.user_agent),
                resp.body,
            )
        return [wire(s) for s in self.layer.respond(tx, resp, now)]

    def end(
        self, call: Call, reason: str, status: int | None = None, detail: str = ""
    ) -> CallEnded:
        call.state = CallState.ENDED
        self.calls.pop(call.id, None)
        if call.dialog is not None:
            self.by_dialog.pop(call.dialog.id, None)
        if call.server_tx is not None:
            self.by_server_tx.pop(id(call.server_tx), None)
        if call.outgoing is not None:
            self.by_client_tx.pop(id(call.outgoing.tx), None)
        # Pending BYE/CANCEL transactions keep their mapping until their response so the
        # transaction layer can finish; they no longer produce events for an ended call.
        return CallEnded(call.id, reason, status, detail)

    # ---- what every role puts in its messages ------------------------------------------------

    def contact(self, call: Call) -> NameAddr:
        try:
            user = call.invite.request_uri.user if call.role is Role.UAS else None
        except UriParseError:
            user = None
        host = call.local_host or self.local.host
        return NameAddr(SipUri("sip", host, user=user or "callbridge", port=self.local.port))

    def contact_hdr(self, call: Call) -> list[tuple[str, str]]:
        return [("Contact", str(self.contact(call)))]

    def via_value(self, call: Call | None = None) -> str:
        # RFC 3581 §3: ask for rport so responses come back through NATs.
        host = (call.local_host if call else None) or self.local.host
        hostport = LocalIdentity(host, self.local.port).hostport
        return f"SIP/2.0/UDP {hostport};branch={new_branch()};rport"

    def dialog_dest(self, call: Call, hop: SipUri) -> Addr:
        assert call.dialog is not None
        if call.role is Role.UAS and not call.dialog.route_set:
            # Symmetric signalling: the caller's Contact may be a private address behind NAT,
            # the INVITE's source is what we can reach (as RFC 3581 does for responses).
            return call.peer
        return hop_addr(hop, call.peer)


def hop_addr(hop: SipUri, fallback: Addr) -> Addr:
    host = hop.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return fallback  # no DNS in the core (RFC 3263 resolution is a later step)
    return (host, hop.port or 5060)


def wire(send: SendMessage) -> Datagram:
    return Datagram(bytes(send.message), send.addr)


__all__ = [
    "ALLOW",
    "Call",
    "CallState",
    "CallTable",
    "LocalIdentity",
    "Outgoing",
    "Role",
    "hop_addr",
    "wire",
]
