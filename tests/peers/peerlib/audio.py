"""Audio helpers for the peer tests: G.711 codecs, WAV I/O, speech synthesis, similarity.

`compare(ref, test)` answers "does TEST contain the audio of REF?" exactly like the
testbed's wavcompare.py, in numpy:
1. coarse: normalised cross-correlation of 10 ms RMS envelopes gives the lag;
2. fine: normalised sample cross-correlation (+-20 ms around that lag) over the
   loudest second of REF.
G.711 loopback paths give 1.000/1.000; unrelated speech gave about 0.3/0.15.

A jitter buffer that adapts mid-sentence stretches or splices the audio by a few tens of
ms, which lowers one whole-sentence envelope correlation (0.89 seen on a loaded CI machine)
though every word is there: `piecewise_env_corr` matches REF piece by piece, each piece free
to move a little around the sentence's offset.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 8000
Pcm = npt.NDArray[np.int16]

# --------------------------------------------------------------------------- G.711
# ITU-T G.711 as in the reference Sun g711.c (what sox, SIPp and most stacks use).

_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _alaw_table() -> Pcm:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _ulaw_table() -> Pcm:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


ALAW_TO_LINEAR: Pcm = _alaw_table()
ULAW_TO_LINEAR: Pcm = _ulaw_table()


def alaw_decode(data: bytes) -> Pcm:
    return ALAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def ulaw_decode(data: bytes) -> Pcm:
    return ULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: Pcm) -> bytes:
    v = pcm.astype(np.int32) >> 3
    mask = np.where(v >= 0, 0xD5, 0x55)
    v = np.where(v >= 0, v, -v - 1)
    seg = np.searchsorted(_ALAW_SEG_END, v, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((v >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return (aval ^ mask).astype(np.uint8).tobytes()


def ulaw_encode(pcm: Pcm) -> bytes:
    v = pcm.astype(np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 0x21
    seg = np.searchsorted(_ULAW_SEG_END, v, side="left")
    uval = (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8).tobytes()


def g711_decode(data: bytes, payload_type: int) -> Pcm:
    """Static payload types of RFC 3551 §6: 0 = PCMU, 8 = PCMA."""
    if payload_type == 0:
        return ulaw_decode(data)
    if payload_type == 8:
        return alaw_decode(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


# --------------------------------------------------------------------------- files


def read_wav(path: Path) -> Pcm:
    """Samples of a WAV, converted by sox to 8 kHz mono S16 unless it already is."""
    with wave.open(str(path)) as w:
        if w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2:
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "norm.wav"
        sox(str(path), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out))
        return read_wav(out)


def write_wav(path: Path, pcm: Pcm, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def sox(*args: str, timeout: float = 60.0) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True, timeout=timeout)


def synthesize_speech(
    text: str,
    out: Path,
    *,
    voice: str = "en-us",
    speed: int = 140,
    pitch: int = 50,
    pad_after_s: float = 0.0,
    repeat: int = 0,
) -> Path:
    """espeak-ng speech as an 8 kHz mono S16 WAV (the format baresip's aufile and
    wav2pcap need), optionally repeated `repeat` more times and padded with silence."""
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    effects: list[str] = []
    if repeat:
        effects += ["repeat", str(repeat)]
    if pad_after_s:
        effects += ["pad", "0", f"{pad_after_s:g}"]
    sox(
        str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out), *effects
    )
    raw.unlink()
    return out


# --------------------------------------------------------------------------- similarity


@dataclass(frozen=True, slots=True)
class Similarity:
    env_corr: float  # envelope correlation at the best lag
    fine_corr: float | None  # None: REF's loudest second falls outside TEST
    offset_s: float  # TEST lags REF by this much
    ref_s: float
    test_s: float
    test_dbfs: float

    def ok(self, min_env: float = 0.8, min_fine: float = 0.8) -> bool:
        return (
            self.env_corr >= min_env and self.fine_corr is not None and self.fine_corr >= min_fine
        )

    def __str__(self) -> str:
        fine = "n/a" if self.fine_corr is None else f"{self.fine_corr:.3f}"
        return (
            f"ref={self.ref_s:.2f}s test={self.test_s:.2f}s test_level={self.test_dbfs:.1f}dBFS "
            f"env_corr={self.env_corr:.3f} fine_corr={fine} offset={self.offset_s:.3f}s"
        )


def dbfs(x: Pcm) -> float:
    if len(x) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return 20 * math.log10(max(1e-9, rms / 32768))


def _envelope(x: Pcm, n: int = 80) -> npt.NDArray[np.float64]:
    frames = len(x) // n
    blocks = x[: frames * n].astype(np.float64).reshape(frames, n)
    env: npt.NDArray[np.float64] = np.sqrt(np.mean(blocks**2, axis=1))
    return env


def _ncc(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    n = min(len(a), len(b))
    if n < 2:
        return 0.0
    a = a[:n] - a[:n].mean()
    b = b[:n] - b[:n].mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b)) / den if den > 0 else 0.0


def piecewise_env_corr(
    ref: Pcm, test: Pcm, offset_s: float, piece_s: float = 0.25, slack_s: float = 0.12
) -> float:
    """Envelope correlation of REF's pieces with TEST, each piece at its best lag within
    `slack_s` of `offset_s` (where TEST has REF as a whole, from `compare`); the mean over the
    pieces, weighted by their loudness (a silent piece says nothing about the content)."""
    env_n = 80
    er, et = _envelope(ref, env_n), _envelope(test, env_n)
    base, slack = round(offset_s * RATE / env_n), round(slack_s * RATE / env_n)
    size = max(2, round(piece_s * RATE / env_n))
    total = weight = 0.0
    for p0 in range(0, len(er) - size // 2, size):
        piece = er[p0 : p0 + size]
        w = float(np.sqrt(np.mean(piece**2)))
        if w <= 0:
            continue
        best = -1.0
        for d in range(-slack, slack + 1):
            t0 = p0 + base + d
            if t0 < 0 or t0 + len(piece) > len(et):
                continue
            best = max(best, _ncc(piece, et[t0 : t0 + len(piece)]))
        total += w * best
        weight += w
    return total / weight if weight else 0.0


def compare(ref: Pcm, test: Pcm) -> Similarity:
    """Does TEST contain REF? Both 8 kHz mono. See the module docstring."""
    env_n = 80  # 10 ms
    er, et = _envelope(ref, env_n), _envelope(test, env_n)
    best_c, best_lag = -2.0, 0
    half = len(er) // 2
    for lag in range(-half, max(1, len(et) - half)):  # ref frame i <-> test frame i + lag
        i0, i1 = max(0, -lag), min(len(er), len(et) - lag)
        if i1 - i0 < half:
            continue
        c = _ncc(er[i0:i1], et[i0 + lag : i1 + lag])
        if c > best_c:
            best_c, best_lag = c, lag
    # Loudest 1 s window of REF (same coarse scoring as wavcompare.py).
    win, step = RATE, RATE // 10
    ref_f = ref.astype(np.float64)
    test_f = test.astype(np.float64)
    starts = range(0, max(1, len(ref) - win), step)
    s0 = max(starts, key=lambda s: float(np.abs(ref_f[s : s + win : 8]).sum()))
    seg = ref_f[s0 : s0 + win]
    fine_c, fine_off = -2.0, best_lag * env_n
    for d in range(-160, 161):
        t0 = s0 + best_lag * env_n + d
        if t0 < 0 or t0 + len(seg) > len(test_f):
            continue
        c = _ncc(seg, test_f[t0 : t0 + len(seg)])
        if c > fine_c:
            fine_c, fine_off = c, best_lag * env_n + d
    return Similarity(
        env_corr=best_c,
        fine_corr=None if fine_c <= -2.0 else fine_c,
        offset_s=fine_off / RATE,
        ref_s=len(ref) / RATE,
        test_s=len(test) / RATE,
        test_dbfs=dbfs(test),
    )
