"""WAV file I/O for PCM16 mono (fixtures, recordings, prompts). Blocking file I/O: edges only."""

from __future__ import annotations

import os
import wave

__all__ = ["read_wav", "write_wav"]

StrPath = str | os.PathLike[str]


def read_wav(path: StrPath) -> tuple[bytes, int]:
    """Return (PCM16 little-endian mono samples, sample rate).

    Raises ValueError for anything else (stereo, 8/24/32-bit, float, compressed, not RIFF),
    naming what was found so a bad fixture is obvious.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            if channels != 1 or width != 2:
                raise ValueError(
                    f"{os.fspath(path)}: {channels} channel(s) of {8 * width}-bit samples; "
                    "expected 16-bit PCM mono"
                )
            return w.readframes(w.getnframes()), rate
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{os.fspath(path)}: not a PCM WAV file ({exc})") from exc


def write_wav(path: StrPath, pcm: bytes, rate: int) -> None:
    """Write PCM16 little-endian mono samples as a WAV file."""
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    if rate <= 0:
        raise ValueError("sample rate must be positive")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
