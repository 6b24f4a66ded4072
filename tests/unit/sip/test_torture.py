"""RFC 4475 torture messages: parser, UAS validation and the answer each one must get."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.sip.message import CSeq, SipParseError, SipRequest, SipResponse, parse
from callbridge.sip.uri import SipUri, uri_unescape
from callbridge.sip.validation import UasPolicy, check_request, reject_malformed

TORTURE = Path(__file__).parents[2] / "fixtures" / "sip-torture"

# Final status our UAS sends for each message with the default UasPolicy (INVITE, ACK, BYE,
# CANCEL, OPTIONS allowed; only sip: URIs; application/sdp). None = processed normally, or
# silently dropped (malformed responses).
EXPECTED: dict[str, int | None] = {
    # §3.1.1 valid messages: parsed and processed.
    "wsinv": None,  # §3.1.1.1 short tortuous INVITE
    "intmeth": 501,  # §3.1.1.2 wide range of valid characters; unknown method -> 501
    "esc01": None,  # §3.1.1.3 valid use of % escaping
    "escnull": 405,  # §3.1.1.4 escaped nulls in URIs; a REGISTER, not allowed here
    "esc02": 501,  # §3.1.1.5 % that is not an escape; RE%47IST%45R is an unknown method
    "lwsdisp": None,  # §3.1.1.6 no LWS between display name and <
    "longreq": None,  # §3.1.1.7 long values in header fields
    "dblreq": 405,  # §3.1.1.8 extra trailing octets: only the first request (a REGISTER)
    "semiuri": None,  # §3.1.1.9 semicolon-separated parameters in URI user part
    "transports": None,  # §3.1.1.10 varied and unknown transport types
    "mpart01": 405,  # §3.1.1.11 multipart MIME message; MESSAGE not allowed here
    "unreason": None,  # §3.1.1.12 unusual reason phrase (a response)
    "noreason": None,  # §3.1.1.13 empty reason phrase (a response)
    # §3.1.2 invalid messages: 400 when a response can be formed, else dropped.
    "badinv01": 400,  # §3.1.2.1 extraneous header field separators
    "clerr": 400,  # §3.1.2.2 Content-Length larger than message
    "ncl": 400,  # §3.1.2.3 negative Content-Length
    "scalar02": 400,  # §3.1.2.4 request scalar fields with overlarge values
    "scalarlg": None,  # §3.1.2.5 response scalar fields with overlarge values: dropped
    "quotbal": 400,  # §3.1.2.6 unterminated quoted string in display name
    "ltgtruri": 400,  # §3.1.2.7 <> enclosing Request-URI
    "lwsruri": 400,  # §3.1.2.8 malformed SIP Request-URI (embedded LWS)
    "lwsstart": 400,  # §3.1.2.9 multiple SP separating Request-Line elements
    "trws": 400,  # §3.1.2.10 SP characters at end of Request-Line
    "escruri": 400,  # §3.1.2.11 escaped headers in SIP Request-URI
    "baddate": 400,  # §3.1.2.12 invalid time zone in Date header field
    "regbadct": 400,  # §3.1.2.13 failure to enclose name-addr URI in <>
    "badaspec": 400,  # §3.1.2.14 spaces within addr-spec
    "baddn": 400,  # §3.1.2.15 non-token characters in display name
    "badvers": 505,  # §3.1.2.16 unknown protocol version -> 505 Version Not Supported
    "mismatch01": 400,  # §3.1.2.17 start line and CSeq method mismatch
    "mismatch02": 400,  # §3.1.2.18 unknown method with CSeq method mismatch (400 wins)
    "bigcode": None,  # §3.1.2.19 overlarge response code: dropped
    # §3.2 transaction layer.
    "badbranch": None,  # §3.2.1 branch without the magic cookie is processed normally
    # §3.3 application layer.
    "insuf": 400,  # §3.3.1 missing required header fields
    "unkscm": 416,  # §3.3.2 Request-URI with unknown scheme
    "novelsc": 416,  # §3.3.3 known but atypical scheme we never accept (soap.beep)
    "unksm2": 405,  # §3.3.4 unknown schemes in To/From/Contact; must parse; a REGISTER
    "bext01": 420,  # §3.3.5 Require of unknown extensions (Proxy-Require ignored by a UAS)
    "invut": 415,  # §3.3.6 unknown Content-Type
    "regaut01": 405,  # §3.3.7 unknown authorization scheme; a REGISTER
    "multi01": 400,  # §3.3.8 multiple values in single value required fields
    "mcl01": 400,  # §3.3.9 multiple Content-Length values
    "bcast": None,  # §3.3.10 200 OK response with broadcast Via sent-by: no answer
    "zeromf": None,  # §3.3.11 Max-Forwards 0: an endpoint processes it normally
    "cparam01": 405,  # §3.3.12 Contact header param vs URI param (addr-spec); a REGISTER
    "cparam02": 405,  # §3.3.13 the same inside <>; a REGISTER
    "regescrt": 405,  # §3.3.14 escaped headers in a Contact URI are legal; a REGISTER
    "sdp01": 406,  # §3.3.15 Accept without application/sdp
    # §3.4 backward compatibility.
    "inv2543": None,  # §3.4.1 RFC 2543 INVITE (no branch, no Max-Forwards, no Content-Length)
}

INVALID = {
    "badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri",
    "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn", "mcl01",
    "bigcode",
}  # fmt: skip


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def answer(data: bytes, policy: UasPolicy | None = None) -> SipResponse | None:
    try:
        message = parse(data)
    except SipParseError as exc:
        return reject_malformed(data, exc)
    if isinstance(message, SipResponse):
        return None
    return check_request(message, policy or UasPolicy())


def parse_or_partial(data: bytes) -> SipRequest:
    try:
        m = parse(data)
    except SipParseError as exc:
        assert exc.partial is not None
        return exc.partial
    assert isinstance(m, SipRequest)
    return m


def request(name: str) -> SipRequest:
    m = parse(load(name))
    assert isinstance(m, SipRequest)
    return m


def test_table_covers_all_49_files() -> None:
    files = {p.stem for p in TORTURE.glob("*.dat")}
    assert len(files) == 49
    assert set(EXPECTED) == files


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_expected_final_status(name: str, status: int | None) -> None:
    data = load(name)
    reply = answer(data)
    assert (reply.status if reply else None) == status
    if reply is None:
        return
    assert bytes(reply).startswith(f"SIP/2.0 {status} ".encode())
    assert reply.headers.get_all("Via")[:1] == parse_or_partial(data).headers.get_all("Via")[:1]
    if name not in INVALID:
        # Answers to well-formed requests are themselves well-formed.
        again = parse(bytes(reply))
        assert isinstance(again, SipResponse)
        assert again.status == status
        if "To" in again.headers:
            assert again.to.tag is not None


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_raise_sip_parse_error(name: str) -> None:
    with pytest.raises(SipParseError):
        parse(load(name))


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - INVALID))
def test_valid_messages_round_trip(name: str) -> None:
    m = parse(load(name))
    again = parse(bytes(m))
    if "Content-Length" in m.headers:
        assert again == m
    else:
        # inv2543 had no Content-Length; serializing always writes one (RFC 3261 §20.14).
        assert again.headers.remove("Content-Length") == m.headers
        assert again.body == m.body
    assert bytes(again) == bytes(m)


def test_400_answers_copy_the_request_headers() -> None:
    reply = answer(load("quotbal"))
    assert reply is not None
    assert reply.call_id == "quotbal.aksdj"
    assert reply.cseq == CSeq(8, "INVITE")
    assert reply.headers.get("To") == '"Mr. J. User <sip:j.user@example.com>'
    assert reply.vias[0].sent_by == ("192.0.2.59", 5050)
    reply2 = answer(load("lwsstart"))
    assert reply2 is not None and reply2.to.tag is not None


# --- field checks on the valid set --------------------------------------------------------


def test_wsinv() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.cseq == CSeq(9, "INVITE")
    assert m.max_forwards == 68
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150


def test_intmeth() -> None:
    m = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method
    assert m.cseq == CSeq(139122385, method)
    assert m.request_uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01() -> None:
    m = request("esc01")
    assert m.request_uri.user == "sips%3Auser%40example.com"
    assert uri_unescape(m.request_uri.user or "") == "sips:user@example.com"
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri) and uri_unescape(to_uri.user or "") == "user"
    from_uri = m.from_.uri
    assert isinstance(from_uri, SipUri) and uri_unescape(from_uri.user or "") == "I have spaces"
    contact_uri = m.contacts[0].uri
    assert isinstance(contact_uri, SipUri)
    assert contact_uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert m.content_type == "application/sdp"


def test_escnull() -> None:
    m = request("escnull")
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri) and uri_unescape(to_uri.user or "") == "null-\x00-null"
    assert [c.uri.user for c in m.contacts if isinstance(c.uri, SipUri)] == ["%00", "%00%00"]


def test_esc02() -> None:
    m = request("esc02")
    assert m.method == "RE%47IST%45R"
    assert m.to.display_name == "%Z%45"
    # Two Contact values, not three: C%6Fntact is an unknown header.
    assert len(m.contacts) == 2
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp() -> None:
    m = request("lwsdisp")
    assert m.from_.display_name == "caller"
    assert m.from_.tag == "323"


def test_longreq() -> None:
    m = request("longreq")
    assert len(m.vias) == 34
    assert m.vias[-1].param("received") == "192.0.2.5"
    assert m.to.display_name is not None and m.to.display_name.endswith("extreme proportion")
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri) and to_uri.port == 6000
    assert to_uri.has_param(
        "verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongParameterNameWithNoValue"
    )
    assert m.from_.tag is not None and len(m.from_.tag) > 100
    assert len(m.call_id) > 100
    assert len(m.body) == 150


def test_dblreq() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER"
    assert m.headers.get("Content-Length") == "0"
    assert m.body == b""
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def test_semiuri() -> None:
    m = request("semiuri")
    assert m.request_uri.user == "user;par=u%40example.net"
    assert m.request_uri.host == "example.com"
    assert m.request_uri.params == ()
    assert m.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports() -> None:
    m = request("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01() -> None:
    m = request("mpart01")
    assert m.content_type == "multipart/mixed"
    assert len(m.body) == 553
    assert m.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_reason_phrases() -> None:
    unreason = parse(load("unreason"))
    assert isinstance(unreason, SipResponse)
    assert unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(unreason.body) == 154
    noreason = parse(load("noreason"))
    assert isinstance(noreason, SipResponse)
    assert (noreason.status, noreason.reason) == (100, "")


def test_cparams() -> None:
    (c1,) = request("cparam01").contacts
    assert c1.params == (("unknownparam", None),)
    assert isinstance(c1.uri, SipUri) and c1.uri.params == ()
    (c2,) = request("cparam02").contacts
    assert c2.params == ()
    assert isinstance(c2.uri, SipUri) and c2.uri.params == (("unknownparam", None),)


def test_regescrt_contact_headers() -> None:
    (c,) = request("regescrt").contacts
    assert isinstance(c.uri, SipUri)
    assert c.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_unksm2_schemes_are_kept() -> None:
    m = request("unksm2")
    assert m.to.uri == "isbn:2983792873"
    assert m.from_.uri == "http://www.example.com"
    assert m.contacts[0].uri == "name:John_Smith"


def test_inv2543() -> None:
    m = request("inv2543")
    assert m.vias[0].branch is None
    assert m.from_.tag is None
    assert m.max_forwards is None
    assert m.body.startswith(b"v=0\r\n") and m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")


def test_badbranch() -> None:
    assert request("badbranch").vias[0].branch == "z9hG4bK"


def test_zeromf_as_a_proxy_gets_483() -> None:
    reply = answer(load("zeromf"), UasPolicy(reject_zero_max_forwards=True))
    assert reply is not None and reply.status == 483


def test_bext01_unsupported_lists_only_require() -> None:
    reply = answer(load("bext01"))
    assert reply is not None
    assert reply.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_register_allowed_policy() -> None:
    # With REGISTER allowed the REGISTER messages are processed (a registrar would then
    # do its own checks, e.g. 401 for regaut01, 400 for unksm2's To).
    policy = UasPolicy(
        allowed_methods=frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"})
    )
    for name in ("escnull", "dblreq", "cparam01", "cparam02", "regescrt", "regaut01", "unksm2"):
        assert answer(load(name), policy) is None, name


_ALL = [p.read_bytes() for p in sorted(TORTURE.glob("*.dat"))]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_ALL)))
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data[pos:pos] = draw(
                st.sampled_from([b"\r\n", b" ", b",", b";", b'"', b"<", b"\xff", b"\x00"])
            )
        else:
            del data[pos : pos + draw(st.integers(1, 20))]
    return bytes(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(), st.booleans())
def test_mutated_torture_messages_are_answered_or_dropped(data: bytes, strict: bool) -> None:
    # The whole receive path (parse -> reject_malformed / check_request) never raises.
    policy = UasPolicy(reject_zero_max_forwards=strict)
    reply = answer(data, policy)
    if reply is not None:
        assert 400 <= reply.status < 600
        assert bytes(reply).startswith(b"SIP/2.0 ")
