"""Blind transfer in the UA core (RFC 3515): REFER out, 202 / errors back, NOTIFY sipfrag in.

Golden messages: the REFER we send is checked header by header, and the NOTIFYs are written
out as a transferee (SIPp, a phone) sends them.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.sip.message import SipRequest, SipResponse, parse
from callbridge.sip.refer import (
    SipfragError,
    TransferFailed,
    TransferProgress,
    TransferSucceeded,
    parse_event,
    parse_sipfrag,
    parse_subscription_state,
    refer_to_uri,
)
from callbridge.sip.ua import CallConfirmed, CallEnded, Datagram, Output, UaError, UserAgent
from callbridge.sip.uri import SipUri
from tests.unit.sip.test_ua import (
    PEER,
    answered_call,
    events,
    in_dialog,
    new_ua,
    sent,
    statuses,
)

TARGET = "sip:sales@127.0.0.1:5070"


def start_transfer(now: float = 1.0) -> tuple[UserAgent, str, str, SipRequest]:
    """An answered inbound call (caller tag "caller") and the REFER we sent in it."""
    ua = new_ua()
    cid, to_tag = answered_call(ua)
    ack = in_dialog("ACK", to_tag, 1, "z9hG4bK-ack")
    assert [type(e) for e in events(ua.receive(ack, PEER, 0.1))] == [CallConfirmed]
    outs = ua.refer(cid, TARGET, now)
    assert not events(outs)
    (refer,) = sent(outs)
    assert isinstance(refer, SipRequest)
    assert [o.addr for o in outs if isinstance(o, Datagram)] == [PEER]
    return ua, cid, to_tag, refer


def reply(req: SipRequest, status: int, reason: str = "") -> bytes:
    head = [
        f"SIP/2.0 {status} {reason or {202: 'Accepted', 603: 'Decline'}.get(status, 'X')}",
        *(f"Via: {v}" for v in req.headers.get_all("Via")),
        f"From: {req.headers.get('From')}",
        f"To: {req.headers.get('To')}",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.headers.get('CSeq')}",
        "Contact: <sip:sipp@127.0.0.1:25080>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def notify(
    to_tag: str,
    cseq: int,
    body: bytes | None,
    *,
    state: str = "active;expires=60",
    event: str = "refer",
    content_type: str = "message/sipfrag;version=2.0",
    branch: str | None = None,
) -> bytes:
    """A NOTIFY from the transferee (the caller, From tag "caller"), as RFC 3515 §2.4.5 has it."""
    payload = body or b""
    lines = [
        "NOTIFY sip:agent@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:25080;branch={branch or f'z9hG4bK-n{cseq}'}",
        "From: sipp <sip:sipp@127.0.0.1:25080>;tag=caller",
        f"To: <sip:agent@127.0.0.1:5060>;tag={to_tag}",
        "Call-ID: cid-1",
        f"CSeq: {cseq} NOTIFY",
        "Contact: <sip:sipp@127.0.0.1:25080>",
        "Max-Forwards: 70",
        f"Event: {event}",
        f"Subscription-State: {state}",
    ]
    if payload:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def transfer_events(outs: list[Output]) -> list[Output]:
    return [
        e
        for e in events(outs)
        if isinstance(e, TransferProgress | TransferSucceeded | TransferFailed)
    ]


def run_timers(ua: UserAgent, until: float) -> tuple[float, list[Output]]:
    """Fire the UA's timers in order until a transfer event comes out: (when, events)."""
    while (deadline := ua.next_deadline()) is not None and deadline <= until:
        found = transfer_events(ua.poll(deadline))
        if found:
            return deadline, found
    return until, []


# ---- the REFER ----------------------------------------------------------------------------------


def test_refer_is_an_in_dialog_request_with_refer_to_and_referred_by() -> None:
    _, _, to_tag, refer = start_transfer()
    assert refer.method == "REFER"
    assert refer.uri == "sip:sipp@127.0.0.1:25080"  # the caller's Contact (remote target)
    h = refer.headers
    assert h.get("Refer-To") == f"<{TARGET}>"
    assert h.get("Referred-By") == "<sip:agent@127.0.0.1:5060>"
    assert refer.from_.tag == to_tag and refer.to.tag == "caller"
    assert refer.call_id == "cid-1"
    assert refer.cseq.number == 1 and refer.cseq.method == "REFER"
    assert refer.contacts, "REFER is a target refresh request: it carries our Contact"
    assert (refer.vias[0].branch or "").startswith("z9hG4bK")
    assert refer.max_forwards == 70


def test_refer_needs_an_established_call_and_one_transfer_at_a_time() -> None:
    ua, cid, _, _ = start_transfer()
    with pytest.raises(UaError):
        ua.refer(cid, TARGET, 2.0)
    with pytest.raises(UaError):
        ua.refer("c999", TARGET, 2.0)


# ---- flows ---------------------------------------------------------------------------------------


def test_202_then_notify_100_then_notify_200_succeeds() -> None:
    ua, cid, to_tag, refer = start_transfer()
    assert transfer_events(ua.receive(reply(refer, 202), PEER, 1.1)) == []
    outs = ua.receive(notify(to_tag, 2, b"SIP/2.0 100 Trying\r\n"), PEER, 1.2)
    assert statuses(outs) == [200]
    assert transfer_events(outs) == [TransferProgress(cid, 100, "Trying")]
    outs = ua.receive(
        notify(to_tag, 3, b"SIP/2.0 200 OK\r\n", state="terminated;reason=noresource"), PEER, 1.3
    )
    assert statuses(outs) == [200]
    assert transfer_events(outs) == [TransferSucceeded(cid, 200, "OK")]
    # The call is still up: the app hangs up (RFC 5589 §6.1), with the next CSeq.
    (bye,) = sent(ua.hangup(cid, 1.4))
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.cseq.number == 2
    assert ua.next_deadline() is not None  # only the BYE's retransmissions


def test_notify_200_response_carries_the_notify_transaction() -> None:
    ua, _, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    (ok,) = sent(ua.receive(notify(to_tag, 2, b"SIP/2.0 180 Ringing\r\n"), PEER, 1.2))
    assert isinstance(ok, SipResponse)
    assert ok.cseq.method == "NOTIFY" and ok.cseq.number == 2
    assert ok.to.tag == to_tag


def test_603_to_the_refer_fails_the_transfer() -> None:
    ua, cid, _, refer = start_transfer()
    outs = ua.receive(reply(refer, 603, "Decline"), PEER, 1.1)
    assert transfer_events(outs) == [TransferFailed(cid, 603, "Decline")]
    assert not [e for e in events(outs) if isinstance(e, CallEnded)]
    # The call goes on, and another transfer may be tried.
    assert sent(ua.refer(cid, TARGET, 2.0))[0].cseq.number == 2  # type: ignore[union-attr]


def test_notify_with_a_486_sipfrag_fails_the_transfer() -> None:
    ua, cid, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    outs = ua.receive(
        notify(to_tag, 2, b"SIP/2.0 486 Busy Here\r\n", state="terminated;reason=noresource"),
        PEER,
        1.2,
    )
    assert statuses(outs) == [200]
    assert transfer_events(outs) == [TransferFailed(cid, 486, "Busy Here")]


def test_no_final_notify_in_time_fails_the_transfer() -> None:
    ua, cid, to_tag, refer = start_transfer(now=10.0)
    ua.receive(reply(refer, 202), PEER, 10.1)
    ua.receive(notify(to_tag, 2, b"SIP/2.0 100 Trying\r\n"), PEER, 10.2)
    at, failures = run_timers(ua, until=60.0)
    assert failures == [TransferFailed(cid, 408, "no final transfer status in time")]
    assert at == pytest.approx(40.0)  # 30 s after the REFER
    assert transfer_events(ua.poll(80.0)) == []  # reported once
    # A late final NOTIFY is answered, but changes nothing.
    outs = ua.receive(notify(to_tag, 3, b"SIP/2.0 200 OK\r\n"), PEER, 41.0)
    assert statuses(outs) == [200] and transfer_events(outs) == []


def test_no_answer_to_the_refer_fails_the_transfer() -> None:
    ua, cid, _, _ = start_transfer(now=0.0)
    at, failures = run_timers(ua, until=60.0)
    assert failures == [TransferFailed(cid, 408, "no final transfer status in time")]
    assert at == pytest.approx(30.0)


def test_notify_before_the_202_is_accepted() -> None:
    ua, cid, to_tag, refer = start_transfer()
    outs = ua.receive(notify(to_tag, 2, b"SIP/2.0 100 Trying\r\n"), PEER, 1.1)
    assert statuses(outs) == [200]
    assert transfer_events(outs) == [TransferProgress(cid, 100, "Trying")]
    assert transfer_events(ua.receive(reply(refer, 202), PEER, 1.2)) == []
    outs = ua.receive(notify(to_tag, 3, b"SIP/2.0 200 OK\r\n", state="terminated"), PEER, 1.3)
    assert transfer_events(outs) == [TransferSucceeded(cid, 200, "OK")]


def test_terminated_without_a_final_status_fails() -> None:
    ua, _, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    outs = ua.receive(notify(to_tag, 2, None, state="terminated;reason=timeout"), PEER, 1.2)
    assert statuses(outs) == [200]
    (failed,) = transfer_events(outs)
    assert isinstance(failed, TransferFailed) and failed.status is None
    assert "timeout" in failed.reason


@pytest.mark.parametrize(
    "body",
    [
        b"hello",
        b"SIP/2.0 abc Nope\r\n",
        b"INVITE sip:x@y SIP/2.0\r\n",
        b"SIP/2.0 999 X",
        b"\xff\xfe",
    ],
)
def test_bad_sipfrag_gets_400_and_the_transfer_goes_on(body: bytes) -> None:
    ua, cid, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    outs = ua.receive(notify(to_tag, 2, body), PEER, 1.2)
    assert statuses(outs) == [400]
    assert transfer_events(outs) == []
    outs = ua.receive(notify(to_tag, 3, b"SIP/2.0 200 OK\r\n"), PEER, 1.3)
    assert transfer_events(outs) == [TransferSucceeded(cid, 200, "OK")]


def test_notify_edge_cases() -> None:
    ua, _, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    frag = b"SIP/2.0 100 Trying\r\n"
    # Wrong body type: 415 with what we accept.
    (resp,) = sent(ua.receive(notify(to_tag, 2, frag, content_type="text/plain"), PEER, 1.2))
    assert isinstance(resp, SipResponse) and resp.status == 415
    assert "message/sipfrag" in (resp.headers.get("Accept") or "")
    # An event package we never subscribed to: 489 Bad Event.
    assert statuses(ua.receive(notify(to_tag, 3, frag, event="presence"), PEER, 1.3)) == [489]
    # Another REFER's subscription (its id is the REFER's CSeq): 481.
    assert statuses(ua.receive(notify(to_tag, 4, frag, event="refer;id=7"), PEER, 1.4)) == [481]
    assert statuses(ua.receive(notify(to_tag, 5, frag, event="refer;id=1"), PEER, 1.5)) == [200]
    # Another dialog: 481 (§12.2.2).
    assert statuses(ua.receive(notify("other", 6, frag), PEER, 1.6)) == [481]


def test_notify_without_a_refer_is_481_and_out_of_dialog_notify_is_405() -> None:
    ua = new_ua()
    _, to_tag = answered_call(ua)
    frag = b"SIP/2.0 200 OK\r\n"
    assert statuses(ua.receive(notify(to_tag, 2, frag), PEER, 1.0)) == [481]
    out_of_dialog = notify(to_tag, 3, frag).replace(f";tag={to_tag}".encode(), b"")
    assert statuses(ua.receive(out_of_dialog, PEER, 1.0)) == [405]


def test_a_bye_during_the_transfer_ends_the_call_and_its_deadline() -> None:
    ua, cid, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    bye = (
        "BYE sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:25080;branch=z9hG4bK-bye\r\n"
        "From: sipp <sip:sipp@127.0.0.1:25080>;tag=caller\r\n"
        f"To: <sip:agent@127.0.0.1:5060>;tag={to_tag}\r\n"
        "Call-ID: cid-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    outs = ua.receive(bye, PEER, 1.2)
    assert [e for e in events(outs) if isinstance(e, CallEnded)] == [CallEnded(cid, "remote_bye")]
    assert transfer_events(ua.poll(100.0)) == []


# ---- parsing ---------------------------------------------------------------------------------


def test_parse_sipfrag_golden() -> None:
    assert parse_sipfrag(b"SIP/2.0 100 Trying\r\n") == parse_sipfrag(b"SIP/2.0 100 Trying")
    frag = parse_sipfrag(b"SIP/2.0 200 OK\r\nContact: <sip:sales@10.0.0.1>\r\n\r\n")
    assert (frag.status, frag.reason) == (200, "OK")
    assert parse_sipfrag(b"SIP/2.0 503 Service Unavailable\r\n").reason == "Service Unavailable"
    assert parse_sipfrag(b"SIP/2.0 180\r\n").reason == ""
    with pytest.raises(SipfragError):
        parse_sipfrag(b"")


@given(st.binary(max_size=80))
def test_parse_sipfrag_never_raises_anything_but_sipfrag_error(body: bytes) -> None:
    try:
        frag = parse_sipfrag(body)
    except SipfragError:
        return
    assert 100 <= frag.status <= 699


@given(st.text(max_size=60))
def test_notify_with_any_body_never_crashes_the_ua(text: str) -> None:
    ua, _, to_tag, refer = start_transfer()
    ua.receive(reply(refer, 202), PEER, 1.1)
    outs = ua.receive(notify(to_tag, 2, text.encode() or b"x"), PEER, 1.2)
    assert statuses(outs) in ([200], [400])


def test_subscription_state_and_event_headers() -> None:
    s = parse_subscription_state("terminated;reason=noresource")
    assert (s.state, s.reason, s.expires) == ("terminated", "noresource", None)
    assert parse_subscription_state("Active ; expires=60").expires == 60
    assert parse_subscription_state(None).state == "active"
    assert parse_event("refer;id=93809824") == ("refer", "93809824")
    assert parse_event("Refer") == ("refer", None)
    assert parse_event(None) is None


def test_refer_target_forms() -> None:
    peer = SipUri("sip", "pbx.example.com", user="+15550001", port=5070)
    assert refer_to_uri("sip:sales@example.com", peer) == "sip:sales@example.com"
    assert refer_to_uri("sales", peer) == "sip:sales@pbx.example.com:5070"
    assert refer_to_uri("+1 (555) 123-4567", peer) == "sip:+15551234567@pbx.example.com:5070"
    assert refer_to_uri("sales@other.example", peer) == "sip:sales@other.example"
    assert refer_to_uri("tel:+15551234", peer) == "tel:+15551234"
    for bad in ("", "   ", "http://example.com", "sip:", "bad user<>"):
        with pytest.raises(ValueError):
            refer_to_uri(bad, peer)


def test_ua_refer_target_uses_the_callers_host() -> None:
    ua = new_ua()
    cid, _ = answered_call(ua)
    assert ua.refer_target(cid, "sales") == "sip:sales@127.0.0.1:25080"
    assert ua.refer_target(cid, TARGET) == TARGET


def test_golden_refer_round_trips_through_the_parser() -> None:
    _, _, _, refer = start_transfer()
    again = parse(bytes(refer))
    assert isinstance(again, SipRequest)
    assert again.headers.get("Refer-To") == f"<{TARGET}>"
    assert bytes(again) == bytes(refer)
