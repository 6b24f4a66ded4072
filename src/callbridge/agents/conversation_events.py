"""What a Conversation reports to its agent, in the order it happened (Conversation.events())."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UserSpeaking:
    at: float


@dataclass(frozen=True, slots=True)
class UserTurn:
    """The caller finished a turn: the final transcript and when their speech started/ended.

    `tentative`: the caller has only paused for `prepare_after` so far. The agent may start on
    its answer now; whatever it says is held (not sent) until TurnConfirmed, and dropped on
    TurnResumed (then a new UserTurn with the whole turn's words follows)."""

    text: str
    speech_start: float
    speech_end: float
    decided_at: float  # end-of-turn decision (speech_end + end silence, or + prepare_after)
    stt_latency: float  # decision -> final transcript
    tentative: bool = False


@dataclass(frozen=True, slots=True)
class TurnConfirmed:
    """The tentative turn is over for real (end silence reached): held answer audio plays."""

    at: float


@dataclass(frozen=True, slots=True)
class TurnResumed:
    """The caller went on after a tentative turn: the answer being prepared was dropped."""

    at: float


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The caller barged in over utterance `utterance`; their speech began at `onset`."""

    utterance: int
    onset: float
    at: float


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Hold:
    on_hold: bool


ConversationEvent = (
    UserSpeaking | UserTurn | TurnConfirmed | TurnResumed | Interrupted | Dtmf | Hold
)
