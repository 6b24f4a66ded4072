"""Level helpers."""

from __future__ import annotations

import numpy as np

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
