"""The call database's rows: what the store writes and the API reads (re-exported by db.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallRow", "EventRow", "TurnRow", "UnfinishedCall"]


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str
    transport: str  # "sip", "twilio"
    direction: str  # "inbound" | "outbound"
    from_uri: str
    to_uri: str
    agent: str
    started: float
    answered: float | None = None
    ended: float | None = None
    end_reason: str | None = None
    recording_path: str | None = None
    transcript_path: str | None = None
    ids: Mapping[str, str] = field(default_factory=dict)  # the leg's correlation ids

    @property
    def live(self) -> bool:
        return self.ended is None


@dataclass(frozen=True, slots=True)
class EventRow:
    call_id: str
    seq: int  # order within the call
    ts: float
    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TurnRow:
    """One agent utterance and the caller turn it answered ("" for a greeting)."""

    call_id: str
    utterance: int
    ts: float
    user_text: str
    agent_text: str  # what the caller heard
    interrupted: bool
    voice_to_voice_ms: int | None = None
    stt_ms: int | None = None
    brain_ms: int | None = None
    tts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class UnfinishedCall:
    """A call a previous run of this gateway left live: what is known of when it ended."""

    id: str
    started: float
    answered: float | None
    last_activity: float | None  # the latest heartbeat (None: it died before the first)
    recording_path: str | None
