"""The RTP port allocator: even ports of the range, each handed out once until released."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtp.socket import PortAllocator


def test_candidates_are_the_free_even_ports_of_the_range() -> None:
    ports = PortAllocator(10001, 10041)  # an odd low end starts at the next even port
    got = list(ports.candidates())
    assert sorted(got) == list(range(10002, 10041, 2))  # each once
    assert len(list(ports.candidates(3))) == 3


def test_candidates_are_drawn_as_they_are_tried() -> None:
    ports = PortAllocator(10000, 14000)
    drawn = ports.candidates()
    first = next(drawn)
    ports.take(first)  # taken while the caller still iterates: never offered again
    rest = list(drawn)
    assert first not in rest and len(rest) == 199 and len(set(rest)) == 199
    two = PortAllocator(10000, 10004)
    offered = two.candidates()
    two.take(next(offered))
    two.take(next(iter(two.candidates())))  # every free port taken meanwhile
    assert list(offered) == []  # the draw ends; it never spins on an empty range


def test_taken_ports_are_not_offered_until_released() -> None:
    ports = PortAllocator(20000, 20010)
    ports.take(20004)
    ports.take(20004)  # twice is once
    assert 20004 not in ports.candidates()
    assert ports.free == 4
    ports.release(20004)
    ports.release(20004)
    ports.release(20005)  # odd, or outside the range: never ours to hand out
    ports.release(30000)
    assert sorted(ports.candidates()) == [20000, 20002, 20004, 20006, 20008]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 12)), max_size=200))
def test_free_set_matches_a_model_after_any_sequence(ops: list[tuple[bool, int]]) -> None:
    ports = PortAllocator(100, 124)
    model = set(range(100, 124, 2))
    for take, k in ops:
        port = 100 + 2 * k
        if take:
            ports.take(port)
            model.discard(port)
        else:
            ports.release(port)
            if port < 124:
                model.add(port)
    assert set(ports.candidates(1000)) == model
    assert ports.free == len(model)
