"""What the listening core asks its shell to do: the ListenAction union, sans-IO.

media.listening.Listener returns these; the shell (agents/conversation.py) carries each out
with a `match`: feed or close the recognizer, report the caller's turn, hold or release the
agent's playout, confirm a barge-in, ask the turn model. Frozen values, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AskTurnModel",
    "ConfirmBargeIn",
    "ConfirmTurn",
    "DiscardUtterance",
    "EndTurn",
    "FeedStt",
    "FinishUtterance",
    "ListenAction",
    "PausePlayout",
    "PrepareTurn",
    "ResumePlayout",
    "ResumeTurn",
    "SpeechOnset",
    "StartUtterance",
]


@dataclass(frozen=True, slots=True)
class StartUtterance:
    """Open a fresh recognizer utterance and feed it `pcm` (the pre-roll, or the whole turn
    so far when a paused turn goes on)."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class FeedStt:
    pcm: bytes


@dataclass(frozen=True, slots=True)
class DiscardUtterance:
    """The speech was a click or a cough: close the utterance, nobody wants its text."""


@dataclass(frozen=True, slots=True)
class FinishUtterance:
    """Close the utterance; hand its text back with `Listener.transcript(request, ...)`."""

    request: int


@dataclass(frozen=True, slots=True)
class SpeechOnset:
    """Speech lasted min_speech: the caller is talking since `onset`."""

    onset: float


@dataclass(frozen=True, slots=True)
class PrepareTurn:
    """A tentative turn: the caller paused. Answer it, but the answer stays held."""

    text: str
    speech_start: float
    speech_end: float
    decided_at: float
    stt_latency: float


@dataclass(frozen=True, slots=True)
class EndTurn:
    """The caller's turn is over, with its final transcript."""

    text: str
    speech_start: float
    speech_end: float
    decided_at: float
    stt_latency: float


@dataclass(frozen=True, slots=True)
class ConfirmTurn:
    """The tentative turn is over for real: the held answer may play."""

    at: float


@dataclass(frozen=True, slots=True)
class ResumeTurn:
    """The caller went on after a tentative turn: drop the prepared answer (cancel, flush)."""

    at: float


@dataclass(frozen=True, slots=True)
class PausePlayout:
    """Hold the agent's audio without dropping it: suspected barge-in or an unconfirmed turn."""

    why: str  # "caller" | "prepared"
    at: float


@dataclass(frozen=True, slots=True)
class ResumePlayout:
    at: float


@dataclass(frozen=True, slots=True)
class ConfirmBargeIn:
    """The caller interrupts: cut the current speech. `silenced_at`: when the hold began."""

    onset: float
    at: float
    silenced_at: float


@dataclass(frozen=True, slots=True)
class AskTurnModel:
    """Is the turn complete? Run the model on `pcm` (the turn's last audio, `sample_rate`)
    and hand the probability back with `Listener.verdict(request, ...)`."""

    request: int
    pcm: bytes
    sample_rate: int
    at: float


ListenAction = (
    StartUtterance
    | FeedStt
    | DiscardUtterance
    | FinishUtterance
    | SpeechOnset
    | PrepareTurn
    | EndTurn
    | ConfirmTurn
    | ResumeTurn
    | PausePlayout
    | ResumePlayout
    | ConfirmBargeIn
    | AskTurnModel
)
