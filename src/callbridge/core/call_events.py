"""What the call layers report on the bus (core.bus): frozen events in one closed union.

Each event is one fact, typed: a listener that reads a renamed field fails mypy instead of
producing a silently empty metric. The names and fields on the wire are unchanged from before
the bus: `summary()` is the JSON the webhooks and the API show for a call or a registration,
and `as_noted()` is the log line and events-table row of the events that had one (agent.turn,
agent.barge_in). `Noted` is the generic event every `core.log.event()` call becomes, so the
store's events table keeps receiving every structured event whatever the log level.

`at` is wall-clock seconds (Unix time), `call_id` the callbridge call id (None when the event
belongs to no call).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BargeIn",
    "CallAnswered",
    "CallEnded",
    "CallEvent",
    "CallInfo",
    "CallStarted",
    "Noted",
    "RecordingReady",
    "RegistrationChanged",
    "TranscriptLine",
    "TranscriptPartial",
    "TranscriptReady",
    "TranscriptRetracted",
    "TurnMeasured",
    "as_noted",
]

# The loggers that printed these events before the bus: their log lines stay the same.
_VOICE_LOGGER = "callbridge.agents.voice"
_CONVERSATION_LOGGER = "callbridge.agents.conversation"


@dataclass(frozen=True, slots=True)
class Noted:
    """A named structured event (`event(log, name, **fields)`), published whatever the level.

    `logger` and `level` are those it was logged with (listeners filter on them, e.g. the
    store keeps INFO and above from `callbridge.*`); `at` is None when the publisher has no
    wall clock (core code): listeners stamp it on receipt, which is the same instant."""

    name: str
    fields: Mapping[str, Any]
    call_id: str | None = None
    logger: str = "callbridge"
    level: int = logging.INFO
    at: float | None = None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who and how, as the webhooks and GET /calls show a call."""

    call_id: str
    transport: str
    direction: str
    local_user: str
    remote_uri: str
    agent: str
    ids: Mapping[str, str] = field(default_factory=dict)  # transport ids, without call_id

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "transport": self.transport,
            "direction": self.direction,
            "local_user": self.local_user,
            "remote_uri": self.remote_uri,
            "agent": self.agent,
            "ids": dict(self.ids),
        }


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The calls layer took a call (its task exists)."""

    call: CallInfo
    at: float

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The call is answered: legs reach the calls layer answered (inbound: our 200 OK,
    outbound: theirs), so this follows CallStarted at once."""

    call: CallInfo
    at: float

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over and its record final (recording and transcript complete).

    `stats` are the leg's counters (RTP: rtp_in, lost, late, concealed, jitter_ms, ...)."""

    call: CallInfo
    at: float
    reason: str
    duration: float  # seconds, from CallStarted
    stats: Mapping[str, int | float] = field(default_factory=dict)

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(frozen=True, slots=True)
class RecordingReady:
    """A call's recording is complete on disk (after CallEnded)."""

    call_id: str
    path: str
    seconds: float
    at: float


@dataclass(frozen=True, slots=True)
class TranscriptReady:
    """A call's transcript is complete on disk (after CallEnded)."""

    call_id: str
    path: str
    at: float


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """A SIP account's registration state changed (state: one of metrics.REGISTRATION_STATES)."""

    account: str
    state: str
    aor: str
    registrar: str
    reason: str
    status: int | None
    expires: int | None
    failures: int
    at: float
    call_id: None = None

    def summary(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "state": self.state,
            "aor": self.aor,
            "registrar": self.registrar,
            "reason": self.reason,
            "status": self.status,
            "expires": self.expires,
            "failures": self.failures,
        }


@dataclass(frozen=True, slots=True)
class TurnMeasured:
    """An agent utterance was synthesised and queued, with its latencies (ms) where measured:
    caller's end of speech to our first audio, the final transcript, the brain's first token,
    the first synthesised audio after it."""

    call_id: str | None
    at: float
    utterance: int
    text: str
    voice_to_voice_ms: int | None = None
    stt_final_ms: int | None = None
    brain_first_token_ms: int | None = None
    tts_first_audio_ms: int | None = None

    def fields(self) -> dict[str, Any]:
        """The `agent.turn` fields: only the latencies that were measured."""
        out: dict[str, Any] = {"utterance": self.utterance, "text": self.text}
        for key, value in (
            ("voice_to_voice_ms", self.voice_to_voice_ms),
            ("stt_final_ms", self.stt_final_ms),
            ("brain_first_token_ms", self.brain_first_token_ms),
            ("tts_first_audio_ms", self.tts_first_audio_ms),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller talked over the agent and the agent stopped: `onset` (the call's clock) of
    the caller's speech; the decision and the silence (playout held) after it, in ms."""

    call_id: str | None
    at: float
    utterance: int
    onset: float
    decided_after_ms: int
    silenced_after_ms: int
    heard: str  # what the caller heard of the utterance

    def fields(self) -> dict[str, Any]:
        """The `agent.barge_in` fields (call_id first: it is logged outside the call's
        context, from the VAD pool)."""
        return {
            "call_id": self.call_id,
            "utterance": self.utterance,
            "onset": self.onset,
            "decided_after_ms": self.decided_after_ms,
            "silenced_after_ms": self.silenced_after_ms,
            "heard": self.heard,
        }


@dataclass(frozen=True, slots=True)
class TranscriptPartial:
    """The caller's utterance while they talk, as far as it is recognised: `text` is the
    recognizer's hypothesis so far ("" at the onset, and all along with a recognizer that
    decodes only at the end); `active` False: the utterance was dropped (too short: noise).
    A TranscriptLine (role caller) follows when it ends in a turn."""

    call_id: str | None
    at: float
    text: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """A final line of the conversation: a caller turn, or what the caller heard of agent
    utterance `utterance` (published again, corrected, when it is cut later: the same
    utterance replaces the line). When `interrupted`, `text` is what was heard and `said` the
    whole answer that was cut."""

    call_id: str | None
    at: float
    role: str  # "caller" | "agent"
    text: str
    utterance: int | None = None  # agent lines only
    interrupted: bool = False
    said: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptRetracted:
    """The caller's last line was only a pause in their turn: it goes, with any agent line
    after it (an answer prepared for the pause, never heard); a line with all of the turn's
    words follows."""

    call_id: str | None
    at: float


CallEvent = (
    Noted
    | CallStarted
    | CallAnswered
    | CallEnded
    | RecordingReady
    | TranscriptReady
    | RegistrationChanged
    | TurnMeasured
    | BargeIn
    | TranscriptPartial
    | TranscriptLine
    | TranscriptRetracted
)


def as_noted(ev: object) -> Noted | None:
    """The generic view of an event: the log line it prints and the events-table row it
    files; None for events that have neither (their consumers are metrics and webhooks; the
    calls layer logs its own `call.started` / `call.ended` lines where the store can still
    file them)."""
    match ev:
        case Noted():
            return ev
        case TurnMeasured():
            return Noted("agent.turn", ev.fields(), ev.call_id, _VOICE_LOGGER, at=ev.at)
        case BargeIn():
            return Noted("agent.barge_in", ev.fields(), ev.call_id, _CONVERSATION_LOGGER, at=ev.at)
        case (
            CallStarted()
            | CallAnswered()
            | CallEnded()
            | RecordingReady()
            | TranscriptReady()
            | RegistrationChanged()
            | TranscriptPartial()
            | TranscriptLine()
            | TranscriptRetracted()
        ):
            # the transcript events: the live view's (the log has agent.heard / agent.said)
            return None
        case _:
            return None
