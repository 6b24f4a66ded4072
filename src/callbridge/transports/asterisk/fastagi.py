"""FastAGI, thin: `AGI(agi://host:4573/ROUTE)` hands the call's media to our AudioSocket server.

Per connection (callbridge.asterisk.agi has the protocol): read the environment block
(bounded in lines, bytes and time), register a fresh UUID with the AudioSocket server for
ROUTE (the script path; "" = the AudioSocket listener's route), answer the channel, then
`EXEC AudioSocket <uuid>,<host:port>`. Asterisk connects to the AudioSocket server with that
UUID, so a one-line dialplan change routes a call to any agent; the AGI channel id, unique id
and caller id travel into the leg's ids (every log line and the call record carry them).
When AudioSocket returns (either side hung up) the channel is hung up and the AGI closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import uuid
from dataclasses import dataclass

from callbridge.asterisk.agi import (
    AgiError,
    AgiHangup,
    AgiReply,
    AgiReplyReader,
    AgiRequest,
    AgiRequestParser,
    format_command,
)
from callbridge.core.errors import TransportError
from callbridge.core.log import event, event_fields
from callbridge.sip.access import InboundPolicy, Network
from callbridge.transports.asterisk.audiosocket import AudioSocketServer
from callbridge.transports.asterisk.audiosocket_leg import ByteStream, StreamPair

__all__ = ["FastAgiConfig", "FastAgiServer", "audiosocket_target"]

log = logging.getLogger("callbridge.transports.asterisk.fastagi")


@dataclass(frozen=True, slots=True)
class FastAgiConfig:
    host: str = "127.0.0.1"
    port: int = 4573  # res_agi.c:1533, the FastAGI default
    allow_from: tuple[Network, ...] = ()
    # where Asterisk reaches the AudioSocket server; "" = its host:port, or, when it listens
    # on every address, the address Asterisk reached us at over AGI
    audiosocket_address: str = ""
    handshake_timeout: float = 5.0  # the environment block must arrive within this
    command_timeout: float = 10.0  # ANSWER and HANGUP replies


def audiosocket_target(configured: str, server_host: str, server_port: int, local: str) -> str:
    """host:port for EXEC AudioSocket (IPv6 hosts bracketed)."""
    if configured:
        return configured
    host = server_host
    if host in ("0.0.0.0", "::", ""):
        host = local or "127.0.0.1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{host}:{server_port}"


class _Reply(TransportError):
    """The AGI session cannot go on (a failed command, the connection gone)."""


class FastAgiServer:
    def __init__(self, config: FastAgiConfig, audiosocket: AudioSocketServer) -> None:
        self.config = config
        self.audiosocket = audiosocket
        self.port = config.port
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._policy = InboundPolicy(allow_from=config.allow_from)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        event(log, "fastagi.listening", host=self.config.host, port=self.port)

    async def shutdown(self, grace: float) -> None:
        self.accepting = False
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        stream = StreamPair(reader, writer)
        try:
            await self.handle(
                stream,
                peer[0] if isinstance(peer, tuple) else "",
                sock[0] if isinstance(sock, tuple) else "",
            )
        finally:
            stream.close()
            if task is not None:
                self._tasks.discard(task)

    async def handle(self, stream: ByteStream, source: str, local: str) -> None:
        """Serve one FastAGI session; never raises for the peer's doing."""
        refusal = self._policy.refusal("", source)
        if refusal is not None or not self.accepting:
            reason = (refusal or "shutting down").replace("sip.", "fastagi.")
            event(log, "fastagi.refused", logging.WARNING, remote=source, reason=reason)
            return
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                request, rest = await _read_request(stream)
        except (AgiError, TimeoutError, OSError) as exc:
            event(log, "fastagi.refused", logging.WARNING, remote=source,
                  reason=str(exc) or type(exc).__name__)  # fmt: skip
            return
        route = request.route or self.audiosocket.config.route
        call_uuid = uuid.uuid4()
        ids = {
            k: v
            for k, v in (
                ("agi_channel", request.channel),
                ("agi_uniqueid", request.uniqueid),
                ("agi_callerid", request.callerid),
            )
            if v
        }
        target = audiosocket_target(
            self.config.audiosocket_address,
            self.audiosocket.config.host,
            self.audiosocket.port,
            local,
        )
        event_fields(log, "fastagi.request",
                     {"route": route, "audiosocket_uuid": str(call_uuid), "target": target, **ids})  # fmt: skip
        self.audiosocket.register(call_uuid, route, **ids)
        replies = _Replies(stream, AgiReplyReader(), rest)
        try:
            async with asyncio.timeout(self.config.command_timeout):
                answered = await replies.command("ANSWER")
            if not answered.ok:
                raise _Reply(f"ANSWER failed: {answered.code} {answered.text}")
            # Returns when the AudioSocket application does: the call is over on either side.
            ran = await replies.command("EXEC", "AudioSocket", f"{call_uuid},{target}")
            if ran.code != 200:
                raise _Reply(f"EXEC AudioSocket failed: {ran.code} {ran.text}")
            async with asyncio.timeout(self.config.command_timeout):
                await replies.command("HANGUP")
        except (_Reply, AgiError, TimeoutError, OSError) as exc:
            event(log, "fastagi.ended", route=route, audiosocket_uuid=str(call_uuid),
                  reason=str(exc) or type(exc).__name__)  # fmt: skip
            return
        event(log, "fastagi.ended", route=route, audiosocket_uuid=str(call_uuid), reason="done")


async def _read_request(stream: ByteStream) -> tuple[AgiRequest, bytes]:
    parser = AgiRequestParser()
    while True:
        data = await stream.read(4096)
        if not data:
            raise AgiError("closed before the end of the AGI environment")
        request = parser.feed(data)
        if request is not None:
            return request, parser.rest


class _Replies:
    def __init__(self, stream: ByteStream, reader: AgiReplyReader, rest: bytes) -> None:
        self.stream = stream
        self.reader = reader
        self.queue: list[AgiReply | AgiHangup] = reader.feed(rest) if rest else []

    async def command(self, *words: str) -> AgiReply:
        """Send one command; its reply. _Reply when the channel hung up or the peer closed."""
        self.stream.write(format_command(*words))
        while True:
            while self.queue:
                reply = self.queue.pop(0)
                if isinstance(reply, AgiHangup):
                    # res_agi.c:4335: the channel is gone; the reply to our command follows,
                    # but nothing more can be done with it.
                    continue
                return reply
            data = await self.stream.read(4096)
            if not data:
                raise _Reply("the AGI connection closed")
            self.queue.extend(self.reader.feed(data))
