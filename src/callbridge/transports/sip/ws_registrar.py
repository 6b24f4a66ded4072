"""REGISTER over WebSocket flows (RFC 3261 §10.3, RFC 7118 §5): a web phone registers before
it calls, and shows itself offline until it has.

The user agent answers REGISTER with 405 (it is no registrar for UDP peers, which have nothing
to register for); on a WebSocket flow the registrar here takes it first. Who may register is
what inbound calls already enforce (transports.sip.inbound): the source ACL (`sip.allow_from`)
for the address-of-record's user, and digest auth with `sip.auth_users` whenever users are
configured (a registration claims an identity, so it is challenged whatever `auth_routes`
says); the authenticated user must be the address-of-record's. Without configured users a
registration is accepted from any allowed source, as a call to an open route is.

A binding lives on its flow: it is dropped when the connection closes (RFC 5626 §4.4.1: the
flow is the only way to reach the phone), when it expires, or on expires=0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.sip.digest_server import AuthOutcome
from callbridge.sip.grammar import replace_params
from callbridge.sip.headers import SipParseError
from callbridge.sip.message import SipRequest, SipResponse, make_response, new_tag
from callbridge.sip.uri import NameAddr, UriParseError
from callbridge.transports.sip.inbound import InboundGate
from callbridge.transports.sip.ws_flow import Flow

__all__ = ["MAX_BINDINGS_PER_FLOW", "MAX_EXPIRES", "Binding", "WsRegistrar"]

log = logging.getLogger("callbridge.transports.sip.ws")

MAX_EXPIRES = 3600  # what we grant at most (§10.3 step 7 lets the registrar shorten it)
DEFAULT_EXPIRES = 600
MAX_BINDINGS_PER_FLOW = 4  # one phone, a contact or two; more is not a phone


@dataclass(frozen=True, slots=True)
class Binding:
    aor_user: str
    contact: str  # the Contact value as the phone wrote it (its params echoed in our 200)
    uri: str  # the contact URI: the binding's key (§10.3 step 8 compares URIs)
    expires_at: float  # monotonic
    auth_user: str = ""


def _expires(contact: NameAddr, req: SipRequest) -> int | None:
    raw = contact.param("expires") or req.headers.get("Expires")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 10:
        raise SipParseError(f"Malformed expires: {raw[:20]!r}")
    return int(raw)


class WsRegistrar:
    def __init__(
        self,
        gate: InboundGate,
        clock: Clock,
        send: Callable[[SipResponse, Flow], None],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.gate = gate
        self.clock = clock
        self._send = send
        self._wall = wall  # nonces carry wall time (sip/digest_server.py)
        self._bindings: dict[Addr, dict[str, Binding]] = {}  # flow -> contact URI -> binding

    def bindings(self) -> list[Binding]:
        now = self.clock.now()
        return [b for per in self._bindings.values() for b in per.values() if b.expires_at > now]

    def flow_closed(self, flow: Flow) -> None:
        gone = self._bindings.pop(flow.addr, {})
        for b in gone.values():
            event(log, "sip.ws_unregistered", aor=b.aor_user, remote=flow.label,
                  reason="flow_closed")  # fmt: skip

    def handle(self, req: SipRequest, flow: Flow) -> bool:
        """Answer a REGISTER from `flow`; False: not one we can answer (the UA then does)."""
        if req.method != "REGISTER":
            return False
        try:
            user = req.to.sip_uri.user or ""
            contacts = req.contacts
            req.cseq  # noqa: B018 - the headers a response copies must be well formed
            req.call_id  # noqa: B018
        except (SipParseError, UriParseError):
            return False
        self._send(self._answer(req, user, contacts, flow), flow)
        return True

    def _answer(
        self, req: SipRequest, user: str, contacts: list[NameAddr], flow: Flow
    ) -> SipResponse:
        gate, ip = self.gate, flow.remote[0]
        refusal = gate.policy.refusal(user, ip)
        if refusal is not None or not user:
            event(log, "sip.ws_register_refused", logging.WARNING, aor=user, remote=flow.label,
                  status=403, reason=refusal or "no user in To")  # fmt: skip
            return make_response(req, 403, to_tag=new_tag())
        auth_user = ""
        auth = gate.auth
        if auth is not None:
            now = self._wall()
            result = auth.check("REGISTER", req.headers.get_all("Authorization"), now)
            if result.outcome is AuthOutcome.FAILED or (
                result.outcome is AuthOutcome.OK and result.username != user
            ):
                reason = result.reason if result.outcome is AuthOutcome.FAILED else "not the AoR"
                event(log, "sip.ws_register_refused", logging.WARNING, aor=user,
                      auth_user=result.username, remote=flow.label, status=403,
                      reason=reason)  # fmt: skip
                gate.auth_failed(ip, result.username)
                return make_response(req, 403, to_tag=new_tag())
            if result.outcome is not AuthOutcome.OK:
                # RFC 3261 §22.1 / §10.3 step 4: challenge; the phone retries with credentials.
                stale = result.outcome is AuthOutcome.STALE
                challenges = [("WWW-Authenticate", c) for c in auth.challenges(now, stale=stale)]
                return make_response(req, 401, to_tag=new_tag(), headers=challenges)
            auth_user = result.username
        try:
            return self._update(req, user, contacts, flow, auth_user)
        except SipParseError as exc:
            return make_response(req, 400, str(exc)[:80], to_tag=new_tag())

    def _update(
        self, req: SipRequest, user: str, contacts: list[NameAddr], flow: Flow, auth_user: str
    ) -> SipResponse:
        """§10.3 steps 6-8: add, refresh or remove this flow's bindings of `user`."""
        now = self.clock.now()
        mine = self._bindings.setdefault(flow.addr, {})
        for key in [k for k, b in mine.items() if b.expires_at <= now]:
            del mine[key]
        raw_contacts = req.headers.get_all("Contact")
        if any(c.strip() == "*" for c in raw_contacts):
            # §10.3 step 6: "*" only with Expires: 0 (and alone) removes every binding.
            if len(raw_contacts) != 1 or (req.headers.get("Expires") or "").strip() != "0":
                return make_response(req, 400, "Invalid wildcard Contact", to_tag=new_tag())
            for key in [k for k, b in mine.items() if b.aor_user == user]:
                del mine[key]
            event(log, "sip.ws_unregistered", aor=user, remote=flow.label, reason="wildcard")
            return make_response(req, 200, to_tag=new_tag())
        for contact in contacts:
            uri = str(contact.uri)
            expires = _expires(contact, req)
            if expires == 0:
                if mine.pop(uri, None) is not None:
                    event(log, "sip.ws_unregistered", aor=user, remote=flow.label,
                          reason="expires=0")  # fmt: skip
                continue
            granted = min(MAX_EXPIRES, DEFAULT_EXPIRES if expires is None else expires)
            if uri not in mine and len(mine) >= MAX_BINDINGS_PER_FLOW:
                return make_response(req, 403, "Too many bindings", to_tag=new_tag())
            mine[uri] = Binding(user, str(contact), uri, now + granted, auth_user)
            event(log, "sip.ws_registered", aor=user, remote=flow.label, expires=granted,
                  auth_user=auth_user)  # fmt: skip
        if not mine:
            del self._bindings[flow.addr]
        # §10.3 step 8: the 200 lists every current binding of the AoR, each with its expiry.
        listed = [
            ("Contact", _with_expires(b.contact, round(b.expires_at - now)))
            for b in mine.values()
            if b.aor_user == user
        ]
        return make_response(req, 200, to_tag=new_tag(), headers=listed)


def _with_expires(contact: str, seconds: int) -> str:
    addr = NameAddr.parse(contact)
    params = replace_params(addr.params, {"expires": str(max(0, seconds))})
    return str(NameAddr(addr.uri, addr.display_name, params))
