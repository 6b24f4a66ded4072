"""Speech-to-text behind a small synchronous protocol (the agent runs it on a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from callbridge.core.errors import AgentError


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    final: bool
    confidence: float | None = None


class Recognizer(Protocol):
    def start(self) -> None:
        """Begin an utterance."""
        ...

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        """PCM16 8 kHz audio of the utterance; returns partial transcripts as they change."""
        ...

    def finish(self) -> Transcript:
        """End the utterance and return its final transcript."""
        ...

    def close(self) -> None: ...


class SttError(AgentError, RuntimeError):
    """A recognizer failed (service unreachable, timed out, error reply); never holds a key."""
