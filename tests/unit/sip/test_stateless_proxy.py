"""The built-in dispatcher's forwarding rules (sip/stateless_proxy.py, RFC 3261 §16.11):
golden forwarded bytes, Via popping, Record-Route dialogs, hash stability, retransmissions,
malformed input, Max-Forwards."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.message import SipRequest, SipResponse, make_response, parse
from callbridge.sip.stateless_proxy import (
    BRANCH_PREFIX,
    Drop,
    Forward,
    ProbeAnswer,
    ProxyConfig,
    Reply,
    StatelessProxy,
    pick_worker,
    probe_request,
)
from callbridge.sip.ua import (
    CallConfirmed,
    CallEnded,
    Datagram,
    IncomingCall,
    LocalIdentity,
    Output,
    UserAgent,
)

CONFIG = ProxyConfig("192.0.2.1", 5060, (("127.0.0.1", 5061), ("127.0.0.1", 5062)))
CALLER = ("203.0.113.9", 4000)  # where the caller's datagrams come from (behind a NAT)
BOTH = (0, 1)


def invite(
    call_id: str = "call-1@x",
    branch: str = "z9hG4bKabc",
    max_forwards: str | None = "70",
    method: str = "INVITE",
    cseq: str = "1 INVITE",
    extra: str = "",
) -> bytes:
    mf = f"Max-Forwards: {max_forwards}\r\n" if max_forwards is not None else ""
    return (
        f"{method} sip:agent@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:5070;branch={branch};rport\r\n"
        f"{mf}"
        "From: <sip:alice@198.51.100.7>;tag=ft1\r\n"
        "To: <sip:agent@192.0.2.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\n"
        "Contact: <sip:alice@198.51.100.7:5070>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def proxy() -> StatelessProxy:
    return StatelessProxy(CONFIG)


def forward(decision: object) -> Forward:
    assert isinstance(decision, Forward), decision
    return decision


def test_invite_is_forwarded_with_our_via_record_route_and_the_callers_real_address() -> None:
    out = forward(proxy().handle(invite(), CALLER, BOTH))
    assert out.worker == 1 and out.addr == ("127.0.0.1", 5062)
    assert out.data == (
        b"INVITE sip:agent@192.0.2.1 SIP/2.0\r\n"
        b"Record-Route: <sip:192.0.2.1:5060;lr;cbw=1;ftag=ft1>\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcbd6391c9d8668f13d06106;rport\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKabc;rport=4000;received=203.0.113.9\r\n"
        b"Max-Forwards: 69\r\n"
        b"From: <sip:alice@198.51.100.7>;tag=ft1\r\n"
        b"To: <sip:agent@192.0.2.1>\r\n"
        b"Call-ID: call-1@x\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Contact: <sip:alice@198.51.100.7:5070>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_a_retransmission_maps_to_the_same_worker_with_the_same_bytes() -> None:
    p = proxy()
    first = forward(p.handle(invite(), CALLER, BOTH))
    again = forward(p.handle(invite(), CALLER, BOTH))
    assert again == first
    # ...and a new transaction (another branch) gets another branch of ours
    other = forward(p.handle(invite(branch="z9hG4bKdef"), CALLER, BOTH))
    assert other.worker == first.worker
    assert _top_branch(other.data) != _top_branch(first.data)


def test_cancel_meets_the_invite_on_its_worker_with_the_same_branch() -> None:
    """§9.2: the worker matches a CANCEL to its INVITE by the top Via branch."""
    p = proxy()
    inv = forward(p.handle(invite(), CALLER, BOTH))
    cancel = forward(p.handle(invite(method="CANCEL", cseq="1 CANCEL"), CALLER, BOTH))
    assert cancel.worker == inv.worker
    assert _top_branch(cancel.data) == _top_branch(inv.data)
    assert b"Record-Route" not in cancel.data  # only dialog-creating requests


def test_a_retransmission_and_its_cancel_meet_the_worker_that_left_the_live_set() -> None:
    """Worker 1 took the INVITE, then answered its probe with 503 (overloaded): the INVITE's
    retransmission and its CANCEL still go to worker 1, whose transaction has the call. A
    new call goes to the live worker. Before, the hash over the live workers sent the
    retransmission to worker 0: a second call for the same INVITE."""
    p = proxy()
    first = forward(p.handle(invite(), CALLER, BOTH))
    assert first.worker == 1
    again = forward(p.handle(invite(), CALLER, (0,)))
    assert again == first
    cancel = forward(p.handle(invite(method="CANCEL", cseq="1 CANCEL"), CALLER, (0,)))
    assert cancel.worker == 1
    assert forward(p.handle(invite(call_id="call-2@x"), CALLER, (0,))).worker == 0


def test_the_remembered_call_ids_are_bounded() -> None:
    p = StatelessProxy(CONFIG, recent=3)
    for i in range(5):
        forward(p.handle(invite(call_id=f"c{i}"), CALLER, BOTH))
    assert list(p._recent) == ["c2", "c3", "c4"]  # the oldest forgotten


def test_rfc2543_branch_without_cookie_still_maps_retransmissions() -> None:
    p = proxy()
    a = forward(p.handle(invite(branch="old1"), CALLER, BOTH))
    b = forward(p.handle(invite(branch="old1"), CALLER, BOTH))
    assert _top_branch(a.data) == _top_branch(b.data)
    assert _top_branch(a.data).startswith(BRANCH_PREFIX)


def _top_branch(data: bytes) -> str:
    msg = parse(data)
    branch = msg.vias[0].branch
    assert branch is not None
    return branch


def test_pick_worker_is_stable_and_spreads_calls() -> None:
    # golden: the same Call-ID picks the same worker in every process and run
    assert [pick_worker(f"c{i}", (0, 1, 2)) for i in range(8)] == [1, 1, 2, 2, 0, 2, 2, 2]
    counts = collections.Counter(pick_worker(f"call-{i}@host", (0, 1)) for i in range(2000))
    assert 900 < counts[0] < 1100, counts
    assert pick_worker("x", ()) is None


def test_a_worker_leaving_the_live_set_moves_only_its_own_calls() -> None:
    ids = [f"call-{i}" for i in range(600)]
    before = {c: pick_worker(c, (0, 1, 2)) for c in ids}
    after = {c: pick_worker(c, (0, 2)) for c in ids}
    for c in ids:
        if before[c] != 1:
            assert after[c] == before[c]
        else:
            assert after[c] in (0, 2)


def test_new_calls_avoid_a_worker_that_is_not_live() -> None:
    p = proxy()
    for i in range(20):
        assert forward(p.handle(invite(call_id=f"c{i}"), CALLER, (0,))).worker == 0


def test_no_live_worker_is_a_503_with_retry_after_and_an_ack_is_dropped() -> None:
    p = proxy()
    reply = p.handle(invite(), CALLER, ())
    assert isinstance(reply, Reply) and reply.status == 503 and reply.addr == CALLER
    resp = parse(reply.data)
    assert isinstance(resp, SipResponse)
    assert resp.headers.get("Retry-After") == "5"
    assert resp.to.tag is not None
    assert isinstance(p.handle(invite(method="ACK", cseq="1 ACK"), CALLER, ()), Drop)


def _answer(forwarded: Forward, status: int = 200) -> bytes:
    """The worker's response to what we forwarded (what its UA would send)."""
    req = parse(forwarded.data)
    assert isinstance(req, SipRequest)
    resp = make_response(
        req,
        status,
        to_tag="wt9",
        headers=[("Contact", "<sip:agent@192.0.2.1:5062>")],
        record_route=True,
    )
    return bytes(resp)


def test_a_response_loses_our_via_and_goes_to_the_callers_received_rport() -> None:
    p = proxy()
    out = forward(p.handle(invite(), CALLER, BOTH))
    back = forward(p.handle(_answer(out), ("127.0.0.1", 5062), BOTH))
    assert back.addr == CALLER and back.worker is None
    resp = parse(back.data)
    assert isinstance(resp, SipResponse) and resp.status == 200
    assert [str(v) for v in resp.vias] == [
        "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKabc;rport=4000;received=203.0.113.9"
    ]
    assert resp.headers.get_all("Record-Route") == ["<sip:192.0.2.1:5060;lr;cbw=1;ftag=ft1>"]


def test_a_response_to_the_sent_by_port_when_the_client_asked_no_rport() -> None:
    p = proxy()
    data = invite().replace(b";rport\r\n", b"\r\n", 1)
    out = forward(p.handle(data, CALLER, BOTH))
    back = forward(p.handle(_answer(out), ("127.0.0.1", 5062), BOTH))
    assert back.addr == ("203.0.113.9", 5070)  # §18.2.2: received, the Via's port


def test_responses_not_ours_are_dropped() -> None:
    p = proxy()
    req = parse(invite())
    assert isinstance(req, SipRequest)
    foreign = bytes(make_response(req, 200, to_tag="x"))  # top Via is the caller's
    assert isinstance(p.handle(foreign, CALLER, BOTH), Drop)
    only_ours = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcbd00\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: z\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(p.handle(only_ours, ("127.0.0.1", 5061), BOTH), Drop)


def in_dialog(method: str, route: str, from_tag: str, uri: str, cseq: int = 2) -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKbye1;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"Route: {route}\r\n"
        f"From: <sip:x@y>;tag={from_tag}\r\n"
        "To: <sip:z@w>;tag=other\r\n"
        "Call-ID: call-1@x\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_in_dialog_requests_from_the_caller_follow_the_record_route_even_to_a_draining_worker() -> (
    None
):
    p = proxy()
    bye = in_dialog(
        "BYE", "<sip:192.0.2.1:5060;lr;cbw=1;ftag=ft1>", "ft1", "sip:agent@192.0.2.1:5062"
    )
    out = forward(p.handle(bye, CALLER, (0,)))  # worker 1 takes no new calls: still its dialog
    assert out.worker == 1 and out.addr == ("127.0.0.1", 5062)
    req = parse(out.data)
    assert isinstance(req, SipRequest)
    assert req.headers.get("Route") is None  # §16.4: our Route removed
    assert req.headers.get("Record-Route") is None
    assert req.vias[0].host == "192.0.2.1"


def test_requests_from_the_worker_go_to_the_callers_contact() -> None:
    """The worker's BYE: its From tag is not the ftag, so it heads away from the workers."""
    p = proxy()
    bye = in_dialog(
        "BYE", "<sip:192.0.2.1:5060;lr;cbw=1;ftag=ft1>", "wt9", "sip:alice@198.51.100.7:5070"
    ).replace(b"198.51.100.7:5070;branch=z9hG4bKbye1", b"192.0.2.1:5062;branch=z9hG4bKw1")
    out = forward(p.handle(bye, ("127.0.0.1", 5062), BOTH))
    assert out.worker is None and out.addr == ("198.51.100.7", 5070)
    # the caller's 200 to it comes back to us and goes on to the worker
    req = parse(out.data)
    assert isinstance(req, SipRequest)
    back = forward(p.handle(bytes(make_response(req, 200)), CALLER, BOTH))
    assert back.addr == ("127.0.0.1", 5062)


def test_next_hop_by_name_is_dropped_no_dns() -> None:
    bye = in_dialog(
        "BYE", "<sip:192.0.2.1:5060;lr;cbw=1;ftag=ft1>", "wt9", "sip:alice@phone.example.com"
    )
    assert isinstance(proxy().handle(bye, ("127.0.0.1", 5062), BOTH), Drop)


def test_in_dialog_without_our_route_but_to_a_workers_address_reaches_that_worker() -> None:
    ack = in_dialog("ACK", "<sip:10.9.9.9;lr>", "ft1", "sip:agent@127.0.0.1:5061", cseq=1)
    out = forward(proxy().handle(ack, CALLER, (1,)))
    assert out.worker == 0
    assert b"Route: <sip:10.9.9.9;lr>" in out.data  # not ours: kept


def test_a_record_route_naming_no_worker_of_ours_is_dropped() -> None:
    bye = in_dialog("BYE", "<sip:192.0.2.1:5060;lr;cbw=7;ftag=ft1>", "ft1", "sip:a@192.0.2.1")
    assert isinstance(proxy().handle(bye, CALLER, BOTH), Drop)


def test_max_forwards_is_decremented_added_when_absent_and_483_at_zero() -> None:
    p = proxy()
    out = parse(forward(p.handle(invite(max_forwards=None), CALLER, BOTH)).data)
    assert isinstance(out, SipRequest) and out.max_forwards == 70  # §16.6 step 3
    reply = p.handle(invite(max_forwards="0"), CALLER, BOTH)
    assert isinstance(reply, Reply) and reply.status == 483
    assert isinstance(
        p.handle(invite(max_forwards="0", method="ACK", cseq="1 ACK"), CALLER, BOTH), Drop
    )
    out = parse(forward(p.handle(invite(max_forwards="1"), CALLER, BOTH)).data)
    assert isinstance(out, SipRequest) and out.max_forwards == 0


def test_malformed_input_is_a_400_or_dropped() -> None:
    p = proxy()
    assert isinstance(p.handle(b"\x00\xffgarbage", CALLER, BOTH), Drop)
    assert isinstance(p.handle(b"", CALLER, BOTH), Drop)
    bad_cseq = invite(cseq="x INVITE")
    reply = p.handle(bad_cseq, CALLER, BOTH)
    assert isinstance(reply, Reply) and reply.status == 400
    assert isinstance(p.handle(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", CALLER, BOTH), Drop)
    no_call_id = invite().replace(b"Call-ID: call-1@x\r\n", b"")
    assert isinstance(p.handle(no_call_id, CALLER, BOTH), Drop | Reply)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_never_raise(data: bytes) -> None:
    proxy().handle(data, CALLER, BOTH)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.integers(0, 200), st.sampled_from([b"\r\n", b":", b";", b"<", b" "]))
def test_mangled_invites_never_raise(at: int, length: int, junk: bytes) -> None:
    data = invite()
    proxy().handle(data[:at] + junk * (length % 7) + data[at + length :], CALLER, BOTH)


def test_screen_refuses_new_invites_with_its_status_or_drops_them() -> None:
    seen: list[tuple[str, tuple[str, int]]] = []

    def screen(req: SipRequest, source: tuple[str, int]) -> int | None:
        seen.append((req.method, source))
        return 403 if source[0] == "203.0.113.9" else 0

    p = StatelessProxy(CONFIG, screen)
    reply = p.handle(invite(), CALLER, BOTH)
    assert isinstance(reply, Reply) and reply.status == 403
    assert isinstance(p.handle(invite(), ("198.51.100.1", 5060), BOTH), Drop)
    assert seen == [("INVITE", CALLER), ("INVITE", ("198.51.100.1", 5060))]
    # in-dialog requests are the worker's business: never screened
    bye = in_dialog("BYE", "<sip:192.0.2.1:5060;lr;cbw=0;ftag=ft1>", "ft1", "sip:a@192.0.2.1")
    assert isinstance(p.handle(bye, CALLER, BOTH), Forward)


def test_probe_answers_are_reported_not_forwarded() -> None:
    data = probe_request(CONFIG, 1, 7)
    req = parse(data)
    assert isinstance(req, SipRequest) and req.method == "OPTIONS"
    assert req.uri == "sip:127.0.0.1:5062"
    for status in (200, 503):
        answer = bytes(make_response(req, status, to_tag="t"))
        assert proxy().handle(answer, ("127.0.0.1", 5062), BOTH) == ProbeAnswer(1, status)


def test_a_whole_dialog_between_a_caller_and_our_own_user_agent_through_the_proxy() -> None:
    """Interop with callbridge's UA as the worker: INVITE, 100/180/200 back, the caller's ACK
    by the Record-Route, then the worker's BYE out through the proxy and its 200 back."""
    p = proxy()
    worker = UserAgent(LocalIdentity("192.0.2.1", 5062))  # advertises the public host
    dispatcher_src = ("127.0.0.1", 5060)  # what the worker sees as the datagrams' source

    def to_worker(data: bytes, now: float) -> list[Output]:
        out = forward(p.handle(data, CALLER, BOTH))
        assert out.addr == ("127.0.0.1", 5062)
        return list(worker.receive(out.data, dispatcher_src, now))

    def back_to_caller(outs: Sequence[Output]) -> list[SipResponse | SipRequest]:
        msgs: list[SipResponse | SipRequest] = []
        for o in outs:
            if isinstance(o, Datagram):
                # responses to the top Via (our socket as the worker saw it), requests to
                # the first Route: our Record-Route, the public address
                is_response = o.data.startswith(b"SIP/2.0 ")
                assert o.addr == (dispatcher_src if is_response else ("192.0.2.1", 5060))
                out = forward(p.handle(o.data, ("127.0.0.1", 5062), BOTH))
                msgs.append(parse(out.data))
                if isinstance(msgs[-1], SipResponse):
                    assert out.addr == CALLER
                else:
                    assert out.addr == ("198.51.100.7", 5070)  # the caller's Contact
        return msgs

    outs = to_worker(invite(), 0.0)
    (incoming,) = [o for o in outs if isinstance(o, IncomingCall)]
    assert [m.status for m in back_to_caller(outs) if isinstance(m, SipResponse)] == [100]
    assert isinstance(incoming, IncomingCall)
    outs = list(worker.ring(incoming.call, 0.1)) + list(
        worker.answer(incoming.call, b"v=0\r\n", 0.1)
    )
    answers = back_to_caller(outs)
    ok = answers[-1]
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ok.headers.get_all("Record-Route") == ["<sip:192.0.2.1:5060;lr;cbw=1;ftag=ft1>"]
    to_tag = ok.to.tag
    ack = in_dialog("ACK", ok.headers.get_all("Record-Route")[0], "ft1",
                    str(ok.contacts[0].uri), cseq=1).replace(b"To: <sip:z@w>;tag=other",
                    f"To: <sip:agent@192.0.2.1>;tag={to_tag}".encode())  # fmt: skip
    outs = to_worker(ack, 0.2)
    assert any(isinstance(o, CallConfirmed) for o in outs)
    (bye,) = back_to_caller(list(worker.hangup(incoming.call, 1.0)))
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert bye.headers.get("Route") is None  # our Route consumed
    back = forward(p.handle(bytes(make_response(bye, 200)), CALLER, BOTH))
    assert back.addr == ("127.0.0.1", 5062)
    outs = list(worker.receive(back.data, dispatcher_src, 1.1))
    assert any(isinstance(o, CallEnded) for o in outs)
