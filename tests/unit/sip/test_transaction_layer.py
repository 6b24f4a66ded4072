"""Transaction layer dispatch: CANCEL (§9.2), RFC 2543 matching (§17.2.3), leaks, end-to-end."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.message import Headers, SipRequest, SipResponse, make_response, parse
from callbridge.sip.transaction import (
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerState,
    ServerTransaction,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    make_cancel,
)

SRC = ("192.0.2.1", 5060)
UAS = ("192.0.2.10", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKlayer1",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    uri: str = "sip:bob@192.0.2.10",
    via_host: str = "192.0.2.1:5060",
) -> SipRequest:
    tag = f";tag={to_tag}" if to_tag else ""
    bparam = f";branch={branch}" if branch else ""
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}{bparam}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <sip:bob@example.com>{tag}\r\n"
        "Call-ID: call-L@192.0.2.1\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@192.0.2.1>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def drive(
    layer: TransactionLayer, until: float
) -> list[tuple[float, list[SendMessage], list[Event]]]:
    out: list[tuple[float, list[SendMessage], list[Event]]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        actions, events = layer.poll(deadline)
        out.append((deadline, actions, events))
    return out


def events_of(log: list[tuple[float, list[SendMessage], list[Event]]]) -> list[Event]:
    return [e for _, _, evs in log for e in evs]


def server_tx(layer: TransactionLayer, req: SipRequest, now: float = 0.0) -> ServerTransaction:
    _, events = layer.receive(req, SRC, now)
    [event] = events
    assert isinstance(event, RequestReceived) and event.tx is not None
    return event.tx


def statuses(actions: list[SendMessage]) -> list[int]:
    return [a.message.status for a in actions if isinstance(a.message, SipResponse)]


# --- CANCEL (RFC 3261 §9.2) --------------------------------------------------------------------


def test_cancel_answered_200_then_tu_sends_487_and_ack_is_absorbed() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request())
    layer.respond(inv, make_response(inv.request, 180, to_tag="b1"), 0.1)
    cancel = request("CANCEL")
    actions, events = layer.receive(cancel, SRC, 1.0)
    [ok] = actions
    assert ok.addr == SRC
    assert isinstance(ok.message, SipResponse)
    assert (ok.message.status, ok.message.cseq.method) == (200, "CANCEL")
    assert ok.message.to.tag == "b1"  # §9.2: same tag as the INVITE's responses
    assert events == [CancelReceived(cancel, inv)]
    # The TU terminates the INVITE.
    terminated = make_response(inv.request, 487, to_tag="b1")
    assert layer.respond(inv, terminated, 1.0) == [SendMessage(terminated, SRC)]
    assert inv.state is ServerState.COMPLETED
    # A retransmitted CANCEL gets the same 200, nothing new for the TU.
    assert layer.receive(cancel, SRC, 1.2) == ([ok], [])
    # The UAC's ACK for the 487 (same branch as the INVITE) is absorbed.
    assert layer.receive(request("ACK", to_tag="b1"), SRC, 1.3) == ([], [])
    assert inv.state is ServerState.CONFIRMED
    log = drive(layer, 1000.0)
    ended = [e.tx for e in events_of(log) if isinstance(e, TransactionTerminated)]
    assert len(ended) == 2 and inv in ended  # the INVITE and the CANCEL transactions
    assert not any(isinstance(e, TransactionTimeout) for e in events_of(log))
    assert len(layer) == 0


def test_cancel_without_matching_invite_gets_481() -> None:
    layer = TransactionLayer()
    actions, events = layer.receive(request("CANCEL", branch="z9hG4bKnothing"), SRC, 0.0)
    assert statuses(actions) == [481]
    assert events == []
    # The CANCEL transaction still absorbs its retransmissions, then goes away.
    assert statuses(layer.receive(request("CANCEL", branch="z9hG4bKnothing"), SRC, 0.5)[0]) == [481]
    drive(layer, 100.0)
    assert len(layer) == 0


def test_cancel_after_final_response_has_no_effect() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request())
    layer.respond(inv, make_response(inv.request, 200, to_tag="b1"), 0.1)
    actions, events = layer.receive(request("CANCEL"), SRC, 0.2)
    assert statuses(actions) == [200]
    assert events == []
    assert inv.state is ServerState.ACCEPTED


def test_cancel_before_any_response_gets_a_tag() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request())
    actions, events = layer.receive(request("CANCEL"), SRC, 0.05)
    [ok] = actions
    assert isinstance(ok.message, SipResponse) and ok.message.to.tag
    [event] = events
    assert isinstance(event, CancelReceived) and event.invite_tx is inv


def test_cancel_matches_only_its_own_invite() -> None:
    layer = TransactionLayer()
    server_tx(layer, request())
    actions, events = layer.receive(request("CANCEL", branch="z9hG4bKlayer2"), SRC, 0.1)
    assert statuses(actions) == [481]
    assert events == []


# --- RFC 2543 matching (§17.2.3) ---------------------------------------------------------------


def test_branchless_invite_retransmission_matches_by_fields() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request(branch=None))
    ringing = make_response(inv.request, 180, to_tag="b1")
    layer.respond(inv, ringing, 0.0)
    # Identical copy: absorbed.
    assert layer.receive(request(branch=None), SRC, 0.5) == ([SendMessage(ringing, SRC)], [])
    # A branch without the magic cookie is RFC 2543 too.
    old = server_tx(layer, request("OPTIONS", branch="1234"))
    assert layer.receive(request("OPTIONS", branch="1234"), SRC, 0.1) == ([], [])
    assert old.state is ServerState.TRYING
    # Different CSeq / Request-URI / Call-ID-level fields: new transactions.
    server_tx(layer, request(branch=None, cseq=2))
    server_tx(layer, request(branch=None, uri="sip:carol@192.0.2.10"))
    server_tx(layer, request(branch=None, via_host="192.0.2.1:5070"))
    assert len(layer) == 5


def test_branchless_ack_for_non2xx_matches_by_to_tag() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request(branch=None))
    layer.respond(inv, make_response(inv.request, 486, to_tag="b1"), 0.0)
    # Wrong To tag: not an ACK for our response.
    wrong = request("ACK", branch=None, to_tag="zzz")
    assert layer.receive(wrong, SRC, 0.1) == ([], [RequestReceived(wrong, SRC, None)])
    assert inv.state is ServerState.COMPLETED
    assert layer.receive(request("ACK", branch=None, to_tag="b1"), SRC, 0.2) == ([], [])
    assert inv.state is ServerState.CONFIRMED


def test_branchless_cancel_matches_invite() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request(branch=None))
    actions, events = layer.receive(request("CANCEL", branch=None), SRC, 0.1)
    assert statuses(actions) == [200]
    assert len(events) == 1
    assert isinstance(events[0], CancelReceived) and events[0].invite_tx is inv


def test_branchless_reinvite_ack_for_2xx_reaches_tu_and_stops_retransmission() -> None:
    layer = TransactionLayer()
    inv = server_tx(layer, request(branch=None, to_tag="b1", cseq=5))
    ok = make_response(inv.request, 200)
    layer.respond(inv, ok, 0.0)
    ack = request("ACK", branch=None, to_tag="b1", cseq=5)
    assert layer.receive(ack, SRC, 0.2) == ([], [RequestReceived(ack, SRC, None)])
    assert inv.acked
    assert [a for _, acts, _ in drive(layer, 100.0) for a in acts] == []


# --- robustness and bookkeeping ----------------------------------------------------------------


def test_messages_without_usable_headers_are_dropped() -> None:
    layer = TransactionLayer()
    req = request()
    no_via = SipRequest("INVITE", req.uri, req.headers.remove("Via"))
    no_cseq = SipRequest("INVITE", req.uri, req.headers.remove("CSeq"))
    no_from = SipRequest("INVITE", req.uri, req.headers.remove("From"))
    for msg in (no_via, no_cseq, no_from):
        assert layer.receive(msg, SRC, 0.0) == ([], [])
    resp = make_response(req, 200)
    assert layer.receive(
        dataclasses.replace(resp, headers=resp.headers.remove("Via")), UAS, 0.0
    ) == ([], [])
    assert layer.receive(SipResponse(200, "OK", Headers()), UAS, 0.0) == ([], [])
    assert len(layer) == 0


def test_response_without_branch_is_stray() -> None:
    layer = TransactionLayer()
    resp = make_response(request(branch=None), 200)
    assert layer.receive(resp, UAS, 0.0) == ([], [StrayResponse(resp, UAS)])


def test_idle_layer_has_no_deadline_and_poll_is_a_noop() -> None:
    layer = TransactionLayer()
    assert layer.next_deadline() is None
    assert layer.poll(1e9) == ([], [])
    assert len(layer) == 0


def test_no_leaks_after_many_transactions() -> None:
    layer = TransactionLayer()
    for i in range(50):
        # Server side: INVITE rejected, INVITE accepted (never ACKed), BYE answered.
        inv = server_tx(layer, request(branch=f"z9hG4bKi{i}", cseq=3 * i + 1), now=i)
        layer.respond(inv, make_response(inv.request, 486 if i % 2 else 200, to_tag="t"), i)
        bye = server_tx(
            layer, request("BYE", branch=f"z9hG4bKb{i}", cseq=3 * i + 2, to_tag="t"), now=i
        )
        layer.respond(bye, make_response(bye.request, 200), i)
        # Client side: INVITE that times out, OPTIONS that gets an answer.
        layer.send_request(request(branch=f"z9hG4bKc{i}"), UAS, i)
        _, _ = layer.send_request(request("OPTIONS", branch=f"z9hG4bKo{i}"), UAS, i)
        layer.receive(make_response(request("OPTIONS", branch=f"z9hG4bKo{i}"), 200), UAS, i + 0.1)
    assert len(layer) == 200
    log = drive(layer, 1e6)
    terminated = [e for e in events_of(log) if isinstance(e, TransactionTerminated)]
    assert len(terminated) == 200
    assert len({id(e.tx) for e in terminated}) == 200
    assert len(layer) == 0
    assert layer.next_deadline() is None


# --- two layers over a lossy network ----------------------------------------------------------


class Net:
    """Two transaction layers (UAC at SRC, UAS at UAS) joined by a lossy, delaying wire."""

    def __init__(self, drops: list[bool], uas_status: int) -> None:
        self.uac = TransactionLayer()
        self.uas = TransactionLayer()
        self.drops = iter(drops)
        self.uas_status = uas_status
        self.wire: list[tuple[float, SendMessage, TransactionLayer, tuple[str, int]]] = []
        self.uac_events: list[Event] = []
        self.uas_events: list[Event] = []
        self.ack_sent = 0

    def send(self, now: float, actions: list[SendMessage], sender: TransactionLayer) -> None:
        for a in actions:
            if next(self.drops, False):
                continue
            to, source = (self.uas, SRC) if sender is self.uac else (self.uac, UAS)
            assert a.addr == (UAS if sender is self.uac else SRC)
            # Re-parse: what goes on the wire must be valid.
            self.wire.append((now + 0.05, SendMessage(parse(bytes(a.message)), a.addr), to, source))

    def tu(self, now: float, layer: TransactionLayer, events: list[Event]) -> None:
        if layer is self.uas:
            self.uas_events += events
            for e in events:
                if isinstance(e, RequestReceived) and e.tx is not None:
                    resp = make_response(e.request, self.uas_status, to_tag="uas")
                    self.send(now, layer.respond(e.tx, resp, now), layer)
        else:
            self.uac_events += events
            for e in events:
                resp = e.response if isinstance(e, ResponseReceived | StrayResponse) else None
                if resp is not None and 200 <= resp.status < 300:
                    # The TU ACKs every 2xx itself (§13.2.2.4), with a fresh branch.
                    ack = request("ACK", branch="z9hG4bKtuack", to_tag=resp.to.tag)
                    self.ack_sent += 1
                    self.send(now, [SendMessage(ack, UAS)], layer)

    def run(self) -> None:
        _tx, actions = self.uac.send_request(request(branch="z9hG4bKsim"), UAS, 0.0)
        self.send(0.0, actions, self.uac)
        for _ in range(10_000):
            candidates = [
                t for t in (self.uac.next_deadline(), self.uas.next_deadline()) if t is not None
            ]
            candidates += [w[0] for w in self.wire]
            if not candidates:
                return
            now = min(candidates)
            due = [w for w in self.wire if w[0] <= now]
            self.wire = [w for w in self.wire if w[0] > now]
            for _, msg, layer, source in due:
                acts, evs = layer.receive(msg.message, source, now)
                self.send(now, acts, layer)
                self.tu(now, layer, evs)
            for layer in (self.uac, self.uas):
                acts, evs = layer.poll(now)
                self.send(now, acts, layer)
                self.tu(now, layer, evs)
        raise AssertionError("simulation did not settle")


@settings(max_examples=150, deadline=None)
@given(drops=st.lists(st.booleans(), max_size=40), uas_status=st.sampled_from([200, 486]))
def test_lossy_invite_exchange_settles_without_leaks(drops: list[bool], uas_status: int) -> None:
    net = Net(drops, uas_status)
    net.run()
    assert len(net.uac) == 0 and len(net.uas) == 0
    # The UAS TU sees the INVITE at most once, however often it was retransmitted.
    invites = [e for e in net.uas_events if isinstance(e, RequestReceived) and e.tx is not None]
    assert len(invites) <= 1
    finals = [
        e for e in net.uac_events if isinstance(e, ResponseReceived) and e.response.status >= 300
    ]
    timeouts = [e for e in net.uac_events if isinstance(e, TransactionTimeout)]
    if uas_status >= 300:
        # Exactly one outcome for the UAC's TU: the final response or a timeout.
        assert len(finals) + len(timeouts) == 1
    if invites and uas_status == 200:
        uas_timeouts = [e for e in net.uas_events if isinstance(e, TransactionTimeout)]
        acks = [e for e in net.uas_events if isinstance(e, RequestReceived) and e.tx is None]
        # Either an ACK made it (within 64*T1, since the 2xx copies stop at 31.5 s), or the
        # UAS TU is told it never came.
        assert bool(acks) != bool(uas_timeouts)
    if not drops or not any(drops):
        # Loss-free: the exchange completes normally.
        assert invites and not timeouts
        if uas_status == 200:
            assert net.ack_sent >= 1
            assert any(isinstance(e, RequestReceived) and e.tx is None for e in net.uas_events)


def test_client_tx_types_are_exposed() -> None:
    layer = TransactionLayer()
    tx, _ = layer.send_request(request(), UAS, 0.0)
    assert isinstance(tx, ClientTransaction)
    assert make_cancel(tx.request).vias == tx.request.vias[:1]
