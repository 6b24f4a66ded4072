"""SIP URI and name-addr parsing (RFC 3261 §19.1, §20.10, §25.1)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.sip.headers import Via
from callbridge.sip.uri import NameAddr, SipUri, UriParseError, uri_unescape

# --- SipUri -------------------------------------------------------------------------------


def test_full_uri_components() -> None:
    u = SipUri.parse(
        "sip:alice:secret@atlanta.com:5070;transport=tcp;lr?subject=project&priority=urgent"
    )
    assert u.scheme == "sip"
    assert u.user == "alice"
    assert u.password == "secret"
    assert u.host == "atlanta.com"
    assert u.port == 5070
    assert u.params == (("transport", "tcp"), ("lr", None))
    assert u.headers == (("subject", "project"), ("priority", "urgent"))
    assert u.host_port == ("atlanta.com", 5070)


def test_minimal_uri() -> None:
    u = SipUri.parse("sips:example.com")
    assert u == SipUri("sips", "example.com")
    assert u.user is None and u.port is None and u.params == () and u.headers == ()
    assert str(u) == "sips:example.com"


def test_scheme_is_lower_cased() -> None:
    assert SipUri.parse("SIP:Bob@Biloxi.com").scheme == "sip"
    assert SipUri.parse("SIPS:bob@biloxi.com").scheme == "sips"


def test_ipv6_host_keeps_brackets() -> None:
    u = SipUri.parse("sip:bob@[2001:db8::10]:5060;maddr=[2001:db8::1]")
    assert u.host == "[2001:db8::10]"
    assert u.port == 5060
    assert u.param("maddr") == "[2001:db8::1]"
    assert u.host_port == ("[2001:db8::10]", 5060)


def test_ipv4_host_and_telephone_user() -> None:
    u = SipUri.parse("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert u.user == "+1-212-555-1212"
    assert u.password == "1234"
    assert u.param("USER") == "phone"
    u4 = SipUri.parse("sip:192.0.2.4")
    assert u4.host == "192.0.2.4" and u4.user is None


def test_param_lookup_is_case_insensitive_and_flag_is_empty_string() -> None:
    u = SipUri.parse("sip:p.example.com;LR;Transport=UDP")
    assert u.param("lr") == ""
    assert u.param("transport") == "UDP"
    assert u.param("maddr") is None
    assert u.has_param("lr")
    assert not u.has_param("maddr")


def test_with_params_replaces_in_place_and_appends() -> None:
    u = SipUri.parse("sip:bob@h;transport=udp;x=1")
    v = u.with_params(transport="tcp", lr=None)
    assert v.params == (("transport", "tcp"), ("x", "1"), ("lr", None))
    assert str(v) == "sip:bob@h;transport=tcp;x=1;lr"
    assert u.params == (("transport", "udp"), ("x", "1"))  # original unchanged
    assert v.without_params("x", "LR").params == (("transport", "tcp"),)


def test_escapes_are_kept_as_written() -> None:
    # RFC 4475 §3.1.1.3 (esc01): the user part is compared/returned still escaped.
    u = SipUri.parse("sip:sips%3Auser%40example.com@example.net")
    assert u.user == "sips%3Auser%40example.com"
    assert u.host == "example.net"
    assert uri_unescape(u.user) == "sips:user@example.com"
    assert uri_unescape("%75se%72") == "user"


def test_user_with_semicolon() -> None:
    # RFC 4475 §3.1.1.9 (semiuri): ';' is legal in the user part.
    u = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u%40example.net"
    assert u.host == "example.com"
    assert u.params == ()


def test_unusual_userinfo() -> None:
    # RFC 4475 §3.1.1.2 (intmeth) Request-URI.
    text = (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,"
        "weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    u = SipUri.parse(text)
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com"
    assert str(u) == text


def test_escaped_uri_headers() -> None:
    u = SipUri.parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    assert u.headers == (("Route", "%3Csip:sip.example.com%3E"),)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "tel:+15551234",
        "http://example.com",
        "sip:user@",
        "sip:@example.com",
        "sip:user@exa mple.com",
        "sip:user@example.com:99999",
        "sip:user@example.com:port",
        "sip:user@example.com;",
        "sip:user@example.com;a;;b",
        "sip:user@example.com?",
        "sip:user@example.com?noequals",
        "sip:<user@example.com>",
        'sip:"user"@example.com',
        "sip:us%zzer@example.com",
        "sip:user@example.com\r\n",
        "sip:user@host/path",
    ],
)
def test_invalid_sip_uris(text: str) -> None:
    with pytest.raises(UriParseError):
        SipUri.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sips:1212@gateway.com",
        "sip:alice@192.0.2.4",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:[2001:db8::1]:5061;transport=tls",
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
    ],
)
def test_rfc3261_examples_round_trip(text: str) -> None:
    # RFC 3261 §19.1.3 examples.
    assert str(SipUri.parse(text)) == text


# --- NameAddr -----------------------------------------------------------------------------


def test_name_addr_with_quoted_display_and_tag() -> None:
    na = NameAddr.parse('"Bob \\"the\\" Builder" <sip:bob@biloxi.com>;tag=a6c85cf')
    assert na.display_name == 'Bob "the" Builder'
    assert isinstance(na.uri, SipUri) and na.uri.user == "bob"
    assert na.tag == "a6c85cf"
    assert na.bracketed
    assert NameAddr.parse(str(na)) == na


def test_name_addr_token_display_name() -> None:
    na = NameAddr.parse("Alice  Liddell <sip:alice@wonderland.example>")
    assert na.display_name == "Alice Liddell"
    na2 = NameAddr.parse("caller<sip:caller@example.com>;tag=323")  # RFC 4475 lwsdisp
    assert na2.display_name == "caller"
    assert na2.tag == "323"


def test_name_addr_without_display_name() -> None:
    na = NameAddr.parse("<sip:bob@biloxi.com>")
    assert na.display_name is None
    assert str(na) == "<sip:bob@biloxi.com>"
    empty = NameAddr.parse('"" <sip:bob@biloxi.com>')
    assert empty.display_name == ""


def test_addr_spec_params_belong_to_the_header() -> None:
    # RFC 3261 §20.10 / RFC 4475 §3.3.12 (cparam01).
    na = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=x")
    assert not na.bracketed
    assert isinstance(na.uri, SipUri) and na.uri.params == ()
    assert na.params == (("unknownparam", None), ("tag", "x"))
    assert na.param("unknownparam") == ""
    assert str(na) == "sip:+19725552222@gw1.example.net;unknownparam;tag=x"


def test_bracketed_params_belong_to_the_uri() -> None:
    # RFC 4475 §3.3.13 (cparam02).
    na = NameAddr.parse("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(na.uri, SipUri) and na.uri.params == (("unknownparam", None),)
    assert na.params == ()


def test_header_params_with_whitespace_and_quoted_values() -> None:
    na = NameAddr.parse(
        '"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue ; '
        'secondparam ; q = 0.33;+sip.instance="<urn:uuid:f81d4fae>"'
    )
    assert na.display_name == 'Quoted string ""'
    assert na.params == (
        ("newparam", "newvalue"),
        ("secondparam", None),
        ("q", "0.33"),
        ("+sip.instance", '"<urn:uuid:f81d4fae>"'),
    )


def test_non_sip_schemes_kept_as_text() -> None:
    # RFC 4475 §3.3.4 (unksm2).
    assert NameAddr.parse("isbn:2983792873").uri == "isbn:2983792873"
    http = NameAddr.parse("<http://www.example.com>;tag=3234233")
    assert http.uri == "http://www.example.com" and http.tag == "3234233"
    tel = NameAddr.parse("<tel:+15551234567>")
    assert tel.uri == "tel:+15551234567"
    with pytest.raises(UriParseError):
        tel.sip_uri  # noqa: B018


def test_with_tag_replaces_or_adds() -> None:
    na = NameAddr.parse("<sip:a@b>;x=1")
    assert str(na.with_tag("t1")) == "<sip:a@b>;x=1;tag=t1"
    assert na.with_tag("t1").with_tag("t2").params == (("x", "1"), ("tag", "t2"))
    assert na.tag is None


def test_str_adds_brackets_when_required() -> None:
    uri = SipUri.parse("sip:a@b;lr")
    assert str(NameAddr(uri, bracketed=False)) == "<sip:a@b;lr>"
    assert str(NameAddr(SipUri.parse("sip:a@b"), bracketed=False)) == "sip:a@b"
    assert (
        str(NameAddr(SipUri.parse("sip:a@b"), "A \\ B", bracketed=False)) == '"A \\\\ B" <sip:a@b>'
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal: unterminated quote
        '"Watson, Thomas" < sip:t.watson@example.org >',  # badaspec: spaces in <>
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # baddn: ',' in display name
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct: needs <>
        '"Joe" <sip:joe@example.org>;;;;',  # badinv01: empty params
        "<sip:joe@example.org",
        "<>",
        "<sip:a@b>;=x",
        "<sip:a@b> junk",
        '"x" sip:a@b',
        "no-scheme",
        '<sip:a@b>;p="open',
    ],
)
def test_invalid_name_addrs(text: str) -> None:
    with pytest.raises(UriParseError):
        NameAddr.parse(text)


# --- properties ---------------------------------------------------------------------------

_token = st.text(alphabet="abcXYZ019-._!~*'", min_size=1, max_size=8)
_host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9\-]{0,8}(\.[a-z][a-z0-9]{0,5}){0,3}", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", fullmatch=True),
    st.just("[2001:db8::1]"),
)
_param = st.tuples(_token, st.one_of(st.none(), _token))


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(
        st.one_of(
            st.none(), st.from_regex(r"([a-z0-9+\-;?/&=$,]|%[0-9A-F]{2}){1,10}", fullmatch=True)
        )
    )
    password = draw(st.one_of(st.none(), _token)) if user is not None else None
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(_host),
        user=user,
        password=password,
        port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        params=tuple(draw(st.lists(_param, max_size=3))),
        headers=tuple(draw(st.lists(st.tuples(_token, _token), max_size=2))),
    )


@given(sip_uris())
def test_sip_uri_str_parse_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@given(
    sip_uris(),
    st.one_of(
        st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
    ),
    st.lists(_param, max_size=3),
)
def test_name_addr_str_parse_round_trip(
    uri: SipUri, display: str | None, params: list[tuple[str, str | None]]
) -> None:
    na = NameAddr(uri, display, tuple(params))
    assert NameAddr.parse(str(na)) == na


@given(st.text(max_size=60))
def test_uri_parsers_only_raise_uri_parse_error(text: str) -> None:
    for parser in (SipUri.parse, NameAddr.parse):
        with contextlib.suppress(UriParseError):
            parser(text)


def test_recent_texts_are_parsed_once_and_the_cache_stays_bounded() -> None:
    from callbridge.sip import uri as uri_module

    text = '"Bob" <sip:bob@biloxi.example.com:5062;transport=udp>;tag=cache-test-1'
    first = NameAddr.parse(text)
    assert NameAddr.parse(text) is first  # the same immutable value, not parsed again
    assert SipUri.parse("sip:cache@example.com") is SipUri.parse("sip:cache@example.com")
    assert first == NameAddr._parse(text)  # what the cache holds is what a parse gives
    # Long texts are parsed each time: a flood of long distinct headers cannot fill memory.
    long_user = "u" * 300
    long = f"sip:{long_user}@example.com"
    assert SipUri.parse(long) is not SipUri.parse(long)
    assert SipUri.parse(long) == SipUri._parse(long)
    # A bad text is refused every time (an exception is never cached).
    for _ in range(2):
        with pytest.raises(UriParseError):
            NameAddr.parse("<sip:bad uri@example.com>")
    via = "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK-cache-test;rport"
    assert Via.parse(via) is Via.parse(via) and Via.parse(via) == Via._parse(via)
    long_via = f"SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK{'x' * 300}"
    assert Via.parse(long_via) is not Via.parse(long_via)
    assert uri_module._sip_uri_cached.cache_info().maxsize == uri_module._CACHED
    assert uri_module._name_addr_cached.cache_info().maxsize == uri_module._CACHED
