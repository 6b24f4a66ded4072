"""Barge-in: is the caller really interrupting the agent, or is it echo or a cough?

Fed once per 20 ms caller frame. A frame "counts" when the agent is playing, the VAD says
speech, the frame is above an absolute floor, and it is louder than the agent's own audio could
be on the caller's stream: playback level + assumed echo return (e.g. -20 dB) + a margin. The
agent's level should be the loudest recent playback frame (PlayoutQueue.peak_dbfs), so echo
delayed by up to that window cannot pass. Counting frames with short gaps bridged, BargeIn
fires once the run has lasted `min_speech`; its onset is the run's first frame.

While a run is counting, `holding` says the agent should fall silent now (without dropping its
audio): the caller hears it stop a chunk after their onset, not `min_speech` later. The hold
outlasts the run by `hold_release`, so a dip between words does not let the agent blurt out a
syllable; after a cough it ends and the agent carries on where it paused.

Energy gating also trims the VAD's own hangover: after a cough the VAD may say "speech" for
another chunk or two, but the frames are quiet again, so the run ends with the cough.

Sans-IO: no clock of its own; `now` comes with every frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["BargeIn", "BargeInConfig", "BargeInDetector", "BargeInState"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    speech_threshold: float = 0.5  # VAD probability that counts as speech
    # Long enough to reject coughs and clicks (~100 ms), short enough for a ~150 ms reaction.
    min_speech: float = 0.15
    max_gap: float = 0.06  # dips shorter than this (between syllables) do not restart the count
    echo_return_db: float = -20.0  # worst echo of the agent's audio on the caller's stream
    echo_margin_db: float = 4.0  # caller must beat that echo by this much
    floor_dbfs: float = -50.0  # quieter frames are never an interruption
    # The agent stays paused this long after the last counted frame: long enough to bridge the
    # pause at a comma inside one interruption ("hold on, | I have a question": 300-400 ms), so
    # the caller never hears the agent resume for a syllable between the two; after a cough it
    # carries on half a second later.
    hold_release: float = 0.5

    def __post_init__(self) -> None:
        if self.min_speech < 0 or self.max_gap < 0 or self.hold_release < 0:
            raise ValueError("durations must be >= 0")


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller interrupted: decided at `at`, their speech began at `onset`."""

    at: float
    onset: float


class BargeInState(enum.Enum):
    IDLE = "idle"
    COUNTING = "counting"  # qualifying speech is running, not yet long enough
    FIRED = "fired"  # reported; waits for the caller's speech to end before re-arming


class BargeInDetector:
    def __init__(self, config: BargeInConfig | None = None) -> None:
        self.config = config or BargeInConfig()
        self._state = BargeInState.IDLE
        self._onset = 0.0
        self._last = 0.0  # last frame that counted (COUNTING) or had speech (FIRED)
        self._holding = False

    @property
    def holding(self) -> bool:
        """Caller speech over the agent is suspected: pause the agent's audio (not drop it)."""
        return self._holding

    @property
    def state(self) -> BargeInState:
        return self._state

    def reset(self) -> None:
        self._state = BargeInState.IDLE
        self._holding = False

    def echo_threshold(self, agent_dbfs: float) -> float:
        """The caller level (dBFS) a frame must reach while the agent plays at `agent_dbfs`."""
        cfg = self.config
        return max(cfg.floor_dbfs, agent_dbfs + cfg.echo_return_db + cfg.echo_margin_db)

    def update(
        self,
        *,
        caller_dbfs: float,
        speech: float,
        agent_playing: bool,
        agent_dbfs: float,
        now: float,
    ) -> BargeIn | None:
        """Advance by one caller frame received at `now`."""
        fired = self._advance(caller_dbfs, speech, agent_playing, agent_dbfs, now)
        match self._state:
            case BargeInState.COUNTING:
                self._holding = True
            case BargeInState.FIRED:
                self._holding = False  # the agent's audio is being dropped, not paused
            case BargeInState.IDLE:
                self._holding = (
                    self._holding
                    and agent_playing
                    and now - self._last < self.config.hold_release - _EPS
                )
        return fired

    def _advance(
        self,
        caller_dbfs: float,
        speech: float,
        agent_playing: bool,
        agent_dbfs: float,
        now: float,
    ) -> BargeIn | None:
        cfg = self.config
        is_speech = speech >= cfg.speech_threshold and caller_dbfs >= cfg.floor_dbfs
        counts = is_speech and agent_playing and caller_dbfs >= self.echo_threshold(agent_dbfs)
        match self._state:
            case BargeInState.IDLE:
                if counts:
                    self._state = BargeInState.COUNTING
                    self._onset = self._last = now
                    return self._check(now)
            case BargeInState.COUNTING:
                if counts:
                    self._last = now
                    return self._check(now)
                if not agent_playing or now - self._last > cfg.max_gap + _EPS:
                    self._state = BargeInState.IDLE
            case BargeInState.FIRED:
                # Once per stretch of caller speech, whatever the agent does meanwhile.
                if is_speech:
                    self._last = now
                elif now - self._last > cfg.max_gap + _EPS:
                    self._state = BargeInState.IDLE
        return None

    def _check(self, now: float) -> BargeIn | None:
        if now - self._onset + _EPS >= self.config.min_speech:
            self._state = BargeInState.FIRED
            return BargeIn(now, self._onset)
        return None
