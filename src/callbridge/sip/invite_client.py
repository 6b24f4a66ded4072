"""The INVITE client side of a call, the UAC (RFC 3261 §13.2, §17.1.1), with digest retry.

invite() places the call; provisional responses become CallProgress (with early media SDP),
a 2xx is ACKed and becomes CallAnswered, a 401/407 is answered once per nonce with credentials
(§22.2), other failures end the attempt. Hanging up before the answer is a CANCEL (§9.1).
"""

from __future__ import annotations

from collections.abc import Callable

from callbridge.sip.calls import (
    ALLOW,
    Call,
    CallState,
    CallTable,
    LocalIdentity,
    Outgoing,
    Role,
    hop_addr,
    wire,
)
from callbridge.sip.challenge import AuthRefused, ChallengeAnswerer
from callbridge.sip.client_transaction import make_cancel
from callbridge.sip.dialog import Dialog
from callbridge.sip.digest import DigestClient, with_credentials
from callbridge.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    Via,
    new_branch,
    new_tag,
)
from callbridge.sip.transaction import ClientTransaction
from callbridge.sip.ua_events import (
    Addr,
    CallAnswered,
    CallProgress,
    Datagram,
    Output,
)
from callbridge.sip.uri import NameAddr, SipUri, UriParseError

SendBye = Callable[[Call, float], list[Output]]


class InviteClient:
    def __init__(self, table: CallTable, send_bye: SendBye) -> None:
        self.table = table
        self._send_bye = send_bye

    def invite(
        self,
        target: SipUri,
        dest: Addr,
        sdp: bytes,
        now: float,
        *,
        from_user: str = "callbridge",
        display_name: str | None = None,
        local_host: str | None = None,
        from_uri: SipUri | None = None,
        route: str | None = None,
        auth: DigestClient | None = None,
    ) -> tuple[str, list[Output]]:
        """See UserAgent.invite."""
        table = self.table
        host = local_host or table.local.host
        me = LocalIdentity(host, table.local.port)
        call_id = f"{new_tag()}{table.next_number()}@{host}"
        tag = new_tag()
        uri = from_uri or SipUri("sip", host, user=from_user, port=table.local.port)
        from_ = NameAddr(uri, display_name)
        routes = (("Route", route),) if route else ()
        headers = Headers(
            (
                ("Via", f"SIP/2.0/UDP {me.hostport};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                *routes,
                ("From", str(from_.with_tag(tag))),
                ("To", str(NameAddr(target))),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:{from_user}@{me.hostport}>"),
                ("Allow", ALLOW),
                ("User-Agent", table.local.user_agent),
                ("Content-Type", "application/sdp"),
            )
        )
        request = SipRequest("INVITE", str(target), headers, sdp)
        cid = table.new_call_id()
        tx, sends = table.layer.send_request(request, dest, now)
        answerer = ChallengeAnswerer(auth) if auth is not None else None
        outgoing = Outgoing(tx, auth=answerer)
        table.add(Call(cid, Role.UAC, request, dest, tag, local_host=local_host, outgoing=outgoing))
        return cid, [wire(s) for s in sends]

    def hangup_early(self, call: Call, now: float) -> list[Output]:
        """§9.1: CANCEL once a provisional response arrived; before that, remember to."""
        attempt = call.attempt
        if not attempt.got_provisional:
            attempt.cancel_pending = True
            return []
        return self._send_cancel(call, now)

    # ---- responses -------------------------------------------------------------------------

    def on_response(
        self, call: Call, resp: SipResponse, tx: ClientTransaction, now: float
    ) -> list[Output]:
        """A response to our INVITE or to our CANCEL of it."""
        if resp.cseq.method == "CANCEL":
            if resp.status >= 200:
                self.table.forget_client_tx(tx)
            return []
        attempt = call.attempt
        status = resp.status
        if status < 200:
            if status > 100:
                attempt.got_provisional = True
                if attempt.cancel_pending:
                    attempt.cancel_pending = False
                    return self._send_cancel(call, now)
                sdp = resp.body if resp.content_type == "application/sdp" else b""
                return [CallProgress(call.id, status, resp.reason, sdp)]
            return []
        if status >= 300:
            if call.state is CallState.ENDED:
                return []
            challenged = status in (401, 407) and attempt.auth is not None
            if challenged and call.state is CallState.EARLY and not attempt.cancel_pending:
                return self._answer_challenge(call, attempt, resp, now)
            reason = "cancelled" if status == 487 else "rejected"
            return [self.table.end(call, reason, status)]
        return self._on_2xx(call, resp, now)

    def _on_2xx(self, call: Call, resp: SipResponse, now: float) -> list[Output]:
        # 2xx: dialog + ACK (§13.2.2.4); a second 2xx only needs the ACK again.
        if call.dialog is not None:
            return [Datagram(bytes(call.ack), call.peer)] if call.ack else []
        dialog = Dialog.from_uac(call.invite, resp)
        self.table.set_dialog(call, dialog)
        ack, hop = dialog.create_ack(call.invite.cseq.number, Via.parse(self.table.via_value(call)))
        call.ack = ack
        call.peer = hop_addr(hop, call.peer)
        out: list[Output] = [Datagram(bytes(ack), call.peer)]
        if call.attempt.cancel_pending or call.state is CallState.ENDED:
            # We wanted out before the answer: confirm then BYE (§15).
            call.state = CallState.CONFIRMED
            out.extend(self._send_bye(call, now))
            return out
        call.state = CallState.CONFIRMED
        out.append(CallAnswered(call.id, resp))
        return out

    def _answer_challenge(
        self, call: Call, attempt: Outgoing, resp: SipResponse, now: float
    ) -> list[Output]:
        """§22.2: resend the INVITE with credentials (same Call-ID and tags, CSeq + 1, a new
        transaction; the transaction layer has ACKed the 401/407, §17.1.1.3)."""
        assert attempt.auth is not None
        header = attempt.auth.answer(resp, "INVITE", call.invite.uri)
        if isinstance(header, AuthRefused):
            return [self.table.end(call, "auth_failed", resp.status, header.detail)]
        attempt.credentials[(header.name, header.realm)] = header  # a proxy's and a UAS's realm
        invite = with_credentials(call.invite, list(attempt.credentials.values()))
        self.table.forget_client_tx(attempt.tx)
        tx, out = self.table.send(call, invite, call.peer, now)
        attempt.tx = tx
        attempt.got_provisional = False
        call.invite = tx.request
        return out

    def on_stray_response(self, resp: SipResponse) -> list[Output]:
        """A 2xx retransmission after the INVITE transaction is gone: ACK it again (§13.2.2.4)."""
        if resp.status // 100 != 2:
            return []
        try:
            if resp.cseq.method != "INVITE":
                return []
            key = (resp.call_id, resp.from_.tag or "", resp.to.tag or "")
        except (SipParseError, UriParseError):
            return []
        call = self.table.by_dialog.get(key)
        if call is not None and call.ack is not None and call.role is Role.UAC:
            return [Datagram(bytes(call.ack), call.peer)]
        return []

    def on_timeout(self, call: Call, tx: ClientTransaction) -> list[Output]:
        if tx.method == "INVITE" and call.state is CallState.EARLY:
            return [self.table.end(call, "timeout", 408)]
        return []

    def _send_cancel(self, call: Call, now: float) -> list[Output]:
        cancel = make_cancel(call.invite)  # §9.1
        call.state = CallState.ENDING
        _, out = self.table.send(call, cancel, call.peer, now)
        return out
