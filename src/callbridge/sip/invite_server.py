"""The INVITE server side of a call, the UAS (RFC 3261 §13.3, §17.2.1).

A new INVITE becomes an IncomingCall; the app then rings, answers or rejects it. CANCEL ends
the unanswered call with 487, the ACK for our 2xx confirms it, and a 2xx never ACKed ends it
with a BYE (§13.3.1.4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from callbridge.sip.calls import ALLOW, Call, CallState, CallTable, Role
from callbridge.sip.dialog import Dialog
from callbridge.sip.message import SipParseError, SipRequest, make_response, new_tag
from callbridge.sip.transaction import ServerTransaction
from callbridge.sip.ua_events import Addr, CallConfirmed, IncomingCall, Output, UaError
from callbridge.sip.uri import NameAddr, SipUri, UriParseError

SendBye = Callable[[Call, float], list[Output]]


class InviteServer:
    def __init__(self, table: CallTable, send_bye: SendBye) -> None:
        self.table = table
        self._send_bye = send_bye

    # ---- the peer's INVITE and what follows it -------------------------------------------------

    def on_invite(
        self, req: SipRequest, source: Addr, tx: ServerTransaction, now: float
    ) -> list[Output]:
        """A new (out-of-dialog) INVITE that the UA accepts to handle."""
        table = self.table
        problem = dialog_problem(req)
        if problem is not None:
            return table.respond(tx, make_response(req, 400, problem), now)
        cid = table.new_call_id()
        table.add(Call(cid, Role.UAS, req, source, new_tag(), server_tx=tx))
        # §17.2.1: 100 at once so the caller stops retransmitting while we set up media.
        out = table.respond(tx, make_response(req, 100), now)
        out.append(IncomingCall(cid, req, source))
        return out

    def on_cancel(self, tx: ServerTransaction, now: float) -> list[Output]:
        """§9.2: CANCEL for an INVITE we have not answered yet ends it with 487."""
        call = self.table.by_server_tx.get(id(tx))
        if call is None or call.state is not CallState.EARLY:
            return []
        resp = make_response(call.invite, 487, to_tag=call.local_tag)
        out = self.table.respond(tx, resp, now)
        out.append(self.table.end(call, "cancelled", 487))
        return out

    def on_ack(self, ack: SipRequest) -> list[Output]:
        try:
            key = (ack.call_id, ack.to.tag or "", ack.from_.tag or "")
        except (SipParseError, UriParseError):
            return []
        call = self.table.by_dialog.get(key)
        if call is None or call.role is not Role.UAS:
            return []
        first = call.ack is None
        call.ack = ack
        if not first:
            return []
        sdp = ack.body if ack.body and ack.content_type == "application/sdp" else None
        return [CallConfirmed(call.id, sdp)]

    def on_timeout(self, tx: ServerTransaction, now: float) -> list[Output]:
        call = self.table.by_server_tx.get(id(tx))
        if call is None or call.state is not CallState.CONFIRMED or call.ack is not None:
            return []
        # §13.3.1.4: no ACK for our 2xx within 64*T1 — confirm and immediately end with BYE.
        out = self._send_bye(call, now)
        out.append(self.table.end(call, "no_ack", 408))
        return out

    # ---- the app's answers -------------------------------------------------------------------

    def ring(self, call_id: str, now: float) -> list[Output]:
        call, tx = self._early(call_id)
        headers = self.table.contact_hdr(call)
        resp = make_response(
            call.invite, 180, to_tag=call.local_tag, headers=headers, record_route=True
        )
        return self.table.respond(tx, resp, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> list[Output]:
        call, tx = self._early(call_id)
        table = self.table
        resp = make_response(
            call.invite,
            200,
            to_tag=call.local_tag,
            headers=[
                *table.contact_hdr(call),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
            body=sdp,
            record_route=True,
        )
        table.set_dialog(call, Dialog.from_uas(call.invite, call.local_tag, table.contact(call)))
        call.state = CallState.CONFIRMED
        return table.respond(tx, resp, now)

    def reject(
        self,
        call_id: str,
        status: int,
        now: float,
        reason: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> list[Output]:
        call, tx = self._early(call_id)
        headers: list[tuple[str, str]] = list(extra_headers)  # e.g. WWW-Authenticate on a 401
        if status == 405:
            headers.append(("Allow", ALLOW))
        resp = make_response(call.invite, status, reason, to_tag=call.local_tag, headers=headers)
        out = self.table.respond(tx, resp, now)
        out.append(self.table.end(call, "rejected", status))
        return out

    def _early(self, call_id: str) -> tuple[Call, ServerTransaction]:
        call = self.table.calls.get(call_id)
        if (
            call is None
            or call.role is not Role.UAS
            or call.state is not CallState.EARLY
            or call.server_tx is None
        ):
            raise UaError(f"call {call_id} is not an unanswered incoming call")
        return call, call.server_tx


def dialog_problem(invite: SipRequest) -> str | None:
    """Why this INVITE cannot create a dialog (checked before we ring, not when answering)."""
    if not invite.contacts and (invite.vias[0].branch or "").startswith("z9hG4bK"):
        return "Missing Contact"  # §8.1.1.8: an RFC 3261 INVITE must have one
    try:
        Dialog.from_uas(invite, "probe", NameAddr(SipUri("sip", "invalid")))
    except (ValueError, SipParseError, UriParseError) as exc:
        return f"Bad Contact or Record-Route: {exc}"[:100]
    return None
