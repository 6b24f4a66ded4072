"""The media lateness tally behind the `media.lateness` line logged at a gateway's stop."""

from __future__ import annotations

import os

from callbridge.observability.lateness import LatenessTally, LatePeriods, ThreadWait


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


class _Steps:
    """A timer, a CPU clock and a run-queue wait that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu = 0.0
        self.wait: float | None = 0.0
        self.closed = False

    def read(self) -> float | None:
        return self.wait

    def close(self) -> None:
        self.closed = True

    def advance(self, wall: float, cpu: float, waited: float) -> None:
        self.now += wall
        self.cpu += cpu
        if self.wait is not None:
            self.wait += waited


def _periods(steps: _Steps) -> tuple[LatePeriods, list[dict[str, float | int]]]:
    lines: list[dict[str, float | int]] = []
    periods = LatePeriods(
        timer=lambda: steps.now,
        cpu=lambda: steps.cpu,
        waited=lambda: steps,  # type: ignore[arg-type,return-value]
        on_late=lines.append,
    )
    return periods, lines


def test_a_late_period_says_where_the_loop_thread_spent_it() -> None:
    steps = _Steps()
    periods, lines = _periods(steps)
    periods.observe(0.050)  # the first sample is the baseline: no period to describe yet
    assert lines == []
    steps.advance(0.1, cpu=0.020, waited=0.070)  # the machine was busy: a core was not free
    periods.observe(0.061)
    steps.advance(0.1, cpu=0.030, waited=0.001)
    periods.observe(0.0199)  # under a tick late: nothing to say
    assert lines == [
        {"late_ms": 61.0, "period_ms": 100.0, "cpu_ms": 20.0, "waited_ms": 70.0, "unlogged": 0}
    ]


def test_at_most_one_line_a_second_and_the_rest_are_counted() -> None:
    steps = _Steps()
    periods, lines = _periods(steps)
    periods.observe(0.0)
    for _ in range(15):  # 1.875 s of late periods, 125 ms each (exact in binary)
        steps.advance(0.125, cpu=0.125, waited=0.0)
        periods.observe(0.030)
    # lines at 0.125 s and 1.125 s; the 7 periods between them are counted in the second
    assert [line["unlogged"] for line in lines] == [0, 7]
    assert lines[1]["cpu_ms"] == 125.0  # the gateway's own work: the loop ran all along
    assert periods.logged == 2
    periods.close()
    assert steps.closed


def test_without_schedstat_the_wait_is_left_out() -> None:
    steps = _Steps()
    steps.wait = None
    periods, lines = _periods(steps)
    periods.observe(0.0)
    steps.advance(0.1, cpu=0.01, waited=0.0)
    periods.observe(0.025)
    assert "waited_ms" not in lines[0]
    assert lines[0]["late_ms"] == 25.0


def test_the_thread_wait_reads_this_thread_or_nothing() -> None:
    wait = ThreadWait()
    first = wait.read()
    if os.path.exists("/proc/thread-self/schedstat"):  # Linux: the CI's machine
        assert first is not None and first >= 0.0
        again = wait.read()
        assert again is not None and again >= first
    wait.close()
    assert wait.read() is None
    missing = ThreadWait("/nonexistent/schedstat")
    assert missing.read() is None
    missing.close()
