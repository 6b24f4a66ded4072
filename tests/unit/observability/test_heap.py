"""The startup heap freeze and the garbage collector's pause monitor (observability.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from callbridge.observability.heap import PAUSES, GcPauses, freeze_startup_heap
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
