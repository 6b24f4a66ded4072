"""The AudioSocket server: Asterisk connects over TCP, each connection becomes a call.

Asterisk is always the client (AudioSocket(uuid,host:port) in the dialplan, the
Dial(AudioSocket/host:port/uuid) channel driver, or ARI externalMedia with audiosocket
encapsulation) and sends the call's UUID first. Per connection: the source address is
checked against `allow_from` (the same networks syntax and checker as `sip.allow_from`),
the UUID frame is read (bounded in size and time), the route is chosen, the calls layer
admits the leg and owns it from then on.

Routing rule (documented in docs/asterisk.md): a UUID registered beforehand with
`register(uuid, route)` (FastAGI does this for `agi://host/ROUTE`) selects ROUTE; any other
UUID goes to the listener's `route` setting, "" meaning the default agent. The UUID itself
is the call's correlation id (`audiosocket_uuid` in every log line and the call record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

from callbridge.asterisk.audiosocket import AudioSocketDecoder, Frame, Hangup, UuidFrame, encode
from callbridge.asterisk.errors import AudioSocketError
from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.sip.access import InboundPolicy, Network
from callbridge.transports.asterisk.audiosocket_leg import (
    AudioSocketLeg,
    AudioSocketLegConfig,
    ByteStream,
    StreamPair,
)

__all__ = ["AudioSocketConfig", "AudioSocketServer"]

log = logging.getLogger("callbridge.transports.asterisk.audiosocket")


@dataclass(frozen=True, slots=True)
class AudioSocketConfig:
    host: str = "127.0.0.1"
    port: int = 9092
    route: str = ""  # the agent for UUIDs nobody registered; "" = the default agent
    allow_from: tuple[Network, ...] = ()  # empty: any source
    handshake_timeout: float = 5.0  # the UUID frame must arrive within this
    registration_ttl: float = 60.0  # a registered UUID not used within this is forgotten
    leg: AudioSocketLegConfig = AudioSocketLegConfig()


@dataclass(slots=True)
class _Registered:
    route: str
    expires: float
    ids: dict[str, str]


class AudioSocketServer:
    def __init__(self, config: AudioSocketConfig, clock: Clock, acceptor: LegAcceptor) -> None:
        self.config = config
        self.clock = clock
        self.acceptor = acceptor
        self.accepting = True
        self.legs: set[AudioSocketLeg] = set()
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._registered: dict[uuid.UUID, _Registered] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._policy = InboundPolicy(allow_from=config.allow_from)  # the SIP port's checker

    # ---- routing ---------------------------------------------------------------------------

    def register(self, call_uuid: uuid.UUID, route: str, **ids: str) -> None:
        """The next connection with `call_uuid` goes to `route`, its leg carrying `ids`."""
        now = self.clock.now()
        for key in [k for k, r in self._registered.items() if r.expires < now]:
            del self._registered[key]
        self._registered[call_uuid] = _Registered(
            route, now + self.config.registration_ttl, dict(ids)
        )

    def _route(self, call_uuid: uuid.UUID) -> tuple[str, dict[str, str]]:
        entry = self._registered.pop(call_uuid, None)
        if entry is not None and entry.expires >= self.clock.now():
            return entry.route, entry.ids
        return self.config.route, {}

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=1 << 16
        )
        self.port = self._server.sockets[0].getsockname()[1]
        event(log, "audiosocket.listening", host=self.config.host, port=self.port)

    def stop_accepting(self) -> None:
        self.accepting = False

    async def shutdown(self, grace: float) -> None:
        """Stop listening, hang up every live leg and wait (bounded) for them to end."""
        self.stop_accepting()
        if self._server is not None:
            self._server.close()
        legs = list(self.legs)
        for leg in legs:
            leg.request_hangup("shutdown")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(leg.wait_ended() for leg in legs))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        try:
            await self.handle(StreamPair(reader, writer), peer[0] if peer else "", remote)
        finally:
            if task is not None:
                self._tasks.discard(task)

    # ---- one connection ----------------------------------------------------------------------

    async def handle(self, stream: ByteStream, source: str, remote: str = "") -> None:
        """Serve one connection until its call ends; never raises for the peer's doing."""
        try:
            await self._handle(stream, source, remote)
        finally:
            stream.close()

    async def _handle(self, stream: ByteStream, source: str, remote: str) -> None:
        refusal = self._policy.refusal("", source)
        if refusal is not None:
            event(log, "audiosocket.refused", logging.WARNING, remote=remote,
                  reason=refusal.replace("sip.", "audiosocket."))  # fmt: skip
            return
        decoder = AudioSocketDecoder()
        try:
            call_uuid, early = await self._read_uuid(stream, decoder)
        except (AudioSocketError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            event(log, "audiosocket.refused", logging.WARNING, remote=remote, reason=reason)
            return
        route, extra = self._route(call_uuid)
        ids = {"audiosocket_uuid": str(call_uuid), **extra}
        if remote:
            ids["remote_addr"] = remote
        info = LegInfo(
            transport="audiosocket",
            direction="inbound",
            local_user=route,
            remote_uri=f"audiosocket:{remote}" if remote else "",
            ids=ids,
        )
        try:
            if not self.accepting:
                raise Rejection(Rejection.UNAVAILABLE, "shutting down")
            self.acceptor.admit(info)
        except Rejection as rej:
            event(log, "call.rejected", transport="audiosocket", audiosocket_uuid=str(call_uuid),
                  user=route, reason=rej.kind)  # fmt: skip
            stream.write(encode(Hangup()))
            return
        leg = AudioSocketLeg(stream, decoder, self.clock, info, self.config.leg, early=early)
        self.legs.add(leg)
        try:
            self.acceptor.start(leg)
            await leg.wait_ended()
        finally:
            self.legs.discard(leg)
            leg.request_hangup("error")  # no-op when it ended normally
            leg.aclose()

    async def _read_uuid(
        self, stream: ByteStream, decoder: AudioSocketDecoder
    ) -> tuple[uuid.UUID, list[Frame]]:
        """The UUID frame (res_audiosocket.c:189-216: always first) and what came with it."""
        async with asyncio.timeout(self.config.handshake_timeout):
            while True:
                data = await stream.read(4096)
                if not data:
                    raise AudioSocketError("closed before the UUID frame")
                frames = decoder.feed(data)
                if not frames:
                    continue
                first, rest = frames[0], frames[1:]
                if not isinstance(first, UuidFrame):
                    raise AudioSocketError(f"first frame is {type(first).__name__}, not a UUID")
                return first.value, rest
