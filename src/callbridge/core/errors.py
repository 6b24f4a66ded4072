"""The project's errors, one tree (grouped like httpx's): catch `CallbridgeError` for anything
callbridge raises on purpose, or one branch for one kind of trouble.

    CallbridgeError
    ├── ConfigError          a setting is invalid (names the field and what is allowed)
    ├── ProtocolError        bytes from a peer that are not the protocol (SIP, SDP, RTP/RTCP,
    │                        Twilio JSON, the STT worker pipe, Asterisk frames): parsers raise
    │                        only their own subclass, so a caller can answer 400 or drop
    ├── TransportError       a leg or a socket failed (call setup, ports, a closed stream)
    │   └── CallEnded        a task used a leg after its call ended
    ├── AgentError           a speech or brain component failed (STT, TTS, LLM, VAD, audio)
    ├── StoreError           recordings, transcripts, the call database
    └── ApiError             a request to the REST API that cannot be served

Parse errors also derive from ValueError and component errors from RuntimeError where they
always did, so code written against those keeps working.
"""

from __future__ import annotations


class CallbridgeError(Exception):
    """Base of callbridge's own errors."""


class ConfigError(CallbridgeError):
    """A setting is invalid. The message names the field and what is allowed."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ProtocolError(CallbridgeError):
    """Bytes from a peer that are not the protocol they claim to be."""


class TransportError(CallbridgeError):
    """A leg, a socket or a stream to a peer failed."""


class CallEnded(TransportError):
    """Raised to a task that uses a leg after the call ended."""


class AgentError(CallbridgeError):
    """A component of an agent (recogniser, synthesiser, brain, VAD, audio device) failed."""


class StoreError(CallbridgeError):
    """Recordings, transcripts or the call database failed."""


class ApiError(CallbridgeError):
    """A request to the REST API that cannot be served."""
