"""The agent socket: hand any call to an external agent written for Twilio Media Streams.

callbridge plays Twilio's role here. It connects out to the agent's `wss://` URL (signed with
`X-Twilio-Signature` when the route has a secret, as Twilio signs its upgrade), sends
`connected` and `start`, then one `media` per 20 ms caller frame, `dtmf` per key press and
`stop` when the call ends. From the agent it honours what Twilio honours:
- `media`: buffered (Twilio buffers without limit; we hold up to `max_buffer`, 60 s), fed
  into the leg's playout queue (which holds ~400 ms) by a feeder task, in 20 ms frames, with
  a small cushion when it starts from silence (see TwilioSocketConfig.cushion; the feeding
  lives in agents.twilio_socket_player, the config in agents.twilio_socket_config). Audio beyond
  `max_buffer` drops the *oldest* not yet played (counted, logged once per call): an agent
  that runs a minute ahead is broken, and skipping keeps the call up (an agent's bug never
  ends it, below) with bounded memory; marks keep their place in what is left;
- `mark`: echoed once the audio sent before it has been played on the call;
- `clear`: the buffer and the leg's queue are dropped at once, and every outstanding mark is
  echoed (Twilio's documented behaviour);
- the agent closing the socket hangs up the call.
A malformed message is logged (why) and ignored: an agent's bug never ends the call.

Every task belongs to the TaskGroup of one `_Session.run()`; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import secrets

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

from callbridge.agents.agent_audio import AgentAudio
from callbridge.agents.twilio_socket_config import TwilioSocketConfig, safe_url
from callbridge.agents.twilio_socket_player import SocketPlayer
from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegHold
from callbridge.core.frames import FRAME_MS, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import CallLeg
from callbridge.twilio_streams.messages import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    MarkOut,
    Media,
    MediaOut,
    Message,
    MessageError,
    Start,
    Stop,
    UnknownEvent,
    dumps,
    parse_from_app,
)
from callbridge.twilio_streams.signature import SIGNATURE_HEADER, compute_signature

__all__ = ["AgentAudio", "TwilioSocketAgent", "TwilioSocketConfig", "safe_url"]

log = logging.getLogger("callbridge.agents.twilio_socket")

_LOGGED_BAD = 3  # malformed messages logged one by one per call; the rest are counted


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)  # Twilio SIDs: two letters, 32 hex digits


class TwilioSocketAgent:
    """An Agent whose brain is a remote WebSocket server speaking Twilio Media Streams."""

    def __init__(self, config: TwilioSocketConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    async def run(self, leg: CallLeg) -> None:
        await _Session(self.config, self.clock, leg).run()


class _Stopped(Exception):
    """The socket is gone (closed, stalled): stop sending."""


class _Session:
    def __init__(self, config: TwilioSocketConfig, clock: Clock, leg: CallLeg) -> None:
        self.config = config
        self.clock = clock
        self.leg = leg
        self.url = safe_url(config.url)
        self.stream_sid = _sid("MZ")
        self.call_sid = _sid("CA")
        self.account_sid = config.account_sid or (
            "AC" + hashlib.sha256(config.url.encode()).hexdigest()[:32]
        )
        self.ws: ClientConnection | None = None
        self._ready = asyncio.Event()  # `start` is sent: caller audio flows
        self._seq = 0
        self._chunk = 0
        self._digits: list[str] = []  # pressed before the stream started
        self._gone = False  # a send failed: the socket is closed or stalled
        self._counts = collections.Counter[str]()
        self.player = SocketPlayer(config, clock, leg, self._counts)
        self._call_id = leg.info.ids.get("call_id", "")

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.ws is not None and self.ws.state is not State.CLOSED:
                # Cancelled (gateway shutdown past its grace): close briefly, then drop.
                with contextlib.suppress(TimeoutError, ConnectionClosed, OSError):
                    async with asyncio.timeout(0.5):
                        await self.ws.close(1001)
                self.ws.transport.abort()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            # Reading the leg from the start drops the caller's audio until the stream is up,
            # so the agent does not get a burst of stale audio once the socket connects.
            uplink = tg.create_task(self._uplink(), name=f"{self._call_id}-socket-up")
            ws = await self._connect()
            if ws is None:
                await self.leg.hangup("agent_unreachable")
                uplink.cancel()
                return
            self.ws = ws
            if uplink.done():  # the caller hung up while we connected
                await self._close()
                return
            try:
                await self._send(Connected())
                await self._send(self._start())
            except _Stopped:
                await self._close()
                await self.leg.hangup("agent_hangup")
                uplink.cancel()
                return
            self._ready.set()
            event(
                log,
                "agent_socket.started",
                route=self.config.route,
                url=self.url,
                stream_sid=self.stream_sid,
                call_sid=self.call_sid,
            )
            for digit in self._digits:
                await self._send_quietly(self._dtmf(digit))
            downlink = tg.create_task(self._downlink(), name=f"{self._call_id}-socket-down")
            helpers = [
                tg.create_task(self.player.feed(), name=f"{self._call_id}-socket-feed"),
                tg.create_task(
                    self.player.echo_marks(self._echo), name=f"{self._call_id}-socket-marks"
                ),
            ]
            # Either side ending ends the other: the call's end sends `stop` and closes the
            # socket (as Twilio does), the socket's end hangs up the call (downlink).
            done, _ = await asyncio.wait({uplink, downlink}, return_when=asyncio.FIRST_COMPLETED)
            if uplink in done:
                if not self._gone:
                    stop = Stop(self._next_seq(), self.stream_sid, self.account_sid, self.call_sid)
                    await self._send_quietly(stop)
                await self._close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.close_timeout + 1):
                    await asyncio.wait({uplink, downlink})
            for task in (uplink, downlink, *helpers):
                task.cancel()
        self._log_end()

    async def _connect(self) -> ClientConnection | None:
        headers = {}
        if self.config.secret:
            headers[SIGNATURE_HEADER] = compute_signature(self.config.secret, self.config.url)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                return await connect(
                    self.config.url,
                    additional_headers=headers,
                    open_timeout=None,  # the deadline above covers DNS, TCP, TLS and upgrade
                    close_timeout=self.config.close_timeout,
                    max_size=self.config.max_message_bytes,
                    compression=None,  # Twilio sends plain text frames
                )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no connection within {self.config.connect_timeout:g} s"
            event(
                log,
                "agent_socket.connect_failed",
                logging.WARNING,
                route=self.config.route,
                url=self.url,
                reason=reason,
            )
            return None

    async def _close(self) -> None:
        if self.ws is not None:
            # websockets bounds the closing handshake by close_timeout.
            with contextlib.suppress(ConnectionClosed, OSError):
                await self.ws.close(1000)

    def _log_end(self) -> None:
        ws = self.ws
        event(
            log,
            "agent_socket.closed",
            route=self.config.route,
            stream_sid=self.stream_sid,
            close_code=ws.close_code if ws is not None else None,
            close_reason=ws.close_reason if ws is not None else None,
            **dict(self._counts),
        )

    # ---- sending --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _start(self) -> Start:
        info = self.leg.info
        params = {
            "from": info.remote_uri,
            "to": info.local_user,
            "call_id": self._call_id,
            "transport": info.transport,
            "direction": info.direction,
        }
        params.update(self.config.parameters)  # the route's own parameters win
        return Start(
            sequence_number=self._next_seq(),
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            call_sid=self.call_sid,
            tracks=("inbound",),
            custom_parameters=params,
        )

    def _dtmf(self, digit: str) -> Dtmf:
        return Dtmf(self._next_seq(), self.stream_sid, digit)

    async def _send(self, msg: Message) -> None:
        """Raises _Stopped when the socket is closed or takes nothing within send_timeout."""
        ws = self.ws
        if ws is None:
            raise _Stopped
        try:
            async with asyncio.timeout(self.config.send_timeout):
                await ws.send(dumps(msg))
        except ConnectionClosed:
            raise _Stopped from None
        except TimeoutError:
            event(
                log,
                "agent_socket.stalled",
                logging.WARNING,
                route=self.config.route,
                seconds=self.config.send_timeout,
            )
            await self.leg.hangup("agent_stalled")
            raise _Stopped from None

    async def _send_quietly(self, msg: Message) -> bool:
        try:
            await self._send(msg)
        except _Stopped:
            self._gone = True
            return False
        return True

    async def _uplink(self) -> None:
        """Caller -> agent: `media` per frame, `dtmf` per digit, until the leg ends."""
        try:
            async for item in self.leg.inputs():
                if self._gone:
                    continue  # the socket is gone; the leg ends soon (downlink hangs up)
                match item:
                    case AudioFrame(pcm=pcm):
                        if not self._ready.is_set():
                            self._counts["frames_dropped_before_start"] += 1
                            continue
                        # Twilio's chunk counts from 1; timestamp is ms of stream time.
                        self._chunk += 1
                        msg: Message = Media(
                            sequence_number=self._next_seq(),
                            stream_sid=self.stream_sid,
                            track="inbound",
                            chunk=self._chunk,
                            timestamp=(self._chunk - 1) * FRAME_MS,
                            payload=ulaw_encode(pcm),
                        )
                        self._counts["frames_out"] += 1
                    case DtmfDigit(digit=digit):
                        if not self._ready.is_set():
                            self._digits.append(digit)
                            continue
                        msg = self._dtmf(digit)
                        self._counts["dtmf_out"] += 1
                    case LegHold():
                        continue  # Media Streams has no hold; the caller's audio goes quiet
                await self._send_quietly(msg)
        except CallEnded:
            pass

    # ---- receiving ------------------------------------------------------------------------

    async def _downlink(self) -> None:
        """Agent -> caller. The agent closing the socket hangs up the call."""
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed, _Stopped):
            async for text in self.ws:
                await self._on_text(text)
        if not self.leg.ended:
            ws = self.ws
            event(
                log,
                "agent_socket.agent_closed",
                route=self.config.route,
                close_code=ws.close_code,
                close_reason=ws.close_reason,
            )
            await self.leg.hangup("agent_hangup")

    def _bad(self, reason: str) -> None:
        self._counts["bad_messages"] += 1
        if self._counts["bad_messages"] <= _LOGGED_BAD:  # a broken agent must not flood the log
            event(
                log,
                "agent_socket.bad_message",
                logging.WARNING,
                route=self.config.route,
                error=reason,
            )

    async def _on_text(self, text: str | bytes) -> None:
        try:
            msg = parse_from_app(text)
        except UnknownEvent as exc:
            self._counts["unknown_events"] += 1
            log.debug("ignoring %s from the agent", exc)
            return
        except MessageError as exc:
            self._bad(str(exc))
            return
        if msg.stream_sid != self.stream_sid:
            self._bad(f"streamSid {msg.stream_sid!r} is not this stream's ({self.stream_sid})")
            return
        match msg:
            case MediaOut(payload=payload):
                if payload:
                    if self.player.media(ulaw_decode(payload)):
                        self._overflowed()
                    self._counts["media_in"] += 1
            case MarkOut(name=name):
                self.player.mark(name)
                self._counts["marks_in"] += 1
            case Clear():
                dropped, names = self.player.clear()
                self._counts["clears"] += 1
                event(
                    log,
                    "agent_socket.clear",
                    dropped_samples=dropped,
                    marks_echoed=len(names),
                )
                for name in names:
                    if not await self._echo(name):
                        return

    def _overflowed(self) -> None:
        if not self._counts["buffer_overflows"]:  # once per call; the count is in the end line
            event(
                log,
                "agent_socket.buffer_full",
                logging.WARNING,
                route=self.config.route,
                seconds=self.config.max_buffer,
                action="oldest audio dropped",
            )
        self._counts["buffer_overflows"] += 1
        self._counts["audio_dropped_samples"] = self.player.audio.dropped

    async def _echo(self, name: str) -> bool:
        sent = await self._send_quietly(Mark(self._next_seq(), self.stream_sid, name))
        self._counts["marks_echoed"] += sent
        return sent
