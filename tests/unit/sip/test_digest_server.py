"""Server-side digest: our challenges answered by our own client side (and SIPp's, in
tests/peers/test_inbound_auth.py), and every way a request can fail."""

from __future__ import annotations

import pytest

from callbridge.sip.digest import DigestError, authorization, parse_challenge
from callbridge.sip.digest_server import AuthOutcome, DigestServer, parse_credentials

NOW = 1_795_000_000.0
URI = "sip:agent@192.0.2.1:5060"


def server(**kw: object) -> DigestServer:
    return DigestServer("callbridge", {"alice": "s3cret"}, secret=b"k" * 32, **kw)  # type: ignore[arg-type]


def answer(challenge: str, password: str = "s3cret", user: str = "alice") -> str:
    return authorization(
        parse_challenge(challenge), username=user, password=password, method="INVITE",
        uri=URI, cnonce="0a4f113b", nc=1,
    )  # fmt: skip


def test_golden_challenges_sha256_first() -> None:
    sha, md5 = server().challenges(NOW)
    nonce = server().nonce(NOW)
    assert nonce.startswith(f"{int(NOW):x}.") and len(nonce) == 8 + 1 + 32
    assert sha == f'Digest realm="callbridge", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
    assert md5 == sha.replace("SHA-256", "MD5")
    assert server().challenges(NOW, stale=True)[0].endswith(", stale=true")
    assert parse_challenge(server().challenges(NOW, stale=True)[0]).stale


@pytest.mark.parametrize("which", [0, 1])
def test_our_client_answer_passes_for_each_algorithm(which: int) -> None:
    s = server()
    auth = answer(s.challenges(NOW)[which])
    result = s.check("INVITE", [auth], NOW + 1)
    assert (result.outcome, result.username) == (AuthOutcome.OK, "alice"), result


def test_the_ways_to_fail() -> None:
    s = server()
    challenge = s.challenges(NOW)[0]
    assert s.check("INVITE", [], NOW).outcome is AuthOutcome.MISSING
    other_realm = answer(challenge).replace('realm="callbridge"', 'realm="elsewhere"')
    assert s.check("INVITE", [other_realm], NOW).outcome is AuthOutcome.MISSING
    for auth, reason in (
        (answer(challenge, password="guess"), "wrong password"),
        (answer(challenge, user="mallory"), "unknown user"),
        (answer(challenge.replace(s.nonce(NOW), "5f5e100.00000000000000000000000000000000")),
         "a nonce we did not issue"),
        ("Digest username=alice", "malformed credentials"),
    ):  # fmt: skip
        result = s.check("INVITE", [auth], NOW)
        assert result.outcome is AuthOutcome.FAILED and reason in result.reason, (reason, result)
    # Signed for another method (the same credentials replayed on a BYE) fail too.
    assert s.check("BYE", [answer(challenge)], NOW).outcome is AuthOutcome.FAILED
    # Another gateway's nonce (another secret) is not ours.
    theirs = DigestServer("callbridge", {"alice": "s3cret"}, secret=b"x" * 32)
    assert s.check("INVITE", [answer(theirs.challenges(NOW)[0])], NOW).outcome is (
        AuthOutcome.FAILED
    )


def test_an_expired_nonce_is_stale_only_with_the_right_password() -> None:
    s = server(nonce_ttl=60.0)
    challenge = s.challenges(NOW)[0]
    assert s.check("INVITE", [answer(challenge)], NOW + 61).outcome is AuthOutcome.STALE
    late_wrong = s.check("INVITE", [answer(challenge, password="guess")], NOW + 61)
    assert late_wrong.outcome is AuthOutcome.FAILED


def test_credentials_parse_and_reject() -> None:
    c = parse_credentials(
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b", '
        'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629FAE49393A05397450978507C4EF1", opaque="5ccc"'
    )
    assert (c.username, c.qop, c.nc, c.cnonce, c.opaque) == (
        "Mufasa",
        "auth",
        "00000001",
        "0a4f113b",
        "5ccc",
    )
    assert c.response == "6629fae49393a05397450978507c4ef1" and c.algorithm == "MD5"
    for bad in (
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        'Digest username="a", realm="r", nonce="n", uri="u"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-512',
    ):
        with pytest.raises(DigestError):
            parse_credentials(bad)


def test_a_replayed_request_is_challenged_again() -> None:
    s = server()
    challenge = s.challenges(NOW)[0]
    auth = answer(challenge)  # nc=00000001
    assert s.check("INVITE", [auth], NOW).outcome is AuthOutcome.OK
    replay = s.check("INVITE", [auth], NOW + 1)  # the same INVITE again (a new transaction)
    assert (replay.outcome, replay.reason) == (AuthOutcome.STALE, "nonce count not raised")
    second = authorization(
        parse_challenge(challenge), username="alice", password="s3cret", method="INVITE",
        uri=URI, cnonce="0a4f113b", nc=2,
    )  # fmt: skip
    assert s.check("INVITE", [second], NOW + 2).outcome is AuthOutcome.OK  # the client's next


def test_answers_without_qop_are_refused() -> None:
    s = server()
    nonce = s.nonce(NOW)
    legacy = parse_challenge(f'Digest realm="callbridge", nonce="{nonce}", algorithm=MD5')
    auth = authorization(
        legacy, username="alice", password="s3cret", method="INVITE", uri=URI,
        cnonce="x", nc=1,
    )  # fmt: skip
    result = s.check("INVITE", [auth], NOW)
    assert (result.outcome, result.reason) == (AuthOutcome.FAILED, "qop=auth required")


def test_the_replay_memory_is_bounded() -> None:
    s = server(max_tracked=2)
    for i in range(3):
        assert s.check("INVITE", [answer(s.challenges(NOW + i)[0])], NOW + i).outcome is (
            AuthOutcome.OK
        )
    assert len(s._counts) == 2
