"""Asterisk, played from its own sources, for tests without an Asterisk binary.

- AudioSocketAsterisk: what app_audiosocket/chan_audiosocket do over TCP - connect, send the
  UUID, stream 20 ms slin frames in real time, forward DTMF, hang up by closing the socket
  (Asterisk never sends 0x00 itself), and treat anything but audio/hangup from the server as
  an error that ends the call (res_audiosocket.c:330-376).
- ChanWebSocketAsterisk: chan_websocket dialling out to a media server (Dial(WebSocket/conn)):
  MEDIA_START first, binary audio, and its playout queue - our audio cut into
  optimal_frame_size frames (a partial tail is dropped unless buffering), played one per ptime,
  MEDIA_XOFF at 900 queued frames, MEDIA_XON under 800, FLUSH_MEDIA empties it
  (chan_websocket.c:452-560, 825-845, 971-1085).
- AriDouble: ARI's HTTP and events WebSocket on one asyncio server, recording every REST call
  and answering like res/ari/resource_channels.c (externalMedia's 400s, the Channel it returns
  with UNICASTRTP_LOCAL_* variables), able to push events.

All at asterisk/asterisk@f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9. Loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import websockets
from websockets.frames import Opcode
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from callbridge.asterisk import ari, audiosocket, chan_websocket
from callbridge.asterisk.audiosocket import Audio, AudioSocketDecoder, Hangup
from callbridge.asterisk.chan_websocket import ControlFormat
from callbridge.asterisk.errors import AsteriskProtocolError

LOOPBACK = "127.0.0.1"
FRAME_S = 0.020


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # loop.time() when it arrived
    frame: object


async def _pace(frames: list[bytes], send: Any, ms: int = 20) -> None:
    """Send one frame every `ms` on the loop's clock, catching up rather than drifting."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, frame in enumerate(frames):
        delay = start + i * ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(frame)


# --- AudioSocket -------------------------------------------------------------------------------


class AudioSocketAsterisk:
    """Asterisk's side of one AudioSocket call."""

    def __init__(
        self, host: str, port: int, call_id: uuid.UUID | None = None, sample_rate: int = 8000
    ) -> None:
        self.host, self.port = host, port
        self.call_id = call_id or uuid.uuid4()
        self.sample_rate = sample_rate
        self.received: list[Arrival] = []
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        # res_audiosocket.c:189-216: the UUID is the first thing written
        self._writer.write(audiosocket.encode(audiosocket.UuidFrame(self.call_id)))
        await self._writer.drain()
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = AudioSocketDecoder(audiosocket.TO_ASTERISK)
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    self.received.append(Arrival(loop.time(), frame))
                    if isinstance(frame, Hangup):
                        self._end("hangup frame")
                        return
            self._end("server closed")
        except AsteriskProtocolError as exc:
            self._end(f"protocol error: {exc}")  # Asterisk logs it and ends the call
        except (ConnectionError, OSError) as exc:
            self._end(f"connection error: {exc}")

    def _end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()
            if self._writer is not None:
                self._writer.close()

    async def _send(self, data: bytes) -> None:
        if self._writer is None or self.ended.is_set():
            return
        self._writer.write(data)
        await self._writer.drain()

    async def stream(self, pcm: bytes) -> None:
        """The caller's audio, 20 ms per frame in real time."""
        await _pace(audiosocket.audio_frames(pcm, self.sample_rate), self._send)

    async def send_dtmf(self, digit: str) -> None:
        await self._send(audiosocket.encode(audiosocket.Dtmf(digit)))

    async def hangup(self) -> None:
        """The caller hangs up: Asterisk closes the socket (chan_audiosocket.c:152-166)."""
        self._end("asterisk hung up")
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    def received_pcm(self) -> bytes:
        return b"".join(a.frame.pcm for a in self.received if isinstance(a.frame, Audio))


# --- chan_websocket ----------------------------------------------------------------------------


class ChanWebSocketAsterisk:
    """chan_websocket connecting out to `url` for one channel."""

    def __init__(
        self,
        url: str,
        *,
        fmt: ControlFormat = "plain-text",
        codec: str = "ulaw",
        connection_id: str = "media_connection1",
        channel_id: str = "1761234567.42",
        subprotocol: str | None = None,
    ) -> None:
        self.url, self.fmt, self.codec = url, fmt, codec
        self.frame_size = chan_websocket.OPTIMAL_FRAME_SIZES[codec]
        self.connection_id, self.channel_id = connection_id, channel_id
        self.subprotocol = subprotocol
        self.commands: list[Arrival] = []  # parsed commands from the app
        self.played: list[Arrival] = []  # frames taken off the queue, one per ptime
        self.events_sent: list[str] = []
        self.queue: deque[bytes | str] = deque()  # audio frames and queued option events
        self.queue_length = 0
        self.queue_full = self.paused = self.bulk = self.report_drained = False
        self._leftover = b""
        self.ended = asyncio.Event()
        self._ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        protocols = [Subprotocol(self.subprotocol)] if self.subprotocol else None
        self._ws = await websockets.connect(self.url, subprotocols=protocols)
        await self._event(
            chan_websocket.MediaStart(
                self.connection_id,
                f"WebSocket/{self.connection_id}/0x7f3c2c004a10",
                self.channel_id,
                self.codec,
                self.frame_size,
                20,
            )
        )
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._playout())]

    async def _event(self, event: chan_websocket.Event) -> None:
        text = chan_websocket.format_event(event, self.fmt)
        self.events_sent.append(text)
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._ws.send(text)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    await self._queue_audio(message)
                    continue
                try:
                    command = chan_websocket.parse_command(message, self.fmt)
                except AsteriskProtocolError as exc:
                    await self._event(chan_websocket.EventError(self.channel_id, str(exc)))
                    continue
                if command is None:
                    continue  # Asterisk logs "command unknown" or ignores it
                self.commands.append(Arrival(loop.time(), command))
                await self._command(command)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.ended.set()

    async def _queue_audio(self, payload: bytes) -> None:
        if self.queue_length >= chan_websocket.QUEUE_LENGTH_MAX:
            return  # chan_websocket.c:971-978: dropped whole
        data = self._leftover + payload if self.bulk else payload
        self._leftover = b""
        size = self.frame_size
        whole = len(data) - len(data) % size
        for i in range(0, whole, size):
            self.queue.append(data[i : i + size])
            self.queue_length += 1
            if not self.queue_full and self.queue_length >= chan_websocket.QUEUE_XOFF_LEVEL:
                self.queue_full = True
                await self._event(chan_websocket.MediaXoff(self._cid()))
        if self.bulk:
            self._leftover = data[whole:]  # otherwise a partial tail is dropped (line 1051)

    def _cid(self) -> str | None:
        return self.channel_id if self.fmt == "json" else None

    async def _command(self, command: chan_websocket.Command) -> None:
        match command:
            case chan_websocket.Hangup():
                await self._ws.close(1000)
            case chan_websocket.FlushMedia():
                self.queue.clear()
                self.queue_length = 0
                self.bulk = False
                self._leftover = b""
            case chan_websocket.MarkMedia(correlation_id=cid):
                event = chan_websocket.MediaMarkProcessed(cid, self._cid())
                self.queue.append(chan_websocket.format_event(event, self.fmt))
            case chan_websocket.StartMediaBuffering():
                self.bulk = True
            case chan_websocket.StopMediaBuffering(correlation_id=cid):
                self.bulk = False
                if self._leftover:
                    self.queue.append(self._leftover)
                    self.queue_length += 1
                    self._leftover = b""
                event2 = chan_websocket.MediaBufferingCompleted(cid, self._cid())
                self.queue.append(chan_websocket.format_event(event2, self.fmt))
            case chan_websocket.ReportQueueDrained():
                self.report_drained = True
            case chan_websocket.PauseMedia():
                self.paused = True
            case chan_websocket.ContinueMedia():
                self.paused = False
            case chan_websocket.GetStatus():
                await self._event(
                    chan_websocket.Status(
                        self.channel_id,
                        self.queue_length,
                        chan_websocket.QUEUE_XON_LEVEL,
                        chan_websocket.QUEUE_XOFF_LEVEL,
                        self.queue_full,
                        self.bulk,
                        self.paused,
                    )
                )
            case _:
                pass  # ANSWER, SET_MEDIA_DIRECTION: recorded only

    async def _playout(self) -> None:
        """The channel timer: one dequeue per 20 ms (webchan_read / dequeue_frame)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for tick in itertools.count(1):
            await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
            if self.paused:
                continue
            if self.queue_full and self.queue_length < chan_websocket.QUEUE_XON_LEVEL:
                self.queue_full = False
                await self._event(chan_websocket.MediaXon(self._cid()))
            while self.queue and isinstance(self.queue[0], str):
                text = self.queue.popleft()
                assert isinstance(text, str)
                self.events_sent.append(text)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await self._ws.send(text)
            if not self.queue:
                if self.report_drained:
                    self.report_drained = False
                    await self._event(chan_websocket.QueueDrained(self._cid()))
                continue
            frame = self.queue.popleft()
            self.queue_length -= 1
            self.played.append(Arrival(loop.time(), frame))

    async def stream(self, audio: bytes) -> None:
        """The caller's audio as binary messages, one frame per 20 ms."""
        size = self.frame_size
        frames = [audio[i : i + size] for i in range(0, len(audio), size)]

        async def send(frame: bytes) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._ws.send(frame)

        await _pace(frames, send)

    async def send_dtmf(self, digit: str) -> None:
        await self._event(chan_websocket.DtmfEnd(digit, self.channel_id))

    async def hangup(self) -> None:
        if self._ws is not None:
            await self._ws.close(1000)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.ended.set()


# --- ARI ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestCall:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


def _channel_json(channel_id: str, name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": channel_id, "name": name, "state": state, "protocol_id": "",
        "caller": {"name": extra.pop("caller_name", ""), "number": extra.pop("caller", "")},
        "connected": {"name": "", "number": ""}, "accountcode": "",
        "dialplan": {"context": "default", "exten": "s", "priority": 1, "app_name": "Stasis",
                     "app_data": ""},
        "creationtime": "2026-08-06T15:50:00.980+0000", "language": "en", **extra,
    }  # fmt: skip


@dataclass
class AriDouble:
    """ARI on loopback: REST calls are recorded in `calls`, events pushed with `push`."""

    app: str = "callbridge"
    username: str = "callbridge"
    password: str = "secret"
    rtp_address: tuple[str, int] = (LOOPBACK, 17432)  # what UNICASTRTP_LOCAL_* will say
    calls: list[RestCall] = field(default_factory=list)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    bridges: dict[str, list[str]] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None
    _sockets: list[tuple[ServerProtocol, asyncio.StreamWriter]] = field(default_factory=list)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        for _, writer in self._sockets:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # events ------------------------------------------------------------------------------------

    def _event(self, kind: str, channel_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind, "timestamp": "2026-08-06T15:50:01.120+0000",
            "channel": self.channels[channel_id], "asterisk_id": "02:42:ac:11:00:02",
            "application": self.app, **fields,
        }  # fmt: skip

    async def push(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        for proto, writer in list(self._sockets):
            proto.send_text(text.encode())
            writer.write(b"".join(proto.data_to_send()))
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def start_call(self, channel_id: str, caller: str = "4930123456", *args: str) -> None:
        """A call enters Stasis(app,args...): StasisStart for its channel."""
        self.channels[channel_id] = _channel_json(
            channel_id, f"PJSIP/trunk-{len(self.channels):08x}", "Ring", caller=caller
        )
        await self.push(self._event("StasisStart", channel_id, args=list(args)))

    async def dtmf(self, channel_id: str, digit: str, duration_ms: int = 120) -> None:
        await self.push(
            self._event("ChannelDtmfReceived", channel_id, digit=digit, duration_ms=duration_ms)
        )

    async def caller_hangs_up(self, channel_id: str) -> None:
        await self.push(self._event("ChannelHangupRequest", channel_id, cause=16, soft=False))
        await self._destroy(channel_id)

    async def _destroy(self, channel_id: str) -> None:
        await self.push(self._event("StasisEnd", channel_id))
        await self.push(
            self._event("ChannelDestroyed", channel_id, cause=16, cause_txt="Normal Clearing")
        )
        self.channels.pop(channel_id, None)

    # HTTP --------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                url = urlsplit(target)
                query = dict(parse_qsl(url.query))
                if not self._authorised(headers, query):
                    writer.write(_response(401, {"message": "Authentication required"}))
                elif headers.get("upgrade", "").lower() == "websocket":
                    await self._websocket(head, reader, writer, url.path, query)
                    return
                else:
                    parsed = json.loads(body) if body else None
                    self.calls.append(RestCall(method, url.path, query, parsed))
                    status, payload = await self._route(method, url.path, query, parsed)
                    writer.write(_response(status, payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _authorised(self, headers: dict[str, str], query: dict[str, str]) -> bool:
        expected = f"{self.username}:{self.password}"
        if query.get("api_key") == expected:
            return True
        auth = headers.get("authorization", "")
        return auth == "Basic " + base64.b64encode(expected.encode()).decode()

    async def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.removeprefix(ari.ARI_PREFIX).strip("/").split("/")]
        match method, parts:
            case "POST", ["channels", "externalMedia"]:
                return await self._external_media(query, body)
            case "POST", ["channels", channel_id, "answer"] if channel_id in self.channels:
                self.channels[channel_id]["state"] = "Up"
                return 204, None
            case "POST", ["channels", channel_id, "continue"] if channel_id in self.channels:
                await self.push(self._event("StasisEnd", channel_id))
                return 204, None
            case "DELETE", ["channels", channel_id] if channel_id in self.channels:
                await self._destroy(channel_id)
                return 204, None
            case "GET", ["channels", channel_id, "variable"] if channel_id in self.channels:
                value = self.channels[channel_id].get("channelvars", {}).get(query.get("variable"))
                return (
                    (200, {"value": value})
                    if value is not None
                    else (404, {"message": "Provided variable was not found"})
                )
            case "POST", ["bridges"] | ["bridges", _]:
                bridge_id = parts[1] if len(parts) > 1 else str(uuid.uuid4())
                self.bridges[bridge_id] = []
                return 200, {
                    "id": bridge_id, "technology": "simple_bridge",
                    "bridge_type": query.get("type", "mixing"), "bridge_class": "stasis",
                    "creator": "Stasis", "name": query.get("name", ""), "channels": [],
                }  # fmt: skip
            case "POST", ["bridges", bridge_id, "addChannel"] if bridge_id in self.bridges:
                self.bridges[bridge_id].extend(query.get("channel", "").split(","))
                return 204, None
            case "POST", ["bridges", bridge_id, "removeChannel"] if bridge_id in self.bridges:
                for channel_id in query.get("channel", "").split(","):
                    with contextlib.suppress(ValueError):
                        self.bridges[bridge_id].remove(channel_id)
                return 204, None
            case "DELETE", ["bridges", bridge_id] if bridge_id in self.bridges:
                del self.bridges[bridge_id]
                return 204, None
            case _:
                return 404, {"message": "Resource not found"}

    async def _external_media(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        problem = ari.external_media_problem(query)
        if problem:
            return 400, {"message": problem}
        channel_id = query.get("channelId") or f"{1761234567 + next(self._ids)}.{next(self._ids)}"
        host = query.get("external_host", "INCOMING")
        encapsulation = query.get("encapsulation", "rtp")
        variables = dict((body or {}).get("variables", {}))
        if encapsulation == "rtp":
            name = f"UnicastRTP/{host}-0x7f3c2c00b8e0"
            variables |= {
                "UNICASTRTP_LOCAL_ADDRESS": self.rtp_address[0],
                "UNICASTRTP_LOCAL_PORT": str(self.rtp_address[1]),
            }
        elif encapsulation == "audiosocket":
            name = f"AudioSocket/{host}-{query['data']}"
            variables |= {"AUDIOSOCKET_UUID": query["data"], "AUDIOSOCKET_SERVICE": host}
        else:
            name = f"WebSocket/{host}/0x7f3c2c004a10"
        channel = _channel_json(channel_id, name, "Down", channelvars=variables)
        self.channels[channel_id] = channel
        # The new channel is originated into the app: it enters Stasis at once.
        await self.push(self._event("StasisStart", channel_id, args=[]))
        return 200, channel

    async def _websocket(
        self,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
        query: dict[str, str],
    ) -> None:
        proto = ServerProtocol(subprotocols=[Subprotocol("ari")])
        proto.receive_data(head)
        (request,) = proto.events_received()
        if path != f"{ari.ARI_PREFIX}/events" or self.app not in query.get("app", "").split(","):
            response = proto.reject(400, "Unknown application or path\n")
        else:
            response = proto.accept(request)  # type: ignore[arg-type]
        proto.send_response(response)
        writer.write(b"".join(proto.data_to_send()))
        await writer.drain()
        if response.status_code != 101:
            return
        self._sockets.append((proto, writer))
        self._connected.set()
        try:
            while data := await reader.read(65536):
                proto.receive_data(data)
                for frame in proto.events_received():
                    if getattr(frame, "opcode", None) is Opcode.CLOSE:
                        writer.write(b"".join(proto.data_to_send()))
                        return
                writer.write(b"".join(proto.data_to_send()))  # pongs
        finally:
            self._sockets.remove((proto, writer))


_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found"}  # fmt: skip


def _response(status: int, payload: Any) -> bytes:
    body = b"" if payload is None else json.dumps(payload).encode()
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nServer: Asterisk/22.6.0\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body
