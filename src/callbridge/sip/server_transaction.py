"""Server transactions: INVITE (RFC 3261 §17.2.1 as amended by RFC 6026) and non-INVITE (§17.2.2)."""

from __future__ import annotations

from enum import Enum

from callbridge.sip.message import SipRequest, SipResponse, make_response
from callbridge.sip.timers import TimerSettings, next_interval
from callbridge.sip.transaction import (
    Addr,
    Output,
    RequestReceived,
    ScheduleFn,
    SendMessage,
    ServerKey,
    Timer,
    TransactionBase,
    TransactionTimeout,
    response_address,
)


class ServerState(Enum):
    TRYING = "Trying"  # non-INVITE only
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # INVITE only
    ACCEPTED = "Accepted"  # INVITE only, RFC 6026 §7.1
    TERMINATED = "Terminated"


class ServerTransaction(TransactionBase):
    """One server transaction. Created and driven by TransactionLayer; the TU answers through
    TransactionLayer.respond(tx, response, now)."""

    def __init__(
        self,
        request: SipRequest,
        source: Addr,
        key: ServerKey,
        settings: TimerSettings,
        schedule: ScheduleFn,
    ) -> None:
        super().__init__(schedule)
        self.request = request  # with the top Via already stamped (RFC 3581)
        self.source = source
        self.key = key
        self.method = request.method
        self.is_invite = request.method == "INVITE"
        self.state = ServerState.PROCEEDING if self.is_invite else ServerState.TRYING
        self.last_response: SipResponse | None = None
        self.acked = False  # Accepted state: ACK for the 2xx seen
        # Responses follow the Via the request arrived with (§18.2.2, RFC 3581), fixed per tx.
        self.response_addr = response_address(request.vias[0], source)
        self._settings = settings
        self._interval = settings.timer_g

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.method} {self.state.value} from {self.source}>"

    @property
    def terminated(self) -> bool:
        return self.state is ServerState.TERMINATED

    @property
    def to_tag(self) -> str | None:
        """The To tag this transaction answers with (from its last response, else the request)."""
        if self.last_response is not None:
            tag = self.last_response.to.tag
            if tag is not None:
                return tag
        return self.request.to.tag

    def _resend(self) -> list[Output]:
        if self.last_response is None:
            return []
        return [SendMessage(self.last_response, self.response_addr)]

    def _send(self, response: SipResponse) -> list[Output]:
        self.last_response = response
        return [SendMessage(response, self.response_addr)]

    def _terminate(self) -> None:
        self.state = ServerState.TERMINATED
        self.timers.clear()

    # --- inputs ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        delay = self._settings.trying_delay
        if self.is_invite and delay is not None:
            self._arm(Timer.TRYING, now + delay)

    def on_retransmission(self, now: float) -> list[Output]:
        """The same request arrived again: absorb it, repeating our last response (§17.2.1/2)."""
        match self.state:
            case ServerState.PROCEEDING if self.is_invite and self.last_response is None:
                # The client is retransmitting, so it needs to hear from us now (§17.2.1).
                self._disarm(Timer.TRYING)
                return self._send(make_response(self.request, 100))
            case ServerState.PROCEEDING | ServerState.COMPLETED | ServerState.ACCEPTED:
                return self._resend()
            case _:
                # Trying (non-INVITE, nothing to repeat yet) and Confirmed absorb silently.
                return []

    def on_ack(self, ack: SipRequest, source: Addr, now: float) -> list[Output]:
        """An ACK matched this INVITE transaction (non-2xx ACK by branch, or a 2xx ACK by dialog)."""
        match self.state:
            case ServerState.COMPLETED:
                # §17.2.1: the ACK for our 3xx-6xx stops Timer G/H; Timer I absorbs its copies.
                self.state = ServerState.CONFIRMED
                self._disarm(Timer.G, Timer.H)
                self._arm(Timer.I, now + self._settings.timer_i)
                return []
            case ServerState.ACCEPTED:
                # RFC 6026 §7.1: ACK for a 2xx goes to the TU; §13.3.1.4: it ends 2xx retransmission.
                self.acked = True
                self._disarm(Timer.G)
                return [RequestReceived(ack, source, None)]
            case _:
                return []

    def respond(self, response: SipResponse, now: float) -> list[Output]:
        if self.is_invite:
            return self._invite_respond(response, now)
        return self._non_invite_respond(response, now)

    def _invite_respond(self, response: SipResponse, now: float) -> list[Output]:
        s = self._settings
        status = response.status
        match self.state:
            case ServerState.PROCEEDING if status < 200:
                self._disarm(Timer.TRYING)
                return self._send(response)
            case ServerState.PROCEEDING if status < 300:
                # RFC 6026 §7.1: Accepted. Per §13.3.1.4 the 2xx is retransmitted at T1, 2T1, ...
                # capped at T2 until the ACK arrives; Timer L bounds both the wait and the state.
                self.state = ServerState.ACCEPTED
                self._disarm(Timer.TRYING)
                self._interval = s.timer_g
                self._arm(Timer.G, now + self._interval)
                self._arm(Timer.L, now + s.timer_l)
                return self._send(response)
            case ServerState.PROCEEDING:
                self.state = ServerState.COMPLETED
                self._disarm(Timer.TRYING)
                self._interval = s.timer_g
                self._arm(Timer.G, now + self._interval)
                self._arm(Timer.H, now + s.timer_h)
                return self._send(response)
            case ServerState.ACCEPTED if 200 <= status < 300:
                # RFC 6026 §7.1: further 2xx from the TU are passed to the transport.
                return self._send(response)
            case _:
                # A response the state machine has no transition for (e.g. a 487 racing a 200):
                # the first final response wins.
                return []

    def _non_invite_respond(self, response: SipResponse, now: float) -> list[Output]:
        match self.state:
            case ServerState.TRYING | ServerState.PROCEEDING if response.status < 200:
                self.state = ServerState.PROCEEDING
                return self._send(response)
            case ServerState.TRYING | ServerState.PROCEEDING:
                # §17.2.2: Timer J keeps the final response around for request retransmissions.
                self.state = ServerState.COMPLETED
                self._arm(Timer.J, now + self._settings.timer_j)
                return self._send(response)
            case _:
                return []

    def on_timer(self, timer: Timer, now: float) -> list[Output]:
        match timer, self.state:
            case Timer.TRYING, ServerState.PROCEEDING if self.last_response is None:
                return self._send(make_response(self.request, 100))
            case Timer.G, ServerState.COMPLETED | ServerState.ACCEPTED:
                # §17.2.1 (Timer G) / §13.3.1.4 (2xx): double up to T2.
                self._interval = next_interval(self._interval, self._settings.t2)
                self._arm(Timer.G, now + self._interval)
                return self._resend()
            case Timer.H, ServerState.COMPLETED:
                self._terminate()
                return [TransactionTimeout(self)]
            case Timer.L, ServerState.ACCEPTED:
                self._terminate()
                # §13.3.1.4: no ACK within 64*T1 -> the TU should end the session with BYE.
                return [] if self.acked else [TransactionTimeout(self)]
            case (Timer.I, ServerState.CONFIRMED) | (Timer.J, ServerState.COMPLETED):
                self._terminate()
                return []
            case _:
                return []
