"""The UA split by role: the call record's Role, what the shared CallTable keeps per call, and
the digest retry rule the INVITE client shares with registration. Plain values, no sockets."""

from __future__ import annotations

from callbridge.sip.calls import ALLOW, CallState, Role
from callbridge.sip.challenge import MAX_CHALLENGES, AuthRefused, ChallengeAnswerer
from callbridge.sip.digest import AuthHeader, DigestClient
from callbridge.sip.message import SipRequest, SipResponse, make_response, parse
from callbridge.sip.ua import ALLOW as UA_ALLOW
from callbridge.sip.ua import (
    CallEnded,
    Datagram,
    IncomingCall,
    LocalIdentity,
    Output,
    UserAgent,
)
from callbridge.sip.uri import SipUri

from .test_ua import PEER, SDP, invite

UAS_ADDR = ("127.0.0.1", 25070)


def _sent(outs: list[Output]) -> list[SipRequest | SipResponse]:
    return [parse(o.data) for o in outs if isinstance(o, Datagram)]


def _incoming(ua: UserAgent) -> str:
    (ev,) = [o for o in ua.receive(invite(), PEER, 0.0) if isinstance(o, IncomingCall)]
    return ev.call


def test_role_is_a_str_enum_so_logs_and_comparisons_read_as_before() -> None:
    assert isinstance(Role.UAS, str) and [*Role] == ["uas", "uac"]
    assert f"{Role.UAS}" == "uas" and str(Role.UAC) == "uac"
    assert Role("uac") is Role.UAC


def test_allow_is_the_same_constant_from_ua_and_calls() -> None:
    assert UA_ALLOW is ALLOW


def test_incoming_and_outgoing_calls_keep_only_their_roles_state() -> None:
    ua = UserAgent(LocalIdentity("127.0.0.1", 5060))
    uas = _incoming(ua)
    uac, _ = ua.invite(SipUri.parse("sip:uas@127.0.0.1:25070"), UAS_ADDR, SDP, 0.0)
    calls = ua._table.calls
    assert calls[uas].role is Role.UAS and calls[uac].role is Role.UAC
    # The INVITE server keeps its transaction; only the client has an attempt to CANCEL/retry.
    assert calls[uas].server_tx is not None and calls[uas].outgoing is None
    assert calls[uac].server_tx is None and calls[uac].outgoing is not None
    assert calls[uas].state is calls[uac].state is CallState.EARLY


def test_hangup_dispatches_by_role_before_the_answer() -> None:
    ua = UserAgent(LocalIdentity("127.0.0.1", 5060))
    uas = _incoming(ua)
    uac, _ = ua.invite(SipUri.parse("sip:uas@127.0.0.1:25070"), UAS_ADDR, SDP, 0.0)
    # UAS: a final 480 (§13.3.1.3); UAC with no provisional yet: nothing on the wire (§9.1).
    outs = ua.hangup(uas, 0.1)
    (resp,) = _sent(outs)
    assert isinstance(resp, SipResponse) and resp.status == 480
    assert CallEnded(uas, "rejected", 480) in outs
    assert ua.hangup(uac, 0.1) == []
    assert ua.call_ids() == [uac]


def test_a_new_local_identity_reaches_every_role() -> None:
    """The shell binds port 0 and then sets ua.local: Contact, Via and Server must follow."""
    ua = UserAgent(LocalIdentity("127.0.0.1", 0, "old"))
    ua.local = LocalIdentity("127.0.0.1", 5099, "new-agent")
    call = _incoming(ua)
    (ok,) = _sent(ua.answer(call, SDP, 0.0))
    assert isinstance(ok, SipResponse)
    assert ok.headers.get("Contact") == "<sip:agent@127.0.0.1:5099>"
    assert ok.headers.get("Server") == "new-agent"
    _, outs = ua.invite(SipUri.parse("sip:uas@127.0.0.1:25070"), UAS_ADDR, SDP, 0.0)
    (inv,) = _sent(outs)
    assert isinstance(inv, SipRequest)
    assert "127.0.0.1:5099" in (inv.headers.get("Via") or "")
    assert inv.headers.get("User-Agent") == "new-agent"


def test_transfer_timeout_is_settable_on_the_ua() -> None:
    ua = UserAgent(LocalIdentity("127.0.0.1", 5060))
    ua.transfer_timeout = 3.0
    assert ua.transfer_timeout == 3.0 and ua._in_dialog.transfer_timeout == 3.0


# ---- the digest retry rule ------------------------------------------------------------------------


def _challenge(nonce: str, *, stale: bool = False, status: int = 401) -> SipResponse:
    request = parse(invite())
    assert isinstance(request, SipRequest)
    value = f'Digest realm="r", nonce="{nonce}", qop="auth"' + (", stale=true" if stale else "")
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return make_response(request, status, to_tag="t", headers=[(name, value)])


def _answerer() -> ChallengeAnswerer:
    return ChallengeAnswerer(DigestClient("alice", "secret", lambda: "cn"))


def test_a_nonce_is_answered_once_unless_stale() -> None:
    auth = _answerer()
    first = auth.answer(_challenge("n1"), "INVITE", "sip:bob@example.com")
    assert isinstance(first, AuthHeader) and first.name == "Authorization"
    refused = auth.answer(_challenge("n1"), "INVITE", "sip:bob@example.com")
    assert refused == AuthRefused("authentication rejected (401 Unauthorized)")
    # §22.3 stale=true: the credentials were right, only the nonce expired.
    assert isinstance(auth.answer(_challenge("n1", stale=True), "INVITE", "sip:b@x"), AuthHeader)


def test_at_most_max_challenges_per_request_and_reset_starts_over() -> None:
    auth = _answerer()
    for i in range(MAX_CHALLENGES):
        assert isinstance(auth.answer(_challenge(f"n{i}"), "REGISTER", "sip:x"), AuthHeader)
    assert isinstance(auth.answer(_challenge("fresh"), "REGISTER", "sip:x"), AuthRefused)
    auth.reset()
    assert isinstance(auth.answer(_challenge("n0"), "REGISTER", "sip:x"), AuthHeader)


def test_unreadable_and_unsupported_challenges_say_which() -> None:
    request = parse(invite())
    assert isinstance(request, SipRequest)
    bare = make_response(request, 401, to_tag="t")
    other = make_response(request, 401, to_tag="t", headers=[("WWW-Authenticate", "Basic x=1")])
    unreadable = _answerer().answer(bare, "INVITE", "sip:x")
    unsupported = _answerer().answer(other, "INVITE", "sip:x")
    assert isinstance(unreadable, AuthRefused) and unreadable.detail.startswith("unreadable")
    assert isinstance(unsupported, AuthRefused) and unsupported.detail.startswith("unsupported")
