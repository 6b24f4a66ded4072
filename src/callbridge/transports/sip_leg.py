"""A SIP call as a CallLeg: RTP in and out on the 20 ms schedule, control beside it.

One media task per leg ticks on an absolute schedule (start + n * 20 ms): it takes the
caller's next frame from the jitter buffer and sends the agent's next queued frame.
Control (hangup, flush, DTMF) acts at once and never waits behind queued audio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegHold, LegInput, TransferResult
from callbridge.core.frames import FRAME_MS, FRAME_SAMPLES, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.media.playout import PlayoutQueue
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.rtcp import ntp_from_unix
from callbridge.rtp.session import RtpParams, RtpSession
from callbridge.rtp.socket import PortAllocator, RtpSocket
from callbridge.sdp.offer_answer import (
    MediaPlan,
    NoCommonCodec,
    apply_answer,
    create_answer,
    create_offer,
)
from callbridge.sdp.session import SdpError, SessionDescription
from callbridge.sdp.session import parse as parse_sdp
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded
from callbridge.sip.ua import UaError

if TYPE_CHECKING:
    from callbridge.transports.sip import SipTransport

log = logging.getLogger("callbridge.transports.sip")

TICK = FRAME_MS / 1000
PLAYOUT_LIMIT_FRAMES = (
    20  # 400 ms: enough to ride out scheduling hiccups, small enough to flush fast
)
_END = object()


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


class SipLeg:
    def __init__(
        self,
        *,
        ua_call: str,
        info: LegInfo,
        transport: SipTransport,
        clock: Clock,
        ports: PortAllocator,
        bind_host: str,
        local_host: str,
        jitter: JitterConfig,
        rtp_timeout: float,
    ) -> None:
        self.ua_call = ua_call
        self._info = info
        self.transport = transport
        self.clock = clock
        self.bind_host = bind_host
        self.local_host = local_host
        self.jitter_config = jitter
        self.rtp_timeout = rtp_timeout
        self.socket = RtpSocket(ports, self._on_rtp, self._on_rtcp)
        self.session: RtpSession | None = None
        self.pending_offer: SessionDescription | None = None
        self._inputs: asyncio.Queue[LegInput | object] = asyncio.Queue()
        # 500 ms of playback level: the echo guard must cover the echo's delay even when the
        # far end buffers (jitter buffers, loop hiccups), not just a quick line echo.
        self._playout = PlayoutQueue(level_window=25)
        self._room = asyncio.Event()
        self._room.set()
        self._dtmf_digits: collections.deque[str] = collections.deque()
        self._dtmf_out: collections.deque[tuple[float, bytes]] = collections.deque()
        self._dtmf_until = 0.0  # the current event (plus the inter-digit gap) lasts until then
        self._samples_played = 0
        self._ended = asyncio.Event()
        self._media_started = asyncio.Event()
        self.end_reason = ""
        self._on_hold = False
        self._tap: MediaTap | None = None
        self._transfer: asyncio.Future[TransferResult] | None = None
        self._early: asyncio.Task[None] | None = None  # media before the answer (183)

    # ---- CallLeg --------------------------------------------------------------------------

    @property
    def info(self) -> LegInfo:
        return self._info

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def inputs(self) -> AsyncIterator[LegInput]:
        while True:
            item = await self._inputs.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]

    async def play(self, frame: AudioFrame, utterance: int = 0) -> None:
        if self.ended:
            raise CallEnded(self._info.ids.get("call_id", self.ua_call))
        while len(self._playout) >= PLAYOUT_LIMIT_FRAMES:
            self._room.clear()
            waiter = asyncio.ensure_future(self._room.wait())
            ender = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                ender.cancel()
            if self.ended:
                raise CallEnded(self._info.ids.get("call_id", self.ua_call))
        self._playout.push(frame, utterance)

    def flush_playout(self) -> int:
        # Takes effect at once: the next tick sends nothing of the dropped audio.
        dropped = self._playout.flush()
        self._room.set()
        return dropped

    def pause_playout(self, paused: bool) -> None:
        self._playout.hold(paused)  # the next tick sends (or withholds) accordingly

    def played(self, utterance: int) -> int:
        return self._playout.played(utterance)

    @property
    def samples_played(self) -> int:
        return self._samples_played

    @property
    def playing(self) -> bool:
        return self._playout.playing

    @property
    def playback_dbfs(self) -> float:
        return self._playout.peak_dbfs

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
                await self._ended.wait()

    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer with REFER (RFC 3515). The outcome is handled by `transfer_event`
        (so a cancelled caller changes nothing): on success the leg hangs up, RFC 5589 §6.1."""
        call_id = self._info.ids.get("call_id")
        if self.ended or self.end_reason:
            return TransferResult(ok=False, reason="the call has ended")
        if self._transfer is not None and not self._transfer.done():
            return TransferResult(ok=False, reason="a transfer is already in progress")
        ua, cid = self.transport.ua, self.ua_call
        try:
            refer_to = ua.refer_target(cid, target)
            event(log, "call.transfer", call_id=call_id, stage="requested", target=refer_to)
            self._transfer = asyncio.get_running_loop().create_future()
            self.transport.endpoint.run(lambda now: ua.refer(cid, refer_to, now))
        except (ValueError, UaError) as exc:
            self._transfer = None
            result = TransferResult(ok=False, reason=str(exc))
            self._log_transfer(result, target=target)
            return result
        return await asyncio.shield(self._transfer)

    def transfer_event(self, ev: TransferProgress | TransferSucceeded | TransferFailed) -> None:
        """From the UA (a datagram callback, outside the call's task context)."""
        match ev:
            case TransferProgress(status=status, reason=reason):
                call_id = self._info.ids.get("call_id")
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
            log, "call.transfer", level, call_id=self._info.ids.get("call_id"), stage="result",
            ok=result.ok, status=result.status, reason=result.reason, **fields,
        )  # fmt: skip

    # ---- lifecycle --------------------------------------------------------------------------

    def set_tap(self, tap: MediaTap | None) -> None:
        """See every media tick from the next one on (a recorder); None: stop."""
        self._tap = tap

    async def open_media(self) -> int:
        return await self.socket.open(self.bind_host)

    def close_media(self) -> None:
        self.socket.close()

    def apply_plan(self, plan: MediaPlan) -> None:
        params = _params(plan)
        if self.session is None:
            self.session = RtpSession(params, self.clock.now(), self.jitter_config)
            self._info.ids["rtp_remote"] = f"{plan.remote_address}:{plan.remote_port}"
            self._info.ids["codec"] = plan.codec.name
        else:
            self.session.update(params)
        if plan.remote_hold != self._on_hold:
            self._on_hold = plan.remote_hold
            self._inputs.put_nowait(LegHold(plan.remote_hold))
            event(
                log,
                "call.hold" if plan.remote_hold else "call.resume",
                call_id=self._info.ids.get("call_id"),
            )

    def confirmed(self, sdp: bytes | None) -> None:
        if self.pending_offer is not None and sdp:
            try:
                self.apply_plan(apply_answer(self.pending_offer, parse_sdp(sdp)))
            except SdpError as exc:
                event(log, "call.bad_answer", logging.WARNING, error=str(exc))
                self.request_hangup("bad_sdp")
                return
            self.pending_offer = None
        elif self.pending_offer is not None:
            self.request_hangup("no_sdp_answer")

    def reinvite(self, body: bytes) -> None:
        ua, ep = self.transport.ua, self.transport.endpoint
        cid = self.ua_call
        local = self.transport.local_media(self.local_host, self.socket.port)
        if not body:
            # An offerless re-INVITE: we offer what we have (§14.1), the ACK would answer.
            self.pending_offer = create_offer(local)
            sdp = bytes(self.pending_offer)
            ep.run(lambda now: ua.answer_reinvite(cid, sdp, now))
            return
        try:
            answer, plan = create_answer(parse_sdp(body), local)
        except NoCommonCodec:
            ep.run(lambda now: ua.answer_reinvite(cid, None, now, status=488))
            return
        except SdpError:  # RFC 3261 §14.2: a bad offer gets 400, the call goes on
            ep.run(lambda now: ua.answer_reinvite(cid, None, now, status=400))
            return
        self.apply_plan(plan)
        sdp = bytes(answer)
        ep.run(lambda now: ua.answer_reinvite(cid, sdp, now))

    def request_hangup(self, reason: str) -> None:
        if self.ended or self.end_reason:
            return
        self.end_reason = reason
        cid = self.ua_call
        ua = self.transport.ua
        self.transport.endpoint.run(lambda now: ua.hangup(cid, now))
        if ua.bye_sent(cid):
            # RFC 3261 §15.1.1: the session ends once the BYE is handed to its transaction:
            # media stops now. The transaction finishes (or times out, a dead peer's 32 s) on
            # its own, without holding the call, its recording or its task open.
            self._finish()

    def ended_by_signalling(self, reason: str, status: int | None) -> None:
        if not self.end_reason:
            self.end_reason = reason
        self._finish()

    def _finish(self) -> None:
        if self._ended.is_set():
            return
        if self.session is not None:
            bye = self.session.rtcp_bye()  # RFC 3550 §6.6: tell the peer this source is gone
            self.socket.send_rtcp(bye.data, bye.addr)
        self._ended.set()
        self._resolve_transfer(
            TransferResult(ok=False, reason="the call ended during the transfer")
        )
        self._room.set()
        self._inputs.put_nowait(_END)
        self.close_media()
        self.transport.forget(self)

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def stats(self) -> dict[str, int | float]:
        return self.session.stats() if self.session else {}

    # ---- media ----------------------------------------------------------------------------

    def _on_rtp(self, data: bytes, source: tuple[str, int]) -> None:
        if self.session is None:
            return
        for digit in self.session.receive(data, source, self.clock.now()):
            self._digit(digit)

    def _on_rtcp(self, data: bytes, source: tuple[str, int]) -> None:
        if self.session is not None:
            self.session.receive_rtcp(data, source, self.clock.now())

    def _digit(self, digit: DtmfDigit) -> None:
        # Runs in the socket callback, outside the call's task context: name the call explicitly.
        event(
            log,
            "call.dtmf",
            call_id=self._info.ids.get("call_id"),
            digit=digit.digit,
            duration_ms=digit.duration_ms,
        )
        self._inputs.put_nowait(digit)

    @property
    def early_media(self) -> bool:
        return self._early is not None

    def start_early_media(self) -> None:
        """Run the media loop before the answer (a 183 with SDP): the far end's ringback or
        announcement reaches `inputs()`. `run()` then carries on with the same loop."""
        if self._early is None:
            self._early = asyncio.get_running_loop().create_task(self._media(), name="early-media")

    def stop_early_media(self, reason: str) -> None:
        """The call was never answered: end what `start_early_media` started."""
        if self._early is not None:
            self.end_reason = self.end_reason or reason
            self._finish()
            self._early.cancel()

    async def run(self) -> None:
        """Drive media until the call ends. Owned by the call's TaskGroup (which then owns the
        early-media loop too: cancelling this cancels it)."""
        if self._early is not None:
            await self._early
            return
        await self._media()

    async def _media(self) -> None:
        start = self.clock.now()
        n = 0
        while not self.ended:
            n += 1
            deadline = start + n * TICK
            await self._sleep_until(deadline)
            if self._ended.is_set():
                break
            now = self.clock.now()
            if now - deadline > 0.2:
                # The loop stalled (GC, overload): re-anchor instead of bursting to catch up.
                if self._tap is not None and self.session is not None:
                    # The recording keeps wall time: the ticks that never ran are silence.
                    for _ in range(int((now - deadline) / TICK)):
                        self._tap.on_tick(None, None)
                start, n = now, 0
            session = self.session
            if session is None:  # late offer not yet answered by the ACK
                continue
            frame, late_digits = session.tick(now)
            for digit in late_digits:
                self._digit(digit)
            if frame is not None:
                self._inputs.put_nowait(frame)
            if self._dtmf_step(session, now):
                session.send_frame(None, now)  # audio is muted during the event; its clock runs on
                if self._tap is not None:
                    self._tap_tick(frame, None)
                continue
            item = self._playout.pop()
            out_frame = item[0] if item is not None else None
            if len(self._playout) < PLAYOUT_LIMIT_FRAMES:
                self._room.set()
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
                    self._samples_played += FRAME_SAMPLES
            if self._tap is not None:
                self._tap_tick(frame, out_frame if pkt is not None else None)
            if session.rtcp_due(now):
                report = session.rtcp_report(now, ntp_from_unix(time.time()))
                self.socket.send_rtcp(report.data, report.addr)
            if now - session.last_rx > self.rtp_timeout and not self._on_hold:
                event(log, "call.rtp_timeout", logging.WARNING, seconds=self.rtp_timeout)
                self.request_hangup("rtp_timeout")

    def _tap_tick(self, caller: AudioFrame | None, agent: AudioFrame | None) -> None:
        assert self._tap is not None
        if self._on_hold:  # held: neither side is heard, whatever concealment produces
            self._tap.on_tick(None, None)
        else:
            self._tap.on_tick(
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

    async def _sleep_until(self, deadline: float) -> None:
        # Ending is noticed at the next tick (<= 20 ms): cheaper than racing two futures per tick.
        await self.clock.sleep_until(deadline)
