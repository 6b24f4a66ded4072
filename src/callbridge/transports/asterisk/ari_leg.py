"""A call an ARI controller bridged to us as a CallLeg: RTP to and from Asterisk's UnicastRTP
channel (externalMedia), control through ARI.

Media is what SipLeg does without SDP: one RtpSession (rtp.session: latching, jitter
buffer, concealment, RTCP) on one RtpSocket (rtp.socket) per call, its remote the
UNICASTRTP_LOCAL_ADDRESS/PORT externalMedia answered with (chan_rtp.c:403-407). Each tick
takes the caller's next frame and sends the agent's (silence when there is none: Asterisk's
rtptimeout and NAT bindings end quiet calls). Hang-up, DTMF and transfer are ARI requests
made by the controller (transports.ari), which also tells the leg when Asterisk ended it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from callbridge.core.clock import Clock
from callbridge.core.events import DtmfDigit, TransferResult
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import LegInfo
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.rtcp import ntp_from_unix
from callbridge.rtp.session import RtpParams, RtpSession
from callbridge.rtp.socket import PortAllocator, RtpSocket
from callbridge.transports.leg_base import LegBase, LegCore

__all__ = ["CODECS", "AriControl", "AriLeg"]

log = logging.getLogger("callbridge.transports.asterisk.ari")

# externalMedia `format` -> (RTP codec, static payload type, RFC 3551 §6)
CODECS = {"ulaw": ("PCMU", 0), "alaw": ("PCMA", 8)}


class AriControl(Protocol):
    """What the leg asks of its controller; each returns once ARI answered (bounded)."""

    async def leg_hangup(self, leg: AriLeg, reason: str) -> None: ...

    async def leg_transfer(self, leg: AriLeg, target: str) -> TransferResult: ...

    async def leg_dtmf(self, leg: AriLeg, digits: str) -> None: ...


class AriLeg(LegBase):
    def __init__(
        self,
        *,
        info: LegInfo,
        control: AriControl,
        clock: Clock,
        ports: PortAllocator,
        bind_host: str,
        format: str = "ulaw",
        jitter: JitterConfig | None = None,
        rtp_timeout: float = 30.0,
    ) -> None:
        super().__init__(LegCore(info, clock, name=info.ids.get("ari_channel_id", "ari"),
                                 level_window=25))  # fmt: skip
        self.control = control
        self.clock = clock
        self.bind_host = bind_host
        self.codec, self.payload_type = CODECS[format]
        self.jitter = jitter
        self.rtp_timeout = rtp_timeout
        self.socket = RtpSocket(ports, self._on_rtp, self._on_rtcp)
        self.session: RtpSession | None = None

    # ---- set-up (by the controller) --------------------------------------------------------

    async def open_media(self) -> int:
        """Bind the RTP port Asterisk will send to (externalMedia's external_host)."""
        return await self.socket.open(self.bind_host)

    def connect_media(self, remote: tuple[str, int]) -> None:
        """Asterisk's UnicastRTP address: where our RTP goes (latched to the source seen)."""
        params = RtpParams(remote=remote, codec=self.codec, payload_type=self.payload_type)
        self.session = RtpSession(params, self.clock.now(), self.jitter)

    def close_media(self) -> None:
        self.socket.close()

    # ---- CallLeg beyond LegBase ------------------------------------------------------------

    async def send_dtmf(self, digits: str) -> None:
        if any(d.upper() not in "0123456789*#ABCD" for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        await self.control.leg_dtmf(self, digits.upper())

    async def transfer(self, target: str) -> TransferResult:
        if self.ended or self.core.end_reason:
            return TransferResult(ok=False, reason="the call has ended")
        return await self.control.leg_transfer(self, target)

    async def hangup(self, reason: str = "normal") -> None:
        if self.ended:
            return
        self.core.end_reason = self.core.end_reason or reason
        self.finish(reason)  # media stops now; ARI cleans up behind it
        await self.control.leg_hangup(self, reason)

    def finish(self, reason: str) -> bool:
        """End the leg (from the controller when Asterisk ended the call). True the first time."""
        if self.ended:
            return False
        self.socket.drain()  # what arrived since the last tick still counts, as in the SIP leg
        self.core.finish(reason)
        self.close_media()
        return True

    def dtmf_received(self, digit: str, duration_ms: int) -> None:
        """ChannelDtmfReceived for the caller's channel."""
        event(log, "call.dtmf", call_id=self.info.ids.get("call_id"), digit=digit,
              duration_ms=duration_ms)  # fmt: skip
        self.core.put(DtmfDigit(digit, duration_ms))

    def stats(self) -> dict[str, int | float]:
        return self.session.stats() if self.session else {}

    # ---- media -----------------------------------------------------------------------------

    def _on_rtp(self, data: bytes, source: tuple[str, int], age: float = 0.0) -> None:
        if self.session is not None:
            for digit in self.session.receive(data, source, self.clock.now() - age):
                self.dtmf_received(digit.digit, digit.duration_ms)

    def _on_rtcp(self, data: bytes, source: tuple[str, int], age: float = 0.0) -> None:
        if self.session is not None:
            self.session.receive_rtcp(data, source, self.clock.now())

    async def run(self) -> None:
        try:
            await self.core.tick_loop(self._tick)
        finally:
            self.close_media()

    def _tick(self, now: float, missed: int) -> float | None:
        """One 20 ms step; returns the jitter buffer's slack (media clock phases)."""
        tap = self.core.tap
        if missed and tap is not None:
            for _ in range(missed):  # the recording keeps wall time
                tap.on_tick(None, None)
        self.socket.drain()  # the socket's only reader (rtp.socket), as in the SIP leg
        session = self.session
        if session is None:
            return None
        frame, late_digits = session.tick(now, now - self.core.media.deadline)
        for digit in late_digits:
            self.dtmf_received(digit.digit, digit.duration_ms)
        if frame is not None:
            self.core.put(frame)
        item = self.core.pop()
        out: AudioFrame | None = item[0] if item is not None else None
        pkt = session.send_frame(out, now) if out is not None else session.send_silence(now)
        if pkt is not None:
            self.socket.send(pkt.data, pkt.addr)
            if out is not None:
                self.core.samples_played += FRAME_SAMPLES
        if tap is not None:
            tap.on_tick(
                frame.pcm if frame is not None else None,
                out.pcm if out is not None and pkt is not None else None,
            )
        if session.rtcp_due(now):
            report = session.rtcp_report(now, ntp_from_unix(time.time()))
            self.socket.send_rtcp(report.data, report.addr)
        if now - session.last_rx > self.rtp_timeout:
            event(log, "call.rtp_timeout", logging.WARNING, seconds=self.rtp_timeout)
            self.core.end_reason = self.core.end_reason or "rtp_timeout"
            self.finish("rtp_timeout")  # the controller sees the end and cleans up in ARI
        return session.advance
