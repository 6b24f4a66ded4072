"""What a call leg reports upward, in arrival order. Frozen, in a closed union."""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.core.frames import AudioFrame


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A DTMF key press (RFC 4733 event or in-band), reported once at its end."""

    digit: str  # one of 0-9 * # A-D
    duration_ms: int


@dataclass(frozen=True, slots=True)
class LegHold:
    """The far end put the call on hold (True) or resumed it (False) (RFC 3264 §8.4)."""

    on_hold: bool


LegInput = AudioFrame | DtmfDigit | LegHold


@dataclass(frozen=True, slots=True)
class TransferResult:
    """How a `CallLeg.transfer` ended: ok (the leg then ends), or why not; `status` is the SIP
    status that said so, when there was one."""

    ok: bool
    status: int | None = None
    reason: str = ""
