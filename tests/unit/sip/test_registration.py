"""The registration state machine (RFC 3261 §10.2) on plain floats: a scripted registrar answers
each REGISTER it returns; no sockets, no clock."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from callbridge.core.errors import ConfigError
from callbridge.sip.digest import digest_response
from callbridge.sip.message import SipRequest, SipResponse, make_response, parse
from callbridge.sip.registration import (
    Action,
    Registration,
    RegistrationStatus,
    RegState,
    SendRegister,
    SipAccount,
    StatusChanged,
)

ACCOUNT = SipAccount("provider", "sip.example.com:5080", "alice", "secret")
CHALLENGE = ("WWW-Authenticate", 'Digest realm="example.com", nonce="n1", qop="auth"')


def new_reg(account: SipAccount = ACCOUNT, rand: float = 0.0) -> Registration:
    return Registration(
        account, local_port=5070, local_host="192.0.2.1", rand=lambda: rand, cnonce=lambda: "cn"
    )


def requests(actions: Sequence[Action]) -> list[SipRequest]:
    return [a.request for a in actions if isinstance(a, SendRegister)]


def statuses(actions: Sequence[Action]) -> list[RegistrationStatus]:
    return [a.status for a in actions if isinstance(a, StatusChanged)]


def only_request(actions: Sequence[Action]) -> SipRequest:
    (req,) = requests(actions)
    # What we send must survive our own parser (it is what goes on the wire).
    again = parse(bytes(req))
    assert isinstance(again, SipRequest)
    return again


def reply(req: SipRequest, status: int, *headers: tuple[str, str]) -> SipResponse:
    resp = make_response(req, status, to_tag="reg", headers=list(headers))
    again = parse(bytes(resp))
    assert isinstance(again, SipResponse)
    return again


def auth_fields(req: SipRequest) -> dict[str, str]:
    value = req.headers.get("Authorization")
    assert value is not None and value.startswith("Digest ")
    return {k: v.strip('"') for k, v in re.findall(r'([a-z]+)=("[^"]*"|[^\s,]+)', value)}


def assert_valid_auth(req: SipRequest, password: str = "secret") -> dict[str, str]:
    f = auth_fields(req)
    expected = digest_response(
        algorithm=f["algorithm"], username=f["username"], password=password, realm=f["realm"],
        method="REGISTER", uri=f["uri"], nonce=f["nonce"], cnonce=f.get("cnonce", ""),
        nc=f.get("nc", ""), qop=f.get("qop", ""),
    )  # fmt: skip
    assert f["response"] == expected
    assert f["uri"] == req.uri
    return f


def registered(reg: Registration, now: float = 0.0, expires: int = 60) -> SipRequest:
    """Start, answer the 401, grant `expires`: returns the authenticated REGISTER."""
    first = only_request(reg.start(now))
    second = only_request(reg.on_response(reply(first, 401, CHALLENGE), now + 0.1))
    contact = f"<{reg.contact_uri}>;expires={expires}"
    changes = statuses(reg.on_response(reply(second, 200, ("Contact", contact)), now + 0.2))
    assert [s.state for s in changes] == [RegState.REGISTERED]
    return second


# ---- the account -------------------------------------------------------------------------------


def test_account_defaults_and_secrecy() -> None:
    assert ACCOUNT.domain_host == "sip.example.com"
    assert ACCOUNT.auth_user == "alice"
    assert ACCOUNT.aor == "sip:alice@sip.example.com"
    assert ACCOUNT.next_hop == ("sip.example.com", 5080)
    assert ACCOUNT.route is None
    assert "secret" not in repr(ACCOUNT)
    trunk = SipAccount(
        "t", "[2001:db8::1]", "+15551234", "pw", domain="voip.example", auth_username="u77",
        outbound_proxy="proxy.example:5062",
    )  # fmt: skip
    assert trunk.aor == "sip:+15551234@voip.example" and trunk.auth_user == "u77"
    assert trunk.next_hop == ("proxy.example", 5062)
    assert trunk.route == "<sip:proxy.example:5062;lr>"
    assert SipAccount("v6", "[2001:db8::1]", "a").next_hop == ("2001:db8::1", 5060)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"registrar": "host:99999"},
        {"registrar": ""},
        {"username": ""},
        {"username": "a b"},
        {"expires": 0},
        {"outbound_proxy": "[::1"},
        {"name": ""},
    ],
)
def test_account_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"name": "p", "registrar": "h", "username": "u"}
    with pytest.raises(ConfigError):
        SipAccount(**{**base, **kwargs})  # type: ignore[arg-type]


# ---- register, challenge, expiry ---------------------------------------------------------------


def test_register_challenge_and_grant() -> None:
    reg = new_reg()
    actions = reg.start(10.0)
    assert [s.state for s in statuses(actions)] == [RegState.REGISTERING]
    first = only_request(actions)
    # RFC 3261 §10.2: Request-URI = domain, To = From = AOR, Contact with expires.
    assert first.method == "REGISTER" and first.uri == "sip:sip.example.com"
    assert str(first.to.uri) == str(first.from_.uri) == "sip:alice@sip.example.com"
    assert first.to.tag is None and first.from_.tag
    (contact,) = first.contacts
    assert str(contact.uri) == "sip:alice@192.0.2.1:5070" and contact.param("expires") == "3600"
    assert first.headers.get("Expires") == "3600"
    assert str(first.cseq) == "1 REGISTER" and "Authorization" not in first.headers
    assert first.vias[0].host == "192.0.2.1" and first.vias[0].port == 5070
    assert reg.next_deadline() is None  # waiting for the transaction, not for a timer

    second = only_request(reg.on_response(reply(first, 401, CHALLENGE), 10.1))
    assert str(second.cseq) == "2 REGISTER" and second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.vias[0].branch != first.vias[0].branch
    f = assert_valid_auth(second)
    assert (f["username"], f["realm"], f["nonce"], f["nc"]) == (
        "alice",
        "example.com",
        "n1",
        "00000001",
    )

    ok = reply(second, 200, ("Contact", f"<{reg.contact_uri}>;expires=120"))
    (status,) = statuses(reg.on_response(ok, 10.2))
    assert status.state is RegState.REGISTERED and status.expires == 120
    # Lifetime and refresh run from when the request was sent (10.1); refresh at max(T-30, T/2).
    assert status.expires_at == pytest.approx(130.1)
    assert reg.next_deadline() == pytest.approx(10.1 + 90)
    assert "secret" not in repr(status)


@pytest.mark.parametrize(
    ("headers", "granted"),
    [
        ((("Contact", "<sip:other@192.0.2.9>;expires=99, <sip:alice@192.0.2.1:5070>;expires=45"),), 45),
        ((("Expires", "50"),), 50),
        ((("Contact", "<sip:alice@203.0.113.7:40000>;expires=33"),), 33),  # rewritten by a NAT-aware proxy
        ((), 3600),
    ],
)  # fmt: skip
def test_granted_expiry_from_the_2xx(headers: tuple[tuple[str, str], ...], granted: int) -> None:
    """RFC 3261 §10.2.4: our Contact's expires, else Expires, else what we asked for."""
    reg = new_reg()
    first = only_request(reg.start(0.0))
    (status,) = statuses(reg.on_response(reply(first, 200, *headers), 0.1))
    assert status.expires == granted


@pytest.mark.parametrize(("granted", "refresh"), [(3600, 3570.0), (60, 30.0), (10, 5.0), (4, 2.0)])
def test_refresh_timing(granted: int, refresh: float) -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    reg.on_response(reply(first, 200, ("Expires", str(granted))), 0.05)
    assert reg.next_deadline() == pytest.approx(refresh)


def test_refresh_keeps_call_id_reuses_the_nonce_and_stays_registered() -> None:
    reg = new_reg()
    second = registered(reg, expires=60)
    assert reg.poll(29.9) == []
    actions = reg.poll(30.1)
    assert statuses(actions) == []  # still REGISTERED while refreshing
    refresh = only_request(actions)
    assert refresh.call_id == second.call_id and str(refresh.cseq) == "3 REGISTER"
    f = assert_valid_auth(refresh)  # RFC 3261 §22.3: credentials reused, nc counts on
    assert (f["nonce"], f["nc"], f["cnonce"]) == ("n1", "00000002", "cn")
    (status,) = statuses(reg.on_response(reply(refresh, 200, ("Expires", "60")), 30.2))
    assert status.state is RegState.REGISTERED and status.failures == 0
    assert reg.next_deadline() == pytest.approx(60.1)


def test_stale_nonce_on_refresh_is_answered() -> None:
    reg = new_reg()
    registered(reg)
    refresh = only_request(reg.poll(40.0))
    stale = ("WWW-Authenticate", 'Digest realm="example.com", nonce="n2", qop="auth", stale=true')
    again = only_request(reg.on_response(reply(refresh, 401, stale), 40.1))
    assert auth_fields(again)["nonce"] == "n2" and auth_fields(again)["nc"] == "00000001"
    (status,) = statuses(reg.on_response(reply(again, 200), 40.2))
    assert status.state is RegState.REGISTERED


def test_preemptive_credentials_refused_for_their_nonce_are_answered_once() -> None:
    """A refresh's reused credentials are not an answer to a challenge: the registrar may
    re-challenge with the same nonce once (e.g. it forgot its nc state)."""
    reg = new_reg()
    registered(reg)
    refresh = only_request(reg.poll(40.0))
    again = only_request(reg.on_response(reply(refresh, 401, CHALLENGE), 40.1))
    assert auth_fields(again)["nc"] == "00000003"
    (status,) = statuses(reg.on_response(reply(again, 401, CHALLENGE), 40.2))
    assert status.state is RegState.FAILED and status.reason.startswith("authentication rejected")


# ---- failures and backoff -------------------------------------------------------------------------


def test_wrong_password_fails_once_per_nonce_then_backs_off() -> None:
    reg = new_reg(SipAccount("p", "sip.example.com", "alice", "wrong"))
    first = only_request(reg.start(0.0))
    second = only_request(reg.on_response(reply(first, 401, CHALLENGE), 0.1))
    actions = reg.on_response(reply(second, 401, CHALLENGE), 0.2)
    assert requests(actions) == []  # no third REGISTER: that would loop
    (status,) = statuses(actions)
    assert status.state is RegState.FAILED
    assert status.reason == "authentication rejected (401 Unauthorized)"
    assert status.retry_at == pytest.approx(30.2) and status.failures == 1
    # Backoff: 30 s doubling to 30 min.
    retries = []
    now = 0.2
    for _ in range(8):
        deadline = reg.next_deadline()
        assert deadline is not None
        retries.append(round(deadline - now, 6))
        now = deadline
        req = only_request(reg.poll(now))
        reg.on_response(reply(req, 403), now)
    assert retries == [30, 60, 120, 240, 480, 960, 1800, 1800]


def test_jitter_comes_from_the_injected_random() -> None:
    reg = new_reg(rand=1.0)
    first = only_request(reg.start(0.0))
    (status,) = statuses(reg.on_response(reply(first, 500), 1.0))
    assert status.retry_at == pytest.approx(1.0 + 30 * 0.75)


def test_403_after_credentials_is_an_authentication_failure() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    second = only_request(reg.on_response(reply(first, 401, CHALLENGE), 0.1))
    (status,) = statuses(reg.on_response(reply(second, 403), 0.2))
    assert status.reason == "authentication rejected (403 Forbidden)"
    assert status.status == 403


def test_new_nonces_forever_are_a_loop() -> None:
    reg = new_reg()
    req = only_request(reg.start(0.0))
    for n in range(3):
        ch = ("WWW-Authenticate", f'Digest realm="r", nonce="x{n}"')
        req = only_request(reg.on_response(reply(req, 401, ch), 0.1 * n))
    (status,) = statuses(reg.on_response(reply(req, 401, ("WWW-Authenticate", 'Digest realm="r", nonce="x9"')), 1.0))  # fmt: skip
    assert status.state is RegState.FAILED and "authentication rejected" in status.reason


def test_unsupported_challenge_fails_with_the_reason() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    aka = ("WWW-Authenticate", 'Digest realm="r", nonce="n", algorithm=AKAv1-MD5')
    (status,) = statuses(reg.on_response(reply(first, 401, aka), 0.1))
    assert status.state is RegState.FAILED
    assert status.reason.startswith("unsupported challenge") and "AKAv1-MD5" in status.reason


def test_423_retries_at_once_with_min_expires() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    actions = reg.on_response(reply(first, 423, ("Min-Expires", "7200")), 0.1)
    assert statuses(actions) == []
    again = only_request(actions)
    assert again.contacts[0].param("expires") == "7200" and again.headers.get("Expires") == "7200"
    assert str(again.cseq) == "2 REGISTER"
    # A second 423 that does not raise the minimum would loop: fail instead.
    (status,) = statuses(reg.on_response(reply(again, 423, ("Min-Expires", "7200")), 0.2))
    assert status.state is RegState.FAILED and "Min-Expires" in status.reason


def test_retry_after_is_honoured() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    (status,) = statuses(reg.on_response(reply(first, 503, ("Retry-After", "600 (maintenance)")), 1.0))  # fmt: skip
    assert status.reason == "503 Service Unavailable" and status.retry_at == pytest.approx(601.0)


def test_timeout_then_retry_then_success_resets_the_failures() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    (status,) = statuses(reg.on_timeout(32.0))
    assert status.state is RegState.FAILED and status.status == 408
    assert reg.on_timeout(33.0) == []  # nothing pending any more
    actions = reg.poll(62.0)
    assert [s.state for s in statuses(actions)] == [RegState.REGISTERING]
    retry = only_request(actions)
    assert retry.call_id == first.call_id and str(retry.cseq) == "2 REGISTER"
    # The late answer to the first REGISTER is ignored.
    assert reg.on_response(reply(first, 200), 62.1) == []
    (status,) = statuses(reg.on_response(reply(retry, 200), 62.2))
    assert status.state is RegState.REGISTERED and status.failures == 0


def test_granted_zero_is_a_failure() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    (status,) = statuses(reg.on_response(reply(first, 200, ("Expires", "0")), 0.1))
    assert status.state is RegState.FAILED


# ---- unregister -----------------------------------------------------------------------------------


def test_unregister_sends_expires_zero_with_credentials() -> None:
    reg = new_reg()
    registered(reg)
    actions = reg.stop(5.0)
    assert [s.state for s in statuses(actions)] == [RegState.UNREGISTERING]
    unreg = only_request(actions)
    assert unreg.contacts[0].param("expires") == "0" and unreg.headers.get("Expires") == "0"
    assert_valid_auth(unreg)
    assert reg.next_deadline() is None and reg.poll(1e9) == []
    (status,) = statuses(reg.on_response(reply(unreg, 200), 5.1))
    assert status.state is RegState.UNREGISTERED and status.reason == ""


def test_unregister_challenge_is_answered_and_failure_still_ends() -> None:
    reg = new_reg()
    registered(reg)
    unreg = only_request(reg.stop(5.0))
    fresh = ("WWW-Authenticate", 'Digest realm="example.com", nonce="n7", qop="auth"')
    again = only_request(reg.on_response(reply(unreg, 401, fresh), 5.1))
    assert auth_fields(again)["nonce"] == "n7" and again.headers.get("Expires") == "0"
    (status,) = statuses(reg.on_response(reply(again, 500), 5.2))
    assert status.state is RegState.UNREGISTERED and status.reason.startswith("unregister failed")


def test_stop_without_a_binding_sends_nothing() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    reg.on_response(reply(first, 404), 0.1)
    actions = reg.stop(1.0)
    assert requests(actions) == []
    (status,) = statuses(actions)
    assert status.state is RegState.UNREGISTERED and status.reason == "404 Not Found"
    assert reg.start(2.0) == []  # stopped for good


def test_stop_while_registering_removes_what_may_be_created() -> None:
    reg = new_reg()
    only_request(reg.start(0.0))
    unreg = only_request(reg.stop(0.1))
    assert unreg.headers.get("Expires") == "0"
    assert statuses(reg.abandon("no answer")) == [
        RegistrationStatus(
            "provider",
            RegState.UNREGISTERED,
            ACCOUNT.aor,
            ACCOUNT.registrar,
            "no answer",
            failures=0,
        )
    ]


# ---- behind NAT (RFC 3581 received/rport) -----------------------------------------------------


def reply_via_nat(
    req: SipRequest, status: int, seen: str, *headers: tuple[str, str]
) -> SipResponse:
    """A response whose top Via says the registrar saw us at `seen` (host:port)."""
    host, port = seen.rsplit(":", 1)
    data = bytes(make_response(req, status, to_tag="reg", headers=list(headers)))
    data = data.replace(b";rport", f";received={host};rport={port}".encode(), 1)
    again = parse(data)
    assert isinstance(again, SipResponse)
    return again


def test_behind_nat_the_binding_moves_to_the_address_the_registrar_saw() -> None:
    reg = new_reg()
    first = only_request(reg.start(0.0))
    second = only_request(reg.on_response(reply(first, 401, CHALLENGE), 0.1))
    assert "192.0.2.1:5070" in (second.headers.get("Contact") or "")
    # 200 OK, but the registrar saw us at the NAT's address: register that one instead, and
    # remove the binding to the private address in the same request.
    actions = reg.on_response(
        reply_via_nat(
            second, 200, "203.0.113.5:40123", ("Contact", "<sip:alice@192.0.2.1:5070>;expires=60")
        ),
        0.2,
    )
    assert [s.state for s in statuses(actions)] == [RegState.REGISTERING]
    third = only_request(actions)
    assert reg.public_addr == ("203.0.113.5", 40123)
    assert reg.contact_uri == "sip:alice@203.0.113.5:40123"
    assert third.headers.get_all("Contact") == [
        "<sip:alice@203.0.113.5:40123>;expires=3600",
        "<sip:alice@192.0.2.1:5070>;expires=0",
    ]
    assert (third.vias[0].host, third.vias[0].port) == ("192.0.2.1", 5070)  # Via: where we are
    assert_valid_auth(third)  # the credentials go along (the nonce is reused)
    # The registrar grants the new binding; the same NAT view again changes nothing.
    done = reg.on_response(
        reply_via_nat(third, 200, "203.0.113.5:40123",
                      ("Contact", "<sip:alice@203.0.113.5:40123>;expires=60")),
        0.3,
    )  # fmt: skip
    assert [s.state for s in statuses(done)] == [RegState.REGISTERED] and not requests(done)
    # A refresh keeps the learned Contact, without the stale one.
    refresh = only_request(reg.poll(100.0))
    assert refresh.headers.get_all("Contact") == ["<sip:alice@203.0.113.5:40123>;expires=3600"]


def test_no_nat_learning_when_not_behind_one_or_when_told_the_address() -> None:
    reg = new_reg()
    second = only_request(reg.on_response(reply(only_request(reg.start(0.0)), 401, CHALLENGE), 0.1))
    # received/rport equal to ours: not behind NAT.
    same = reg.on_response(reply_via_nat(second, 200, "192.0.2.1:5070"), 0.2)
    assert [s.state for s in statuses(same)] == [RegState.REGISTERED] and reg.public_addr is None
    told = new_reg()
    told.learn_address = False  # sip.public_host is set
    second = only_request(
        told.on_response(reply(only_request(told.start(0.0)), 401, CHALLENGE), 0.1)
    )
    kept = told.on_response(reply_via_nat(second, 200, "203.0.113.5:40123"), 0.2)
    assert [s.state for s in statuses(kept)] == [RegState.REGISTERED] and told.public_addr is None


def test_a_registrar_whose_view_keeps_changing_cannot_make_us_loop() -> None:
    reg = new_reg()
    second = only_request(reg.on_response(reply(only_request(reg.start(0.0)), 401, CHALLENGE), 0.1))
    third = only_request(reg.on_response(reply_via_nat(second, 200, "203.0.113.5:40123"), 0.2))
    settled = reg.on_response(reply_via_nat(third, 200, "203.0.113.5:40999"), 0.3)
    assert [s.state for s in statuses(settled)] == [RegState.REGISTERED] and not requests(settled)
    assert reg.public_addr == ("203.0.113.5", 40123)
