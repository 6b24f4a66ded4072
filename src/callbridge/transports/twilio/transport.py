"""Twilio Media Streams as a transport: an accepted WebSocket -> a TwilioLeg -> the calls layer.

The web layer (api/) accepts the WebSocket (after checking Twilio's signature) and hands it
here as a TextSocket. This reads the handshake (`connected`, then `start`), turns `start` into
the leg's LegInfo (its `customParameters` choose the agent: `agent`, and carry `from`, `to`,
`direction`), asks the LegAcceptor to admit it, starts it, and serves it until it ends.
Outbound calls placed through Twilio's REST API wait here for their stream by call SID.
The stream's message limits (mediastream.inbound.InboundGuard) apply from its first message:
the handshake and the leg share one guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from callbridge.core.clock import Clock
from callbridge.core.errors import TransportError
from callbridge.core.log import event
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.transports.twilio.leg import (
    SocketClosed,
    TextSocket,
    TwilioLeg,
    TwilioLegConfig,
)
from callbridge.twilio_streams.inbound import InboundGuard, Refusal
from callbridge.twilio_streams.messages import (
    Connected,
    MessageError,
    Start,
    UnknownEvent,
    parse_from_twilio,
)

__all__ = ["CLOSE_CODES", "StreamRefused", "TwilioTransport", "leg_info", "read_start"]

log = logging.getLogger("callbridge.transports.twilio.transport")

# WebSocket close codes (RFC 6455 §7.4.1) for a stream we do not take.
CLOSE_CODES = {
    Rejection.NOT_FOUND: 1008,  # policy violation: no such agent
    Rejection.BUSY: 1013,  # try again later
    Rejection.UNAVAILABLE: 1013,
}
_BAD_STREAM = 1008


class StreamRefused(TransportError):
    """A handshake message broke the stream's limits (too big, too many)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


async def read_start(
    socket: TextSocket,
    timeout: float,
    guard: InboundGuard | None = None,
    clock: Clock | None = None,
) -> Start:
    """The handshake: `connected` (optional), then `start`. Each message is judged by `guard`
    (at `clock`'s time) before it is parsed. Raises MessageError, StreamRefused, TimeoutError
    or SocketClosed."""
    async with asyncio.timeout(timeout):
        while True:
            text = await socket.receive_text()
            if guard is not None:
                refusal = guard.check(text, clock.now() if clock is not None else 0.0)
                if refusal is not None:
                    raise StreamRefused(refusal)
            try:
                msg = parse_from_twilio(text)
            except UnknownEvent:
                continue
            match msg:
                case Connected():
                    continue
                case Start():
                    return msg
                case _:
                    raise MessageError(f"'{type(msg).__name__.lower()}' before 'start'")


def leg_info(start: Start, remote: str = "") -> LegInfo:
    params = start.custom_parameters
    direction = params.get("direction", "inbound")
    ids = {
        "stream_sid": start.stream_sid,
        "call_sid": start.call_sid,
        "account_sid": start.account_sid,
    }
    if remote:
        ids["remote_addr"] = remote
    return LegInfo(
        transport="twilio",
        direction=direction if direction in ("inbound", "outbound") else "inbound",
        local_user=params.get("agent", ""),
        remote_uri=params.get("from", ""),
        ids=ids,
    )


class TwilioTransport:
    def __init__(
        self,
        clock: Clock,
        acceptor: LegAcceptor,
        config: TwilioLegConfig | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.clock = clock
        self.acceptor = acceptor
        self.config = config or TwilioLegConfig()
        self.handshake_timeout = handshake_timeout
        self.accepting = True
        self.legs: set[TwilioLeg] = set()
        self._by_call: dict[str, TwilioLeg] = {}
        self._waiters: dict[str, asyncio.Future[TwilioLeg]] = {}

    def stop_accepting(self) -> None:
        self.accepting = False

    async def handle(self, socket: TextSocket, remote: str = "") -> None:
        """Serve one accepted Media Streams WebSocket until its call ends."""
        guard = InboundGuard(self.config.max_message_bytes)
        try:
            start = await read_start(socket, self.handshake_timeout, guard, self.clock)
        except StreamRefused as exc:
            r = exc.refusal
            event(log, "twilio.stream_refused", logging.WARNING, remote=remote, reason=r.reason)
            await _close(socket, r.code, r.reason)
            return
        except SocketClosed as exc:
            reason = "message too big" if exc.code == 1009 else str(exc)  # the server's limit
            event(log, "twilio.stream_refused", logging.WARNING, remote=remote, reason=reason)
            return
        except (MessageError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            event(log, "twilio.stream_refused", logging.WARNING, remote=remote, reason=reason)
            await _close(socket, _BAD_STREAM)
            return
        fmt = start.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != ("audio/x-mulaw", 8000, 1):
            event(
                log,
                "twilio.stream_refused",
                logging.WARNING,
                stream_sid=start.stream_sid,
                reason=f"media format {fmt} is not audio/x-mulaw 8000 Hz mono",
            )
            await _close(socket, _BAD_STREAM)
            return
        info = leg_info(start, remote)
        try:
            if not self.accepting:
                raise Rejection(Rejection.UNAVAILABLE, "shutting down")
            self.acceptor.admit(info)
        except Rejection as rej:
            event(
                log,
                "call.rejected",
                transport="twilio",
                call_sid=start.call_sid,
                stream_sid=start.stream_sid,
                user=info.local_user,
                reason=rej.kind,
            )
            await _close(socket, CLOSE_CODES.get(rej.kind, _BAD_STREAM))
            return
        leg = TwilioLeg(socket, start, self.clock, info, self.config, guard=guard)
        self.legs.add(leg)
        self._by_call[start.call_sid] = leg
        try:
            self.acceptor.start(leg)
            waiter = self._waiters.pop(start.call_sid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(leg)
            await leg.wait_ended()
        finally:
            self.legs.discard(leg)
            self._by_call.pop(start.call_sid, None)
            leg.request_hangup("error")  # no-op when it ended normally
            await leg.aclose()

    async def wait_for_stream(self, call_sid: str, timeout: float) -> TwilioLeg:
        """The leg of call `call_sid` (an outbound call we placed) once its stream starts."""
        leg = self._by_call.get(call_sid)
        if leg is not None:
            return leg
        waiter = self._waiters.setdefault(call_sid, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter)
        finally:
            if self._waiters.get(call_sid) is waiter and not waiter.done():
                del self._waiters[call_sid]

    async def shutdown(self, grace: float) -> None:
        """Hang up every live stream and wait (bounded) for them to end."""
        self.stop_accepting()
        legs = list(self.legs)
        for leg in legs:
            leg.request_hangup("shutdown")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(leg.aclose() for leg in legs))


async def _close(socket: TextSocket, code: int, reason: str = "") -> None:
    with contextlib.suppress(SocketClosed):
        await socket.close(code, reason)
