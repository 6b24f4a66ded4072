"""Ports between layers. Transports implement CallLeg; agents consume it; calls/ connects them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from callbridge.core.errors import CallbridgeError
from callbridge.core.events import LegInput, TransferResult
from callbridge.core.frames import AudioFrame


@dataclass(slots=True)
class LegInfo:
    """Everything that correlates one leg across logs, protocols and stores."""

    transport: str  # "sip", "twilio", ...
    direction: str  # "inbound" | "outbound"
    local_user: str = ""
    remote_uri: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # e.g. sip_call_id, local_tag, rtp_ssrc_in


class CallLeg(Protocol):
    """One side of a call as an agent sees it: 20 ms PCM16 frames in and out, plus control;
    and as the calls layer owns it: `run()` drives its media, `set_tap()` records it, `stats()`
    and `end_reason` report on it. Transports build legs on transports.leg_base; tests and
    agent authors use callbridge.testing.FakeLeg.

    Control (hangup, flush, DTMF) never waits behind queued audio.
    """

    @property
    def info(self) -> LegInfo: ...

    def inputs(self) -> AsyncIterator[LegInput]:
        """Caller audio (one 20 ms frame per 20 ms, concealed when lost), DTMF and hold events.

        Ends when the leg ends.
        """
        ...

    async def play(self, frame: AudioFrame, utterance: int = 0) -> None:
        """Queue a frame of `utterance` for paced playout; waits while the queue is full."""
        ...

    def listen(self, sink: Callable[[LegInput], None]) -> None:
        """Instead of `inputs()`: get each input as it arrives, inside the leg's media tick
        (one pass for every call: no task wakes per frame). `sink` must return at once and
        may call `offer`; `inputs()` then only ends with the leg."""
        ...

    def offer(self, frame: AudioFrame, utterance: int = 0) -> bool:
        """`play` without waiting (for a `listen` sink): False, and nothing queued, while the
        queue is full. Raises CallEnded once the leg ended."""
        ...

    def flush_playout(self) -> int:
        """Drop everything queued and not yet sent (barge-in). Returns the samples dropped."""
        ...

    def pause_playout(self, paused: bool) -> None:
        """Stop (True) or resume (False) sending queued agent audio, dropping nothing: the
        caller hears silence at once while a possible interruption is confirmed."""
        ...

    def played(self, utterance: int) -> int:
        """Samples of `utterance` handed to the wire: what the caller could have heard."""
        ...

    @property
    def samples_played(self) -> int:
        """Agent samples handed to the wire since the leg started."""
        ...

    @property
    def playing(self) -> bool:
        """Agent audio is queued or was on the wire in the last tick."""
        ...

    @property
    def playback_dbfs(self) -> float:
        """Loudest recent agent frame sent (dBFS): the reference for the barge-in echo guard."""
        ...

    async def send_dtmf(self, digits: str) -> None: ...

    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer of the far end to `target` (a URI, or a user or number the transport
        places). On success the leg ends (reason "transferred"); on failure it stays up."""
        ...

    async def hangup(self, reason: str = "normal") -> None: ...

    @property
    def ended(self) -> bool: ...

    async def wait_ended(self) -> None: ...

    @property
    def end_reason(self) -> str:
        """Why the leg ended ("remote_bye", "transferred", "rtp_timeout", ...); "" while up."""
        ...

    async def run(self) -> None:
        """Drive the leg's media until it ends. The call's TaskGroup owns this task:
        cancelling it stops the media."""
        ...

    def stats(self) -> dict[str, int | float]:
        """Counters for the call's end record (packets, concealment, marks, ...)."""
        ...

    def set_tap(self, tap: MediaTap | None) -> None:
        """Show every media tick from the next one on to `tap` (a recorder); None: stop."""
        ...


class MediaTap(Protocol):
    """Sees a leg's media on its own 20 ms schedule (e.g. a call recorder).

    Called once per media tick, on the event loop, with what the caller's side produced
    that tick (the jitter buffer's frame, concealed ones included) and what was handed to
    the wire towards the caller: PCM16 mono at PIPELINE_RATE, one frame each, None for
    nothing (no packet yet, playout paused or flushed, on hold). Must return at once.
    """

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None: ...


class Agent(Protocol):
    """A brain attached to one call leg; returns when the conversation is over."""

    async def run(self, leg: CallLeg) -> None: ...


class Rejection(CallbridgeError):
    """Why a new leg is not taken; each transport maps it to its own wire status."""

    NOT_FOUND = "not_found"  # SIP 404
    BUSY = "busy"  # SIP 486
    UNAVAILABLE = "unavailable"  # SIP 503 (shutting down, overloaded)

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail or kind


class LegAcceptor(Protocol):
    """The calls layer, as transports see it: may this leg come in, and take it when it is up."""

    def admit(self, info: LegInfo) -> None:
        """Raise Rejection to refuse the leg (before it is answered)."""
        ...

    def start(self, leg: CallLeg) -> None:
        """The leg is answered and media flows: attach an agent and own the call from now on."""
        ...
