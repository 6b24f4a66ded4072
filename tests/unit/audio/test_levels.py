"""Level helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import levels
from callbridge.audio.levels import trim_leading_silence


def test_trim_leading_silence_keeps_the_lead_in_asked_for() -> None:
    quiet = np.zeros(320, "<i2")
    quiet[::7] = 40  # dither below the threshold
    loud = np.full(160, 3000, "<i2")
    pcm = np.concatenate([quiet, loud, quiet]).tobytes()
    assert trim_leading_silence(pcm) == pcm[640:]
    assert trim_leading_silence(pcm, keep=80) == pcm[480:]
    assert trim_leading_silence(pcm, keep=10_000) == pcm
    assert trim_leading_silence(quiet.tobytes()) == quiet.tobytes()


def _numpy_energy(pcm: bytes) -> int:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int64)
    return int(x @ x)


@given(st.binary(max_size=2048).map(lambda b: b[: len(b) - len(b) % 2]))
def test_energy_is_the_exact_sum_of_squares(pcm: bytes) -> None:
    assert levels.energy(pcm) == _numpy_energy(pcm)


def test_energy_at_the_extremes_and_on_any_buffer() -> None:
    loudest = np.full(160, -32768, "<i2").tobytes()  # (-32768)^2 = 2^30 per sample
    assert levels.energy(loudest) == 160 * 2**30
    assert levels.energy(b"") == 0
    assert levels.energy(bytes(320)) == 0
    with pytest.raises(ValueError, match="even"):
        levels.energy(b"\x00\x01\x02")
    pcm = np.arange(-800, 800, 10, dtype="<i2").tobytes()
    assert levels.energy(pcm) == _numpy_energy(pcm)


def test_the_c_energy_takes_any_buffer() -> None:
    if not levels.C_ENERGY:  # interpreted: nothing compiled to check
        return
    from callbridge.audio import _pcm

    pcm = np.arange(-32768, 32768, 251, dtype="<i2").tobytes()
    for buffer in (pcm, bytearray(pcm), memoryview(pcm)):
        assert _pcm.energy(buffer) == _numpy_energy(pcm)
    with pytest.raises(ValueError, match="even"):
        _pcm.energy(memoryview(b"abc"))
    with pytest.raises(TypeError):
        _pcm.energy("not a buffer")  # type: ignore[arg-type]
