"""The SIP guard (sip/overload.py): bans, admission limits and failed-auth counting, on a
fake clock (times are plain numbers)."""

from __future__ import annotations

import tracemalloc

import pytest

from callbridge.sip.access import parse_networks
from callbridge.sip.overload import Guard, GuardConfig, Verdict

FLOODER = "203.0.113.9"
CALLER = "198.51.100.7"


def test_a_flood_from_one_source_is_banned_then_dropped_and_others_pass() -> None:
    guard = Guard(GuardConfig(pike_rate=200, pike_window=2.0, ban_time=300))
    passed = 0
    bans = []
    for i in range(1000):  # 1,000 datagrams/s for one second
        verdict, ban = guard.datagram(FLOODER, i / 1000)
        passed += verdict is Verdict.PASS
        if ban is not None:
            bans.append(ban)
    # A burst of one window's worth (400) is allowed before the decaying counter crosses.
    assert 400 <= passed < 520, passed
    assert len(bans) == 1 and bans[0].cause == "flood" and bans[0].source == FLOODER
    assert guard.datagram(CALLER, 1.0) == (Verdict.PASS, None)
    # Still banned 299 s later, free after 300 s.
    assert guard.datagram(FLOODER, 1.0 + 299)[0] is Verdict.DROP
    assert guard.datagram(FLOODER, bans[0].until + 0.001) == (Verdict.PASS, None)
    assert guard.counters["bans_flood"] == 1
    assert guard.counters["dropped_banned"] == 1000 - passed + 1


def test_a_steady_caller_below_the_rate_is_never_banned() -> None:
    guard = Guard(GuardConfig(pike_rate=200, pike_window=2.0))
    for i in range(20_000):  # 150 datagrams/s for 133 s: under the limit forever
        assert guard.datagram(CALLER, i / 150)[0] is Verdict.PASS


def test_trusted_networks_are_never_banned() -> None:
    guard = Guard(GuardConfig(pike_rate=10, trusted=parse_networks("203.0.113.0/24")))
    for i in range(1000):
        assert guard.datagram(FLOODER, i / 1000)[0] is Verdict.PASS
    for _ in range(100):
        assert guard.auth_failed(FLOODER, "alice", 1.0) is None


def test_new_call_limits_per_source_global_and_concurrent() -> None:
    guard = Guard(GuardConfig(calls_per_second=50, calls_per_second_per_source=10, max_calls=30))
    admitted = sum(guard.admit_call(FLOODER, 0, 0.0) is None for _ in range(15))
    assert admitted == 10  # a burst of one second's worth from one source
    refusal = guard.admit_call(FLOODER, 0, 0.0)
    assert refusal is not None and refusal.status == 503 and refusal.retry_after == 5
    assert refusal.limit == "calls_per_second_per_source" and not refusal.silent
    # One second later the source has 10 more.
    assert sum(guard.admit_call(FLOODER, 0, 1.0) is None for _ in range(10)) == 10
    # Other sources share the global bucket: full again (burst 50) at 1 s, 10 taken above.
    admitted = sum(guard.admit_call(f"198.51.100.{i}", 0, 1.0) is None for i in range(1, 100))
    assert admitted == 40
    assert guard.counters["rejected_calls_per_second"] == 59
    refusal = guard.admit_call(CALLER, 30, 5.0)
    assert refusal is not None and refusal.limit == "max_calls"
    assert guard.counters["rejected_max_calls"] == 1


def test_a_source_that_ignores_retry_after_is_banned_and_then_silently_dropped() -> None:
    guard = Guard(GuardConfig(calls_per_second_per_source=10, ban_time=300))
    verdicts = [guard.admit_call(FLOODER, 0, i / 1000) for i in range(100)]
    assert verdicts[:10] == [None] * 10
    statuses = [v.status for v in verdicts[10:] if v is not None]
    assert statuses == [503] * 10 + [0] * 80  # refused 10 times, then banned: silence
    assert guard.take_bans()[0].cause == "flood" and guard.take_bans() == []
    assert guard.datagram(FLOODER, 0.2)[0] is Verdict.DROP
    assert guard.admit_call(CALLER, 0, 0.2) is None


def test_a_legitimate_load_test_at_25_calls_per_second_is_not_refused() -> None:
    """SIPp's 50 calls at 25 cps from one address (tests/peers/test_sipp_load.py)."""
    guard = Guard(GuardConfig())
    assert all(guard.admit_call(CALLER, n, n / 25) is None for n in range(50))
    for i in range(50 * 3):  # INVITE, ACK, BYE per call
        assert guard.datagram(CALLER, i / 75)[0] is Verdict.PASS


def test_global_rate_refuses_a_spread_flood() -> None:
    guard = Guard(GuardConfig(calls_per_second=100, calls_per_second_per_source=0))
    sources = [f"10.0.{i // 250}.{i % 250}" for i in range(1000)]
    admitted = sum(guard.admit_call(s, 0, 0.0) is None for s in sources)
    assert admitted == 100  # the global burst
    assert guard.counters["rejected_calls_per_second"] == 900


def test_guessing_passwords_bans_the_source_after_n_failures() -> None:
    guard = Guard(GuardConfig(auth_failures=5, auth_window=60, ban_time=600))
    results = [guard.auth_failed(FLOODER, "alice", float(t)) for t in range(5)]
    assert results[:4] == [None] * 4
    ban = results[4]
    assert ban is not None and ban.cause == "auth" and ban.until == 4 + 600
    assert guard.datagram(FLOODER, 10.0)[0] is Verdict.DROP
    # Failures spread wider than the window never add up to a ban.
    slow = Guard(GuardConfig(auth_failures=5, auth_window=60))
    assert all(slow.auth_failed(CALLER, "alice", t * 61.0) is None for t in range(20))


def test_a_user_under_distributed_attack_bans_each_guessing_source_at_once() -> None:
    guard = Guard(GuardConfig(auth_failures=5, auth_user_failures=20, auth_window=60))
    for i in range(20):  # 20 sources, one guess each: no source reaches 5
        guard.auth_failed(f"192.0.2.{i}", "alice", float(i))
    assert guard.user_under_attack("alice", 20.0)
    ban = guard.auth_failed("192.0.2.200", "alice", 21.0)
    assert ban is not None and "under attack" in ban.detail
    assert not guard.user_under_attack("bob", 21.0)
    # A caller who knows the password is not affected: nothing is recorded against CALLER.
    assert guard.datagram(CALLER, 21.0)[0] is Verdict.PASS


def test_tables_are_bounded_under_a_spoofed_source_flood() -> None:
    guard = Guard(GuardConfig(max_sources=1000))
    tracemalloc.start()
    try:
        for i in range(50_000):
            guard.datagram(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i / 10_000)
            guard.admit_call(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0, i / 10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(guard._sources) <= 1000
    assert peak < 2_000_000, peak


def test_a_banned_source_stays_banned_while_other_addresses_churn_the_table() -> None:
    guard = Guard(GuardConfig(max_sources=100, pike_rate=10, pike_window=1.0))
    t = 0.0
    while guard.datagram(FLOODER, t)[1] is None:
        t += 0.001
    for i in range(1000):
        guard.datagram(f"10.0.{i // 250}.{i % 250}", t + i * 0.01)
        # the flooder keeps sending: every datagram of it touches its entry
        assert guard.datagram(FLOODER, t + i * 0.01)[0] is Verdict.DROP


@pytest.mark.parametrize("field", ["pike_window", "ban_time", "auth_window"])
def test_bad_config_names_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GuardConfig(**{field: 0})


def test_a_late_event_loop_refuses_new_calls_until_it_recovers() -> None:
    guard = Guard(GuardConfig(max_loop_lag=0.025))
    guard.loop_lag_sample(0.2)  # one slow turn is smoothed away
    assert not guard.overloaded and guard.admit_call(CALLER, 0, 0.0) is None
    for _ in range(10):  # a sustained 60 ms lateness: live calls' ticks are late
        guard.loop_lag_sample(0.06)
    assert guard.overloaded
    refusal = guard.admit_call("192.0.2.1", 0, 0.1)
    assert refusal is not None and refusal.limit == "overload" and refusal.status == 503
    guard.loop_lag_sample(0.02)  # below the limit but above half of it: still refusing
    assert guard.overloaded
    for _ in range(20):
        guard.loop_lag_sample(0.001)
    assert not guard.overloaded
    assert guard.admit_call("192.0.2.2", 0, 5.0) is None
    assert guard.counters["overload_episodes"] == 1


def test_calls_that_never_confirm_are_capped_like_half_open_connections() -> None:
    guard = Guard(GuardConfig(max_unconfirmed=50, calls_per_second_per_source=0))
    assert guard.admit_call("192.0.2.1", 100, 0.0, unconfirmed=49) is None
    refusal = guard.admit_call("192.0.2.2", 100, 0.0, unconfirmed=50)
    assert refusal is not None and refusal.limit == "max_unconfirmed" and refusal.status == 503


def test_big_datagrams_weigh_more_so_a_parser_stressing_flood_is_banned_sooner() -> None:
    guard = Guard(GuardConfig(pike_rate=200, pike_window=2.0))
    sent = 0
    while guard.datagram(FLOODER, sent / 50, size=65_000)[1] is None:  # 50 x 64 KiB per s
        sent += 1
    assert sent < 15, sent
    for i in range(1000):  # ordinary 1 KiB requests at 100/s are fine
        assert guard.datagram(CALLER, i / 100, size=1000)[0] is Verdict.PASS
