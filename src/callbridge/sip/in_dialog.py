"""Requests inside an established dialog, for either role (RFC 3261 §12.2, §14, §15).

Incoming: BYE, re-INVITE (handed to the app as ReInvite, answered with answer_reinvite),
NOTIFY for our REFER, and OPTIONS / INFO / UPDATE. Outgoing: BYE and REFER (blind transfer,
RFC 3515) with their responses, timeouts and the transfer's own deadline.
"""

from __future__ import annotations

from callbridge.sip.calls import ALLOW, Call, CallState, CallTable
from callbridge.sip.message import SipRequest, SipResponse, Via, make_response
from callbridge.sip.refer import SIPFRAG, TRANSFER_TIMEOUT, Transfer, refer_to_uri
from callbridge.sip.transaction import ClientTransaction, ServerTransaction
from callbridge.sip.ua_events import Output, ReInvite, UaError
from callbridge.sip.uri import SipUri


class InDialog:
    def __init__(self, table: CallTable) -> None:
        self.table = table
        self.transfer_timeout = TRANSFER_TIMEOUT

    # ---- requests from the peer ---------------------------------------------------------------

    def on_request(
        self, req: SipRequest, tx: ServerTransaction, to_tag: str, now: float
    ) -> list[Output]:
        table = self.table
        key = (req.call_id, to_tag, req.from_.tag or "")
        call = table.by_dialog.get(key)
        if call is None or call.dialog is None:
            return table.respond(tx, make_response(req, 481), now)  # §12.2.2
        error = call.dialog.check_remote_request(req)
        if error is not None:
            return table.respond(tx, error, now)
        match req.method:
            case "BYE":
                out = table.respond(tx, make_response(req, 200), now)
                if call.state is not CallState.ENDED:
                    out.append(table.end(call, "remote_bye"))
                return out
            case "INVITE":
                if call.reinvite_tx is not None:  # §14.2: glare on our side
                    return table.respond(
                        tx, make_response(req, 500, headers=[("Retry-After", "1")]), now
                    )
                call.reinvite_tx = tx
                return [ReInvite(call.id, req)]
            case "NOTIFY":
                return self._on_notify(call, req, tx, now)
            case "OPTIONS" | "INFO" | "UPDATE":
                return table.respond(tx, make_response(req, 200), now)
            case _:
                return table.respond(tx, make_response(req, 405, headers=[("Allow", ALLOW)]), now)

    def _on_notify(
        self, call: Call, req: SipRequest, tx: ServerTransaction, now: float
    ) -> list[Output]:
        transfer = call.transfer
        if transfer is None or not transfer.matches(req):
            # RFC 6665 §4.1.3: a NOTIFY for no subscription of ours (an unknown package
            # gets 489, §8.2.1).
            event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
            status = 489 if event and event != "refer" else 481
            return self.table.respond(tx, make_response(req, status), now)
        status, reason, events = transfer.on_notify(req)
        headers = [("Accept", SIPFRAG)] if status == 415 else []
        out = self.table.respond(tx, make_response(req, status, reason, headers=headers), now)
        out.extend(events)
        return out

    def answer_reinvite(
        self, call_id: str, sdp: bytes | None, now: float, status: int = 200
    ) -> list[Output]:
        call = self.table.calls.get(call_id)
        if call is None or call.reinvite_tx is None:
            raise UaError(f"no re-INVITE pending on {call_id}")
        tx, call.reinvite_tx = call.reinvite_tx, None
        req = tx.request
        if status >= 300:
            return self.table.respond(tx, make_response(req, status), now)
        headers = [*self.table.contact_hdr(call), ("Allow", ALLOW)]
        if sdp is not None:
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(req, 200, headers=headers, body=sdp or b"")
        return self.table.respond(tx, resp, now)

    # ---- our requests --------------------------------------------------------------------------

    def send_bye(self, call: Call, now: float) -> list[Output]:
        assert call.dialog is not None
        bye, hop = call.dialog.create_request("BYE", via=Via.parse(self.table.via_value(call)))
        bye = SipRequest(
            bye.method,
            bye.uri,
            bye.headers.set("User-Agent", self.table.local.user_agent),
            bye.body,
        )
        call.state = CallState.ENDING
        call.bye_sent = True
        _, out = self.table.send(call, bye, self.table.dialog_dest(call, hop), now)
        return out

    def refer_target(self, call_id: str, target: str) -> str:
        call = self.table.calls.get(call_id)
        if call is None or call.dialog is None:
            raise UaError(f"call {call_id} has no dialog")
        remote = call.dialog.remote_uri.uri
        peer = remote if isinstance(remote, SipUri) else call.dialog.remote_target
        return refer_to_uri(target, peer)

    def refer(self, call_id: str, refer_to: str, now: float) -> list[Output]:
        call = self.table.calls.get(call_id)
        if call is None or call.state is not CallState.CONFIRMED or call.dialog is None:
            raise UaError(f"call {call_id} is not established")
        if call.transfer is not None and not call.transfer.done:
            raise UaError(f"a transfer is already in progress on {call_id}")
        local = call.dialog.local_uri
        refer, hop = call.dialog.create_request(
            "REFER",
            via=Via.parse(self.table.via_value(call)),
            extra_headers=(
                # Angle brackets always: a URI with ';' or '?' would otherwise be misread (§2.1).
                ("Refer-To", f"<{refer_to}>"),
                ("Referred-By", f"<{local.uri}>"),  # RFC 3892: who asked for the transfer
                ("User-Agent", self.table.local.user_agent),
            ),
        )
        _, out = self.table.send(call, refer, self.table.dialog_dest(call, hop), now)
        call.transfer = Transfer(call.id, refer.cseq.number, now + self.transfer_timeout)
        return out

    def on_response(self, call: Call, resp: SipResponse, tx: ClientTransaction) -> list[Output]:
        """A response to our BYE or REFER."""
        if resp.status < 200:
            return []
        self.table.forget_client_tx(tx)
        if resp.cseq.method == "BYE":
            if call.state is not CallState.ENDED:
                return [self.table.end(call, "local_bye")]
            return []
        if call.dialog is not None:
            call.dialog.on_target_refresh_response(resp)
        if call.transfer is not None and call.state is CallState.CONFIRMED:
            return list(call.transfer.on_refer_response(resp.status, resp.reason))
        return []

    def on_timeout(self, call: Call, tx: ClientTransaction) -> list[Output]:
        """Our BYE or REFER got no final response (Timer F)."""
        if tx.method == "BYE" and call.state is not CallState.ENDED:
            return [self.table.end(call, "local_bye", 408)]
        if tx.method == "REFER" and call.transfer is not None:
            return list(call.transfer.on_refer_timeout())
        return []

    # ---- the transfers' own clock ----------------------------------------------------------------

    def poll(self, now: float) -> list[Output]:
        out: list[Output] = []
        for call in list(self.table.calls.values()):
            if call.transfer is not None:
                out.extend(call.transfer.on_timeout(now))
        return out

    def deadlines(self) -> list[float]:
        return [
            call.transfer.deadline
            for call in self.table.calls.values()
            if call.transfer is not None and not call.transfer.done
        ]
