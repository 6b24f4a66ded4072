"""What the user agent core hands back: datagrams to send and call events for the application.

Every role module (invite_server, invite_client, in_dialog) returns these; `UserAgent` passes
them out unchanged. Import them from `callbridge.sip.ua`, which re-exports the lot.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.core.errors import TransportError
from callbridge.core.net import Addr, Datagram
from callbridge.sip.message import SipRequest, SipResponse
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded

# The answer to an out-of-dialog OPTIONS: a status and extra headers (a 401's challenges).
OptionsAnswer = tuple[int, list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE. The app must ring(), answer() or reject() it."""

    call: str
    request: SipRequest
    source: Addr


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived. `sdp` is the answer when our 2xx carried the offer (§13.2.1)."""

    call: str
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class CallProgress:
    call: str
    status: int
    reason: str
    # RFC 3261 §13.2.1 / RFC 3960: an SDP answer in a provisional (183) brings early media.
    sdp: bytes = b""


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """Our INVITE got a 2xx; the ACK has been sent."""

    call: str
    response: SipResponse


@dataclass(frozen=True, slots=True)
class ReInvite:
    """A target-refresh / hold / resume offer in the dialog. Answer with answer_reinvite()."""

    call: str
    request: SipRequest


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The dialog (or attempt) is over. `status` is the failure status for failed attempts."""

    call: str
    reason: str  # "remote_bye" | "local_bye" | "cancelled" | "rejected" | "failed" | "no_ack" | "timeout" | "auth_failed"
    status: int | None = None
    detail: str = ""  # for people: why authentication failed, for instance


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """The final response to a request sent with request(); None when it timed out (408)."""

    request: str
    response: SipResponse | None


Output = (
    Datagram
    | IncomingCall
    | CallConfirmed
    | CallProgress
    | CallAnswered
    | ReInvite
    | CallEnded
    | RequestCompleted
    | TransferProgress
    | TransferSucceeded
    | TransferFailed
)


class UaError(TransportError):
    """An API call that does not fit the call's state (e.g. answering a cancelled call)."""


__all__ = [
    "Addr",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallProgress",
    "Datagram",
    "IncomingCall",
    "OptionsAnswer",
    "Output",
    "ReInvite",
    "RequestCompleted",
    "UaError",
]
