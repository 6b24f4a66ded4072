"""Endpointing: when the caller's turn starts and ends, from speech probabilities over time.

QUIET -> STARTING on the first speech chunk; STARTING -> SPEAKING once speech has lasted
`min_speech` (clicks and coughs never get there); SPEAKING -> STOPPING on the first silent
chunk; STOPPING -> SPEAKING when speech resumes (a pause inside a sentence), or -> QUIET with
TurnEnded once silence has lasted `end_silence` (or earlier, by `end(now)`, when an
end-of-turn model says the utterance is complete). Once speech is under way, a chunk far quieter
than the turn's loudest (`quiet_drop_db`) is silence whatever the VAD says: Silero's
probability stays high for ~150 ms after the last word, and that hangover would otherwise be
added to every answer's delay. Two thresholds (hysteresis) keep a probability
hovering near one threshold from toggling the state every chunk.

Sans-IO: fed (probability, now) per VAD chunk; every time in an event is a `now` passed in.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = [
    "SpeechConfirmed",
    "SpeechDiscarded",
    "SpeechStarted",
    "TurnConfig",
    "TurnDetector",
    "TurnEnded",
    "TurnEvent",
    "TurnState",
]

_EPS = 1e-9  # float sums of 20/32 ms steps must not miss a duration by a rounding error


class TurnState(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class TurnConfig:
    start_threshold: float = 0.5  # probability that starts (or resumes) speech
    stop_threshold: float = 0.35  # probability below which speech has stopped (Silero's own gap)
    min_speech: float = 0.2  # seconds from onset before speech counts as a turn
    end_silence: float = 0.6  # seconds of silence after speech that end the turn
    # A chunk this far below the turn's loudest chunk is silence (VAD hangover trimmed) ...
    quiet_drop_db: float = 35.0
    # ... but the bar never goes below this level (a quiet caller's speech is still speech).
    quiet_floor_dbfs: float = -60.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.stop_threshold <= self.start_threshold <= 1.0:
            raise ValueError("need 0 <= stop_threshold <= start_threshold <= 1")
        if self.min_speech < 0 or self.end_silence < 0:
            raise ValueError("durations must be >= 0")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Possible speech began at `at` (tentative: SpeechConfirmed or SpeechDiscarded follows)."""

    at: float


@dataclass(frozen=True, slots=True)
class SpeechConfirmed:
    """Speech lasted min_speech: a turn is under way since `onset`."""

    at: float
    onset: float


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    """Speech since `onset` stopped before min_speech (a click, a cough): no turn."""

    at: float
    onset: float


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The caller's turn is over: speech from speech_start to speech_end, then end_silence."""

    at: float
    speech_start: float
    speech_end: float


TurnEvent = SpeechStarted | SpeechConfirmed | SpeechDiscarded | TurnEnded


class TurnDetector:
    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        self._state = TurnState.QUIET
        self._onset = 0.0
        self._last_speech = 0.0
        self._peak = -math.inf  # loudest chunk since the onset (dBFS)

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def onset(self) -> float | None:
        """Start of the current (tentative or confirmed) speech, None while QUIET."""
        return None if self._state is TurnState.QUIET else self._onset

    @property
    def silent_since(self) -> float | None:
        """While STOPPING: the time of the last speech (the silence runs from there)."""
        return self._last_speech if self._state is TurnState.STOPPING else None

    def reset(self) -> None:
        """Back to QUIET without events (e.g. the call was put on hold)."""
        self._state = TurnState.QUIET

    def end(self, now: float) -> TurnEnded | None:
        """End the turn now, before `end_silence`, if it is in a pause (STOPPING): something
        else (an end-of-turn model) judged it complete. None in any other state."""
        if self._state is not TurnState.STOPPING:
            return None
        self._state = TurnState.QUIET
        return TurnEnded(now, self._onset, self._last_speech)

    def update(
        self, probability: float, now: float, level_dbfs: float | None = None
    ) -> list[TurnEvent]:
        """Advance with the speech probability (and level, if known) of the chunk at `now`."""
        cfg = self.config
        events: list[TurnEvent] = []
        if level_dbfs is not None and self._state is not TurnState.QUIET:
            if self._state in (TurnState.SPEAKING, TurnState.STOPPING) and level_dbfs < max(
                cfg.quiet_floor_dbfs, self._peak - cfg.quiet_drop_db
            ):
                probability = 0.0
            self._peak = max(self._peak, level_dbfs)
        match self._state:
            case TurnState.QUIET:
                if probability >= cfg.start_threshold:
                    self._state = TurnState.STARTING
                    self._peak = -math.inf if level_dbfs is None else level_dbfs
                    self._onset = self._last_speech = now
                    events.append(SpeechStarted(now))
                    self._confirm(now, events)
            case TurnState.STARTING:
                if probability >= cfg.stop_threshold:
                    self._last_speech = now
                    self._confirm(now, events)
                else:
                    self._state = TurnState.QUIET
                    events.append(SpeechDiscarded(now, self._onset))
            case TurnState.SPEAKING:
                if probability >= cfg.stop_threshold:
                    self._last_speech = now
                else:
                    self._state = TurnState.STOPPING
                    self._end(now, events)
            case TurnState.STOPPING:
                # Resuming needs the higher threshold, so noise just under it cannot hold a turn.
                if probability >= cfg.start_threshold:
                    self._state = TurnState.SPEAKING
                    self._last_speech = now
                else:
                    self._end(now, events)
        return events

    def _confirm(self, now: float, events: list[TurnEvent]) -> None:
        if now - self._onset + _EPS >= self.config.min_speech:
            self._state = TurnState.SPEAKING
            events.append(SpeechConfirmed(now, self._onset))

    def _end(self, now: float, events: list[TurnEvent]) -> None:
        if now - self._last_speech + _EPS >= self.config.end_silence:
            self._state = TurnState.QUIET
            events.append(TurnEnded(now, self._onset, self._last_speech))
