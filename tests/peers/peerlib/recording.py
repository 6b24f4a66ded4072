"""Reading callbridge's call recordings (stereo WAV, caller left, agent right, 20 ms per tick)
and finding, frame by frame, where audio sent on the wire landed in them.

A recorded channel holds exactly the frames the gateway's media loop handled, one per tick:
the agent's as they were handed to the encoder (so each frame on the wire is one whole tick,
within G.711's quantisation), the caller's as the jitter buffer gave them (the received
samples, at any offset: it conceals a late packet or takes out a pitch period now and then).
Where a loud wire frame lands tells its delay.
"""

from __future__ import annotations

import statistics
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .audio import Pcm
from .speech import FRAME, TimedFrame


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    rate: int
    channels: int
    sample_width: int
    left: Pcm  # the caller
    right: Pcm  # the agent

    @property
    def seconds(self) -> float:
        return len(self.left) / self.rate


def read_recording(path: Path) -> Recording:
    with wave.open(str(path)) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, max(1, channels))
    left = samples[:, 0].copy()
    right = samples[:, 1].copy() if channels > 1 else np.zeros(0, np.int16)
    return Recording(path, rate, channels, width, left, right)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the loud frames of a wire stream landed in a recorded channel."""

    loud: int  # loud frames sent
    found: list[tuple[TimedFrame, int]]  # (frame on the wire, its first sample in the channel)
    rate: int = 8000

    @property
    def share(self) -> float:
        return len(self.found) / self.loud if self.loud else 0.0

    def delays(self, rec_start: float) -> list[float]:
        """Recording time minus wire time of each found frame, given the recording's start."""
        return [rec_start + at / self.rate - f.time for f, at in self.found]

    def start_estimate(self) -> float:
        """The recording's start on the wire's clock, if the frames went in at once (the
        agent's channel: a frame is recorded in the tick it is sent)."""
        return statistics.median(f.time - at / self.rate for f, at in self.found)


def _loud(frames: Sequence[TimedFrame], min_peak: int) -> list[TimedFrame]:
    return [f for f in frames if len(f.pcm) == FRAME and int(np.abs(f.pcm).max()) >= min_peak]


def _close(recorded: npt.NDArray[np.int32], wire: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
    # Within the sample's G.711 quantisation step: encoders differ by a step at most.
    tolerance = 8 + np.abs(wire) // 8
    result: npt.NDArray[np.bool_] = np.all(np.abs(recorded - wire) <= tolerance, axis=-1)
    return result


def place_ticks(frames: Sequence[TimedFrame], pcm: Pcm, min_peak: int = 500) -> Placement:
    """The agent's channel: each loud wire frame is one whole tick of it (compared within
    G.711's quantisation: the channel holds the linear audio the gateway encoded), in order."""
    n = len(pcm) // FRAME
    recorded = pcm[: n * FRAME].astype(np.int32).reshape(n, FRAME)
    loud = _loud(frames, min_peak)
    found: list[tuple[TimedFrame, int]] = []
    last = -1
    for f in loud:
        hits = np.flatnonzero(_close(recorded[last + 1 :], f.pcm.astype(np.int32)))
        if hits.size:
            last = last + 1 + int(hits[0])
            found.append((f, last * FRAME))
    return Placement(len(loud), found)


def place_samples(
    frames: Sequence[TimedFrame], pcm: Pcm, min_peak: int = 500, search_s: float = 3.0
) -> Placement:
    """The caller's channel: each loud wire frame found anywhere (in order, each within
    `search_s` after the previous one). The jitter buffer takes out a pitch period or
    conceals a late packet now and then, so frames may sit at any sample offset; most sit
    right after the previous one, which is tried first."""
    channel = pcm.astype(np.int32)
    loud = _loud(frames, min_peak)
    found: list[tuple[TimedFrame, int]] = []
    last = -FRAME
    for f in loud:
        wire = f.pcm.astype(np.int32)
        nxt = last + FRAME
        if found and 0 <= nxt <= len(channel) - FRAME and _close(channel[nxt : nxt + FRAME], wire):
            last = nxt
            found.append((f, nxt))
            continue
        lo = last + 1 if found else 0
        hi = min(len(channel), lo + int(search_s * 8000) + FRAME) if found else len(channel)
        if hi - lo < FRAME:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(channel[lo:hi], FRAME)
        hits = np.flatnonzero(_close(windows, wire))
        if hits.size:
            last = lo + int(hits[0])
            found.append((f, last))
    return Placement(len(loud), found)
