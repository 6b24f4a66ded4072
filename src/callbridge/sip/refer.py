"""Blind transfer: one REFER (RFC 3515) and the implicit `refer` subscription it creates.

Sans-IO and dialog-agnostic: the UA core builds and sends the REFER, feeds this module the
REFER's final response and each in-dialog NOTIFY, and gets back the status to answer the
NOTIFY with plus transfer events. No RFC 4488 (Refer-Sub: false): the subscription always
exists, and its NOTIFYs carry `message/sipfrag` status lines (RFC 3420).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callbridge.core.errors import ProtocolError
from callbridge.sip.message import SipRequest
from callbridge.sip.uri import SipUri, UriParseError

SIPFRAG = "message/sipfrag"
# How long a transfer may take from the REFER to the final NOTIFY. The target may ring for a
# while before it answers; 30 s is a typical ring timeout, after which we keep the call.
TRANSFER_TIMEOUT = 30.0


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """A provisional sipfrag (e.g. "SIP/2.0 180 Ringing"): the transferee is trying."""

    call: str
    status: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TransferSucceeded:
    """A 2xx sipfrag: the transferee reached the target (RFC 3515 §2.4.5)."""

    call: str
    status: int = 200
    reason: str = "OK"


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """REFER refused, a >= 300 sipfrag, no final status in time, or the subscription ended
    without one. `status` is None when no SIP status says why."""

    call: str
    status: int | None
    reason: str


TransferEvent = TransferProgress | TransferSucceeded | TransferFailed


# ---- parsing ----------------------------------------------------------------------------------


class SipfragError(ProtocolError, ValueError):
    """A NOTIFY body that is not a sipfrag starting with a Status-Line."""


@dataclass(frozen=True, slots=True)
class StatusLine:
    status: int
    reason: str


_STATUS_LINE = re.compile(r"SIP/2\.0[ \t]+([1-6][0-9][0-9])(?:[ \t]+(.*))?", re.IGNORECASE)


def parse_sipfrag(body: bytes) -> StatusLine:
    """The Status-Line a `refer` NOTIFY's body must begin with (RFC 3515 §2.4.5)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SipfragError("sipfrag is not UTF-8") from None
    first = text.lstrip("\r\n").split("\n", 1)[0].rstrip("\r")
    match = _STATUS_LINE.fullmatch(first.strip())
    if match is None:
        raise SipfragError(f"sipfrag does not start with a Status-Line: {first[:60]!r}")
    reason = "".join(ch for ch in (match.group(2) or "") if ch.isprintable())
    return StatusLine(int(match.group(1)), reason.strip()[:100])


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    state: str  # "active" | "pending" | "terminated" | an extension value
    reason: str | None = None
    expires: int | None = None


def _params(value: str) -> tuple[str, dict[str, str]]:
    head, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, _, val = item.partition("=")
        if name.strip():
            params[name.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), params


def parse_subscription_state(value: str | None) -> SubscriptionState:
    """RFC 6665 §8.2.3. A missing header is read as `active` (lenient: it is mandatory)."""
    if value is None or not value.strip():
        return SubscriptionState("active")
    state, params = _params(value)
    expires = params.get("expires")
    return SubscriptionState(
        state,
        params.get("reason"),
        int(expires)
        if expires and expires.isascii() and expires.isdigit() and len(expires) <= 10
        else None,
    )


def parse_event(value: str | None) -> tuple[str, str | None] | None:
    """(package, id) of an Event header (RFC 6665 §8.2.1), None when absent or empty."""
    if value is None or not value.strip():
        return None
    package, params = _params(value)
    return package, params.get("id")


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+")
_PHONE_SEPARATORS = str.maketrans("", "", " -.()")


def refer_to_uri(target: str, peer: SipUri) -> str:
    """The Refer-To URI for what an agent asked for: a sip:/sips:/tel: URI as given, a
    user@host as a sip: URI, and a bare user or number on the peer's host (a trunk's
    provider routes numbers sent to its own domain). Raises ValueError when unusable."""
    text = target.strip()
    if not text:
        raise ValueError("empty transfer target")
    if _SCHEME.match(text):
        scheme = text.split(":", 1)[0].lower()
        if scheme == "tel":
            return text  # RFC 3966: routed by the transferee
        if scheme not in ("sip", "sips"):
            raise ValueError(f"unsupported transfer target scheme {scheme!r}")
        try:
            return str(SipUri.parse(text))
        except UriParseError as exc:
            raise ValueError(f"bad transfer target {text!r}: {exc}") from None
    if "@" in text:
        try:
            return str(SipUri.parse("sip:" + text))
        except UriParseError as exc:
            raise ValueError(f"bad transfer target {text!r}: {exc}") from None
    user = text if any(ch.isalpha() for ch in text) else text.translate(_PHONE_SEPARATORS)
    if not _USER.fullmatch(user):
        raise ValueError(f"bad transfer target {text!r}")
    return str(SipUri(peer.scheme, peer.host, user=user, port=peer.port))


# ---- one transfer -----------------------------------------------------------------------------


@dataclass(slots=True)
class Transfer:
    """One REFER and its subscription, seen by the transferor (RFC 3515 §2.4)."""

    call: str
    cseq: int  # the REFER's CSeq number: the subscription's Event id (RFC 3515 §2.4.6)
    deadline: float
    accepted: bool = False  # a 2xx to the REFER, or a NOTIFY (which implies acceptance)
    done: bool = False  # a final outcome was reported: later NOTIFYs change nothing

    def on_refer_response(self, status: int, reason: str) -> list[TransferEvent]:
        if self.done or status < 200:
            return []
        if status < 300:
            self.accepted = True
            return []
        # Even after a NOTIFY (RFC 3515 §2.4.4 lets one arrive before the 2xx), a final error
        # to the REFER means the peer will not carry the transfer out.
        return self._finish(TransferFailed(self.call, status, reason or "REFER rejected"))

    def on_refer_timeout(self) -> list[TransferEvent]:
        if self.done or self.accepted:
            return []
        return self._finish(TransferFailed(self.call, 408, "no answer to the REFER"))

    def on_timeout(self, now: float) -> list[TransferEvent]:
        if self.done or now < self.deadline:
            return []
        return self._finish(TransferFailed(self.call, 408, "no final transfer status in time"))

    def matches(self, request: SipRequest) -> bool:
        """Is this NOTIFY about our REFER (Event: refer, and its id, when given, ours)?"""
        event = parse_event(request.headers.get("Event"))
        return (
            event is not None
            and event[0] == "refer"
            and (event[1] is None or event[1] == str(self.cseq))
        )

    def on_notify(self, request: SipRequest) -> tuple[int, str | None, list[TransferEvent]]:
        """The status (and reason) to answer this NOTIFY with, and what it tells us.
        The caller has checked `matches` and the dialog."""
        sub = parse_subscription_state(request.headers.get("Subscription-State"))
        terminated = sub.state == "terminated"
        frag: StatusLine | None = None
        if request.body:
            if request.content_type != SIPFRAG:
                return 415, None, []
            try:
                frag = parse_sipfrag(request.body)
            except SipfragError as exc:
                return 400, str(exc)[:100], []
        elif not terminated:
            return 400, "Missing message/sipfrag body", []
        self.accepted = True  # RFC 3515 §2.4.4: a NOTIFY implies the REFER was accepted
        if self.done:
            return 200, None, []
        if frag is not None and frag.status >= 200:
            if frag.status < 300:
                return (
                    200,
                    None,
                    self._finish(TransferSucceeded(self.call, frag.status, frag.reason)),
                )
            return 200, None, self._finish(TransferFailed(self.call, frag.status, frag.reason))
        if terminated:
            why = f" ({sub.reason})" if sub.reason else ""
            return (
                200,
                None,
                self._finish(
                    TransferFailed(
                        self.call, None, f"subscription terminated without a final status{why}"
                    )
                ),
            )
        if frag is not None:
            return 200, None, [TransferProgress(self.call, frag.status, frag.reason)]
        return 200, None, []

    def _finish(self, event: TransferEvent) -> list[TransferEvent]:
        self.done = True
        return [event]
