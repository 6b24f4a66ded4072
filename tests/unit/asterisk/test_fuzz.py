"""Hypothesis: every Asterisk parser is total (a value or its own error) and bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from . import fuzz_targets as ft

TARGETS: list[tuple[str, Callable[[], list[bytes]], Callable[[bytes], bool]]] = [
    ("audiosocket", ft.audiosocket_seeds, ft.check_audiosocket),
    ("chan_websocket", ft.chan_websocket_seeds, ft.check_chan_websocket),
    ("agi", ft.agi_seeds, ft.check_agi),
    ("ari", ft.ari_seeds, ft.check_ari),
]


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate", "word"]))
            if op == "flip" and data:
                i = min(pos, len(data) - 1)
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                data[pos:pos] = draw(
                    st.sampled_from(
                        [
                            b"\x00",
                            b"\xff\xff",
                            b"9" * 400,
                            b"{" * 40,
                            b":",
                            b" ",
                            b"\n",
                            b'"',
                            b"\\",
                        ]
                    )
                )
            elif op == "delete":
                del data[pos : pos + draw(st.integers(1, 16))]
            elif op == "repeat":
                data[pos:pos] = bytes(data[pos : pos + 8]) * draw(st.sampled_from([2, 50, 500]))
            elif op == "truncate":
                del data[pos:]
            elif op == "word" and len(data) >= 3:
                i = min(pos, len(data) - 2)
                data[i : i + 2] = draw(
                    st.sampled_from([b"\x00\x00", b"\xff\xff", b"\x00\x01", b"\x01\x40"])
                )
        return bytes(data)

    return build()


@pytest.mark.parametrize(("name", "seeds", "check"), TARGETS, ids=[t[0] for t in TARGETS])
def test_seeds_are_accepted(
    name: str, seeds: Callable[[], list[bytes]], check: Callable[[bytes], bool]
) -> None:
    corpus = seeds()
    assert corpus, name
    assert all(check(s) for s in corpus)


@pytest.mark.parametrize(("name", "seeds", "check"), TARGETS, ids=[t[0] for t in TARGETS])
def test_mutants_are_total(
    name: str, seeds: Callable[[], list[bytes]], check: Callable[[bytes], bool]
) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated(seeds()))
    def run(data: bytes) -> None:
        check(data)  # anything but the parser's own error escapes and fails

    run()


@pytest.mark.parametrize(("name", "seeds", "check"), TARGETS, ids=[t[0] for t in TARGETS])
def test_random_bytes_are_total(
    name: str, seeds: Callable[[], list[bytes]], check: Callable[[bytes], bool]
) -> None:
    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2048))
    @example(b"\x10\xff\xff" + b"\x00" * 70000)
    @example(b"\x00" * 10)
    def run(data: bytes) -> None:
        check(data)

    run()
