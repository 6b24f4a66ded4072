"""Client transactions (RFC 3261 §17.1.1 INVITE with RFC 6026, §17.1.2 non-INVITE), via the layer."""

from __future__ import annotations

import pytest

from callbridge.sip.message import SipRequest, SipResponse, make_response, parse
from callbridge.sip.transaction import (
    ClientState,
    Event,
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    make_cancel,
)

DEST = ("192.0.2.10", 5060)
BRANCH = "z9hG4bKclient1"


def request(method: str = "INVITE", *, branch: str | None = BRANCH, cseq: int = 1) -> SipRequest:
    via_params = f";branch={branch}" if branch else ""
    text = (
        f"{method} sip:bob@192.0.2.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060{via_params};rport\r\n"
        "Route: <sip:p1.example.com;lr>\r\n"
        "Route: <sip:p2.example.com;lr>\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=a1\r\n"
        "To: Bob <sip:bob@example.com>\r\n"
        "Call-ID: call-1@192.0.2.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.1>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def reply(req: SipRequest, status: int, to_tag: str | None = "b1") -> SipResponse:
    # Round-trip through bytes, like a real peer would.
    resp = parse(bytes(make_response(req, status, to_tag=to_tag if status > 100 else None)))
    assert isinstance(resp, SipResponse)
    return resp


def drive(
    layer: TransactionLayer, until: float
) -> list[tuple[float, list[SendMessage], list[Event]]]:
    """Fire every timer up to `until`, recording (time, actions, events) per poll."""
    out: list[tuple[float, list[SendMessage], list[Event]]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        actions, events = layer.poll(deadline)
        out.append((deadline, actions, events))
    return out


def send_times(log: list[tuple[float, list[SendMessage], list[Event]]]) -> list[float]:
    return [t for t, actions, _ in log for _a in actions]


# --- INVITE client transaction -------------------------------------------------------------


def test_invite_sent_immediately_to_dest() -> None:
    layer = TransactionLayer()
    req = request()
    tx, actions = layer.send_request(req, DEST, 0.0)
    assert actions == [SendMessage(req, DEST)]
    assert tx.state is ClientState.CALLING
    assert tx.method == "INVITE"
    assert tx.key == (BRANCH, "INVITE")
    assert tx.request is req
    assert tx.last_response is None
    assert len(layer) == 1
    assert layer.next_deadline() == 0.5


def test_invite_retransmits_on_timer_a_and_times_out_on_timer_b() -> None:
    layer = TransactionLayer()
    tx, _ = layer.send_request(request(), DEST, 0.0)
    log = drive(layer, 100.0)
    # §17.1.1.2: Timer A doubles without cap; Timer B = 64*T1 = 32 s.
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(a.message is tx.request and a.addr == DEST for _, acts, _ in log for a in acts)
    t, actions, events = log[-1]
    assert t == 32.0
    assert actions == []
    assert events == [TransactionTimeout(tx), TransactionTerminated(tx)]
    assert tx.state is ClientState.TERMINATED
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_invite_timer_schedule_scales_with_t1() -> None:
    from callbridge.sip.timers import TimerSettings

    layer = TransactionLayer(TimerSettings(t1=0.1, t2=1.0, t4=1.0))
    layer.send_request(request(), DEST, 10.0)
    log = drive(layer, 100.0)
    assert send_times(log) == pytest.approx([10.1, 10.3, 10.7, 11.5, 13.1, 16.3])
    assert log[-1][0] == pytest.approx(16.4)
    assert len(layer) == 0


def test_provisional_stops_retransmission_and_goes_to_tu() -> None:
    layer = TransactionLayer()
    req = request()
    tx, _ = layer.send_request(req, DEST, 0.0)
    ringing = reply(req, 180)
    actions, events = layer.receive(ringing, DEST, 0.3)
    assert actions == []
    assert events == [ResponseReceived(ringing, tx)]
    assert tx.state is ClientState.PROCEEDING
    assert tx.last_response == ringing
    # §17.1.1.2: no more retransmissions, and Timer B no longer applies.
    assert layer.next_deadline() is None
    assert drive(layer, 100.0) == []
    # More provisionals still reach the TU.
    progress = reply(req, 183)
    assert layer.receive(progress, DEST, 1.0) == ([], [ResponseReceived(progress, tx)])
    assert tx.state is ClientState.PROCEEDING


def test_non2xx_final_is_acked_by_the_transaction() -> None:
    layer = TransactionLayer()
    req = request()
    tx, _ = layer.send_request(req, DEST, 0.0)
    layer.receive(reply(req, 180), DEST, 0.1)
    busy = reply(req, 486)
    actions, events = layer.receive(busy, DEST, 1.0)
    assert events == [ResponseReceived(busy, tx)]
    assert tx.state is ClientState.COMPLETED
    assert len(actions) == 1
    ack = actions[0].message
    assert actions[0].addr == DEST
    assert isinstance(ack, SipRequest)
    # §17.1.1.3: same Request-URI, Call-ID, From, CSeq number, top Via (branch), Route;
    # To from the response (with its tag).
    assert ack.method == "ACK"
    assert ack.uri == req.uri
    assert ack.call_id == req.call_id
    assert ack.from_ == req.from_
    assert ack.to.tag == "b1"
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert ack.vias == [req.vias[0]]
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert ack.max_forwards == 70
    assert ack.body == b""
    assert tx.ack == ack
    # It survives the wire.
    wire = parse(bytes(ack))
    assert isinstance(wire, SipRequest)
    assert (wire.method, wire.vias, wire.to.tag) == ("ACK", req.vias[:1], "b1")


def test_completed_reacks_retransmitted_final_and_ends_on_timer_d() -> None:
    layer = TransactionLayer()
    req = request()
    tx, _ = layer.send_request(req, DEST, 0.0)
    busy = reply(req, 486)
    first, _ = layer.receive(busy, DEST, 0.2)  # straight from Calling
    assert tx.state is ClientState.COMPLETED
    # §17.1.1.2: the retransmission means our ACK got lost: re-send it, nothing to the TU.
    actions, events = layer.receive(busy, DEST, 1.0)
    assert actions == first
    assert events == []
    # Timer A/B are off: the only timer left is D (32 s from the final response).
    assert layer.next_deadline() == pytest.approx(32.2)
    log = drive(layer, 100.0)
    assert log == [(pytest.approx(32.2), [], [TransactionTerminated(tx)])]
    assert len(layer) == 0
    # After Timer D the response is stray.
    assert layer.receive(busy, DEST, 40.0) == ([], [StrayResponse(busy, DEST)])


def test_2xx_enters_accepted_and_retransmissions_reach_the_tu() -> None:
    layer = TransactionLayer()
    req = request()
    tx, _ = layer.send_request(req, DEST, 0.0)
    ok = reply(req, 200)
    # RFC 6026 §8.4: Accepted; the TU (not the transaction) ACKs a 2xx.
    assert layer.receive(ok, DEST, 0.4) == ([], [ResponseReceived(ok, tx)])
    assert tx.state is ClientState.ACCEPTED
    assert layer.receive(ok, DEST, 0.9) == ([], [ResponseReceived(ok, tx)])
    # A 2xx from another fork also goes up.
    other = reply(req, 200, to_tag="fork2")
    assert layer.receive(other, DEST, 1.0) == ([], [ResponseReceived(other, tx)])
    # Provisional or error responses are absorbed in Accepted.
    assert layer.receive(reply(req, 180), DEST, 1.1) == ([], [])
    assert layer.receive(reply(req, 500), DEST, 1.2) == ([], [])
    # Timer M = 64*T1 from entering Accepted.
    log = drive(layer, 100.0)
    assert log == [(pytest.approx(32.4), [], [TransactionTerminated(tx)])]
    assert len(layer) == 0
    # §13.2.2.4: a later retransmission is stray; the TU re-ACKs it from the dialog.
    assert layer.receive(ok, DEST, 40.0) == ([], [StrayResponse(ok, DEST)])


def test_forked_2xx_after_failure_still_reaches_tu() -> None:
    layer = TransactionLayer()
    req = request()
    tx, _ = layer.send_request(req, DEST, 0.0)
    layer.receive(reply(req, 486, to_tag="f1"), DEST, 0.1)
    ok = reply(req, 200, to_tag="f2")
    assert layer.receive(ok, DEST, 0.2) == ([], [ResponseReceived(ok, tx)])
    assert layer.receive(reply(req, 180, to_tag="f3"), DEST, 0.3) == ([], [])


def test_response_matching_needs_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    req = request()
    tx, _ = layer.send_request(req, DEST, 0.0)
    # §17.1.3: same branch but another CSeq method (e.g. a CANCEL's response) is not ours.
    bye_like = reply(request("BYE"), 200)
    assert layer.receive(bye_like, DEST, 0.1) == ([], [StrayResponse(bye_like, DEST)])
    unknown = reply(request(branch="z9hG4bKother"), 180)
    assert layer.receive(unknown, DEST, 0.1) == ([], [StrayResponse(unknown, DEST)])
    assert tx.state is ClientState.CALLING


def test_cancel_runs_its_own_transaction_and_guards_the_invite() -> None:
    layer = TransactionLayer()
    req = request()
    inv, _ = layer.send_request(req, DEST, 0.0)
    layer.receive(reply(req, 180), DEST, 0.1)
    cancel = make_cancel(req)
    # §9.1: same branch, Request-URI, Call-ID, From, To, CSeq number; method CANCEL.
    assert cancel.method == "CANCEL"
    assert cancel.vias == [req.vias[0]]
    assert (cancel.cseq.number, cancel.cseq.method) == (1, "CANCEL")
    assert (cancel.uri, cancel.call_id, cancel.from_, cancel.to) == (
        req.uri,
        req.call_id,
        req.from_,
        req.to,
    )
    assert cancel.headers.get_all("Route") == req.headers.get_all("Route")
    ctx, actions = layer.send_request(cancel, DEST, 5.0)
    assert actions == [SendMessage(cancel, DEST)]
    assert ctx.key == (BRANCH, "CANCEL")
    assert ctx.state is ClientState.TRYING
    assert len(layer) == 2
    ok = reply(cancel, 200)
    assert layer.receive(ok, DEST, 5.1) == ([], [ResponseReceived(ok, ctx)])
    # The peer never sends its 487: 64*T1 after the CANCEL the INVITE is given up (§9.1).
    log = drive(layer, 100.0)
    events = [e for _, _, evs in log for e in evs]
    assert TransactionTimeout(inv) in events
    assert TransactionTerminated(inv) in events
    assert TransactionTerminated(ctx) in events
    assert [t for t, _, evs in log if TransactionTimeout(inv) in evs] == [37.0]
    assert len(layer) == 0


def test_487_after_cancel_is_acked_and_disarms_guard() -> None:
    layer = TransactionLayer()
    req = request()
    inv, _ = layer.send_request(req, DEST, 0.0)
    layer.receive(reply(req, 180), DEST, 0.1)
    ctx, _ = layer.send_request(make_cancel(req), DEST, 1.0)
    layer.receive(reply(ctx.request, 200), DEST, 1.1)
    terminated = reply(req, 487)
    actions, events = layer.receive(terminated, DEST, 1.2)
    assert [a.message.method for a in actions if isinstance(a.message, SipRequest)] == ["ACK"]
    assert events == [ResponseReceived(terminated, inv)]
    log = drive(layer, 1000.0)
    assert all(not isinstance(e, TransactionTimeout) for _, _, evs in log for e in evs)
    assert len(layer) == 0


def test_ack_cannot_be_sent_through_a_transaction() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(request("ACK"), DEST, 0.0)


def test_duplicate_branch_rejected() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), DEST, 0.0)
    with pytest.raises(ValueError, match="already exists"):
        layer.send_request(request(), DEST, 0.0)


def test_missing_branch_gets_one() -> None:
    layer = TransactionLayer()
    tx, actions = layer.send_request(request("OPTIONS", branch=None), DEST, 0.0)
    branch = tx.request.vias[0].branch
    assert branch is not None and branch.startswith("z9hG4bK")
    assert tx.request.vias[0].param("rport") == ""
    assert actions == [SendMessage(tx.request, DEST)]
    assert tx.key == (branch, "OPTIONS")


# --- non-INVITE client transaction ---------------------------------------------------------


def test_non_invite_timer_e_doubles_to_t2_then_timer_f() -> None:
    layer = TransactionLayer()
    tx, _ = layer.send_request(request("OPTIONS"), DEST, 0.0)
    assert tx.state is ClientState.TRYING
    log = drive(layer, 100.0)
    # §17.1.2.2: intervals 0.5, 1, 2, 4, 4, ... (T2 cap) until Timer F at 32 s.
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1] == (32.0, [], [TransactionTimeout(tx), TransactionTerminated(tx)])
    assert len(layer) == 0


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    req = request("BYE")
    tx, _ = layer.send_request(req, DEST, 0.0)
    drive(layer, 0.5)  # first retransmission at 0.5, next armed for 1.5
    trying = reply(req, 100)
    assert layer.receive(trying, DEST, 0.7) == ([], [ResponseReceived(trying, tx)])
    assert tx.state is ClientState.PROCEEDING
    log = drive(layer, 100.0)
    # §17.1.2.2: in Proceeding Timer E is reset to T2 each time it fires.
    assert send_times(log) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert log[-1] == (32.0, [], [TransactionTimeout(tx), TransactionTerminated(tx)])


def test_non_invite_final_completes_and_timer_k_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    req = request("BYE")
    tx, _ = layer.send_request(req, DEST, 0.0)
    trying = reply(req, 100)
    layer.receive(trying, DEST, 0.1)
    ok = reply(req, 200)
    assert layer.receive(ok, DEST, 0.6) == ([], [ResponseReceived(ok, tx)])
    assert tx.state is ClientState.COMPLETED
    assert tx.last_response == ok
    # Completed: absorbs response retransmissions, sends nothing more.
    assert layer.receive(ok, DEST, 1.0) == ([], [])
    assert layer.receive(trying, DEST, 1.1) == ([], [])
    # Timer K = T4 = 5 s.
    assert layer.next_deadline() == pytest.approx(5.6)
    assert drive(layer, 100.0) == [(pytest.approx(5.6), [], [TransactionTerminated(tx)])]
    assert len(layer) == 0


def test_non_invite_final_directly_from_trying() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    tx, _ = layer.send_request(req, DEST, 0.0)
    ok = reply(req, 404)
    assert layer.receive(ok, DEST, 0.2) == ([], [ResponseReceived(ok, tx)])
    assert tx.state is ClientState.COMPLETED
    assert send_times(drive(layer, 100.0)) == []
    assert len(layer) == 0


def test_late_poll_fires_timers_in_order_at_their_deadlines() -> None:
    layer = TransactionLayer()
    tx, _ = layer.send_request(request("OPTIONS"), DEST, 0.0)
    actions, events = layer.poll(8.0)
    # Each timer runs at its own deadline, so the schedule is the same as with prompt polls.
    assert len(actions) == 4  # 0.5, 1.5, 3.5, 7.5
    assert events == []
    assert layer.next_deadline() == 11.5
    actions, events = layer.poll(1000.0)
    assert len(actions) == 6
    assert events == [TransactionTimeout(tx), TransactionTerminated(tx)]
