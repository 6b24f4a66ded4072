"""The agent's playout queue, with position: which samples of each utterance reached the wire.

The transport's 20 ms loop calls `pop()` once per tick and sends what it gets; everything the
queue knows about "heard" comes from those pops. On barge-in, `flush()` drops the rest at once,
and `played(utterance)` tells the agent how much of its answer the caller actually got, so the
conversation history can be cut there. `hold()` pauses sending without dropping anything: the
tentative half of barge-in (silence at once on suspected caller speech, resume if it was only a
cough). The level of the last ~200 ms sent is kept for the
barge-in echo guard.

Sans-IO and O(1) per frame. The level is measured when it is read, not when audio is sent:
an agent that never reads it (the echo agent, a remote agent) costs nothing per frame, and
one that does (the voice agent's echo guard, every 32 ms) measures each frame sent once, at
the first read that finds it in the window (its energy: one C loop with the native build). A read then
only moves running sums (energy, samples) and a monotonic deque for the window's loudest
frame; the 20 ms tick itself only notes what it sent.
"""

from __future__ import annotations

import math
from collections import deque

from callbridge.audio.levels import energy
from callbridge.core.frames import FRAME_MS, FRAME_SAMPLES, AudioFrame

__all__ = ["LEVEL_WINDOW_FRAMES", "PlayoutQueue", "UtteranceId"]

UtteranceId = int | str
LEVEL_WINDOW_FRAMES = 200 // FRAME_MS  # ~200 ms: covers typical echo path delay
_FULL_SCALE_SQ = 32768.0 * 32768.0
_IDLE: tuple[None, int] = (None, FRAME_SAMPLES)  # a tick that sent nothing: silence


class PlayoutQueue:
    def __init__(self, level_window: int = LEVEL_WINDOW_FRAMES) -> None:
        self._frames: deque[tuple[AudioFrame, UtteranceId]] = deque()
        self._queued_samples = 0
        self._played: dict[UtteranceId, int] = {}
        self._dropped: dict[UtteranceId, int] = {}
        # What the ticks sent since the level was last read, as (pcm, samples) (idle ticks:
        # no pcm); only the last `window` can still be in the window.
        self._window = level_window
        self._unmeasured: deque[tuple[bytes | None, int]] = deque(maxlen=level_window)
        self._sent_ticks = 0  # ticks noted so far (measured or not)
        self._sound_tick = -level_window  # the last tick that sent audio
        # The window: (sum of squares, samples) of each recent tick (idle ticks: 0 energy),
        # with its running totals; integers, so the sums never drift.
        self._ticks: deque[tuple[int, int]] = deque()
        self._energy = 0
        self._samples = 0
        # The window's loudest ticks as (tick number, mean square), mean squares decreasing
        # from the left: its head is the peak, each tick enters and leaves it once.
        self._peaks: deque[tuple[int, float]] = deque()
        self._last: UtteranceId | None = None  # utterance of the frame the last pop sent
        self._held = False

    def __len__(self) -> int:
        """Frames queued."""
        return len(self._frames)

    def push(self, frame: AudioFrame, utterance: UtteranceId) -> None:
        self._frames.append((frame, utterance))
        self._queued_samples += len(frame.pcm) >> 1

    def pop(self) -> tuple[AudioFrame, UtteranceId] | None:
        """The next frame to send now (the caller sends it); None when idle or held. One call
        per tick."""
        if not self._frames or self._held:
            self._unmeasured.append(_IDLE)  # the wire carried silence
            self._sent_ticks += 1
            self._last = None
            return None
        frame, utterance = item = self._frames.popleft()
        pcm = frame.pcm
        n = len(pcm) >> 1
        self._queued_samples -= n
        self._played[utterance] = self._played.get(utterance, 0) + n
        if n:
            self._unmeasured.append((pcm, n))
            self._sent_ticks += 1
            self._sound_tick = self._sent_ticks
        self._last = utterance
        return item

    @property
    def _silent(self) -> bool:
        """No tick in the window sent audio (a listening agent's usual case): both levels are
        -inf without measuring anything."""
        return self._sent_ticks - self._sound_tick >= self._window

    def _measure(self) -> None:
        """Bring the level window up to the last tick: each tick noted since the last read
        enters it (O(1) amortised per tick, a dot product per frame still in the window)."""
        pending = self._unmeasured
        if not pending:
            return
        ticks = self._ticks
        peaks = self._peaks
        window = self._window
        # The noted ticks are the last len(pending) ones (older ones left the window unread).
        tick = self._sent_ticks - len(pending)
        while pending:
            pcm, n = pending.popleft()
            e = 0 if pcm is None else energy(pcm)
            ticks.append((e, n))
            self._energy += e
            self._samples += n
            if len(ticks) > window:
                old_energy, old_n = ticks.popleft()
                self._energy -= old_energy
                self._samples -= old_n
            tick += 1
            mean_square = e / (n * _FULL_SCALE_SQ)
            while peaks and peaks[-1][1] <= mean_square:
                peaks.pop()  # never the peak again: this louder one outlives it in the window
            peaks.append((tick, mean_square))
            while peaks and peaks[0][0] <= tick - window:
                peaks.popleft()

    def hold(self, held: bool) -> None:
        """Pause (True) or resume (False) sending; queued frames and positions are kept."""
        self._held = held

    @property
    def held(self) -> bool:
        return self._held

    def flush(self) -> int:
        """Drop everything queued and not yet sent (barge-in) and release a hold: what is
        queued next plays. Returns the samples dropped."""
        self._held = False
        dropped = self._queued_samples
        for frame, utterance in self._frames:
            self._dropped[utterance] = self._dropped.get(utterance, 0) + frame.samples
        self._frames.clear()
        self._queued_samples = 0
        return dropped

    def played(self, utterance: UtteranceId) -> int:
        """Samples of `utterance` handed out by pop() (what the caller could have heard)."""
        return self._played.get(utterance, 0)

    def dropped(self, utterance: UtteranceId) -> int:
        """Samples of `utterance` thrown away by flush()."""
        return self._dropped.get(utterance, 0)

    def forget(self, utterance: UtteranceId) -> None:
        """Drop the counters of a finished utterance (long calls have many)."""
        self._played.pop(utterance, None)
        self._dropped.pop(utterance, None)

    @property
    def queued_samples(self) -> int:
        return self._queued_samples

    @property
    def playing(self) -> bool:
        """Audio is queued (held or not), or the last tick sent some (still on its way)."""
        return bool(self._frames) or self._last is not None

    @property
    def current(self) -> UtteranceId | None:
        """The utterance the last tick sent from (None if it sent nothing)."""
        return self._last

    @property
    def level_dbfs(self) -> float:
        """RMS level of what was sent over the window (idle ticks count as silence)."""
        if self._silent:
            return -math.inf
        self._measure()
        if not self._samples:
            return -math.inf
        return _dbfs(self._energy / (self._samples * _FULL_SCALE_SQ))

    @property
    def peak_dbfs(self) -> float:
        """Level of the loudest frame sent over the window: the echo guard's reference."""
        if self._silent:
            return -math.inf
        self._measure()
        return _dbfs(self._peaks[0][1] if self._peaks else 0.0)


def _dbfs(mean_square: float) -> float:
    return 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf
