"""Limits on what an HTTP request may make the server do: body size, JSON depth, echoes.

- `BodyLimit` (ASGI middleware, on every route) answers 413 to a body over `max_bytes`
  without reading it whole: a Content-Length over the limit is refused before any of the body
  is read, and the `http.request` chunks are counted as the app reads them (Content-Length is
  only trusted to refuse early, never to allow: a chunked body has none, a lying one is cut off
  by the count). The connection stays open: uvicorn discards the rest of the body as it comes
  (never buffering it), so the client reads the 413 once it has sent it all. Closing instead
  (RFC 9110 §15.5.14 allows it) resets a client that is still sending before it reads why.
- `read_json(request)` is how routes parse a JSON body: the same size bound, UTF-8 (RFC 8259
  §8.1), and a nesting depth of at most `MAX_JSON_DEPTH` checked *before* parsing (so a
  body of 100,000 `[` is a 400, not a RecursionError and a 500).
- `clip(value)` bounds what an error message echoes of the request.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import numpy as np
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callbridge.core.errors import ApiError
from callbridge.core.log import event

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_ECHO_CHARS",
    "MAX_JSON_DEPTH",
    "BodyError",
    "BodyLimit",
    "BodyTooLarge",
    "clip",
    "json_depth",
    "read_json",
]

log = logging.getLogger("callbridge.api")

DEFAULT_MAX_BODY_BYTES = 1 << 20  # Twilio's webhooks are small form posts, the API's JSON too
MAX_JSON_DEPTH = 32  # the API's bodies are flat objects; 32 leaves room, recursion never bites
MAX_ECHO_CHARS = 200
_SCOPE_KEY = "callbridge.max_body_bytes"  # BodyLimit's limit, for read_json behind it

# A JSON string (RFC 8259 §7), unrolled so a long one is one fast regex step; UTF-8 bytes of
# non-ASCII characters never look like '"' or '\'.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# translate(): brackets to +1 / -1 (as int8), everything else deleted.
_DEPTH_TABLE = bytes(1 if b in b"[{" else 0xFF if b in b"]}" else 0 for b in range(256))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BodyError(ApiError):
    """A request body this server will not take: its HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status)


class BodyTooLarge(BodyError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")
        self.limit = limit


def clip(value: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`value` as an error message may echo it: at most `limit` characters, and says so."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"


def _declared_length(scope: Scope) -> int | None:
    raw = Headers(scope=scope).get("content-length", "").strip()
    if not (raw.isascii() and raw.isdigit()):
        return None  # absent or malformed (h11 refuses the latter): the count decides
    return int(raw)


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, before it is read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, **fields: Any) -> None:
        event(log, "http.body_too_large", logging.WARNING, method=scope.get("method"),
              path=scope.get("path"), limit=self.max_bytes, **fields)  # fmt: skip
        await BodyTooLarge(self.max_bytes).response()(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared=declared)
            return
        scope[_SCOPE_KEY] = self.max_bytes
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:  # pragma: no cover - a route answering while still reading its body
                raise
            await self._refuse(scope, receive, send, received=received)


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in `body` (JSON text; 0 for a scalar). Strings are
    skipped, so brackets inside them do not count; vectorised, so a long body costs little."""
    skeleton = _STRING.sub(b"", body).translate(_DEPTH_TABLE, _NOT_BRACKETS)
    if not skeleton:
        return 0
    return int(np.frombuffer(skeleton, np.int8).cumsum(dtype=np.int64).max())


async def read_json(request: Request, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's JSON body (None when empty). Raises BodyError: 413 over the body limit
    (BodyLimit's when it runs in front, else the default), 400 for a body that is not UTF-8
    JSON or nests deeper than `max_depth`."""
    limit = request.scope.get(_SCOPE_KEY, DEFAULT_MAX_BODY_BYTES)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "the body is not valid JSON (not UTF-8)") from None
    if json_depth(body) > max_depth:
        raise BodyError(400, f"the body's JSON nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise BodyError(400, "the body is not valid JSON") from None
