"""cluster/health.py: which workers take new calls (process state + OPTIONS probes)."""

from __future__ import annotations

from callbridge.cluster.health import Liveness


def test_a_started_worker_is_live_after_its_first_2xx_and_until_answers_stop() -> None:
    h = Liveness(2, interval=1.0, timeout=2.5)
    h.set_running(0, True)
    h.set_running(1, True)
    assert h.live(0.0) == ()
    assert h.probes_due(0.0) == [(0, 1), (1, 1)]
    assert h.probes_due(0.5) == []  # not before the interval
    h.answered(0, 200, 0.1)
    assert h.live(0.2) == (0,)
    h.answered(1, 200, 0.1)
    assert h.live(0.2) == (0, 1)
    assert h.live(2.7) == ()  # no answer for 2.6 s: stuck


def test_503_draining_and_exit_take_a_worker_out() -> None:
    h = Liveness(3)
    for w in range(3):
        h.set_running(w, True)
        h.answered(w, 200, 0.0)
    h.answered(0, 503, 0.5)  # draining or overloaded
    h.set_draining(1)  # the supervisor passed a SIGTERM on
    assert h.live(1.0) == (2,)
    h.answered(0, 200, 1.0)
    assert h.live(1.0) == (0, 2)
    h.set_running(2, False)
    assert h.live(1.0) == (0,)
    assert [w for w, _ in h.probes_due(5.0)] == [0, 1]  # only running workers are probed
    h.set_running(2, True)  # restarted: not live before it answers
    assert h.live(1.0) == (0,)
