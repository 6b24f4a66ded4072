"""Registration of one account with its registrar (RFC 3261 §10.2), sans-IO.

UNREGISTERED -> REGISTERING -> REGISTERED -> (refresh) REGISTERED ... ; any failure -> FAILED,
retried after a jittered exponential backoff; stop() -> UNREGISTERING -> UNREGISTERED.

Time comes in as `now`; the machine returns actions (a REGISTER to send, a status change to
report) and says when it next wants to run (`next_deadline()`). The shell sends each REGISTER
in its own client transaction and feeds back the final response (or the timeout).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from callbridge.sip.account import SipAccount, split_hostport
from callbridge.sip.calls import ALLOW
from callbridge.sip.challenge import MAX_CHALLENGES, AuthRefused, ChallengeAnswerer
from callbridge.sip.digest import AuthHeader, DigestClient
from callbridge.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    new_branch,
    new_tag,
)
from callbridge.sip.uri import SipUri, UriParseError

REFRESH_MARGIN = 30.0  # refresh this long before the binding expires (or halfway, if later)
BACKOFF_MIN = 30.0
BACKOFF_MAX = 1800.0


class RegState(Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """What the API, logs and webhooks show. Times are the Clock's monotonic seconds."""

    account: str
    state: RegState
    aor: str
    registrar: str
    reason: str = ""
    status: int | None = None  # the last SIP status from the registrar
    expires: int | None = None  # seconds granted by the last 2xx
    expires_at: float | None = None
    retry_at: float | None = None
    failures: int = 0  # consecutive failed attempts


@dataclass(frozen=True, slots=True)
class SendRegister:
    """Send this REGISTER to the account's next hop, in a new client transaction."""

    request: SipRequest


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: RegistrationStatus


Action = SendRegister | StatusChanged


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    digits = text.strip().split(" ", 1)[0].split(";", 1)[0].split("(", 1)[0]
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else None


class Registration:
    """One account's binding. Call start(), then feed responses, timeouts and poll(now)."""

    def __init__(
        self,
        account: SipAccount,
        *,
        local_port: int,
        local_host: str = "",
        user_agent: str = "callbridge",
        rand: Callable[[], float] = random.random,
        cnonce: Callable[[], str] | None = None,
    ) -> None:
        self.account = account
        self.local_host = local_host  # our address towards the registrar (Via, Contact)
        self.local_port = local_port
        self.user_agent = user_agent
        self._rand = rand
        self._auth = (
            DigestClient(account.auth_user, account.password, cnonce)
            if cnonce is not None
            else DigestClient(account.auth_user, account.password)
        )
        self._challenges = ChallengeAnswerer(self._auth)  # per attempt
        # RFC 3261 §10.2.4: one Call-ID for all registrations of this UA with this registrar.
        self.call_id = f"{new_tag()}{new_tag()}"
        self._from_tag = new_tag()
        self._cseq = 0
        self._expires = account.expires  # what we ask for; raised by 423 (§10.2.8)
        self.state = RegState.UNREGISTERED
        self._pending: int | None = None  # CSeq awaiting its final response
        self._sent_at = 0.0
        self._sent_credentials = False
        self._deadline: float | None = None
        self._stopping = False
        self._reason = ""
        self._status: int | None = None
        self._granted: int | None = None
        self._expires_at: float | None = None
        self._failures = 0
        # Our address as the registrar saw it (RFC 3581 received/rport of its answer), when it
        # differs from ours: we are behind NAT, and that is the address to advertise.
        self.learn_address = True  # off when the operator set sip.public_host
        self.public_addr: tuple[str, int] | None = None
        self._stale_contact: str | None = None  # the binding to remove after a NAT move

    # ---- what the shell asks ----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When poll() has work to do; None while a REGISTER awaits its final response (the
        transaction layer times it out) or when nothing is scheduled."""
        return None if self._pending is not None else self._deadline

    def status(self) -> RegistrationStatus:
        return RegistrationStatus(
            account=self.account.name,
            state=self.state,
            aor=self.account.aor,
            registrar=self.account.registrar,
            reason=self._reason,
            status=self._status,
            expires=self._granted if self.state is RegState.REGISTERED else None,
            expires_at=self._expires_at if self.state is RegState.REGISTERED else None,
            retry_at=self._deadline if self.state is RegState.FAILED else None,
            failures=self._failures,
        )

    @property
    def request_uri(self) -> str:
        # RFC 3261 §10.2: the Request-URI names the domain of the location service, no user.
        return f"sip:{self.account.domain_host}"

    @property
    def contact_uri(self) -> str:
        host, port = self.public_addr or (self.local_host, self.local_port)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"sip:{self.account.username}@{host}:{port}"

    # ---- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Register now (also: retry now from FAILED). The shell sets local_host first."""
        if self._pending is not None or self._stopping:
            return []
        return self._attempt(now)

    def poll(self, now: float) -> list[Action]:
        """Run what is due: a refresh (REGISTERED) or a retry (FAILED)."""
        if self._deadline is None or now < self._deadline or self._pending is not None:
            return []
        self._deadline = None
        if self.state in (RegState.REGISTERED, RegState.FAILED):
            return self._attempt(now)
        return []

    def on_response(self, response: SipResponse, now: float) -> list[Action]:
        try:
            cseq = response.cseq
            call_id = response.call_id
        except SipParseError:
            return []
        if cseq.number != self._pending or cseq.method != "REGISTER" or call_id != self.call_id:
            return []  # a late answer to a request we no longer wait for
        if response.status < 200:
            return []
        self._pending = None
        self._status = response.status
        status = response.status
        if status < 300:
            return self._on_success(response, now)
        if status in (401, 407):
            return self._on_challenge(response, now)
        if status == 423 and not self._stopping:
            return self._on_too_brief(response, now)
        reason = f"{status} {response.reason}".strip()
        if status == 403 and self._sent_credentials:
            reason = f"authentication rejected ({reason})"
        return self._fail(now, reason, _number(response.headers.get("Retry-After")))

    def on_timeout(self, now: float) -> list[Action]:
        """The REGISTER transaction timed out (Timer F): no answer from the registrar."""
        if self._pending is None:
            return []
        self._pending = None
        self._status = 408
        return self._fail(now, "no response from the registrar")

    def fail(self, now: float, reason: str) -> list[Action]:
        """A failure found by the shell (e.g. the registrar's name does not resolve)."""
        self._pending = None
        self._status = None
        return self._fail(now, reason)

    def stop(self, now: float) -> list[Action]:
        """Remove our binding (expires=0) if one may exist; else go UNREGISTERED at once."""
        self._stopping = True
        self._deadline = None
        bound = self._expires_at is not None and self._expires_at > now
        if not bound and self._pending is None:
            return self._set(RegState.UNREGISTERED, self._reason if self._failures else "")
        out = self._set(RegState.UNREGISTERING, "")
        self._challenges.reset()
        out.append(self._send(now, self._auth.preemptive("REGISTER", self.request_uri)))
        return out

    def abandon(self, reason: str) -> list[Action]:
        """Give up waiting for the unREGISTER's answer (shutdown is bounded)."""
        self._pending = None
        self._deadline = None
        if self.state is RegState.UNREGISTERED:
            return []
        return self._set(RegState.UNREGISTERED, reason)

    # ---- internals ---------------------------------------------------------------------------

    def _attempt(self, now: float) -> list[Action]:
        self._challenges.reset()
        self._deadline = None
        out: list[Action] = []
        if self.state is not RegState.REGISTERED:  # a refresh stays REGISTERED meanwhile
            out = self._set(RegState.REGISTERING, "")
        out.append(self._send(now, self._auth.preemptive("REGISTER", self.request_uri)))
        return out

    def _send(self, now: float, auth: AuthHeader | None) -> SendRegister:
        self._cseq += 1
        self._pending = self._cseq
        self._sent_at = now
        self._sent_credentials = auth is not None
        return SendRegister(self._request(0 if self._stopping else self._expires, auth))

    def _request(self, expires: int, auth: AuthHeader | None) -> SipRequest:
        host = self.local_host if ":" not in self.local_host else f"[{self.local_host}]"
        host = f"{host}:{self.local_port}"  # Via: where we are; the Contact may be the NAT's
        aor = f"<{self.account.aor}>"
        items: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/UDP {host};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
        ]
        route = self.account.route
        if route is not None:
            items.append(("Route", route))
        items += [
            ("From", f"{aor};tag={self._from_tag}"),
            ("To", aor),  # RFC 3261 §10.2: To is the AOR being registered, From who asks
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            # §10.2.1.1: the expiry both as a Contact parameter and in Expires, for registrars
            # that only read one of them.
            ("Contact", f"<{self.contact_uri}>;expires={expires}"),
            *(
                [("Contact", f"<{self._stale_contact}>;expires=0")]
                if self._stale_contact is not None
                else []
            ),
            ("Expires", str(expires)),
            ("Allow", ALLOW),
            ("User-Agent", self.user_agent),
        ]
        if auth is not None:
            items.append((auth.name, auth.value))
        return SipRequest("REGISTER", self.request_uri, Headers(tuple(items)))

    def _set(self, state: RegState, reason: str) -> list[Action]:
        self.state = state
        self._reason = reason
        return [StatusChanged(self.status())]

    def _on_success(self, response: SipResponse, now: float) -> list[Action]:
        if self._stopping:
            self._expires_at = None
            return self._set(RegState.UNREGISTERED, "")
        # Once per attempt (an answer to the moved binding is taken as it is, so a registrar
        # whose view keeps changing cannot make us loop).
        moved = self._learn_address(response) if self._stale_contact is None else None
        if moved is not None:
            # Register the address the registrar can reach, and drop the one it cannot.
            self._stale_contact = moved
            return self._attempt(now)
        self._stale_contact = None
        granted = self._granted_expires(response)
        if granted <= 0:
            return self._fail(now, "the registrar granted no binding (expires=0)")
        self._failures = 0
        self._granted = granted
        # The binding's lifetime runs from when the registrar got the request, about when
        # we sent it; the refresh leaves room for a retransmission or two.
        self._expires_at = self._sent_at + granted
        self._deadline = self._sent_at + max(granted - REFRESH_MARGIN, granted / 2)
        return self._set(RegState.REGISTERED, "")

    def _learn_address(self, response: SipResponse) -> str | None:
        """RFC 3581 §4: the registrar stamps the top Via with the source it saw (received,
        rport). If that is not our address we are behind NAT: adopt it (once per change) and
        return the Contact we had, to unregister; else None."""
        if not self.learn_address:
            return None
        try:
            vias = response.vias
        except SipParseError:
            return None
        if not vias:
            return None
        received, rport = vias[0].param("received"), vias[0].param("rport")
        if not received or not rport or not rport.isdigit():
            return None
        seen = (received, int(rport))
        current = self.public_addr or (self.local_host, self.local_port)
        if seen == current:
            return None
        old = self.contact_uri
        self.public_addr = None if seen == (self.local_host, self.local_port) else seen
        return old

    def _granted_expires(self, response: SipResponse) -> int:
        """RFC 3261 §10.2.4: our Contact's expires in the 2xx, else Expires, else what we asked."""
        try:
            contacts = response.contacts
        except (SipParseError, UriParseError):
            contacts = []
        try:
            mine = SipUri.parse(self.contact_uri)
        except UriParseError:
            mine = None
        single = None
        for contact in contacts:
            value = _number(contact.param("expires"))
            if value is None:
                continue
            uri = contact.uri
            if (
                mine is not None
                and isinstance(uri, SipUri)
                and (uri.user, uri.host.lower(), uri.port or 5060)
                == (mine.user, mine.host.lower(), mine.port or 5060)
            ):
                return value
            single = value if len(contacts) == 1 else None
        header = _number(response.headers.get("Expires"))
        if header is not None:
            return header
        if single is not None:  # one binding, our Contact rewritten (e.g. by a NAT-aware proxy)
            return single
        return self._expires

    def _on_challenge(self, response: SipResponse, now: float) -> list[Action]:
        auth = self._challenges.answer(response, "REGISTER", self.request_uri)
        if isinstance(auth, AuthRefused):
            return self._fail(now, auth.detail)
        return [self._send(now, auth)]

    def _on_too_brief(self, response: SipResponse, now: float) -> list[Action]:
        minimum = _number(response.headers.get("Min-Expires"))
        if minimum is None or minimum <= self._expires:
            return self._fail(now, "423 Interval Too Brief without a usable Min-Expires")
        self._expires = minimum  # RFC 3261 §10.2.8: retry with at least Min-Expires
        return [self._send(now, self._auth.preemptive("REGISTER", self.request_uri))]

    def _fail(self, now: float, reason: str, retry_after: int | None = None) -> list[Action]:
        if self._stopping:
            self._expires_at = None
            return self._set(RegState.UNREGISTERED, f"unregister failed: {reason}")
        self._failures += 1
        nominal = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(self._failures - 1, 16))
        # Jitter (up to -25%) so accounts that failed together do not retry together.
        delay = nominal * (1.0 - 0.25 * self._rand())
        if retry_after is not None:  # RFC 3261 §20.33: the server knows when to come back
            delay = max(delay, float(retry_after))
        self._deadline = now + delay
        return self._set(RegState.FAILED, reason)


__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "MAX_CHALLENGES",
    "REFRESH_MARGIN",
    "Action",
    "RegState",
    "Registration",
    "RegistrationStatus",
    "SendRegister",
    "SipAccount",
    "StatusChanged",
    "split_hostport",
]
