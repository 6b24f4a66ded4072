"""Digest authentication (RFC 7616, RFC 2617, RFC 8760): golden vectors, parsing, refusals,
a cross-check against httpx's independent implementation, and INVITE challenges in the UA."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.digest import (
    Challenge,
    DigestClient,
    DigestError,
    UnsupportedChallenge,
    authorization,
    digest_response,
    parse_challenge,
    select_challenge,
    with_credentials,
)
from callbridge.sip.message import SipRequest, SipResponse, make_response, parse
from callbridge.sip.ua import (
    CallAnswered,
    CallEnded,
    Datagram,
    LocalIdentity,
    Output,
    RequestCompleted,
    UserAgent,
)
from callbridge.sip.uri import SipUri

# ---- helpers ----------------------------------------------------------------------------------

_FIELD_RE = re.compile(r'([A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^\s,]+)')


def fields(value: str) -> dict[str, str]:
    """An independent reading of an Authorization value (not the module's parser)."""
    assert value.startswith("Digest ")
    out = {}
    for name, raw in _FIELD_RE.findall(value[7:]):
        assert name not in out, f"{name} twice"
        out[name] = raw
    return out


def unq(raw: str) -> str:
    assert raw.startswith('"') and raw.endswith('"'), raw
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


# ---- golden vectors ---------------------------------------------------------------------------

RFC7616_CHALLENGE = (
    "Digest\r\n"
    '    realm="http-auth@example.org",\r\n'
    '    qop="auth, auth-int",\r\n'
    "    algorithm={alg},\r\n"
    '    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    '    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(alg: str, expected: str) -> None:
    """RFC 7616 §3.9.1: Mufasa / "Circle of Life", GET /dir/index.html."""
    challenge = parse_challenge(RFC7616_CHALLENGE.format(alg=alg))
    assert challenge.qop == ("auth", "auth-int")
    value = authorization(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    f = fields(value)
    assert unq(f["response"]) == expected
    assert unq(f["username"]) == "Mufasa"
    assert unq(f["realm"]) == "http-auth@example.org"
    assert unq(f["uri"]) == "/dir/index.html"
    assert unq(f["nonce"]) == "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    assert unq(f["cnonce"]) == RFC7616_CNONCE
    assert unq(f["opaque"]) == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    # RFC 7616 §3.4: algorithm, qop and nc are tokens, never quoted.
    assert (f["algorithm"], f["qop"], f["nc"]) == (alg, "auth", "00000001")


def test_rfc2617_example() -> None:
    """RFC 2617 §3.5: Mufasa / "Circle Of Life", qop=auth."""
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.algorithm == "MD5"  # the default when absent
    value = authorization(
        challenge,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
        nc=1,
    )
    assert unq(fields(value)["response"]) == "6629fae49393a05397450978507c4ef1"


def _h(alg: str, text: str) -> str:
    return hashlib.new("md5" if alg.startswith("MD5") else "sha256", text.encode()).hexdigest()


@pytest.mark.parametrize("alg", ["MD5-sess", "SHA-256-sess"])
def test_sess_algorithms_fold_nonce_and_cnonce_into_ha1(alg: str) -> None:
    """RFC 7616 §3.4.2, written out with hashlib."""
    ha1 = _h(alg, f"{_h(alg, 'u:r:p')}:N:C")
    expected = _h(alg, f"{ha1}:N:0000000a:C:auth:{_h(alg, 'REGISTER:sip:x')}")
    got = digest_response(
        algorithm=alg, username="u", password="p", realm="r", method="REGISTER",
        uri="sip:x", nonce="N", cnonce="C", nc="0000000a", qop="auth",
    )  # fmt: skip
    assert got == expected


def test_no_qop_is_rfc2069_without_cnonce_or_nc() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="N", algorithm=SHA-256')
    f = fields(
        authorization(challenge, username="u", password="p", method="INVITE", uri="sip:b@h",
                      cnonce="ignored", nc=1)
    )  # fmt: skip
    assert "cnonce" not in f and "nc" not in f and "qop" not in f and "opaque" not in f
    ha2 = _h("SHA-256", "INVITE:sip:b@h")
    assert unq(f["response"]) == _h("SHA-256", f"{_h('SHA-256', 'u:r:p')}:N:{ha2}")


# ---- parsing -----------------------------------------------------------------------------------


def test_parse_is_lenient_where_servers_are_sloppy() -> None:
    c = parse_challenge(
        'digest REALM = "a \\"quoted\\" realm" ,nonce=YWJj/ZGVm==,qop=auth, Algorithm="md5-SESS",'
        ' stale=TRUE, opaque="", domain="sip:x", unknown=token'
    )
    assert c == Challenge(
        realm='a "quoted" realm', nonce="YWJj/ZGVm==", algorithm="MD5-sess", qop=("auth",),
        opaque="", stale=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="x"',
        'Digest realm="x", nonce="n", qop="auth-int"',
        'Digest realm="x", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm="x", nonce="n", algorithm=SHA-512-256',
        'Digest realm="x", nonce="n", algorithm=MD5-sess',  # -sess needs a qop for its cnonce
    ],
)
def test_unsupported_challenges_are_refused_clearly(value: str) -> None:
    with pytest.raises(UnsupportedChallenge):
        parse_challenge(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        'Digest nonce="n"',
        'Digest realm="x"',
        'Digest realm="x", nonce="a", nonce="b"',
        'Digest realm="x" nonce="n"',
        'Digest realm="unterminated, nonce="n"',
    ],
)
def test_malformed_challenges(value: str) -> None:
    with pytest.raises(DigestError) as err:
        parse_challenge(value)
    assert not isinstance(err.value, UnsupportedChallenge)


def _challenge_response(status: int, *values: str) -> SipResponse:
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    text = f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n"
    text += "To: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
    text += "".join(f"{name}: {v}\r\n" for v in values)
    msg = parse((text + "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, SipResponse)
    return msg


def test_select_takes_the_first_supported_challenge_in_server_order() -> None:
    """RFC 8760: one challenge per algorithm, in the server's preference order."""
    resp = _challenge_response(
        401,
        'Digest realm="r", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n3", algorithm=MD5, qop="auth"',
    )
    c = select_challenge(resp)
    assert (c.nonce, c.algorithm, c.proxy, c.header_name) == (
        "n2",
        "SHA-256",
        False,
        "Authorization",
    )


def test_select_407_reads_proxy_authenticate() -> None:
    c = select_challenge(_challenge_response(407, 'Digest realm="p", nonce="n"'))
    assert c.proxy and c.header_name == "Proxy-Authorization"


def test_select_reports_why_nothing_fits() -> None:
    resp = _challenge_response(
        401, 'Basic realm="r"', 'Digest realm="r", nonce="n", qop="auth-int"'
    )
    with pytest.raises(UnsupportedChallenge, match=r"Basic.*auth-int"):
        select_challenge(resp)
    with pytest.raises(DigestError, match="without WWW-Authenticate"):
        select_challenge(_challenge_response(401))


# ---- the client: nonce counts, preemptive credentials ------------------------------------------


def test_client_counts_uses_per_nonce_and_keeps_one_cnonce_per_nonce() -> None:
    cnonces = iter(["c1", "c2"])
    client = DigestClient("alice", "secret", lambda: next(cnonces))
    assert client.preemptive("REGISTER", "sip:example.com") is None
    first = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    a1 = client.authorize(first, "REGISTER", "sip:example.com")
    a2 = client.preemptive("REGISTER", "sip:example.com")
    assert a2 is not None
    assert [fields(a.value)["nc"] for a in (a1, a2)] == ["00000001", "00000002"]
    assert unq(fields(a1.value)["cnonce"]) == unq(fields(a2.value)["cnonce"]) == "c1"
    second = parse_challenge('Digest realm="r", nonce="n2", qop="auth"')
    a3 = client.authorize(second, "REGISTER", "sip:example.com")
    assert (fields(a3.value)["nc"], unq(fields(a3.value)["cnonce"])) == ("00000001", "c2")
    assert "secret" not in repr(client)


def test_with_credentials_is_a_new_transaction_of_the_same_request() -> None:
    original = SipRequest(
        "INVITE",
        "sip:bob@example.com",
        parse(
            b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKold;rport\r\n"
            b"From: <sip:a@example.com>;tag=ft\r\nTo: <sip:bob@example.com>\r\nCall-ID: cid\r\n"
            b"CSeq: 7 INVITE\r\nProxy-Authorization: Digest stale\r\nContent-Length: 0\r\n\r\n"
        ).headers,
    )
    client = DigestClient("a", "p", lambda: "c")
    auth = client.authorize(
        parse_challenge('Digest realm="r", nonce="n"', proxy=True), "INVITE", original.uri
    )
    again = with_credentials(original, [auth])
    assert again.cseq.number == 8 and again.cseq.method == "INVITE"
    assert again.call_id == "cid" and again.from_.tag == "ft" and again.to.tag is None
    assert again.vias[0].branch not in (None, "z9hG4bKold")
    assert again.vias[0].branch.startswith("z9hG4bK")  # type: ignore[union-attr]
    assert again.headers.get_all("Proxy-Authorization") == [auth.value]


# ---- cross-check against an independent implementation (httpx.DigestAuth) -----------------------

_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\,'), min_size=1, max_size=20)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    username=_text,
    password=st.text(min_size=0, max_size=20),
    realm=_text,
    nonce=_text,
    path=st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True),
    alg=st.sampled_from(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"]),
    qop=st.booleans(),
    method=st.sampled_from(["REGISTER", "INVITE", "GET"]),
)
def test_answers_match_httpx_digest_auth(
    username: str, password: str, realm: str, nonce: str, path: str, alg: str, qop: bool,
    method: str,
) -> None:  # fmt: skip
    if alg.endswith("-sess") and not qop:
        qop = True  # we refuse -sess without qop (see above); httpx would answer it
    challenge_value = f'Digest realm="{realm}", nonce="{nonce}", algorithm={alg}, opaque="o"'
    if qop:
        challenge_value += ', qop="auth"'
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": challenge_value})
        seen.append(request.headers["authorization"])
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.request(
            method, f"http://registrar.test{path}", auth=httpx.DigestAuth(username, password)
        )
    (theirs,) = seen
    f = fields(theirs)
    cnonce = unq(f["cnonce"]) if qop else ""
    ours = authorization(
        parse_challenge(challenge_value), username=username, password=password, method=method,
        uri=path, cnonce=cnonce, nc=1,
    )  # fmt: skip
    assert unq(fields(ours)["response"]) == unq(f["response"])


# ---- INVITE challenges in the UA -----------------------------------------------------------------

UAS = ("192.0.2.10", 5060)


def _sent(outs: list[Output]) -> list[SipRequest | SipResponse]:
    return [parse(o.data) for o in outs if isinstance(o, Datagram)]


def _events(outs: list[Output]) -> list[Output]:
    return [o for o in outs if not isinstance(o, Datagram)]


def _reply(request: SipRequest, status: int, *headers: tuple[str, str]) -> bytes:
    contact = [("Contact", "<sip:bob@192.0.2.10>")] if status == 200 else []
    body = b"v=0\r\n" if status == 200 else b""
    resp = make_response(request, status, to_tag="uas", headers=[*headers, *contact], body=body)
    return bytes(resp)


def _trunk_call(
    password: str = "secret",
) -> tuple[UserAgent, str, SipRequest]:
    ua = UserAgent(LocalIdentity("192.0.2.1", 5060))
    auth = DigestClient("alice", password, lambda: "cn")
    call, outs = ua.invite(
        SipUri.parse("sip:+15551234@example.com"), UAS, b"v=0\r\n", 0.0,
        from_uri=SipUri.parse("sip:alice@example.com"), auth=auth,
        route="<sip:192.0.2.10;lr>",
    )  # fmt: skip
    (invite,) = _sent(outs)
    assert isinstance(invite, SipRequest)
    assert str(invite.from_.uri) == "sip:alice@example.com"
    assert invite.headers.get("Route") == "<sip:192.0.2.10;lr>"
    return ua, call, invite


PROXY_CHALLENGE = ("Proxy-Authenticate", 'Digest realm="trunk", nonce="n407", qop="auth"')


def test_invite_407_is_acked_and_the_invite_resent_with_credentials() -> None:
    ua, call, invite = _trunk_call()
    outs = ua.receive(_reply(invite, 407, PROXY_CHALLENGE), UAS, 0.1)
    ack, again = _sent(outs)
    assert _events(outs) == []
    # §17.1.1.3: the 407 is ACKed in the INVITE's transaction (same branch, CSeq 1 ACK).
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.vias[0].branch == invite.vias[0].branch and str(ack.cseq) == "1 ACK"
    assert isinstance(again, SipRequest) and again.method == "INVITE"
    assert str(again.cseq) == "2 INVITE" and again.call_id == invite.call_id
    assert again.from_.tag == invite.from_.tag and again.to.tag is None
    assert again.vias[0].branch != invite.vias[0].branch
    assert again.body == invite.body
    f = fields(again.headers.get("Proxy-Authorization") or "")
    assert unq(f["uri"]) == "sip:+15551234@example.com"
    assert unq(f["response"]) == digest_response(
        algorithm="MD5", username="alice", password="secret", realm="trunk",
        method="INVITE", uri="sip:+15551234@example.com", nonce="n407",
        cnonce="cn", nc="00000001", qop="auth",
    )  # fmt: skip
    outs = ua.receive(_reply(again, 200), UAS, 0.2)
    (ack2,) = _sent(outs)
    assert isinstance(ack2, SipRequest) and str(ack2.cseq) == "2 ACK"
    (answered,) = _events(outs)
    assert isinstance(answered, CallAnswered) and answered.call == call


def test_a_second_challenge_for_the_same_nonce_ends_the_attempt() -> None:
    ua, call, invite = _trunk_call(password="wrong")
    (_, again) = _sent(ua.receive(_reply(invite, 407, PROXY_CHALLENGE), UAS, 0.1))
    assert isinstance(again, SipRequest)
    outs = ua.receive(_reply(again, 407, PROXY_CHALLENGE), UAS, 0.2)
    assert [m.method for m in _sent(outs) if isinstance(m, SipRequest)] == ["ACK"]
    (ended,) = _events(outs)
    assert isinstance(ended, CallEnded)
    assert (ended.call, ended.reason, ended.status) == (call, "auth_failed", 407)
    assert "authentication rejected" in ended.detail


def test_proxy_then_uas_challenges_carry_both_credentials() -> None:
    ua, _, invite = _trunk_call()
    (_, second) = _sent(ua.receive(_reply(invite, 407, PROXY_CHALLENGE), UAS, 0.1))
    assert isinstance(second, SipRequest)
    www = ("WWW-Authenticate", 'Digest realm="uas", nonce="n401", algorithm=SHA-256')
    (_, third) = _sent(ua.receive(_reply(second, 401, www), UAS, 0.2))
    assert isinstance(third, SipRequest) and str(third.cseq) == "3 INVITE"
    assert unq(fields(third.headers.get("Proxy-Authorization") or "")["realm"]) == "trunk"
    assert unq(fields(third.headers.get("Authorization") or "")["realm"]) == "uas"


def test_unsupported_challenge_and_no_credentials() -> None:
    ua, _, invite = _trunk_call()
    aka = ("Proxy-Authenticate", 'Digest realm="r", nonce="n", algorithm=AKAv1-MD5')
    (ended,) = _events(ua.receive(_reply(invite, 407, aka), UAS, 0.1))
    assert isinstance(ended, CallEnded) and ended.reason == "auth_failed"
    assert ended.detail.startswith("unsupported challenge")
    # Without credentials a challenge is a plain rejection, as before.
    plain = UserAgent(LocalIdentity("192.0.2.1", 5060))
    call, outs = plain.invite(SipUri.parse("sip:b@192.0.2.10"), UAS, b"v=0\r\n", 0.0)
    (req,) = _sent(outs)
    assert isinstance(req, SipRequest)
    (ended,) = _events(plain.receive(_reply(req, 407, PROXY_CHALLENGE), UAS, 0.1))
    assert ended == CallEnded(call, "rejected", 407)


def test_hangup_before_any_answer_is_not_overridden_by_a_challenge() -> None:
    ua, call, invite = _trunk_call()
    assert ua.hangup(call, 0.05) == []  # no provisional yet: CANCEL is pending
    outs = ua.receive(_reply(invite, 407, PROXY_CHALLENGE), UAS, 0.1)
    assert [m.method for m in _sent(outs) if isinstance(m, SipRequest)] == ["ACK"]
    assert _events(outs) == [CallEnded(call, "rejected", 407)]


def test_out_of_dialog_requests_report_their_final_response_or_timeout() -> None:
    ua = UserAgent(LocalIdentity("192.0.2.1", 5060))
    request = parse(
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: r\r\n"
        b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(request, SipRequest)
    handle, outs = ua.request(request, UAS, 0.0)
    assert len(_sent(outs)) == 1
    assert _events(ua.receive(bytes(make_response(request, 100)), UAS, 0.1)) == []
    (done,) = _events(ua.receive(bytes(make_response(request, 200, to_tag="x")), UAS, 0.2))
    assert isinstance(done, RequestCompleted) and done.request == handle
    assert done.response is not None and done.response.status == 200
    other = SipRequest(request.method, request.uri, request.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr2"))  # fmt: skip
    handle2, _ = ua.request(other, UAS, 1.0)
    timed_out = [e for e in _events(ua.poll(1.0 + 33.0)) if isinstance(e, RequestCompleted)]
    assert timed_out == [RequestCompleted(handle2, None)]
