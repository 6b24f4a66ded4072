"""The media lateness tally behind the `media.lateness` line logged at a gateway's stop."""

from __future__ import annotations

from callbridge.observability.lateness import LatenessTally


def test_an_idle_process_reports_zeros() -> None:
    assert LatenessTally().summary() == {
        "samples": 0, "late_20ms": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0,
    }  # fmt: skip


def test_quantiles_count_and_worst() -> None:
    tally = LatenessTally()
    for _ in range(97):
        tally.observe(0.0014)  # 1.4 ms: the 1-2 ms bucket
    tally.observe(0.019)  # just under a tick
    tally.observe(0.020)  # a pass that started as the next was due
    tally.observe(0.250)
    s = tally.summary()
    assert s["samples"] == 100
    assert s["late_20ms"] == 2
    assert s["p50_ms"] == 2.0  # the upper edge of the bucket
    assert s["p99_ms"] == 21.0
    assert s["max_ms"] == 250.0


def test_a_stall_beyond_the_last_bucket_and_a_negative_sample() -> None:
    tally = LatenessTally()
    tally.observe(-0.001)  # a timer woken early counts as on time
    tally.observe(3.5)  # a 3.5 s stall: the last bucket, and the worst as measured
    s = tally.summary()
    assert s["late_20ms"] == 1
    assert s["p99_ms"] == 1000.0
    assert s["max_ms"] == 3500.0
    assert s["p50_ms"] == 1.0
    tally = LatenessTally()
    tally.observe(0.0035)
    assert tally.summary()["p99_ms"] == 3.5  # the bucket's edge (4 ms) is past the worst
