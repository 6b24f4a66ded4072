"""cluster/restart.py: a crashed worker comes back with exponential backoff (fake time)."""

from __future__ import annotations

from callbridge.cluster.restart import RestartPolicy


def test_backoff_doubles_to_the_cap_and_each_restart_is_due_once() -> None:
    p = RestartPolicy(first_delay=0.5, max_delay=4.0, stable_after=30.0)
    now = 0.0
    delays = []
    for _ in range(6):
        p.started(0, now)
        now += 1.0  # crashes after a second
        at = p.exited(0, now, status=1, stopping=False)
        assert at is not None
        delays.append(at - now)
        assert p.next_deadline() == at
        assert p.due(at - 0.01) == []
        now = at
        assert p.due(now) == [0]
        assert p.due(now) == []  # reported once
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_worker_that_ran_long_enough_starts_the_backoff_afresh() -> None:
    p = RestartPolicy(first_delay=0.5, max_delay=30.0, stable_after=30.0)
    p.started(1, 0.0)
    assert p.exited(1, 1.0, status=-9, stopping=False) == 1.5
    p.started(1, 1.5)
    assert p.exited(1, 2.0, status=1, stopping=False) == 3.0  # second quick crash: 1 s
    p.started(1, 3.0)
    assert p.exited(1, 100.0, status=1, stopping=False) == 100.5  # after 97 s up: 0.5 s


def test_clean_exits_and_stopping_are_not_restarted() -> None:
    p = RestartPolicy()
    p.started(0, 0.0)
    assert p.exited(0, 5.0, status=0, stopping=False) is None
    p.started(0, 6.0)
    assert p.exited(0, 7.0, status=1, stopping=True) is None
    assert p.next_deadline() is None and p.due(1e9) == []


def test_workers_back_off_independently() -> None:
    p = RestartPolicy(first_delay=1.0)
    for w in (0, 1):
        p.started(w, 0.0)
    assert p.exited(0, 1.0, status=1, stopping=False) == 2.0
    assert p.exited(1, 1.5, status=1, stopping=False) == 2.5
    assert p.due(2.0) == [0]
    assert p.due(3.0) == [1]
