"""Dialogs (RFC 3261 §12): creation on both sides, in-dialog requests, routing, CSeq."""

from __future__ import annotations

import pytest

from callbridge.sip.dialog import (
    Dialog,
    dialog_id_for_incoming,
    dialog_id_for_response,
)
from callbridge.sip.invite_server import dialog_problem
from callbridge.sip.message import SipRequest, SipResponse, Via, make_response, parse
from callbridge.sip.uri import NameAddr, SipUri

VIA = Via.parse("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKdlg1;rport")

INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2\r\n"
    "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKa\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:p2.example.com;lr>\r\n"
    "Record-Route: <sip:p1.example.com;lr>\r\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def req(text: str) -> SipRequest:
    msg = parse(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def uas_dialog(invite_text: str = INVITE) -> Dialog:
    return Dialog.from_uas(req(invite_text), "b0b", NameAddr(SipUri.parse("sip:bob@192.0.2.10")))


def uac_dialog(
    record_route: tuple[str, ...] = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"),
) -> Dialog:
    """Alice's view: she sent the INVITE, the 200 came back through p1 then p2."""
    invite = req(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@atlanta.example.com>;tag=al1ce\r\n"
        "To: <sip:bob@biloxi.example.com>\r\n"
        "Call-ID: uac-call@192.0.2.10\r\n"
        "CSeq: 7 INVITE\r\n"
        "Contact: <sip:alice@192.0.2.10:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    extra = [("Record-Route", rr) for rr in record_route]
    extra.append(("Contact", "<sip:bob@198.51.100.20:5062;transport=udp>"))
    ok = make_response(invite, 200, to_tag="b0b", headers=extra)
    return Dialog.from_uac(invite, ok)


# --- creation ----------------------------------------------------------------------------------


def test_uas_dialog_state_from_invite() -> None:
    d = uas_dialog()
    assert d.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert d.local_tag == "b0b"
    assert d.remote_tag == "1928301774"
    assert d.id == ("a84b4c76e66710@pc33.atlanta.example.com", "b0b", "1928301774")
    # §12.1.1: route set = Record-Route in request order.
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert d.remote_target == SipUri.parse("sip:alice@pc33.atlanta.example.com")
    assert d.remote_seq == 314159
    assert d.local_seq == 0  # empty
    assert str(d.local_uri.uri) == "sip:bob@biloxi.example.com"
    assert d.local_uri.tag is None
    assert d.remote_uri.display_name == "Alice"
    assert d.remote_uri.tag is None


def test_uac_dialog_state_from_response() -> None:
    d = uac_dialog()
    assert d.id == ("uac-call@192.0.2.10", "al1ce", "b0b")
    # §12.1.2: route set = Record-Route reversed.
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert d.remote_target == SipUri.parse("sip:bob@198.51.100.20:5062;transport=udp")
    assert d.local_seq == 7
    assert d.remote_seq is None
    assert d.local_contact is not None and str(d.local_contact.uri) == "sip:alice@192.0.2.10:5060"


def test_dialog_needs_a_sip_contact() -> None:
    # An RFC 2543 INVITE without Contact (RFC 4475 inv2543): the caller is reached at From.
    no_contact = INVITE.replace("Contact: <sip:alice@pc33.atlanta.example.com>\r\n", "")
    assert str(uas_dialog(no_contact).remote_target) == "sip:alice@atlanta.example.com"
    tel_contact = INVITE.replace("<sip:alice@pc33.atlanta.example.com>", "<tel:+15551234>")
    with pytest.raises(ValueError, match="sip"):
        uas_dialog(tel_contact)


def test_a_route_set_that_cannot_be_routed_forms_no_dialog() -> None:
    # Found by the UA's fuzz test: an INVITE whose first Record-Route is not a SIP URI formed
    # a dialog, and the BYE it needed later (no ACK came) raised instead of being sent.
    bad_first = INVITE.replace("<sip:p2.example.com;lr>", "<ip:UserB@example.com;maddr=ss1>")
    with pytest.raises(ValueError, match="first Record-Route is not a sip"):
        uas_dialog(bad_first)
    assert dialog_problem(req(bad_first)) is not None  # so the INVITE is refused with a 400
    # Only the first entry is where requests go; a UAC's first is the response's last.
    with pytest.raises(ValueError, match="first Record-Route"):
        uac_dialog(("<sip:p1.example.com;lr>", "<tel:+15551234>"))
    assert uac_dialog(("<tel:+15551234>", "<sip:p2.example.com;lr>")).route_set[0] == (
        NameAddr.parse("<sip:p2.example.com;lr>")
    )


def test_rfc2543_peer_without_from_tag() -> None:
    d = uas_dialog(INVITE.replace(";tag=1928301774", ""))
    assert d.remote_tag == ""
    bye, _ = d.create_request("BYE", via=VIA)
    assert bye.to.tag is None


# --- requests within the dialog ----------------------------------------------------------------


def test_cseq_increments_and_headers_are_dialog_state() -> None:
    d = uac_dialog()
    bye, _ = d.create_request("BYE", via=VIA)
    assert (bye.cseq.number, bye.cseq.method) == (8, "BYE")
    assert d.local_seq == 8
    info, _ = d.create_request("INFO", via=VIA)
    assert info.cseq.number == 9
    assert bye.call_id == d.call_id
    assert bye.from_.tag == "al1ce"
    assert bye.to.tag == "b0b"
    assert str(bye.from_.uri) == "sip:alice@atlanta.example.com"
    assert str(bye.to.uri) == "sip:bob@biloxi.example.com"
    assert bye.vias == [VIA]
    assert bye.max_forwards == 70
    assert bye.contacts == []  # BYE is not a target refresh


def test_uas_first_request_starts_local_cseq() -> None:
    d = uas_dialog()
    bye, _ = d.create_request("BYE", via=VIA)
    assert bye.cseq.number == 1
    assert bye.from_.tag == "b0b" and bye.to.tag == "1928301774"
    assert str(bye.from_.uri) == "sip:bob@biloxi.example.com"


def test_loose_routing_uses_remote_target_and_first_route_as_next_hop() -> None:
    d = uac_dialog()
    bye, hop = d.create_request("BYE", via=VIA)
    # §12.2.1.1: Request-URI = remote target; Route = route set in order.
    assert bye.uri == "sip:bob@198.51.100.20:5062;transport=udp"
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert hop == SipUri.parse("sip:p2.example.com;lr")


def test_uas_side_loose_routing_order() -> None:
    d = uas_dialog()
    bye, hop = d.create_request("BYE", via=VIA)
    assert bye.uri == "sip:alice@pc33.atlanta.example.com"
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert hop == SipUri.parse("sip:p2.example.com;lr")


def test_strict_routing_puts_router_in_request_uri() -> None:
    d = uac_dialog(("<sip:p1.example.com>", "<sip:p2.example.com;method=INVITE;maddr=10.0.0.1>"))
    bye, hop = d.create_request("BYE", via=VIA)
    # §12.2.1.1: first route (minus params not allowed in a Request-URI) becomes the
    # Request-URI; the remaining routes plus the remote target form the Route header.
    assert bye.uri == "sip:p2.example.com;maddr=10.0.0.1"
    assert bye.headers.get_all("Route") == [
        "<sip:p1.example.com>",
        "<sip:bob@198.51.100.20:5062;transport=udp>",
    ]
    assert hop == SipUri.parse("sip:p2.example.com;method=INVITE;maddr=10.0.0.1")


def test_no_route_set_goes_straight_to_remote_target() -> None:
    d = uac_dialog(())
    bye, hop = d.create_request("BYE", via=VIA)
    assert bye.uri == "sip:bob@198.51.100.20:5062;transport=udp"
    assert "Route" not in bye.headers
    assert hop == d.remote_target


def test_reinvite_carries_contact_body_and_extra_headers() -> None:
    d = uac_dialog()
    sdp = b"v=0\r\n"
    inv, _ = d.create_request(
        "INVITE",
        body=sdp,
        content_type="application/sdp",
        extra_headers=[("Subject", "hold")],
        via=VIA,
    )
    assert inv.cseq.number == 8
    assert [str(c.uri) for c in inv.contacts] == ["sip:alice@192.0.2.10:5060"]
    assert inv.headers.get("Subject") == "hold"
    assert inv.content_type == "application/sdp"
    assert inv.body == sdp
    wire = parse(bytes(inv))
    assert isinstance(wire, SipRequest)
    assert wire.body == sdp and wire.headers.get("Content-Length") == str(len(sdp))
    # An explicit Contact in extra_headers is not duplicated.
    inv2, _ = d.create_request(
        "INVITE", extra_headers=[("Contact", "<sip:alice@10.0.0.1>")], via=VIA
    )
    assert [str(c.uri) for c in inv2.contacts] == ["sip:alice@10.0.0.1"]
    with pytest.raises(ValueError, match="content_type"):
        d.create_request("INFO", body=b"x", via=VIA)


def test_ack_for_2xx_reuses_invite_cseq() -> None:
    d = uac_dialog()
    ack, hop = d.create_ack(7, VIA)
    # §13.2.2.4: like an in-dialog request, but CSeq number of the INVITE and method ACK.
    assert (ack.method, ack.cseq.number, ack.cseq.method) == ("ACK", 7, "ACK")
    assert ack.uri == "sip:bob@198.51.100.20:5062;transport=udp"
    assert ack.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert hop == SipUri.parse("sip:p2.example.com;lr")
    assert ack.to.tag == "b0b" and ack.from_.tag == "al1ce"
    assert ack.contacts == []
    assert d.local_seq == 7  # unchanged
    ack2, _ = d.create_ack(7, VIA, b"v=0\r\n", "application/sdp")
    assert ack2.body == b"v=0\r\n" and ack2.content_type == "application/sdp"


def test_cancel_and_ack_via_create_request_do_not_advance_cseq() -> None:
    d = uac_dialog()
    cancel, _ = d.create_request("CANCEL", via=VIA)
    assert cancel.cseq.number == 7
    assert d.local_seq == 7


# --- requests from the peer ---------------------------------------------------------------------


def in_dialog(d: Dialog, method: str, cseq: int, contact: str | None = None) -> SipRequest:
    """A request from the peer of UAS dialog `d` (Alice -> Bob)."""
    contact_line = f"Contact: {contact}\r\n" if contact else ""
    return req(
        f"{method} sip:bob@192.0.2.10 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        f"To: Bob <sip:bob@biloxi.example.com>;tag={d.local_tag}\r\n"
        f"Call-ID: {d.call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{contact_line}"
        "Content-Length: 0\r\n\r\n"
    )


def test_incoming_request_maps_to_dialog_id() -> None:
    d = uas_dialog()
    assert dialog_id_for_incoming(in_dialog(d, "BYE", 314160)) == d.id


def test_response_maps_to_uac_dialog_id() -> None:
    d = uac_dialog()
    bye, _ = d.create_request("BYE", via=VIA)
    ok = make_response(bye, 200)
    assert isinstance(ok, SipResponse)
    assert dialog_id_for_response(ok) == d.id


def test_remote_cseq_must_not_go_backwards() -> None:
    d = uas_dialog()
    assert d.check_remote_request(in_dialog(d, "INFO", 314160)) is None
    assert d.remote_seq == 314160
    # Equal is not "lower" (§12.2.2).
    assert d.check_remote_request(in_dialog(d, "INFO", 314160)) is None
    old = in_dialog(d, "BYE", 314158)
    error = d.check_remote_request(old)
    assert error is not None
    assert error.status == 500
    assert error.cseq == old.cseq
    assert d.remote_seq == 314160  # unchanged by the rejected request
    # ACK and CANCEL reuse older CSeq numbers legitimately.
    assert d.check_remote_request(in_dialog(d, "ACK", 314159)) is None
    assert d.check_remote_request(in_dialog(d, "CANCEL", 314159)) is None
    assert d.remote_seq == 314160


def test_uac_learns_remote_seq_from_first_peer_request() -> None:
    d = uac_dialog()
    peer_req = req(
        "BYE sip:alice@192.0.2.10:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.20:5062;branch=z9hG4bKbye\r\n"
        "From: <sip:bob@biloxi.example.com>;tag=b0b\r\n"
        "To: <sip:alice@atlanta.example.com>;tag=al1ce\r\n"
        "Call-ID: uac-call@192.0.2.10\r\n"
        "CSeq: 1 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    assert d.remote_seq is None
    assert d.check_remote_request(peer_req) is None
    assert d.remote_seq == 1
    assert dialog_id_for_incoming(peer_req) == d.id


def test_reinvite_refreshes_remote_target() -> None:
    d = uas_dialog()
    assert (
        d.check_remote_request(in_dialog(d, "INVITE", 314160, "<sip:alice@203.0.113.5:5080>"))
        is None
    )
    assert d.remote_target == SipUri.parse("sip:alice@203.0.113.5:5080")
    # Non-target-refresh requests do not move it, even with a Contact.
    d.check_remote_request(in_dialog(d, "INFO", 314161, "<sip:alice@198.51.100.99>"))
    assert d.remote_target == SipUri.parse("sip:alice@203.0.113.5:5080")
    # A rejected (out-of-order) re-INVITE does not move it either.
    d.check_remote_request(in_dialog(d, "INVITE", 5, "<sip:mallory@198.51.100.66>"))
    assert d.remote_target == SipUri.parse("sip:alice@203.0.113.5:5080")
    bye, _ = d.create_request("BYE", via=VIA)
    assert bye.uri == "sip:alice@203.0.113.5:5080"


def test_2xx_to_our_reinvite_refreshes_remote_target() -> None:
    d = uac_dialog()
    reinvite, _ = d.create_request("INVITE", via=VIA)
    ok = make_response(reinvite, 200, headers=[("Contact", "<sip:bob@203.0.113.9>")])
    d.on_target_refresh_response(ok)
    assert d.remote_target == SipUri.parse("sip:bob@203.0.113.9")
    bye, _ = d.create_request("BYE", via=VIA)
    fail = make_response(bye, 481, headers=[("Contact", "<sip:bob@198.51.100.1>")])
    d.on_target_refresh_response(fail)
    assert d.remote_target == SipUri.parse("sip:bob@203.0.113.9")


def test_round_trip_uac_request_accepted_by_uas_dialog() -> None:
    """A UAC dialog's request, as seen by the matching UAS dialog, is in order and routed."""
    invite = req(INVITE)
    uas = Dialog.from_uas(invite, "b0b", NameAddr(SipUri.parse("sip:bob@192.0.2.10")))
    ok = make_response(
        invite,
        200,
        to_tag="b0b",
        headers=[
            ("Record-Route", "<sip:p2.example.com;lr>"),
            ("Record-Route", "<sip:p1.example.com;lr>"),
            ("Contact", "<sip:bob@192.0.2.10>"),
        ],
    )
    uac = Dialog.from_uac(invite, ok)
    assert uac.id == (uas.id[0], uas.id[2], uas.id[1])
    # The two sides see the route set in opposite orders.
    assert [str(r) for r in uac.route_set] == [str(r) for r in reversed(uas.route_set)]
    for _ in range(3):
        bye, _ = uac.create_request("INFO", via=VIA)
        wire = parse(bytes(bye))
        assert isinstance(wire, SipRequest)
        assert dialog_id_for_incoming(wire) == uas.id
        assert uas.check_remote_request(wire) is None
    assert uas.remote_seq == 314162
