"""Client transactions: INVITE (RFC 3261 §17.1.1 as amended by RFC 6026) and non-INVITE (§17.1.2)."""

from __future__ import annotations

import math
from enum import Enum

from callbridge.sip.message import Headers, SipRequest, SipResponse
from callbridge.sip.timers import TimerSettings, next_interval
from callbridge.sip.transaction import (
    Addr,
    ClientKey,
    Output,
    ResponseReceived,
    ScheduleFn,
    SendMessage,
    Timer,
    TransactionBase,
    TransactionTimeout,
)


class ClientState(Enum):
    CALLING = "Calling"  # INVITE only
    TRYING = "Trying"  # non-INVITE only
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"  # INVITE only, RFC 6026 §7.2
    TERMINATED = "Terminated"


class ClientTransaction(TransactionBase):
    """One client transaction. Created and driven by TransactionLayer; the TU only reads it."""

    def __init__(
        self, request: SipRequest, dest: Addr, settings: TimerSettings, schedule: ScheduleFn
    ) -> None:
        super().__init__(schedule)
        self.request = request
        self.dest = dest
        self.method = request.method
        branch = request.vias[0].branch
        assert branch is not None  # the layer guarantees a branch before building us
        self.key: ClientKey = (branch, request.method)
        self.is_invite = request.method == "INVITE"
        self.state = ClientState.CALLING if self.is_invite else ClientState.TRYING
        self.last_response: SipResponse | None = None
        self.ack: SipRequest | None = None  # the ACK we built for a non-2xx final response
        self._settings = settings
        self._interval = settings.timer_a if self.is_invite else settings.timer_e

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.method} {self.key[0]} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is ClientState.TERMINATED

    def _send_request(self) -> SendMessage:
        return SendMessage(self.request, self.dest)

    def _terminate(self) -> None:
        self.state = ClientState.TERMINATED
        self.timers.clear()

    # --- inputs ---------------------------------------------------------------------------

    def start(self, now: float) -> list[Output]:
        s = self._settings
        if self.is_invite:
            self._arm(Timer.A, now + s.timer_a)  # §17.1.1.2 (UDP)
            self._arm(Timer.B, now + s.timer_b)
        else:
            self._arm(Timer.E, now + s.timer_e)  # §17.1.2.2 (UDP)
            self._arm(Timer.F, now + s.timer_f)
        return [self._send_request()]

    def cancel_sent(self, now: float) -> None:
        """The TU sent a CANCEL for this INVITE. RFC 3261 §9.1: if no final response arrives within
        64*T1 the INVITE transaction is considered destroyed (otherwise a silent peer after 1xx
        would keep us in Proceeding forever)."""
        if self.is_invite and self.state in (ClientState.CALLING, ClientState.PROCEEDING):
            self._arm(Timer.CANCEL_GUARD, now + self._settings.timer_b)

    def on_response(self, response: SipResponse, now: float) -> list[Output]:
        if self.is_invite:
            return self._invite_response(response, now)
        return self._non_invite_response(response, now)

    def _deliver(self, response: SipResponse) -> ResponseReceived:
        self.last_response = response
        return ResponseReceived(response, self)

    def _invite_response(self, response: SipResponse, now: float) -> list[Output]:
        status = response.status
        match self.state:
            case ClientState.CALLING | ClientState.PROCEEDING if status < 200:
                # §17.1.1.2: stop retransmitting once the server shows it got the INVITE; Timer B
                # only matters in Calling.
                self.state = ClientState.PROCEEDING
                self._disarm(Timer.A, Timer.B)
                return [self._deliver(response)]
            case ClientState.CALLING | ClientState.PROCEEDING if status < 300:
                # RFC 6026 §8.4: stay Accepted for Timer M so 2xx retransmissions (and 2xx from
                # other forks) still reach the TU, which ACKs each of them.
                self.state = ClientState.ACCEPTED
                self._disarm(Timer.A, Timer.B, Timer.CANCEL_GUARD)
                self._arm(Timer.M, now + self._settings.timer_m)
                return [self._deliver(response)]
            case ClientState.CALLING | ClientState.PROCEEDING:
                # §17.1.1.2: 3xx-6xx -> Completed; the transaction itself ACKs (§17.1.1.3).
                self.state = ClientState.COMPLETED
                self._disarm(Timer.A, Timer.B, Timer.CANCEL_GUARD)
                self._arm(Timer.D, now + self._settings.timer_d)
                self.ack = make_ack_for_non2xx(self.request, response)
                return [SendMessage(self.ack, self.dest), self._deliver(response)]
            case ClientState.ACCEPTED if 200 <= status < 300:
                return [ResponseReceived(response, self)]
            case ClientState.COMPLETED if status >= 300:
                # §17.1.1.2: a retransmitted final response means our ACK was lost.
                assert self.ack is not None
                return [SendMessage(self.ack, self.dest)]
            case ClientState.COMPLETED if 200 <= status < 300:
                # A forking proxy forwards every 2xx even after another branch failed; the TU
                # must ACK (and normally BYE) it (§13.2.2.4), so do not swallow it.
                return [ResponseReceived(response, self)]
            case _:
                return []

    def _non_invite_response(self, response: SipResponse, now: float) -> list[Output]:
        match self.state:
            case ClientState.TRYING | ClientState.PROCEEDING if response.status < 200:
                self.state = ClientState.PROCEEDING
                return [self._deliver(response)]
            case ClientState.TRYING | ClientState.PROCEEDING:
                # §17.1.2.2: Timer K absorbs retransmitted final responses.
                self.state = ClientState.COMPLETED
                self._disarm(Timer.E, Timer.F)
                self._arm(Timer.K, now + self._settings.timer_k)
                return [self._deliver(response)]
            case _:
                return []

    def on_timer(self, timer: Timer, now: float) -> list[Output]:
        s = self._settings
        match timer, self.state:
            case Timer.A, ClientState.CALLING:
                # §17.1.1.2: Timer A doubles without a cap; Timer B ends it.
                self._interval = next_interval(self._interval, math.inf)
                self._arm(Timer.A, now + self._interval)
                return [self._send_request()]
            case Timer.E, ClientState.TRYING:
                self._interval = next_interval(self._interval, s.t2)
                self._arm(Timer.E, now + self._interval)
                return [self._send_request()]
            case Timer.E, ClientState.PROCEEDING:
                # §17.1.2.2: after a provisional response, retransmit every T2.
                self._interval = s.t2
                self._arm(Timer.E, now + self._interval)
                return [self._send_request()]
            case (Timer.B, ClientState.CALLING) | (
                Timer.F,
                ClientState.TRYING | ClientState.PROCEEDING,
            ):
                self._terminate()
                return [TransactionTimeout(self)]
            case Timer.CANCEL_GUARD, ClientState.CALLING | ClientState.PROCEEDING:
                self._terminate()
                return [TransactionTimeout(self)]
            case (
                (Timer.D, ClientState.COMPLETED)
                | (Timer.K, ClientState.COMPLETED)
                | (Timer.M, ClientState.ACCEPTED)
            ):
                self._terminate()
                return []
            case _:
                return []


def make_ack_for_non2xx(invite: SipRequest, response: SipResponse) -> SipRequest:
    """RFC 3261 §17.1.1.3: the ACK for a 3xx-6xx is part of the INVITE transaction: same
    Request-URI, Call-ID, From, CSeq number and single top Via (same branch) as the INVITE, To from
    the response (it carries the tag), and the INVITE's Route headers."""
    h = invite.headers
    items: list[tuple[str, str]] = [("Via", str(invite.vias[0]))]
    items.extend(("Route", r) for r in h.get_all("Route"))
    items.append(("Max-Forwards", "70"))
    items.append(("From", _required(h, "From")))
    items.append(("To", _required(response.headers, "To")))
    items.append(("Call-ID", invite.call_id))
    items.append(("CSeq", f"{invite.cseq.number} ACK"))
    return SipRequest("ACK", invite.uri, Headers(tuple(items)))


def make_cancel(request: SipRequest) -> SipRequest:
    """RFC 3261 §9.1: CANCEL for a pending `request` (normally an INVITE): same Request-URI,
    Call-ID, From, To and CSeq number, the single top Via (same branch, so §9.2 can match it) and
    the same Route headers. Send it with TransactionLayer.send_request to the INVITE's
    destination, and only after a provisional response arrived (§9.1)."""
    h = request.headers
    items: list[tuple[str, str]] = [("Via", str(request.vias[0]))]
    items.extend(("Route", r) for r in h.get_all("Route"))
    items.append(("Max-Forwards", "70"))
    items.append(("From", _required(h, "From")))
    items.append(("To", _required(h, "To")))
    items.append(("Call-ID", request.call_id))
    items.append(("CSeq", f"{request.cseq.number} CANCEL"))
    return SipRequest("CANCEL", request.uri, Headers(tuple(items)))


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise ValueError(f"missing {name} header")
    return value
