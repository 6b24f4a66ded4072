"""X-Twilio-Signature: twilio-python's own test vectors, and agreement with the official
package's RequestValidator on arbitrary requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callbridge.twilio_streams.signature import (
    body_sha256,
    compute_signature,
    url_variants,
    verify,
)

# twilio-python tests/unit/test_request_validator.py (setUp and its expected values).
TOKEN = "12345"
URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
BODY = '{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
DUPLICATE_EXPECTED = "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_vector_compute_signature() -> None:
    assert compute_signature(TOKEN, URI, PARAMS) == EXPECTED


def test_vector_body_hash() -> None:
    assert body_sha256(BODY.encode()) == BODY_HASH


def test_vector_repeated_parameters() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature(TOKEN, URI, params) == DUPLICATE_EXPECTED


def test_vector_validation() -> None:
    assert verify(TOKEN, URI, EXPECTED, PARAMS)


def test_vector_removes_port_on_https() -> None:
    assert verify(TOKEN, URI.replace(".com", ".com:1234"), EXPECTED, PARAMS)


def test_vector_removes_port_on_http() -> None:
    uri = URI.replace(".com", ".com:1234").replace("https", "http")
    assert verify(TOKEN, uri, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=", PARAMS)


def test_vector_adds_port_on_https() -> None:
    assert verify(TOKEN, URI, "kvajT1Ptam85bY51eRf/AJRuM3w=", PARAMS)


def test_vector_adds_port_on_http() -> None:
    assert verify(TOKEN, URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4=", PARAMS)


def test_vector_body_validation() -> None:
    uri = f"{URI}&bodySHA256={BODY_HASH}"
    assert verify(TOKEN, uri, "a9nBmqA0ju/hNViExpshrM61xv4=", body=BODY.encode())


def test_body_must_match_its_hash() -> None:
    uri = f"{URI}&bodySHA256={BODY_HASH}"
    check = verify(TOKEN, uri, "a9nBmqA0ju/hNViExpshrM61xv4=", body=b'{"property": "other"}')
    assert not check
    assert "bodySHA256" in check.reason


@pytest.mark.parametrize(
    ("token", "signature", "params", "reason"),
    [
        ("", EXPECTED, PARAMS, "no auth token"),
        (TOKEN, None, PARAMS, "missing X-Twilio-Signature"),
        (TOKEN, "", PARAMS, "missing X-Twilio-Signature"),
        (TOKEN, EXPECTED, {**PARAMS, "Digits": "9"}, "mismatch"),
        (TOKEN, EXPECTED[:-2] + "A=", PARAMS, "mismatch"),
        ("54321", EXPECTED, PARAMS, "mismatch"),
        (TOKEN, "ümlaut", PARAMS, "mismatch"),
    ],
)
def test_rejections_say_why(
    token: str, signature: str | None, params: dict[str, str], reason: str
) -> None:
    check = verify(token, URI, signature, params)
    assert not check.ok
    assert reason in check.reason


def test_websocket_url_default_port_is_443() -> None:
    url = "wss://example.com/twilio/media"
    assert url_variants(url) == [url, "wss://example.com:443/twilio/media"]
    signed_with_port = compute_signature(TOKEN, "wss://example.com:443/twilio/media")
    assert verify(TOKEN, url, signed_with_port)
    assert verify(TOKEN, "wss://example.com:443/twilio/media", compute_signature(TOKEN, url))


def test_url_variants_keep_ipv6_and_userinfo() -> None:
    assert url_variants("http://u@[::1]:8080/x?q=1") == [
        "http://u@[::1]:8080/x?q=1",
        "http://u@[::1]/x?q=1",
    ]


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@given(
    token=st.text(min_size=1, max_size=32),
    host=st.sampled_from(["example.com", "example.com:8443", "10.0.0.1:80", "a.b"]),
    scheme=st.sampled_from(["https", "http"]),
    path=st.text("abcxyz/._-", max_size=12),
    params=st.lists(st.tuples(_text, _text), max_size=6),
)
def test_agrees_with_the_official_request_validator(
    token: str, host: str, scheme: str, path: str, params: list[tuple[str, str]]
) -> None:
    url = f"{scheme}://{host}/{path}"
    official = RequestValidator(token)
    # The official validator takes a dict (one value per name) or a multidict.
    single = dict(params)
    signature = official.compute_signature(url, single)
    assert compute_signature(token, url, single) == signature
    assert verify(token, url, signature, single)
    assert official.validate(url, single, compute_signature(token, url, single))
    tampered = {**single, "Tampered": "1"}
    assert not verify(token, url, signature, tampered)
