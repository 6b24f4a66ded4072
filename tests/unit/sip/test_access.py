"""Inbound admission policy: ACLs and routes that need auth."""

from __future__ import annotations

import pytest

from callbridge.sip.access import InboundPolicy, parse_networks


def test_parse_networks() -> None:
    nets = parse_networks(" 10.0.0.0/8, 203.0.113.7 ,2001:db8::/32,")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "203.0.113.7/32", "2001:db8::/32"]
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an address or network"):
        parse_networks("10.0.0.0/8, 10.0.0.300")


def test_global_and_per_trunk_acls() -> None:
    policy = InboundPolicy(
        allow_from=parse_networks("10.0.0.0/8, 198.51.100.0/24"),
        trunk_allow={"4155550100": parse_networks("198.51.100.10")},
    )
    assert policy.refusal("agent", "10.1.2.3") is None
    assert policy.refusal("agent", "192.0.2.1") == "source 192.0.2.1 not in sip.allow_from"
    assert policy.refusal("4155550100", "198.51.100.10") is None
    refused = policy.refusal("4155550100", "198.51.100.11")
    assert refused is not None and "'4155550100'" in refused
    assert policy.refusal("agent", "not-an-ip") is not None
    assert InboundPolicy().refusal("agent", "192.0.2.1") is None  # no ACL: anyone


def test_routes_that_need_auth() -> None:
    assert InboundPolicy(auth_routes=frozenset({"support"})).needs_auth("support")
    assert not InboundPolicy(auth_routes=frozenset({"support"})).needs_auth("agent")
    assert InboundPolicy(auth_routes=frozenset({"*"})).needs_auth("anything")
    assert not InboundPolicy().needs_auth("agent")
