"""The transaction layer (RFC 3261 §17): matches messages to transactions and runs their timers.

Sans-IO: the driver feeds received datagrams (already parsed) to receive(), asks for outgoing
transactions with send_request()/respond(), calls poll() when next_deadline() is reached, and puts
every returned SendMessage on the wire. Events go to the TU (UA core / dialogs).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import replace

from callbridge.sip.client_transaction import ClientState, ClientTransaction
from callbridge.sip.message import (
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    new_branch,
    new_tag,
)
from callbridge.sip.server_transaction import ServerState, ServerTransaction
from callbridge.sip.timers import TimerSettings
from callbridge.sip.transaction import (
    MAGIC_COOKIE,
    Addr,
    CancelReceived,
    ClientKey,
    Event,
    LegacyKey,
    Output,
    RequestReceived,
    SendMessage,
    ServerKey,
    StrayResponse,
    Timer,
    TransactionBase,
    TransactionTerminated,
    replace_top_via,
    server_key,
    stamp_via,
)
from callbridge.sip.uri import UriParseError

# A 2xx ACK is its own transaction (new branch), so it is matched to the INVITE server
# transaction by dialog instead: Call-ID, From tag, CSeq number (+ To tag checked afterwards).
_AcceptedKey = tuple[str, str | None, int]


class TransactionLayer:
    def __init__(self, timers: TimerSettings | None = None) -> None:
        self.timers = timers if timers is not None else TimerSettings()
        self._client: dict[ClientKey, ClientTransaction] = {}
        self._server: dict[ServerKey, ServerTransaction] = {}
        self._accepted: dict[_AcceptedKey, ServerTransaction] = {}
        self._heap: list[tuple[float, int, TransactionBase, Timer]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._client) + len(self._server)

    # --- timers ---------------------------------------------------------------------------

    def _schedule(self, tx: TransactionBase, timer: Timer, at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), tx, timer))

    def _is_live(self, entry: tuple[float, int, TransactionBase, Timer]) -> bool:
        at, _, tx, timer = entry
        return tx.timers.get(timer) == at

    def next_deadline(self) -> float | None:
        """Earliest time poll() has work to do, or None when no timer is pending."""
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def poll(self, now: float) -> tuple[list[SendMessage], list[Event]]:
        """Fire every timer due at or before `now`, in deadline order. Each timer runs at its own
        deadline, so retransmission schedules stay exact even if poll() is called late."""
        actions: list[SendMessage] = []
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._is_live(entry):
                continue
            at, _, tx, timer = entry
            del tx.timers[timer]
            assert isinstance(tx, ClientTransaction | ServerTransaction)
            self._collect(tx, tx.on_timer(timer, at), actions, events)
        return actions, events

    # --- bookkeeping ----------------------------------------------------------------------

    def _collect(
        self,
        tx: ClientTransaction | ServerTransaction,
        outputs: list[Output],
        actions: list[SendMessage],
        events: list[Event],
    ) -> None:
        for out in outputs:
            if isinstance(out, SendMessage):
                actions.append(out)
            else:
                events.append(out)
        if tx.terminated:
            self._forget(tx, events)

    def _forget(self, tx: ClientTransaction | ServerTransaction, events: list[Event]) -> None:
        if isinstance(tx, ClientTransaction):
            if self._client.get(tx.key) is tx:
                del self._client[tx.key]
        else:
            if self._server.get(tx.key) is tx:
                del self._server[tx.key]
            akey = _accepted_key(tx.request)
            if self._accepted.get(akey) is tx:
                del self._accepted[akey]
        events.append(TransactionTerminated(tx))

    # --- outgoing -------------------------------------------------------------------------

    def send_request(
        self, request: SipRequest, dest: Addr, now: float
    ) -> tuple[ClientTransaction, list[SendMessage]]:
        """Start a client transaction for `request` (anything but ACK) towards `dest`.

        A top Via without an RFC 3261 branch gets a fresh one (the transaction's request then
        differs from `request`; use tx.request). A CANCEL (see make_cancel) reuses its INVITE's
        branch and arms that INVITE's 64*T1 guard (§9.1).
        """
        if request.method == "ACK":
            # §17.1.1.3 / §13.2.2.4: a non-2xx ACK is sent by the INVITE transaction itself and a
            # 2xx ACK is sent by the TU directly (SendMessage), never in a transaction.
            raise ValueError("ACK is not sent through a client transaction")
        vias = request.vias
        if not vias:
            raise ValueError("request has no Via")
        branch = vias[0].branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            top = vias[0].with_params(branch=new_branch())
            request = SipRequest(
                request.method,
                request.uri,
                replace_top_via(request.headers, [top, *vias[1:]]),
                request.body,
                request.version,
            )
        tx = ClientTransaction(request, dest, self.timers, self._schedule)
        if tx.key in self._client:
            raise ValueError(f"a client transaction with branch {tx.key[0]} already exists")
        self._client[tx.key] = tx
        actions: list[SendMessage] = []
        self._collect(tx, tx.start(now), actions, [])
        if request.method == "CANCEL":
            invite = self._client.get((tx.key[0], "INVITE"))
            if invite is not None:
                invite.cancel_sent(now)
        return tx, actions

    def respond(
        self, tx: ServerTransaction, response: SipResponse, now: float
    ) -> list[SendMessage]:
        """Send `response` through server transaction `tx` (ignored if `tx` can no longer send
        it, e.g. it already sent a final response or has terminated)."""
        if tx.terminated:
            return []
        actions: list[SendMessage] = []
        events: list[Event] = []
        self._collect(tx, tx.respond(response, now), actions, events)
        if tx.state is ServerState.ACCEPTED:
            self._accepted[_accepted_key(tx.request)] = tx
        return actions

    # --- incoming -------------------------------------------------------------------------

    def has_server_transaction(self, request: SipRequest) -> bool:
        """Whether `request` is a retransmission of one we have a transaction for (§17.2.3)."""
        try:
            return server_key(request) in self._server
        except (SipParseError, UriParseError, IndexError):
            return False

    def receive(
        self, message: SipMessage, source: Addr, now: float
    ) -> tuple[list[SendMessage], list[Event]]:
        """Feed one received message. Messages lacking what matching needs are dropped."""
        actions: list[SendMessage] = []
        events: list[Event] = []
        try:
            match message:
                case SipRequest():
                    self._receive_request(message, source, now, actions, events)
                case SipResponse():
                    self._receive_response(message, source, now, actions, events)
        except (SipParseError, UriParseError, IndexError):
            # §18.3 / §8.2: without a usable Via/CSeq/Call-ID we cannot even route an error
            # response; the UA core may still answer 400 from the raw parse if it wants.
            pass
        return actions, events

    def _receive_response(
        self,
        response: SipResponse,
        source: Addr,
        now: float,
        actions: list[SendMessage],
        events: list[Event],
    ) -> None:
        # RFC 3261 §17.1.3: top Via branch + CSeq method.
        branch = response.vias[0].branch
        tx = self._client.get((branch, response.cseq.method)) if branch else None
        if tx is None:
            events.append(StrayResponse(response, source))
            return
        self._collect(tx, tx.on_response(response, now), actions, events)

    def _receive_request(
        self,
        request: SipRequest,
        source: Addr,
        now: float,
        actions: list[SendMessage],
        events: list[Event],
    ) -> None:
        # Every path below needs these; a request lacking one raises here and is dropped.
        _ = (request.call_id, request.cseq, request.from_, request.to)
        key = server_key(request)  # from the Via as received, so retransmissions match
        stamped = stamp_via(request, source)
        if request.method == "ACK":
            ack_tx = self._find_ack_tx(key, request)
            if ack_tx is None:
                events.append(RequestReceived(stamped, source, None))
            else:
                # Completed/Confirmed absorb it (§17.2.1); Accepted hands it to the TU (RFC 6026).
                self._collect(ack_tx, ack_tx.on_ack(stamped, source, now), actions, events)
            return
        tx = self._server.get(key)
        if tx is not None:
            self._collect(tx, tx.on_retransmission(now), actions, events)
            return
        tx = ServerTransaction(stamped, source, key, self.timers, self._schedule)
        self._server[key] = tx
        tx.start(now)
        if request.method == "CANCEL":
            self._receive_cancel(tx, now, actions, events)
            return
        events.append(RequestReceived(stamped, source, tx))

    def _find_ack_tx(self, key: ServerKey, raw: SipRequest) -> ServerTransaction | None:
        tx = self._match_ack(key, raw)
        if tx is None:
            # A 2xx ACK carries a new branch (§17.1.1.3 does not apply to it): find the INVITE in
            # Accepted by dialog identifiers (RFC 6026 §7.1).
            cand = self._accepted.get(_accepted_key(raw))
            if cand is not None and _tags_match(cand.to_tag, raw.to.tag):
                tx = cand
        return tx

    def _match_ack(self, key: ServerKey, raw: SipRequest) -> ServerTransaction | None:
        if isinstance(key, LegacyKey):
            # §17.2.3 (RFC 2543): the ACK's To tag is the tag of our response; the INVITE that
            # created the transaction had either no To tag or (re-INVITE) that same tag.
            for to_tag in (key.to_tag, None):
                tx = self._server.get(_with_to_tag(key, to_tag))
                if tx is not None and _tags_match(tx.to_tag, raw.to.tag):
                    return tx
            return None
        return self._server.get(key)

    def _receive_cancel(
        self,
        cancel_tx: ServerTransaction,
        now: float,
        actions: list[SendMessage],
        events: list[Event],
    ) -> None:
        cancel = cancel_tx.request
        # §9.2: match the INVITE server transaction like a request would (§17.2.3), method INVITE.
        invite_tx = self._server.get(replace(cancel_tx.key, method="INVITE"))
        if invite_tx is None or not invite_tx.is_invite:
            # §9.2: no matching transaction -> 481.
            response = make_response(cancel, 481, to_tag=new_tag())
            self._collect(cancel_tx, cancel_tx.respond(response, now), actions, events)
            return
        # §9.2: the To tag of the CANCEL response SHOULD equal the INVITE response's.
        to_tag = invite_tx.to_tag or new_tag()
        response = make_response(cancel, 200, to_tag=to_tag)
        self._collect(cancel_tx, cancel_tx.respond(response, now), actions, events)
        if invite_tx.state is ServerState.PROCEEDING:
            events.append(CancelReceived(cancel, invite_tx))
        # Otherwise a final response was already sent and the CANCEL has no effect (§9.2).


def _accepted_key(request: SipRequest) -> _AcceptedKey:
    return request.call_id, request.from_.tag, request.cseq.number


def _tags_match(ours: str | None, theirs: str | None) -> bool:
    # A missing tag on our side (RFC 2543 peer, no tag ever sent) matches anything.
    return ours is None or ours == theirs


def _with_to_tag(key: LegacyKey, to_tag: str | None) -> LegacyKey:
    return replace(key, to_tag=to_tag)


__all__ = [
    "ClientState",
    "ClientTransaction",
    "ServerState",
    "ServerTransaction",
    "TransactionLayer",
]
