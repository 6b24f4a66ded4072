"""RFC 3263 §4.2 / RFC 2782: when to ask SRV, and the order to try its records."""

from __future__ import annotations

import pytest

from callbridge.sip.srv import SrvRecord, needs_srv, srv_order


@pytest.mark.parametrize(
    ("host", "port", "ask"),
    [
        ("sip.example.com", None, True),
        ("sip.example.com", 5060, False),  # a port was given: the name's address, that port
        ("192.0.2.7", None, False),
        ("[2001:db8::1]", None, False),
        ("localhost", None, False),
    ],
)
def test_when_srv_is_asked(host: str, port: int | None, ask: bool) -> None:
    assert needs_srv(host, port) is ask


def test_priority_first_then_weighted_draws() -> None:
    a = SrvRecord(10, 60, 5060, "a.example.com")
    b = SrvRecord(10, 40, 5070, "b.example.com")
    backup = SrvRecord(20, 0, 5060, "backup.example.com")
    gone = SrvRecord(5, 0, 0, ".")  # "the service is not offered here"
    records = [backup, b, gone, a]
    # Weights 40 (b) and 60 (a), sorted by weight: running sums 40 then 100 of 100.
    assert srv_order(records, rand=lambda: 0.1) == [b, a, backup]  # draw 10 <= 40
    assert srv_order(records, rand=lambda: 0.5) == [a, b, backup]  # draw 50 > 40
    draws = iter([0.0, 0.9])
    zero = SrvRecord(10, 0, 5080, "z.example.com")
    assert srv_order([a, zero], rand=lambda: next(draws)) == [zero, a]  # weight 0 only on 0
    assert srv_order([]) == []
