"""The startup heap freeze, the live calls' heap keeper and the garbage collector's pause
monitor (observability.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from callbridge.observability.heap import PAUSES, GcPauses, HeapKeeper, freeze_startup_heap
from callbridge.observability.metrics import Metrics


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process keeps collecting what it froze


def test_freezing_takes_the_startup_heap_out_of_later_collections(unfrozen: None) -> None:
    kept = [{"n": i} for i in range(20_000)]  # long-lived containers, as a started gateway has
    walked_before = len(gc.get_objects())
    frozen = freeze_startup_heap()
    assert frozen >= len(kept)
    # A full collection now walks only what was made since: the frozen objects are skipped.
    assert len(gc.get_objects()) < walked_before - len(kept)
    assert kept[-1] == {"n": 19_999}  # frozen, not freed


def test_long_pauses_are_reported_and_short_ones_only_counted() -> None:
    now = [0.0]
    heard: list[tuple[int, float, int]] = []
    pauses = GcPauses(lambda g, s, c: heard.append((g, s, c)), threshold=0.02, timer=lambda: now[0])
    pauses("start", {"generation": 0})
    now[0] += 0.001
    pauses("stop", {"generation": 0, "collected": 3})
    pauses("start", {"generation": 2})
    now[0] += 0.05
    pauses("stop", {"generation": 2, "collected": 700})
    assert heard == [(2, pytest.approx(0.05), 700)]
    assert pauses.long_pauses == 1 and pauses.longest == pytest.approx(0.05)


def test_a_real_collection_is_timed_once_installed() -> None:
    heard: list[int] = []
    pauses = GcPauses(lambda g, s, c: heard.append(g), threshold=0.0)
    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect()
    finally:
        pauses.uninstall()
    assert heard == [2]
    gc.collect()
    assert heard == [2]  # uninstalled: no longer called


def test_metrics_expose_the_long_pauses() -> None:
    text = Metrics().render().decode()
    assert f"callbridge_gc_long_pauses_total {float(PAUSES.long_pauses)}" in text
    assert "callbridge_gc_longest_pause_seconds" in text


class Cycle:
    """An object in a reference cycle with itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_what_survives_a_full_collection_during_calls_is_frozen_until_no_call_is_up(
    unfrozen: None,
) -> None:
    calls = [3]
    heard: list[int] = []
    pauses = GcPauses(lambda g, s, c: heard.append(g), threshold=0.0)
    keeper = HeapKeeper(lambda: calls[0], pauses=pauses)
    gc.callbacks.append(keeper)
    try:
        live = [{"call": i} for i in range(5_000)]  # the live calls' objects
        dying = Cycle()  # alive now, garbage in a cycle later
        gc.collect(0)
        keeper.step()
        assert keeper.freezes == 0  # only the youngest generation collected: nothing to freeze
        gc.collect(1)  # the calls' objects survive into the oldest generation
        frozen_before = gc.get_freeze_count()
        keeper.step()
        assert keeper.freezes == 1
        assert gc.get_freeze_count() >= frozen_before + len(live)
        # The next full collection walks only what came since: the calls are not walked again.
        assert not any(o is live[0] for o in gc.get_objects())
        keeper.step()
        assert keeper.freezes == 1  # once per collection of an older generation

        # The cycle dies while frozen: the collector cannot see it...
        probe = weakref.ref(dying)
        del dying
        gc.collect()
        keeper.step()  # (frozen again: the calls are still up)
        assert probe() is not None
        # ...until no call is up: everything is unfrozen, collected once and frozen again.
        calls[0] = 0
        pauses.install()
        try:
            keeper.step()
        finally:
            pauses.uninstall()
        assert probe() is None
        assert heard == []  # the sweep stalled no call: not a pause to report
        assert keeper.rebaselines == 1 and gc.get_freeze_count() >= len(live)
        keeper.step()
        assert keeper.rebaselines == 1  # only after something was frozen during calls
        assert live[-1] == {"call": 4_999}
    finally:
        gc.callbacks.remove(keeper)
