"""A real HTTP/1.1 server on 127.0.0.1 serving canned LLM replies, for the brain tests.

Hand-written over asyncio streams so that the tests see exactly what a client does on the
socket: the request it sent, and when it closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from functools import partial


@dataclass(frozen=True)
class Sse:
    """A 200 text/event-stream reply, each item written as its own HTTP chunk."""

    chunks: tuple[bytes, ...]
    interval: float = 0.0  # server-side pause between chunks (a slow stream)
    hold: bool = False  # after the chunks keep the stream open until the client leaves


@dataclass(frozen=True)
class Status:
    """A complete non-streamed reply, for error statuses."""

    status: int
    body: bytes = b'{"error": {"message": "internal error"}}'
    content_type: str = "application/json"


@dataclass(frozen=True)
class Stall:
    """Accept the request, then send nothing (or only the headers) for ``seconds``."""

    seconds: float = 10.0
    send_headers: bool = True


Reply = Sse | Status | Stall


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass
class FakeLLMServer:
    """Answers each request with the next queued reply (404 when none is queued)."""

    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _request_seen: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    _clients_gone: asyncio.Queue[str] = field(default_factory=asyncio.Queue)  # request paths

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def next_request(self, deadline: float = 1.0) -> Request:
        return await asyncio.wait_for(self._request_seen.get(), deadline)

    async def client_gone(self, deadline: float = 1.0) -> str:
        """Wait until a client closed its connection (before the server did); returns the
        path it had requested."""
        return await asyncio.wait_for(self._clients_gone.get(), deadline)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        watcher: asyncio.Task[bytes] | None = None
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            self._request_seen.put_nowait(request)
            # The request was read whole, so this read ends only when the client closes.
            watcher = asyncio.create_task(reader.read())
            watcher.add_done_callback(partial(self._on_read_end, request.path))
            reply = self.replies.popleft() if self.replies else Status(404, b"{}")
            await self._answer(reply, writer, watcher)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            if watcher is not None and not watcher.done():
                watcher.cancel()

    def _on_read_end(self, path: str, watcher: asyncio.Task[bytes]) -> None:
        if not watcher.cancelled():  # cancelled: the server ended the exchange itself
            self._clients_gone.put_nowait(path)

    async def _answer(
        self, reply: Reply, writer: asyncio.StreamWriter, client_gone: asyncio.Task[bytes]
    ) -> None:
        match reply:
            case Status(status, body, content_type):
                writer.write(
                    f"HTTP/1.1 {status} Whatever\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
            case Stall(seconds, send_headers):
                if send_headers:
                    writer.write(_SSE_HEADERS)
                    await writer.drain()
                await asyncio.wait([client_gone], timeout=seconds)
            case Sse(chunks, interval, hold):
                writer.write(_SSE_HEADERS)
                for number, chunk in enumerate(chunks):
                    if number and interval:
                        await asyncio.wait([client_gone], timeout=interval)
                    if client_gone.done():
                        return
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                if hold:
                    await asyncio.wait([client_gone], timeout=10.0)
                else:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()


_SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)


async def _read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


# --- canned streams ------------------------------------------------------------------------


def sse(data: object, event: str | None = None) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


def openai_chunk(delta: dict[str, object], finish_reason: str | None = None) -> bytes:
    return sse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
    )


def openai_text(*pieces: str, done: bool = True) -> tuple[bytes, ...]:
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    chunks += [openai_chunk({"content": piece}) for piece in pieces]
    if done:
        chunks += [openai_chunk({}, "stop"), sse("[DONE]")]
    return tuple(chunks)


def openai_tool_call(
    call_id: str, name: str, arguments: str, *, index: int = 0, pieces: int = 1
) -> list[bytes]:
    """One tool call, its JSON arguments cut into ``pieces`` fragments."""
    step = max(1, -(-len(arguments) // pieces))
    parts = [arguments[i : i + step] for i in range(0, len(arguments), step)] or [""]
    first = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    chunks = [openai_chunk({"tool_calls": [first]})]
    chunks += [
        openai_chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        for part in parts
    ]
    return chunks


def anthropic_event(payload: dict[str, object]) -> bytes:
    return sse(payload, event=str(payload["type"]))


MESSAGE_START = anthropic_event(
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "fake",
            "stop_reason": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        },
    }
)


def anthropic_text_block(index: int, *pieces: str) -> list[bytes]:
    chunks = [
        anthropic_event(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
        )
    ]
    chunks += [
        anthropic_event(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": piece},
            }
        )
        for piece in pieces
    ]
    chunks.append(anthropic_event({"type": "content_block_stop", "index": index}))
    return chunks


def anthropic_tool_block(
    index: int, tool_id: str, name: str, arguments: str, pieces: int = 1
) -> list[bytes]:
    step = max(1, -(-len(arguments) // pieces))
    parts = [arguments[i : i + step] for i in range(0, len(arguments), step)]
    chunks = [
        anthropic_event(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            }
        )
    ]
    chunks += [
        anthropic_event(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": part},
            }
        )
        for part in ["", *parts]
    ]
    chunks.append(anthropic_event({"type": "content_block_stop", "index": index}))
    return chunks


def anthropic_end(stop_reason: str = "end_turn") -> list[bytes]:
    return [
        anthropic_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            }
        ),
        anthropic_event({"type": "message_stop"}),
    ]
