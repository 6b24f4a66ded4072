"""Who gets in: the guard's admission limits, the source ACLs and digest auth for new INVITEs,
and the matching answer to OPTIONS. Decides; the transport sends what it decided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.sip.access import InboundPolicy
from callbridge.sip.digest_server import AuthOutcome, DigestServer
from callbridge.sip.message import SipRequest
from callbridge.sip.overload import Guard, Refusal
from callbridge.sip.ua import OptionsAnswer
from callbridge.sip.uri import UriParseError

__all__ = ["REJECT_STATUS", "InboundGate", "Refused", "request_user"]

log = logging.getLogger("callbridge.transports.sip.transport")

REJECT_STATUS = {Rejection.NOT_FOUND: 404, Rejection.BUSY: 486, Rejection.UNAVAILABLE: 503}


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer the INVITE with this status (and headers: a 401's challenges). `failed_user`:
    credentials failed; report it (`auth_failed`) once the answer is out."""

    status: int
    headers: list[tuple[str, str]]
    failed_user: str | None = None


def request_user(req: SipRequest) -> str:
    """The Request-URI's user: the route an INVITE or OPTIONS asks for ("" if none)."""
    try:
        return req.request_uri.user or ""
    except UriParseError:
        return ""


class InboundGate:
    def __init__(
        self,
        *,
        policy: InboundPolicy,
        auth: DigestServer | None,
        acceptor: LegAcceptor,
        guard: Guard,
        clock: Clock,
        report_bans: Callable[[], None],
    ) -> None:
        self.policy = policy
        self.auth = auth
        self.acceptor = acceptor
        self.guard = guard
        self.clock = clock
        self._report_bans = report_bans
        self._overload_logged: dict[str, tuple[float, int]] = {}  # limit -> (last log, since)

    def admission(self, source: str, now: float, calls: int, unconfirmed: int) -> Refusal | None:
        """New calls: the guard's limits (a refusal becomes a stateless 503 in the UA)."""
        refusal = self.guard.admit_call(source, calls, now, unconfirmed)
        if refusal is not None:
            # One line per limit per second at most: a flood must not become a log flood.
            last, since = self._overload_logged.get(refusal.limit, (-1.0, 0))
            if now - last >= 1.0:
                event(log, "sip.overload", logging.WARNING, limit=refusal.limit,
                      reason=refusal.reason, refused=since + 1, source=source)  # fmt: skip
                self._overload_logged[refusal.limit] = (now, 0)
            else:
                self._overload_logged[refusal.limit] = (last, since + 1)
        return refusal

    def options_status(self, req: SipRequest, source: Addr) -> OptionsAnswer:
        """RFC 3261 §11.2: OPTIONS gets the answer an INVITE to the same user would get. A
        user-less Request-URI is a probe of this node (load balancers): 200. Where the route
        needs digest auth, an unauthenticated OPTIONS is challenged whether the route exists
        or not, so route names cannot be listed (svwar) without a password."""
        user = request_user(req)
        if not user:
            return 200, []
        if self.policy.refusal(user, source[0]) is not None:
            return 403, []
        auth = self.auth
        if auth is not None and self.policy.needs_auth(user):
            now = time.time()
            result = auth.check("OPTIONS", req.headers.get_all("Authorization"), now)
            if result.outcome is AuthOutcome.FAILED:
                self.auth_failed(source[0], result.username)
                return 403, []
            if result.outcome is not AuthOutcome.OK:
                stale = result.outcome is AuthOutcome.STALE
                return 401, [("WWW-Authenticate", c) for c in auth.challenges(now, stale=stale)]
        try:
            self.acceptor.admit(LegInfo(transport="sip", direction="inbound", local_user=user))
        except Rejection as rej:
            return REJECT_STATUS.get(rej.kind, 480), []
        return 200, []

    def check_invite(
        self, req: SipRequest, user: str, source: str, info: LegInfo
    ) -> Refused | None:
        """The ACLs, then digest auth where the route needs it: None to go on, else the 403 or
        401 to answer. Adds the authenticated user to `info.ids`."""
        policy = self.policy
        refusal = policy.refusal(user, source)
        if refusal is not None:
            event(log, "call.rejected", logging.WARNING, sip_call_id=req.call_id, user=user,
                  status=403, reason=refusal)  # fmt: skip
            return Refused(403, [])
        auth = self.auth
        if auth is None or not policy.needs_auth(user):
            return None
        now = time.time()  # nonces carry wall time: they outlive a restart's monotonic clock
        result = auth.check("INVITE", req.headers.get_all("Authorization"), now)
        if result.outcome is AuthOutcome.OK:
            info.ids["auth_user"] = result.username
            return None
        if result.outcome is AuthOutcome.FAILED:
            event(log, "call.auth_failed", logging.WARNING, sip_call_id=req.call_id, user=user,
                  auth_user=result.username, source=source, reason=result.reason)  # fmt: skip
            return Refused(403, [], failed_user=result.username)
        # RFC 3261 §22.1: 401 with our challenges; the caller resends with credentials.
        stale = result.outcome is AuthOutcome.STALE
        event(log, "call.challenged", sip_call_id=req.call_id, user=user, stale=stale)
        return Refused(401, [("WWW-Authenticate", c) for c in auth.challenges(now, stale=stale)])

    def auth_failed(self, source: str, user: str) -> None:
        """Count a failed authentication towards the guard's guessing ban."""
        self.guard.auth_failed(source, user, self.clock.now())
        self._report_bans()
