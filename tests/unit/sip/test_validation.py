"""UAS request checks (RFC 3261 §8.2) and 400s for malformed requests."""

from __future__ import annotations

import pytest

from callbridge.sip.message import Headers, SipParseError, SipRequest, SipResponse, parse
from callbridge.sip.validation import UasPolicy, check_request, reject_malformed

BASE: tuple[tuple[str, str], ...] = (
    ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9"),
    ("Max-Forwards", "70"),
    ("From", "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"),
    ("To", "Bob <sip:bob@biloxi.example.com>"),
    ("Call-ID", "3848276298220188511@atlanta.example.com"),
    ("CSeq", "2 INVITE"),
    ("Contact", "<sip:alice@192.0.2.10>"),
)


def req(
    method: str = "INVITE",
    uri: str = "sip:bob@biloxi.example.com",
    *,
    drop: tuple[str, ...] = (),
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    version: str = "SIP/2.0",
) -> SipRequest:
    items = [(n, f"2 {method}" if n == "CSeq" else v) for n, v in BASE if n not in drop]
    return SipRequest(method, uri, Headers((*items, *extra)), body, version)


def status(r: SipResponse | None) -> int | None:
    return None if r is None else r.status


SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def test_well_formed_requests_pass() -> None:
    assert check_request(req()) is None
    assert check_request(req(extra=(("Content-Type", "application/sdp"),), body=SDP)) is None
    for method in ("BYE", "CANCEL", "OPTIONS"):
        assert check_request(req(method)) is None


def test_ack_is_never_answered() -> None:
    assert check_request(req("ACK", drop=("Via", "Call-ID", "Max-Forwards"))) is None
    assert check_request(req("ACK", "tel:+123", extra=(("Require", "foo"),))) is None
    assert check_request(req("ACK", version="SIP/3.0")) is None


def test_505_for_other_versions() -> None:
    assert status(check_request(req(version="SIP/7.0"))) == 505


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards"])
def test_400_for_missing_mandatory_header(header: str) -> None:
    reply = check_request(req(drop=(header,)))
    assert reply is not None
    assert reply.status == 400
    assert header in reply.reason
    assert header not in reply.headers or header == "Max-Forwards"


def test_max_forwards_may_be_absent_from_rfc2543_peers() -> None:
    # RFC 4475 §3.4.1: no magic cookie -> an RFC 2543 element, which never sent Max-Forwards.
    old = req(drop=("Max-Forwards",)).headers.set("Via", "SIP/2.0/UDP 192.0.2.10")
    assert check_request(SipRequest("INVITE", "sip:bob@biloxi.example.com", old)) is None


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("From", "<sip:other@example.com>;tag=1"),
        ("To", "<sip:other@example.com>"),
        ("Call-ID", "another"),
        ("CSeq", "3 INVITE"),
        ("Max-Forwards", "69"),
        ("Content-Length", "0"),
        ("Content-Type", "application/sdp"),
    ],
)
def test_400_for_repeated_single_value_headers(header: str, value: str) -> None:
    extra: tuple[tuple[str, str], ...] = ((header, value),)
    if header in ("Content-Length", "Content-Type"):
        extra = ((header, value), *extra)
    reply = check_request(req(extra=extra))
    assert status(reply) == 400
    assert reply is not None and header in reply.reason


def test_400_for_malformed_structured_headers() -> None:
    bad_from = req().headers.set("From", "Bell, Alexander <sip:a@b>;tag=1")
    assert status(check_request(SipRequest("INVITE", "sip:b@c", bad_from))) == 400
    bad_cseq = req().headers.set("CSeq", "x INVITE")
    assert status(check_request(SipRequest("INVITE", "sip:b@c", bad_cseq))) == 400
    bad_mf = req().headers.set("Max-Forwards", "lots")
    assert status(check_request(SipRequest("INVITE", "sip:b@c", bad_mf))) == 400


def test_400_for_cseq_method_mismatch() -> None:
    r = req()
    mismatched = SipRequest("OPTIONS", r.uri, r.headers)
    reply = check_request(mismatched)
    assert status(reply) == 400
    assert reply is not None and "CSeq" in reply.reason


def test_max_forwards_zero() -> None:
    zero = SipRequest("OPTIONS", "sip:b@c", req("OPTIONS").headers.set("Max-Forwards", "0"))
    # RFC 4475 §3.3.11: an endpoint processes it; a proxy answers 483.
    assert check_request(zero) is None
    assert status(check_request(zero, UasPolicy(reject_zero_max_forwards=True))) == 483


def test_501_unknown_method_with_allow() -> None:
    reply = check_request(req("FROB"))
    assert reply is not None
    assert reply.status == 501
    assert reply.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS"


def test_405_known_but_not_allowed_with_allow() -> None:
    for method in ("REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "UPDATE", "PRACK"):
        reply = check_request(req(method))
        assert reply is not None and reply.status == 405, method
        assert reply.headers.get_all("Allow") == ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]


def test_custom_allowed_methods() -> None:
    policy = UasPolicy(
        allowed_methods=frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "X-CUSTOM"})
    )
    assert check_request(req("INFO"), policy) is None
    assert check_request(req("X-CUSTOM"), policy) is None
    reply = check_request(req("REGISTER"), policy)
    assert reply is not None
    assert reply.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, X-CUSTOM"


@pytest.mark.parametrize(
    "uri",
    ["tel:+15551234567", "sips:bob@biloxi.example.com", "urn:service:sos", "soap.beep://h:3002"],
)
def test_416_for_unsupported_request_uri_scheme(uri: str) -> None:
    assert status(check_request(req(uri=uri))) == 416


def test_sips_accepted_when_policy_allows() -> None:
    policy = UasPolicy(uri_schemes=frozenset({"sip", "sips"}))
    assert check_request(req(uri="sips:bob@biloxi.example.com"), policy) is None


def test_400_for_malformed_sip_request_uri() -> None:
    assert status(check_request(req(uri="sip:bob@bad host"))) == 400


def test_420_for_unsupported_require() -> None:
    reply = check_request(req(extra=(("Require", "100rel, timer"),)))
    assert reply is not None
    assert reply.status == 420
    assert reply.headers.get_all("Unsupported") == ["100rel", "timer"]
    policy = UasPolicy(supported_extensions=frozenset({"100rel", "Timer"}))
    assert check_request(req(extra=(("Require", "100rel, timer"),)), policy) is None
    partly = check_request(req(extra=(("Require", "100rel, foo"),)), policy)
    assert partly is not None and partly.headers.get("Unsupported") == "foo"


def test_proxy_require_is_not_checked_by_a_uas() -> None:
    assert check_request(req(extra=(("Proxy-Require", "foo"),))) is None


def test_cancel_is_never_rejected_for_require() -> None:
    assert check_request(req("CANCEL", extra=(("Require", "foo"),))) is None


def test_415_for_unsupported_content_type_with_accept() -> None:
    reply = check_request(req(extra=(("Content-Type", "application/unknownformat"),), body=b"<x/>"))
    assert reply is not None
    assert reply.status == 415
    assert reply.headers.get("Accept") == "application/sdp"


def test_content_type_params_and_case_are_ignored() -> None:
    r = req(extra=(("c", "Application/SDP; charset=utf-8"),), body=SDP)
    assert check_request(r) is None


def test_415_for_unsupported_content_encoding() -> None:
    reply = check_request(
        req(extra=(("Content-Type", "application/sdp"), ("Content-Encoding", "gzip")), body=SDP)
    )
    assert reply is not None
    assert reply.status == 415
    assert reply.headers.get_all("Accept-Encoding") == ["identity"]
    ok = req(extra=(("Content-Type", "application/sdp"), ("e", "identity")), body=SDP)
    assert check_request(ok) is None
    policy = UasPolicy(accepted_encodings=frozenset({"identity", "gzip"}))
    gz = req(extra=(("Content-Type", "application/sdp"), ("Content-Encoding", "gzip")), body=SDP)
    assert check_request(gz, policy) is None


def test_400_for_body_without_content_type() -> None:
    assert status(check_request(req(body=SDP))) == 400


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/nobodyKnowsThis", 406),
        ("", 406),
        ("application/sdp", None),
        ("text/plain, application/sdp;level=1", None),
        ("application/*", None),
        ("*/*", None),
    ],
)
def test_406_when_accept_excludes_sdp(accept: str, expected: int | None) -> None:
    assert status(check_request(req(extra=(("Accept", accept),)))) == expected
    assert status(check_request(req("OPTIONS", extra=(("Accept", accept),)))) == expected
    # Only INVITE/OPTIONS answers carry SDP.
    assert check_request(req("BYE", extra=(("Accept", accept),))) is None


def test_error_responses_follow_8_2_6() -> None:
    r = req("FROB")
    reply = check_request(r)
    assert reply is not None
    assert reply.headers.get_all("Via") == r.headers.get_all("Via")
    assert reply.from_ == r.from_
    assert reply.to.tag is not None
    assert reply.to.uri == r.to.uri
    assert reply.call_id == r.call_id
    assert reply.cseq == r.cseq


def test_policy_defaults() -> None:
    p = UasPolicy()
    assert p.allowed_methods == {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}
    assert p.known_methods >= {
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
    assert p.supported_extensions == frozenset()
    assert p.accepted_content_types == {"application/sdp"}
    assert p.accepted_encodings == {"identity"}
    assert p.uri_schemes == {"sip"}
    assert not p.reject_zero_max_forwards


# --- reject_malformed ---------------------------------------------------------------------

GOOD_HEADERS = (
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9\r\n"
    b"From: <sip:alice@a.example.com>;tag=1\r\n"
    b"To: <sip:bob@b.example.com>\r\n"
    b"Call-ID: abc\r\n"
    b"CSeq: 1 INVITE\r\n"
)


def rejected(data: bytes) -> SipResponse | None:
    with pytest.raises(SipParseError) as info:
        parse(data)
    return reject_malformed(data, info.value)


def test_400_built_from_partial() -> None:
    data = (
        b"INVITE sip:bob@b.example.com SIP/2.0\r\n"
        + GOOD_HEADERS
        + b"Content-Length: 99\r\n\r\nv=0\r\n"
    )
    reply = rejected(data)
    assert reply is not None
    assert reply.status == 400
    assert "Content-Length" in reply.reason
    assert reply.call_id == "abc"
    assert reply.to.tag is not None
    assert reply.headers.get("Via") == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9"
    assert parse(bytes(reply)) == reply.__class__(
        400, reply.reason, reply.headers.add("Content-Length", "0")
    )


def test_bad_request_line_still_answerable() -> None:
    reply = rejected(b"INVITE <sip:bob@b.example.com> SIP/2.0\r\n" + GOOD_HEADERS + b"\r\n")
    assert reply is not None and reply.status == 400


def test_malformed_ack_is_not_answered() -> None:
    data = (
        b"ACK sip:bob@b.example.com SIP/2.0\r\n"
        + GOOD_HEADERS.replace(b"1 INVITE", b"1 ACK")
        + b"Content-Length: 9\r\n\r\n"
    )
    assert rejected(data) is None


def test_malformed_response_is_not_answered() -> None:
    assert rejected(b"SIP/2.0 2000 OK\r\n" + GOOD_HEADERS + b"\r\n") is None
    # Even if someone handed us a partial, a response on the wire is never answered.
    partial = SipRequest("INVITE", "sip:a@b", Headers())
    assert reject_malformed(b"SIP/2.0 200 OK\r\n\r\n", SipParseError("x", partial)) is None


@pytest.mark.parametrize("header", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_unanswerable_without_mandatory_headers(header: bytes) -> None:
    lines = [ln for ln in GOOD_HEADERS.split(b"\r\n") if ln and not ln.startswith(header + b":")]
    data = b"INVITE <sip:bob@b> SIP/2.0\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    assert rejected(data) is None


def test_unanswerable_with_garbage_via() -> None:
    data = (
        b"INVITE <sip:bob@b> SIP/2.0\r\n"
        + GOOD_HEADERS.replace(b"SIP/2.0/UDP 192", b"garbage 192")
        + b"\r\n"
    )
    assert rejected(data) is None


def test_no_partial_is_unanswerable() -> None:
    assert reject_malformed(b"junk", SipParseError("Empty message")) is None


def test_reason_phrase_is_sanitized() -> None:
    partial = parse(
        b"OPTIONS sip:bob@b SIP/2.0\r\n"
        + GOOD_HEADERS.replace(b"INVITE", b"OPTIONS")
        + b"Max-Forwards: 70\r\n\r\n"
    )
    assert isinstance(partial, SipRequest)
    reply = reject_malformed(
        b"OPTIONS", SipParseError("bad\r\nInjected: yes\x00" + "x" * 500, partial)
    )
    assert reply is not None
    assert "\r" not in reply.reason and "\n" not in reply.reason and "\x00" not in reply.reason
    assert len(reply.reason) <= 100
    assert b"\r\nInjected" not in bytes(reply)
