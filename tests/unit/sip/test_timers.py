"""RFC 3261 Table 4 / RFC 6026 timer values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.core.errors import ConfigError
from callbridge.sip.timers import TimerSettings, next_interval


def test_defaults_match_rfc3261_table_4() -> None:
    t = TimerSettings()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert t.timer_a == 0.5
    assert t.timer_b == 32.0
    assert t.timer_d == 32.0
    assert t.timer_e == 0.5
    assert t.timer_f == 32.0
    assert t.timer_g == 0.5
    assert t.timer_h == 32.0
    assert t.timer_i == 5.0
    assert t.timer_j == 32.0
    assert t.timer_k == 5.0
    assert t.timer_l == 32.0  # RFC 6026
    assert t.timer_m == 32.0  # RFC 6026
    assert t.trying_delay == 0.2


def test_derived_timers_follow_t1_and_t4() -> None:
    t = TimerSettings(t1=0.1, t2=1.0, t4=2.0)
    assert t.timer_a == t.timer_e == t.timer_g == 0.1
    assert t.timer_b == t.timer_f == t.timer_h == t.timer_j == pytest.approx(6.4)
    assert t.timer_l == t.timer_m == pytest.approx(6.4)
    assert t.timer_i == t.timer_k == 2.0
    # Timer D must outlast the *peer's* retransmissions, so it does not scale with our T1.
    assert t.timer_d == 32.0


@pytest.mark.parametrize(
    "kwargs",
    [{"t1": 0}, {"t1": -1}, {"t2": 0}, {"t4": 0}, {"t1": 2.0, "t2": 1.0}, {"trying_delay": -0.1}],
)
def test_invalid_settings_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TimerSettings(**kwargs)


def test_settings_are_frozen() -> None:
    t = TimerSettings()
    with pytest.raises(AttributeError):
        t.t1 = 1.0  # type: ignore[misc]


def test_next_interval_doubles_up_to_cap() -> None:
    seq = [0.5]
    for _ in range(5):
        seq.append(next_interval(seq[-1], 4.0))
    assert seq == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert next_interval(16.0, math.inf) == 32.0


@given(
    t1=st.floats(min_value=0.01, max_value=5.0),
    factor=st.floats(min_value=1.0, max_value=20.0),
    steps=st.integers(min_value=1, max_value=30),
)
def test_backoff_is_monotonic_and_capped(t1: float, factor: float, steps: int) -> None:
    t2 = t1 * factor
    interval = t1
    for _ in range(steps):
        nxt = next_interval(interval, t2)
        assert interval <= nxt <= t2
        interval = nxt
