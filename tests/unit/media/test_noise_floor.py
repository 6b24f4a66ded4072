"""media.noise_floor: the quietest chunk of the last blocks, and a steady noise's spread."""

from __future__ import annotations

import math

import pytest

from callbridge.media.noise_floor import NoiseFloor


def test_no_floor_until_a_whole_block() -> None:
    floor = NoiseFloor(block_chunks=4, blocks=2)
    assert [floor.update(x) for x in (-50.0, -52.0, -49.0)] == [None, None, None]
    assert floor.update(-51.0) == -52.0


def test_floor_is_the_minimum_of_the_window_and_rises_once_the_quiet_block_ages_out() -> None:
    floor = NoiseFloor(block_chunks=2, blocks=2)
    for x in (-60.0, -58.0):  # block 1: min -60
        floor.update(x)
    assert floor.update(-40.0) == -60.0  # louder now: the old quiet block still counts
    floor.update(-41.0)  # block 2: min -41
    floor.update(-40.0)
    assert floor.update(-40.5) == -41.0  # block 1 left the window of 2 blocks
    assert floor.update(-70.0) == -70.0  # a quieter chunk lowers it at once


def test_spread_is_the_median_block_range() -> None:
    floor = NoiseFloor(block_chunks=2, blocks=3)
    for pair in ((-60.0, -59.0), (-60.0, -40.0), (-60.0, -58.0)):  # ranges 1, 20, 2
        for x in pair:
            floor.update(x)
    assert floor.spread == 2.0  # one block of speech does not widen it


def test_reset_forgets_everything() -> None:
    floor = NoiseFloor(block_chunks=1, blocks=2)
    floor.update(-30.0)
    floor.reset()
    assert (floor.floor, floor.spread) == (None, 0.0)
    assert floor.update(-50.0) == -50.0


def test_digital_silence_levels() -> None:
    floor = NoiseFloor(block_chunks=1, blocks=2)
    assert floor.update(-math.inf) == -math.inf


@pytest.mark.parametrize("kwargs", [{"block_chunks": 0}, {"blocks": 0}])
def test_rejects_empty_windows(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        NoiseFloor(**kwargs)
