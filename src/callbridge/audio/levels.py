"""Signal level measurements on PCM16 little-endian mono audio.

`energy` is the per-frame one (a listening call's VAD chunks, sampled played and received
frames): one C loop with the native build (audio/_pcm.c), numpy without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

try:  # the per-frame measure in C (audio/_pcm.c), when the native build is loaded
    from callbridge.audio._pcm import energy as _c_energy

    C_ENERGY = True
except ImportError:
    C_ENERGY = False

__all__ = ["C_ENERGY", "FULL_SCALE", "energy", "peak", "rms", "rms_dbfs"]

FULL_SCALE = 32768.0


def _samples(pcm: bytes) -> npt.NDArray[np.float64]:
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _numpy_energy(pcm: bytes) -> int:
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int64)
    return int(np.dot(x, x))


# energy(pcm): the sum of the squares of the samples (0 for empty input); a frame's mean
# square is this over its sample count, exact whatever the frame's length. Chosen once here,
# not per call: it runs for every VAD chunk and sampled frame.
energy: Callable[[bytes], int] = _c_energy if C_ENERGY else _numpy_energy


def rms(pcm: bytes) -> float:
    """Root mean square in sample units (0.0 for empty input)."""
    x = _samples(pcm)
    return math.sqrt(float(x @ x) / len(x)) if len(x) else 0.0


def rms_dbfs(pcm: bytes) -> float:
    """RMS level in dB relative to full-scale amplitude (32768).

    A full-scale sine measures -3.01 dBFS (not the AES17 convention). Digital silence and
    empty input return -inf.
    """
    level = rms(pcm)
    return 20.0 * math.log10(level / FULL_SCALE) if level > 0 else -math.inf


def peak(pcm: bytes) -> int:
    """Largest absolute sample value (32768 for a -32768 sample; 0 for empty input)."""
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    if not pcm:
        return 0
    x = np.frombuffer(pcm, dtype="<i2")
    return max(int(x.max()), -int(x.min()))


SILENCE_AMPLITUDE = 100  # |sample| below this (about -50 dBFS) is silence


def first_sound(pcm: bytes, threshold: int = SILENCE_AMPLITUDE) -> int | None:
    """Index of the first PCM16 sample at or above `threshold` in magnitude; None if none."""
    x = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.int32)
    loud = np.flatnonzero(np.abs(x) >= threshold)
    return int(loud[0]) if len(loud) else None


def trim_leading_silence(pcm: bytes, keep: int = 0, threshold: int = SILENCE_AMPLITUDE) -> bytes:
    """`pcm` (PCM16) from `keep` samples before its first sample at or above `threshold`;
    all-silent input comes back unchanged."""
    start = first_sound(pcm, threshold)
    return pcm if start is None else pcm[2 * max(0, start - keep) :]
