"""The SIP transaction layer's public face (RFC 3261 §17): actions, TU events, keys, timers.

The state machines live in client_transaction.py and server_transaction.py; the dispatcher that
matches messages to them is transaction_layer.TransactionLayer. All of them are re-exported here
(lazily, since they import this module), so `from callbridge.sip.transaction import ...` is the one
import the TU needs. Everything is sans-IO: the layer returns SendMessage actions for the driver to
put on the wire and events for the TU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from callbridge.core.net import Addr
from callbridge.sip.message import Headers, SipMessage, SipRequest, SipResponse, Via, canonical_name

if TYPE_CHECKING:
    from callbridge.sip.client_transaction import (
        ClientState,
        ClientTransaction,
        make_ack_for_non2xx,
        make_cancel,
    )
    from callbridge.sip.server_transaction import ServerState, ServerTransaction
    from callbridge.sip.transaction_layer import TransactionLayer

_LAZY = {
    "ClientState": "callbridge.sip.client_transaction",
    "ClientTransaction": "callbridge.sip.client_transaction",
    "make_ack_for_non2xx": "callbridge.sip.client_transaction",
    "make_cancel": "callbridge.sip.client_transaction",
    "ServerState": "callbridge.sip.server_transaction",
    "ServerTransaction": "callbridge.sip.server_transaction",
    "TransactionLayer": "callbridge.sip.transaction_layer",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the state machines import this module, so they are re-exported on first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


# RFC 3261 §8.1.1.7: a branch starting with this cookie was built by an RFC 3261 element and is
# unique per transaction, so it alone (plus sent-by and method) identifies a transaction.
MAGIC_COOKIE = "z9hG4bK"


class Timer(Enum):
    """Transaction timers. Letters are RFC 3261 Table 4 / RFC 6026; the rest are ours."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"  # also paces 2xx retransmission in the INVITE server's Accepted state (§13.3.1.4)
    H = "H"
    I = "I"  # noqa: E741  (RFC 3261 name)
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    TRYING = "trying"  # §17.2.1: send 100 Trying if the TU has not answered the INVITE in 200 ms
    CANCEL_GUARD = "cancel-guard"  # §9.1: give up on the INVITE 64*T1 after sending CANCEL


# --- action ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Put `message` on the wire to `addr`."""

    message: SipMessage
    addr: Addr


# --- events to the transaction user ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. `tx` is None for an ACK to a 2xx (RFC 6026: it belongs to the
    dialog, not to a transaction) and for any other ACK that matches nothing."""

    request: SipRequest
    source: Addr
    tx: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response the client transaction passes up (1xx, the first final, 2xx retransmissions)."""

    response: SipResponse
    tx: ClientTransaction


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction, e.g. a 2xx retransmitted after Timer M: the TU
    re-sends its ACK (RFC 3261 §13.2.2.4)."""

    response: SipResponse
    source: Addr


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Client: Timer B/F (or no final response after CANCEL) -> the TU acts as if 408 arrived.
    Server: Timer H, or no ACK for a 2xx within 64*T1 -> the TU ends the session with BYE."""

    tx: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone from the layer (bookkeeping only)."""

    tx: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL matched `invite_tx` (RFC 3261 §9.2) while it had no final response. The layer has
    already answered the CANCEL with 200; the TU should now send 487 on the INVITE."""

    cancel: SipRequest
    invite_tx: ServerTransaction


Action = SendMessage
Event = (
    RequestReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransactionTerminated
    | CancelReceived
)
Output = SendMessage | Event  # what a state machine hands back to the layer


# --- transaction keys ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BranchKey:
    """RFC 3261 §17.2.3 server matching: branch, sent-by and method (ACK counts as INVITE)."""

    branch: str
    host: str
    port: int
    method: str


@dataclass(frozen=True, slots=True)
class LegacyKey:
    """RFC 3261 §17.2.3 fallback for RFC 2543 peers (branch without the magic cookie)."""

    call_id: str
    from_tag: str | None
    to_tag: str | None
    cseq: int
    method: str
    request_uri: str
    via: Via


ServerKey = BranchKey | LegacyKey
ClientKey = tuple[str, str]  # (branch, CSeq method): RFC 3261 §17.1.3


def _host(host: str) -> str:
    return host.strip("[]").lower()


def server_key(request: SipRequest, *, method: str | None = None) -> ServerKey:
    """Key of the server transaction `request` belongs to. `method` overrides the matched method
    (CANCEL looks for its INVITE, §9.2). Raises SipParseError if Via/CSeq/... are unusable."""
    top = request.vias[0]
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = top.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        host, port = top.sent_by
        return BranchKey(branch, _host(host), port, method)
    return LegacyKey(
        call_id=request.call_id,
        from_tag=request.from_.tag,
        to_tag=request.to.tag,
        cseq=request.cseq.number,
        method=method,
        request_uri=request.uri,
        via=top,
    )


# --- RFC 3581 / §18.2 addressing -------------------------------------------------------------


def _has_empty_rport(via: Via) -> bool:
    return any(name.lower() == "rport" and not value for name, value in via.params)


def stamp_via(request: SipRequest, source: Addr) -> SipRequest:
    """RFC 3261 §18.2.1 + RFC 3581 §4: record where the request really came from in its top Via
    so that responses built from it (make_response copies Via) route back symmetrically."""
    vias = request.vias
    top = vias[0]
    ip, port = source
    if _has_empty_rport(top):
        # RFC 3581 §4: `received` is mandatory with rport, even when it equals sent-by.
        stamped = top.with_params(received=ip, rport=str(port))
    elif _host(top.sent_by[0]) != _host(ip):
        stamped = top.with_params(received=ip)
    else:
        return request
    return _replace(request, replace_top_via(request.headers, [stamped, *vias[1:]]))


def replace_top_via(headers: Headers, vias: list[Via]) -> Headers:
    """Headers with every Via value replaced by `vias`, written where the first Via stood."""
    items: list[tuple[str, str]] = []
    done = False
    for name, value in headers.items:
        if canonical_name(name) == "Via":
            if not done:
                items.extend(("Via", str(v)) for v in vias)
                done = True
            continue
        items.append((name, value))
    if not done:
        items[0:0] = [("Via", str(v)) for v in vias]
    return Headers(tuple(items))


def _replace(request: SipRequest, headers: Headers) -> SipRequest:
    return SipRequest(request.method, request.uri, headers, request.body, request.version)


def response_address(via: Via, source: Addr) -> Addr:
    """RFC 3261 §18.2.2 + RFC 3581 §4: `received` (else the source IP), then `rport` if it carries
    a port, else the sent-by port."""
    host = via.param("received") or source[0]
    rport = via.param("rport")
    if rport and rport.isdigit():
        return host, int(rport)
    return host, via.sent_by[1]


ScheduleFn = Callable[["TransactionBase", Timer, float], None]


class TransactionBase:
    """Timer bookkeeping shared by client and server transactions.

    A transaction records its armed timers in `timers` and reports each arm to the layer's
    scheduler; the layer fires a timer only while the recorded deadline is still the same,
    so cancelling is just deleting the entry.
    """

    def __init__(self, schedule: ScheduleFn) -> None:
        self.timers: dict[Timer, float] = {}
        self._schedule = schedule

    def _arm(self, timer: Timer, at: float) -> None:
        self.timers[timer] = at
        self._schedule(self, timer, at)

    def _disarm(self, *timers: Timer) -> None:
        for timer in timers:
            self.timers.pop(timer, None)

    @property
    def terminated(self) -> bool:
        raise NotImplementedError


__all__ = [
    "MAGIC_COOKIE",
    "Action",
    "Addr",
    "BranchKey",
    "CancelReceived",
    "ClientKey",
    "ClientState",
    "ClientTransaction",
    "Event",
    "LegacyKey",
    "RequestReceived",
    "ResponseReceived",
    "SendMessage",
    "ServerKey",
    "ServerState",
    "ServerTransaction",
    "StrayResponse",
    "Timer",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "make_ack_for_non2xx",
    "make_cancel",
    "response_address",
    "server_key",
    "stamp_via",
]
