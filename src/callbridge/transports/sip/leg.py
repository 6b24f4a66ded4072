"""A SIP call as a CallLeg: RTP in and out on the 20 ms schedule, control beside it.

The leg base (transports.leg_base) owns the queues, playout, tap, end and the paced ticks;
this module adds the wire: each tick takes the caller's next frame from the jitter buffer
and sends the agent's next queued frame as RTP, RFC 4733 DTMF ahead of it, RTCP beside it.
Signalling stays outside: the leg applies the MediaPlans the transport's negotiator made
(transports.sip_media) and asks its `SipDialogHandle` to hang up or transfer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from callbridge.core.clock import Clock
from callbridge.core.events import DtmfDigit, LegHold, TransferResult
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.core.ports import LegInfo
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.rtcp import ntp_from_unix
from callbridge.rtp.session import RtpParams, RtpSession
from callbridge.sdp.offer_answer import MediaPlan
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded
from callbridge.transports.leg_base import LegBase, LegCore

__all__ = ["NO_DIALOG", "RtpWire", "SipDialogHandle", "SipLeg", "WireFactory"]

log = logging.getLogger("callbridge.transports.sip.transport")

# (datagram, source, age): age = seconds since the kernel received it (0: just now)
Receiver = Callable[[bytes, Addr, float], None]


class SipDialogHandle(Protocol):
    """What a SipLeg may ask of its call's signalling; the SIP transport implements it."""

    def hangup(self) -> bool:
        """End the call in whatever state it is (BYE, CANCEL or an error response). True when
        the session is over at once (a BYE went out); otherwise the end comes back as
        `ended_by_signalling`."""
        ...

    def refer(self, target: str) -> str:
        """Send a REFER for `target` (a URI, user or number); returns the Refer-To URI.
        Raises ValueError for a target or a call state that allows no transfer."""
        ...

    def closed(self) -> None:
        """The leg ended: signalling forgets it."""
        ...


class _NoDialog:
    """The handle of a leg whose signalling is over. Kept instead of the dialog, which holds
    the leg: the pair would be a reference cycle, and a call's whole media graph would wait
    for a full garbage collection (a pause of every call) instead of going when it ends."""

    def hangup(self) -> bool:
        return True

    def refer(self, target: str) -> str:
        raise ValueError("the call has ended")

    def closed(self) -> None:
        pass


NO_DIALOG: SipDialogHandle = _NoDialog()


class RtpWire(Protocol):
    """The RTP/RTCP socket pair (rtp.socket.RtpSocket; a fake in tests)."""

    async def open(self, host: str) -> int: ...

    def send(self, data: bytes, addr: Addr) -> None: ...

    def send_rtcp(self, data: bytes, addr: Addr) -> None: ...

    def drain(self) -> int:
        """Hand on the RTP datagrams waiting now (non-blocking); how many."""
        ...

    def close(self) -> None: ...


# Makes the leg's wire, given where received RTP and RTCP go.
WireFactory = Callable[[Receiver, Receiver], RtpWire]


def _params(plan: MediaPlan) -> RtpParams:
    return RtpParams(
        remote=(plan.remote_address, plan.remote_port),
        codec=plan.codec.name,
        payload_type=plan.codec.payload_type,
        dtmf_payload_type=plan.dtmf_payload_type,
        ptime_ms=plan.ptime,
        send=plan.direction in ("sendrecv", "sendonly") and plan.remote_port != 0,
        receive=plan.direction in ("sendrecv", "recvonly"),
    )


class SipLeg(LegBase):
    def __init__(
        self,
        *,
        info: LegInfo,
        dialog: SipDialogHandle,
        clock: Clock,
        wire: WireFactory,
        bind_host: str,
        jitter: JitterConfig,
        rtp_timeout: float,
        name: str = "",
    ) -> None:
        # 500 ms of playback level: the echo guard must cover the echo's delay even when the
        # far end buffers (jitter buffers, loop hiccups), not just a quick line echo.
        super().__init__(LegCore(info, clock, name=name, level_window=25))
        self.dialog = dialog
        self.clock = clock
        self.bind_host = bind_host
        self.jitter_config = jitter
        self.rtp_timeout = rtp_timeout
        self.socket = wire(self._on_rtp, self._on_rtcp)
        self.session: RtpSession | None = None
        self._dtmf_digits: collections.deque[str] = collections.deque()
        self._dtmf_out: collections.deque[tuple[float, bytes]] = collections.deque()
        self._dtmf_until = 0.0  # the current event (plus the inter-digit gap) lasts until then
        self._on_hold = False
        self._transfer: asyncio.Future[TransferResult] | None = None
        self._early: asyncio.Task[None] | None = None  # media before the answer (183)

    # ---- CallLeg (the rest is LegBase) ----------------------------------------------------

    async def send_dtmf(self, digits: str) -> None:
        """Queue digits; the media loop sends them ahead of queued audio, one event at a time."""
        if self.session is None or self.session.params.dtmf_payload_type is None:
            raise ValueError("the far end did not negotiate RFC 4733 telephone-event")
        for digit in digits:
            if digit.upper() not in "0123456789*#ABCD":
                raise ValueError(f"not a DTMF digit: {digit!r}")
        self._dtmf_digits.extend(digits.upper())

    async def hangup(self, reason: str = "normal") -> None:
        self.request_hangup(reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(40):  # 64*T1 of the BYE transaction, with margin
                await self.core.wait_ended()

    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer with REFER (RFC 3515). The outcome is handled by `transfer_event`
        (so a cancelled caller changes nothing): on success the leg hangs up, RFC 5589 §6.1."""
        if self.ended or self.core.end_reason:
            return TransferResult(ok=False, reason="the call has ended")
        if self._transfer is not None and not self._transfer.done():
            return TransferResult(ok=False, reason="a transfer is already in progress")
        self._transfer = asyncio.get_running_loop().create_future()
        try:
            refer_to = self.dialog.refer(target)
        except ValueError as exc:
            self._transfer = None
            result = TransferResult(ok=False, reason=str(exc))
            self._log_transfer(result, target=target)
            return result
        event(log, "call.transfer", call_id=self.info.ids.get("call_id"), stage="requested",
              target=refer_to)  # fmt: skip
        return await asyncio.shield(self._transfer)

    def transfer_event(self, ev: TransferProgress | TransferSucceeded | TransferFailed) -> None:
        """From the UA (a datagram callback, outside the call's task context)."""
        match ev:
            case TransferProgress(status=status, reason=reason):
                call_id = self.info.ids.get("call_id")
                event(
                    log,
                    "call.transfer",
                    call_id=call_id,
                    stage="progress",
                    status=status,
                    reason=reason,
                )
                return
            case TransferSucceeded(status=status, reason=reason):
                result = TransferResult(ok=True, status=status, reason=reason)
            case TransferFailed(status=status, reason=reason):
                result = TransferResult(ok=False, status=status, reason=reason)
        self._log_transfer(result)
        self._resolve_transfer(result)
        if result.ok:
            self.request_hangup("transferred")  # RFC 5589 §6.1: the transferor leaves

    def _resolve_transfer(self, result: TransferResult) -> None:
        if self._transfer is not None and not self._transfer.done():
            self._transfer.set_result(result)

    def _log_transfer(self, result: TransferResult, **fields: object) -> None:
        level = logging.INFO if result.ok else logging.WARNING
        event(
            log, "call.transfer", level, call_id=self.info.ids.get("call_id"), stage="result",
            ok=result.ok, status=result.status, reason=result.reason, **fields,
        )  # fmt: skip

    # ---- lifecycle --------------------------------------------------------------------------

    async def open_media(self) -> int:
        """Bind the RTP/RTCP pair; returns the RTP port (for our SDP)."""
        return await self.socket.open(self.bind_host)

    def close_media(self) -> None:
        self.socket.close()

    def apply_plan(self, plan: MediaPlan) -> None:
        """What offer/answer agreed (first plan: start the session; later: hold, resume, a new
        address or codec). A change of the peer's hold reaches the agent as LegHold."""
        params = _params(plan)
        if self.session is None:
            self.session = RtpSession(params, self.clock.now(), self.jitter_config)
            self.info.ids["rtp_remote"] = f"{plan.remote_address}:{plan.remote_port}"
            self.info.ids["codec"] = plan.codec.name
        else:
            self.session.update(params)
        if plan.remote_hold != self._on_hold:
            self._on_hold = plan.remote_hold
            self.core.put(LegHold(plan.remote_hold))
            event(
                log,
                "call.hold" if plan.remote_hold else "call.resume",
                call_id=self.info.ids.get("call_id"),
            )

    def request_hangup(self, reason: str) -> None:
        if self.ended or self.core.end_reason:
            return
        self.core.end_reason = reason
        if self.dialog.hangup():
            # RFC 3261 §15.1.1: the session ends once the BYE is handed to its transaction:
            # media stops now. The transaction finishes (or times out, a dead peer's 32 s) on
            # its own, without holding the call, its recording or its task open.
            self._finish()

    def ended_by_signalling(self, reason: str, status: int | None = None) -> None:
        self._finish(reason)

    def _finish(self, reason: str = "") -> None:
        if self.ended:
            return
        # What arrived since the last tick still counts (the call's rtp_in, a last DTMF digit):
        # the tick is the socket's only reader, and there will be none after this.
        self.socket.drain()
        if self.session is not None:
            bye = self.session.rtcp_bye()  # RFC 3550 §6.6: tell the peer this source is gone
            self.socket.send_rtcp(bye.data, bye.addr)
        self.core.finish(reason)
        self._resolve_transfer(
            TransferResult(ok=False, reason="the call ended during the transfer")
        )
        self.close_media()
        dialog, self.dialog = self.dialog, NO_DIALOG
        dialog.closed()

    def stats(self) -> dict[str, int | float]:
        return self.session.stats() if self.session else {}

    # ---- media ----------------------------------------------------------------------------

    def _on_rtp(self, data: bytes, source: Addr, age: float = 0.0) -> None:
        if self.session is None:
            return
        for digit in self.session.receive(data, source, self.clock.now() - age):
            self._digit(digit)

    def _on_rtcp(self, data: bytes, source: Addr, age: float = 0.0) -> None:
        if self.session is not None:
            self.session.receive_rtcp(data, source, self.clock.now())

    def _digit(self, digit: DtmfDigit) -> None:
        # Runs in the media clock's pass, not in the call's task: name the call explicitly.
        event(
            log,
            "call.dtmf",
            call_id=self.info.ids.get("call_id"),
            digit=digit.digit,
            duration_ms=digit.duration_ms,
        )
        self.core.put(digit)

    @property
    def early_media(self) -> bool:
        return self._early is not None

    def start_early_media(self) -> None:
        """Run the media loop before the answer (a 183 with SDP): the far end's ringback or
        announcement reaches `inputs()`. `run()` then carries on with the same loop."""
        if self._early is None:
            self._early = asyncio.get_running_loop().create_task(
                self.core.tick_loop(self._tick), name="early-media"
            )

    def abandon(self, reason: str) -> None:
        """The call was never answered: end the leg (and what `start_early_media` started)."""
        self._finish(reason)
        if self._early is not None:
            self._early.cancel()

    async def run(self) -> None:
        """Drive media until the call ends. Owned by the call's TaskGroup (which then owns the
        early-media loop too: cancelling this cancels it)."""
        if self._early is not None:
            await self._early
            return
        await self.core.tick_loop(self._tick)

    def _tick(self, now: float, missed: int) -> float | None:
        """One 20 ms step; returns how much earlier the next ticks may come (the jitter
        buffer's slack) for the media clock to move this leg's phase."""
        core = self.core
        tap = core.tap
        session = self.session
        if missed and tap is not None and session is not None:
            # The recording keeps wall time: the ticks that never ran are silence.
            for _ in range(missed):
                tap.on_tick(None, None)
        # The socket's only reader (rtp.socket): what arrived since the last tick, including
        # while the pass ran other legs, counts for this tick. Before there is a session the
        # datagrams are read and dropped, as nothing can play them.
        self.socket.drain()
        if session is None:  # late offer not yet answered by the ACK
            return None
        frame, late_digits = session.tick(now, now - self.core.media.deadline)
        for digit in late_digits:
            self._digit(digit)
        if frame is not None:
            core.put(frame)
        # _dtmf_step only when an event is queued, sending or in its gap (it is False otherwise).
        if (self._dtmf_out or self._dtmf_digits or now < self._dtmf_until) and self._dtmf_step(
            session, now
        ):
            session.send_frame(None, now)  # audio is muted during the event; its clock runs on
            self._tap_tick(frame, None)
            return None
        item = core.pop()
        out_frame = item[0] if item is not None else None
        # The line never goes quiet: with nothing to play we send silence, because carriers,
        # SBCs and PBXs end calls on media inactivity (Asterisk rtp_timeout, FreeSWITCH
        # media_timeout) and NAT bindings close. A held call sends nothing (params.send).
        if out_frame is not None:
            pkt = session.send_frame(out_frame, now)
        else:
            pkt = session.send_silence(now)
        if pkt is not None:
            self.socket.send(pkt.data, pkt.addr)
            if out_frame is not None:
                core.samples_played += FRAME_SAMPLES
        if core.tap is not None:
            self._tap_tick(frame, out_frame if pkt is not None else None)
        if session.rtcp_due(now):
            report = session.rtcp_report(now, ntp_from_unix(time.time()))
            self.socket.send_rtcp(report.data, report.addr)
        if now - session.last_rx > self.rtp_timeout and not self._on_hold:
            event(log, "call.rtp_timeout", logging.WARNING, seconds=self.rtp_timeout)
            self.request_hangup("rtp_timeout")
        return session.advance

    def _tap_tick(self, caller: AudioFrame | None, agent: AudioFrame | None) -> None:
        tap = self.core.tap
        if tap is None:
            return
        if self._on_hold:  # held: neither side is heard, whatever concealment produces
            tap.on_tick(None, None)
        else:
            tap.on_tick(
                caller.pcm if caller is not None else None, agent.pcm if agent is not None else None
            )

    def _dtmf_step(self, session: RtpSession, now: float) -> bool:
        """Send due RFC 4733 packets; True while an event (or the gap after it) holds the line."""
        if not self._dtmf_out and self._dtmf_digits and now >= self._dtmf_until:
            # Each event starts at the current media position, so every digit has its own
            # RTP timestamp: receivers tell events apart by it (RFC 4733 §2.5.1.4).
            packets = session.dtmf(self._dtmf_digits.popleft())
            self._dtmf_out.extend((now + offset, data) for offset, data in packets)
            self._dtmf_until = now + packets[-1][0] + 0.1 if packets else now
        while self._dtmf_out and self._dtmf_out[0][0] <= now + 0.001:
            _, data = self._dtmf_out.popleft()
            self.socket.send(data, session.remote)
        return bool(self._dtmf_out) or bool(self._dtmf_digits) or now < self._dtmf_until
