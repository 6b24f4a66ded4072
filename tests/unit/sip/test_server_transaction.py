"""Server transactions (RFC 3261 §17.2.1 INVITE with RFC 6026, §17.2.2 non-INVITE), via the layer."""

from __future__ import annotations

import pytest

from callbridge.sip.message import SipRequest, SipResponse, make_response, parse
from callbridge.sip.timers import TimerSettings
from callbridge.sip.transaction import (
    Event,
    RequestReceived,
    SendMessage,
    ServerState,
    ServerTransaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
)

SRC = ("192.0.2.1", 5060)
BRANCH = "z9hG4bKserver1"


def request(
    method: str = "INVITE",
    *,
    branch: str = BRANCH,
    cseq: int | None = None,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    via_host: str = "192.0.2.1:5060",
    rport: bool = False,
) -> SipRequest:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:bob@192.0.2.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch={branch}{';rport' if rport else ''}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <sip:bob@example.com>{tag}\r\n"
        "Call-ID: call-9@192.0.2.1\r\n"
        f"CSeq: {cseq or 1} {cseq_method or method}\r\n"
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


def send_times(log: list[tuple[float, list[SendMessage], list[Event]]]) -> list[float]:
    return [t for t, actions, _ in log for _a in actions]


def new_invite(layer: TransactionLayer, now: float = 0.0) -> ServerTransaction:
    actions, events = layer.receive(request(), SRC, now)
    assert actions == []
    [event] = events
    assert isinstance(event, RequestReceived)
    assert event.tx is not None
    return event.tx


# --- INVITE server transaction -------------------------------------------------------------


def test_new_invite_goes_to_tu_with_a_proceeding_transaction() -> None:
    layer = TransactionLayer()
    req = request()
    actions, events = layer.receive(req, SRC, 0.0)
    assert actions == []
    [event] = events
    assert isinstance(event, RequestReceived)
    tx = event.tx
    assert tx is not None
    assert event.request == req  # sent-by equals the source: nothing to stamp
    assert event.source == SRC
    assert tx.request == req
    assert tx.source == SRC
    assert tx.method == "INVITE"
    assert tx.state is ServerState.PROCEEDING
    assert tx.last_response is None
    assert len(layer) == 1


def test_automatic_100_trying_after_200_ms() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    log = drive(layer, 1.0)
    [(t, [action], events)] = log
    assert t == pytest.approx(0.2)
    assert events == []
    assert isinstance(action.message, SipResponse)
    assert action.message.status == 100
    assert action.message.to.tag is None  # a 100 needs no tag (§8.2.6.1)
    assert action.addr == SRC
    assert tx.last_response == action.message
    assert tx.state is ServerState.PROCEEDING


def test_no_automatic_100_when_tu_answers_quickly_or_disabled() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    ringing = make_response(tx.request, 180, to_tag="b1")
    assert layer.respond(tx, ringing, 0.1) == [SendMessage(ringing, SRC)]
    assert drive(layer, 10.0) == []
    off = TransactionLayer(TimerSettings(trying_delay=None))
    new_invite(off)
    assert off.next_deadline() is None


def test_retransmitted_invite_is_absorbed_and_repeats_last_provisional() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    # Before any response the client needs to hear from us: 100 at once.
    actions, events = layer.receive(request(), SRC, 0.1)
    assert events == []
    [a] = actions
    assert isinstance(a.message, SipResponse) and a.message.status == 100
    assert drive(layer, 1.0) == []  # the 200 ms timer is off
    ringing = make_response(tx.request, 180, to_tag="b1")
    layer.respond(tx, ringing, 0.5)
    assert layer.receive(request(), SRC, 0.6) == ([SendMessage(ringing, SRC)], [])
    assert len(layer) == 1


def test_2xx_is_retransmitted_until_ack_and_ack_goes_to_tu() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    ok = make_response(tx.request, 200, to_tag="b1")
    assert layer.respond(tx, ok, 0.0) == [SendMessage(ok, SRC)]
    assert tx.state is ServerState.ACCEPTED
    log = drive(layer, 4.0)
    # §13.3.1.4: T1, 2T1, 4T1... capped at T2.
    assert send_times(log) == [0.5, 1.5, 3.5]
    assert all(a == SendMessage(ok, SRC) for _, acts, _ in log for a in acts)
    # A retransmitted INVITE in Accepted is absorbed and re-answered.
    assert layer.receive(request(), SRC, 4.5) == ([SendMessage(ok, SRC)], [])
    # The 2xx ACK is a new transaction (new branch); it is matched by dialog and passed up.
    ack = request("ACK", branch="z9hG4bKack1", to_tag="b1")
    actions, events = layer.receive(ack, SRC, 5.0)
    assert actions == []
    assert events == [RequestReceived(ack, SRC, None)]
    assert tx.acked
    # No more retransmissions; the tx lingers (Timer L) to absorb INVITE copies, then goes.
    log = drive(layer, 100.0)
    assert send_times(log) == []
    assert log == [(32.0, [], [TransactionTerminated(tx)])]
    assert len(layer) == 0
    # ACK copies after that are still the TU's business.
    assert layer.receive(ack, SRC, 40.0) == ([], [RequestReceived(ack, SRC, None)])


def test_2xx_ack_copies_all_reach_the_tu() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    layer.respond(tx, make_response(tx.request, 200, to_tag="b1"), 0.0)
    ack = request("ACK", branch="z9hG4bKack1", to_tag="b1")
    for t in (1.0, 1.6):
        assert layer.receive(ack, SRC, t) == ([], [RequestReceived(ack, SRC, None)])


def test_2xx_without_ack_times_out_at_64_t1() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    layer.respond(tx, make_response(tx.request, 200, to_tag="b1"), 0.0)
    log = drive(layer, 100.0)
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1] == (32.0, [], [TransactionTimeout(tx), TransactionTerminated(tx)])
    assert not tx.acked
    assert tx.state is ServerState.TERMINATED
    assert len(layer) == 0


def test_ack_with_wrong_to_tag_does_not_stop_2xx() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    layer.respond(tx, make_response(tx.request, 200, to_tag="b1"), 0.0)
    ack = request("ACK", branch="z9hG4bKack1", to_tag="someone-else")
    assert layer.receive(ack, SRC, 0.2) == ([], [RequestReceived(ack, SRC, None)])
    assert not tx.acked
    assert send_times(drive(layer, 0.6)) == [0.5]


def test_tu_may_send_further_2xx_in_accepted() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    ok = make_response(tx.request, 200, to_tag="b1")
    layer.respond(tx, ok, 0.0)
    assert layer.respond(tx, ok, 0.3) == [SendMessage(ok, SRC)]
    # Anything else is ignored in Accepted: the first final response won.
    assert layer.respond(tx, make_response(tx.request, 487, to_tag="b1"), 0.3) == []
    assert layer.respond(tx, make_response(tx.request, 180, to_tag="b1"), 0.3) == []


def test_non2xx_final_retransmitted_on_timer_g_until_ack() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    busy = make_response(tx.request, 486, to_tag="b1")
    assert layer.respond(tx, busy, 0.0) == [SendMessage(busy, SRC)]
    assert tx.state is ServerState.COMPLETED
    log = drive(layer, 8.0)
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5]
    # A retransmitted INVITE gets the final response again.
    assert layer.receive(request(), SRC, 8.2) == ([SendMessage(busy, SRC)], [])
    # The ACK for a non-2xx shares the INVITE's branch (§17.1.1.3) and is absorbed.
    ack = request("ACK", to_tag="b1")
    assert layer.receive(ack, SRC, 9.0) == ([], [])
    assert tx.state is ServerState.CONFIRMED
    # Confirmed absorbs ACK and INVITE copies silently.
    assert layer.receive(ack, SRC, 9.5) == ([], [])
    assert layer.receive(request(), SRC, 9.6) == ([], [])
    # Timer I = T4 = 5 s, and no more Timer G.
    log = drive(layer, 100.0)
    assert log == [(14.0, [], [TransactionTerminated(tx)])]
    assert len(layer) == 0


def test_non2xx_final_without_ack_times_out_on_timer_h() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    layer.respond(tx, make_response(tx.request, 603, to_tag="b1"), 0.0)
    log = drive(layer, 100.0)
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1] == (32.0, [], [TransactionTimeout(tx), TransactionTerminated(tx)])
    assert len(layer) == 0


def test_respond_after_termination_is_ignored() -> None:
    layer = TransactionLayer()
    tx = new_invite(layer)
    layer.respond(tx, make_response(tx.request, 486, to_tag="b1"), 0.0)
    drive(layer, 100.0)
    assert tx.state is ServerState.TERMINATED
    assert layer.respond(tx, make_response(tx.request, 200, to_tag="b1"), 101.0) == []
    assert len(layer) == 0


# --- response addressing (RFC 3261 §18.2.2, RFC 3581) ----------------------------------------


def test_rport_and_received_are_stamped_and_used() -> None:
    layer = TransactionLayer()
    nat_src = ("203.0.113.7", 40123)
    _actions, events = layer.receive(
        request("OPTIONS", via_host="10.1.1.1:5060", rport=True), nat_src, 0.0
    )
    [event] = events
    assert isinstance(event, RequestReceived) and event.tx is not None
    via = event.request.vias[0]
    assert via.param("received") == "203.0.113.7"
    assert via.param("rport") == "40123"
    assert via.branch == BRANCH
    assert event.tx.request == event.request
    # Built with make_response, the response carries the stamped Via and goes back to the NAT.
    ok = make_response(event.request, 200, to_tag="b1")
    assert ok.vias[0] == via
    assert layer.respond(event.tx, ok, 0.1) == [SendMessage(ok, nat_src)]


def test_received_without_rport_uses_sent_by_port() -> None:
    layer = TransactionLayer()
    _, [event] = layer.receive(
        request("OPTIONS", via_host="pc33.example.com:5070"), ("198.51.100.3", 6000), 0.0
    )
    assert isinstance(event, RequestReceived) and event.tx is not None
    via = event.request.vias[0]
    assert via.param("received") == "198.51.100.3"
    assert via.param("rport") is None
    assert event.tx.response_addr == ("198.51.100.3", 5070)


def test_rport_is_stamped_even_when_host_matches() -> None:
    layer = TransactionLayer()
    _, [event] = layer.receive(request("OPTIONS", rport=True), ("192.0.2.1", 5062), 0.0)
    assert isinstance(event, RequestReceived) and event.tx is not None
    via = event.request.vias[0]
    assert (via.param("received"), via.param("rport")) == ("192.0.2.1", "5062")
    assert event.tx.response_addr == ("192.0.2.1", 5062)


def test_stamping_keeps_lower_vias_and_other_headers() -> None:
    text = (
        "OPTIONS sip:bob@192.0.2.10 SIP/2.0\r\n"
        "v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1;rport, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKu1\r\n"
        "Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKu0\r\n"
        "Max-Forwards: 69\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: stamp@x\r\n"
        "CSeq: 7 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, SipRequest)
    layer = TransactionLayer()
    _, [event] = layer.receive(msg, ("192.0.2.50", 5060), 0.0)
    assert isinstance(event, RequestReceived)
    vias = event.request.vias
    assert [v.branch for v in vias] == ["z9hG4bKp1", "z9hG4bKu1", "z9hG4bKu0"]
    assert vias[0].param("received") == "192.0.2.50"
    assert vias[1:] == msg.vias[1:]
    assert event.request.headers.get("Max-Forwards") == "69"
    assert event.request.cseq == msg.cseq
    # Still a valid message on the wire.
    assert parse(bytes(event.request)) == event.request


# --- non-INVITE server transaction ---------------------------------------------------------


def test_non_invite_trying_absorbs_retransmissions_silently() -> None:
    layer = TransactionLayer()
    _, [event] = layer.receive(request("BYE", to_tag="b1"), SRC, 0.0)
    assert isinstance(event, RequestReceived) and event.tx is not None
    tx = event.tx
    assert tx.state is ServerState.TRYING
    assert layer.next_deadline() is None  # no automatic 100 for non-INVITE
    assert layer.receive(request("BYE", to_tag="b1"), SRC, 0.5) == ([], [])
    ok = make_response(tx.request, 200)
    assert layer.respond(tx, ok, 1.0) == [SendMessage(ok, SRC)]
    assert tx.state is ServerState.COMPLETED
    # Completed: repeat the final response to retransmissions.
    assert layer.receive(request("BYE", to_tag="b1"), SRC, 2.0) == ([SendMessage(ok, SRC)], [])
    # Later responses from the TU are ignored.
    assert layer.respond(tx, make_response(tx.request, 500), 2.5) == []
    # Timer J = 64*T1.
    assert drive(layer, 100.0) == [(33.0, [], [TransactionTerminated(tx)])]
    assert len(layer) == 0
    # After Timer J a copy would be a new request.
    _, [again] = layer.receive(request("BYE", to_tag="b1"), SRC, 40.0)
    assert isinstance(again, RequestReceived) and again.tx is not tx


def test_non_invite_proceeding_repeats_provisional() -> None:
    layer = TransactionLayer()
    _, [event] = layer.receive(request("INFO", to_tag="b1"), SRC, 0.0)
    assert isinstance(event, RequestReceived) and event.tx is not None
    tx = event.tx
    trying = make_response(tx.request, 100)
    assert layer.respond(tx, trying, 0.1) == [SendMessage(trying, SRC)]
    assert tx.state is ServerState.PROCEEDING
    assert layer.receive(request("INFO", to_tag="b1"), SRC, 0.5) == ([SendMessage(trying, SRC)], [])
    ok = make_response(tx.request, 200)
    layer.respond(tx, ok, 0.6)
    assert tx.state is ServerState.COMPLETED
    assert tx.last_response == ok
    drive(layer, 100.0)
    assert len(layer) == 0


def test_same_branch_different_method_is_a_different_transaction() -> None:
    layer = TransactionLayer()
    _, [e1] = layer.receive(request("OPTIONS"), SRC, 0.0)
    _, [e2] = layer.receive(request("INFO"), SRC, 0.0)
    assert isinstance(e1, RequestReceived) and isinstance(e2, RequestReceived)
    assert e1.tx is not e2.tx
    assert len(layer) == 2


def test_same_branch_different_sent_by_is_a_different_transaction() -> None:
    layer = TransactionLayer()
    _, [_e1] = layer.receive(request("OPTIONS"), SRC, 0.0)
    _, [e2] = layer.receive(
        request("OPTIONS", via_host="192.0.2.99:5060"), ("192.0.2.99", 5060), 0.0
    )
    assert isinstance(e2, RequestReceived) and e2.tx is not None
    assert len(layer) == 2
