"""The caller's address behind our own proxy (sip.access.caller_address)."""

from __future__ import annotations

from callbridge.sip.access import caller_address, parse_networks
from callbridge.sip.headers import Via

PROXY = ("10.0.0.5", 5060)
PROXIES = parse_networks("10.0.0.0/24")


def vias(*lines: str) -> list[Via]:
    return [Via.parse(v) for v in lines]


def test_through_our_proxy_the_caller_is_where_the_proxy_saw_it() -> None:
    v = vias(
        "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-proxy",
        "SIP/2.0/UDP 192.168.1.20:5062;received=203.0.113.9;rport=40512;branch=z9hG4bK-a",
    )
    assert caller_address(v, PROXY, PROXIES) == ("203.0.113.9", 40512)


def test_without_received_or_rport_the_sent_by_counts() -> None:
    v = vias(
        "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-p", "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-a"
    )
    assert caller_address(v, PROXY, PROXIES) == ("198.51.100.7", 5070)
    v = vias("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-p", "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-a")
    assert caller_address(v, PROXY, PROXIES) == ("198.51.100.7", 5060)  # RFC 3261 §18.2.2


def test_a_caller_that_is_not_our_proxy_is_taken_at_its_word_never() -> None:
    # Two Vias from a stranger: its own claims about a second hop are ignored.
    v = vias(
        "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK-x",
        "SIP/2.0/UDP 10.9.9.9;received=1.2.3.4;branch=z9hG4bK-y",
    )
    assert caller_address(v, ("203.0.113.9", 5060), PROXIES) is None
    assert caller_address(v, PROXY, ()) is None  # no trusted proxies configured
    assert caller_address(v[:1], PROXY, PROXIES) is None  # from the proxy itself (an OPTIONS)
