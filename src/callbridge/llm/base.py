"""The brain protocol: a conversation history in, a stream of speakable text and tool calls out.

Shared pieces of the HTTP brains (SSE parsing, error mapping, history normalisation) live
here too, so that the OpenAI-compatible and Anthropic clients only translate wire formats.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

import httpx

from callbridge.core.errors import AgentError
from callbridge.core.http_responses import let_go

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The brain asks the agent to act (hang up, transfer, press keys)."""

    id: str
    name: str
    arguments: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation as the agent records it.

    An assistant message with ``interrupted=True`` holds only what the caller actually heard
    (cut at the playout position when they barged in).
    """

    role: Role
    content: str
    interrupted: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        # Both providers reject a tool result that cannot be paired with its call.
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool calls")


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer, to be spoken as soon as a clause is complete."""

    text: str


BrainOutput: TypeAlias = TextDelta | ToolCall


class Brain(Protocol):
    """Turns the history into the agent's next answer, streamed.

    ``respond`` is an async generator. The agent may stop at any point (barge-in): cancelling
    the task awaiting the next item, or calling ``aclose()`` on the stream (see
    :func:`aclose_stream`), must release the HTTP connection at once. Failures the caller
    should hear an apology for are raised as :class:`BrainError`.
    """

    def respond(self, history: Sequence[Message]) -> AsyncIterator[BrainOutput]: ...


async def aclose_stream(stream: AsyncIterator[BrainOutput]) -> None:
    """Close a ``respond`` stream suspended between items (async generators have ``aclose``)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


BrainErrorKind: TypeAlias = Literal["connect", "timeout", "http", "stream"]


class BrainError(AgentError):
    """The brain could not answer. The message is short, safe to log, and never holds a key."""

    def __init__(self, message: str, kind: BrainErrorKind = "stream", status: int | None = None):
        super().__init__(message)
        self.kind: BrainErrorKind = kind
        self.status = status


# --- tools -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model; ``parameters`` is the JSON schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, object]


HANG_UP = ToolSpec(
    name="hang_up",
    description="End the phone call. Use it after saying goodbye, when the caller is done.",
    parameters={"type": "object", "properties": {}, "required": []},
)
TRANSFER = ToolSpec(
    name="transfer",
    description="Transfer the caller to another number, extension or SIP address they asked for.",
    parameters={
        "type": "object",
        "properties": {
            "target": {
                "type": "string",
                "description": "Phone number, extension or SIP URI to transfer the call to.",
            }
        },
        "required": ["target"],
    },
)
SEND_DTMF = ToolSpec(
    name="send_dtmf",
    description="Press telephone keys (DTMF), for example to navigate an automated menu.",
    parameters={
        "type": "object",
        "properties": {
            "digits": {
                "type": "string",
                "description": "The keys to press, in order: 0-9, * and #.",
                "pattern": "^[0-9*#A-Da-d]+$",
            }
        },
        "required": ["digits"],
    },
)
TOOLS: tuple[ToolSpec, ...] = (HANG_UP, TRANSFER, SEND_DTMF)

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant answering a phone call. Everything you write is "
    "spoken aloud by a speech synthesiser, so reply in one to three short, natural sentences "
    "of plain text: no markdown, lists, emoji, links or code. The caller's words come from "
    "speech recognition and may contain mistakes; if something is unclear, ask briefly. "
    "When the caller says goodbye, say a short goodbye and call hang_up. Call transfer only "
    "when the caller asks to be put through to someone, and send_dtmf only to press keys "
    "on an automated phone menu."
)

# The note tells the model its reply was cut off, so it neither repeats it nor assumes the
# caller heard the rest. Brackets keep it apart from the words that were spoken.
INTERRUPTED_NOTE = "[the caller interrupted me here and did not hear the rest]"
INTERRUPTED_SILENT_NOTE = "[the caller interrupted me before hearing anything]"
# Sent as the first user turn when the agent speaks first: both APIs (and many chat
# templates of local servers) expect the conversation to open with a user message.
CALL_CONNECTED_CUE = "[The phone call has just been connected. Greet the caller.]"
UNANSWERED_TOOL_RESULT = "not run"


def spoken_content(message: Message) -> str:
    """The assistant text to send back to a model: what was heard, marked if cut off."""
    if not message.interrupted:
        return message.content
    heard = message.content.rstrip()
    return f"{heard}... {INTERRUPTED_NOTE}" if heard else INTERRUPTED_SILENT_NOTE


def normalize_history(history: Sequence[Message]) -> list[Message]:
    """Make a history every provider accepts.

    - every assistant tool call is followed by exactly one result (a barge-in can cancel a
      call before the agent records its result; both APIs reject such a history with 400);
    - tool results that answer no pending call are dropped;
    - empty user turns and empty assistant turns are dropped;
    - the first non-system turn is a user turn.
    """
    out: list[Message] = []
    pending: list[str] = []  # tool call ids still waiting for their result

    def settle() -> None:
        out.extend(Message("tool", UNANSWERED_TOOL_RESULT, tool_call_id=i) for i in pending)
        pending.clear()

    for message in history:
        if message.role == "tool":
            if message.tool_call_id in pending:
                pending.remove(message.tool_call_id)
                out.append(message)
            continue
        settle()
        if message.role == "user" and not message.content.strip():
            continue
        if (
            message.role == "assistant"
            and not message.content.strip()
            and not message.tool_calls
            and not message.interrupted
        ):
            continue
        out.append(message)
        pending.extend(call.id for call in message.tool_calls)
    settle()
    first = next((i for i, m in enumerate(out) if m.role != "system"), len(out))
    if first == len(out) or out[first].role != "user":
        out.insert(first, Message("user", CALL_CONNECTED_CUE))
    return out


def parse_tool_arguments(raw: str, tool: str) -> dict[str, object]:
    """Decode a tool call's accumulated JSON arguments (empty means no arguments)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BrainError(f"the model sent invalid arguments for {tool}") from None
    if not isinstance(value, dict):
        raise BrainError(f"the model sent invalid arguments for {tool}")
    return value


# --- HTTP plumbing shared by the streaming clients ------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event (WHATWG HTML §9.2.6 "Interpreting an event stream")."""

    event: str
    data: str


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream body (UTF-8, lines end in CRLF, LF or CR)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    event = ""
    data: list[str] = []
    async for chunk in chunks:
        buffer += decoder.decode(chunk)
        # A trailing CR may be the first half of a CRLF split across chunks.
        cut = len(buffer) - 1 if buffer.endswith("\r") else len(buffer)
        lines = buffer[:cut].replace("\r\n", "\n").replace("\r", "\n").split("\n")
        buffer = lines.pop() + buffer[cut:]
        for line in lines:
            if not line:
                if data:
                    yield SseEvent(event or "message", "\n".join(data))
                event, data = "", []
                continue
            if line.startswith(":"):
                continue  # comment, used as keep-alive
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    # An event not followed by a blank line is incomplete and is dropped (§9.2.6), except that
    # many servers end the body right after the last data line; accept that event.
    if buffer.strip():
        name, _, value = buffer.strip("\r\n").partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield SseEvent(event or "message", "\n".join(data))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def new_http_client() -> httpx.AsyncClient:
    """A client for a brain that was given none.

    The TLS context (CA bundle parsing, ~60 ms) is built once per process, not per call.
    """
    return httpx.AsyncClient(verify=_tls_context())


def redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return text


def http_error_message(provider: str, status: int, body: bytes, secret: str | None) -> str:
    """A short description of an HTTP error reply, with the provider's reason if it gave one."""
    detail = ""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            error = error.get("message", "")
        if isinstance(error, str):
            detail = error
    elif body:
        detail = body.decode("utf-8", "replace")
    # Providers echo (partly masked) keys back in 401 messages; never pass the key on.
    detail = " ".join(redact(detail, secret).split())[:160]
    return f"{provider} answered HTTP {status}" + (f": {detail}" if detail else "")


async def first_output_within(
    stream: AsyncGenerator[BrainOutput, None], timeout: float, provider: str
) -> AsyncGenerator[BrainOutput, None]:
    """Pass ``stream`` through, failing if its first output takes longer than ``timeout``.

    The deadline covers connecting, the request and everything the server sends before the
    first word or tool call (a loaded server may accept, send headers, then think for a long
    time); the silence on the phone is what matters, not which layer stalls.
    """
    async with aclosing(stream) as inner:
        try:
            async with asyncio.timeout(timeout):
                first = await anext(inner, None)
        except TimeoutError:
            raise BrainError(
                f"{provider} sent nothing within {timeout:g} s", kind="timeout"
            ) from None
        if first is None:
            return
        yield first
        async for output in inner:
            yield output


SseParser = Callable[[AsyncIterator["SseEvent"], "str | None"], AsyncIterator[BrainOutput]]


async def stream_outputs(
    client: httpx.AsyncClient,
    url: str,
    *,
    body: Mapping[str, object],
    headers: Mapping[str, str],
    timeout: float,
    provider: str,
    secret: str | None,
    parse: SseParser,
) -> AsyncGenerator[BrainOutput, None]:
    """POST a streaming request and parse its SSE body into outputs; every failure becomes a
    BrainError without the secret in it (shared by the OpenAI-compatible and Anthropic brains)."""
    response: httpx.Response | None = None
    try:
        async with client.stream(
            "POST", url, json=dict(body), headers=dict(headers), timeout=httpx.Timeout(timeout)
        ) as response:
            if response.status_code >= 400:
                raw = await response.aread()
                raise BrainError(
                    http_error_message(provider, response.status_code, raw, secret),
                    kind="http",
                    status=response.status_code,
                )
            async for output in parse(iter_sse(response.aiter_bytes()), secret):
                yield output
    except httpx.TimeoutException as exc:
        raise BrainError(f"{provider} stopped sending", kind="timeout") from exc
    except httpx.ConnectError as exc:
        raise BrainError(f"cannot connect to {provider}", kind="connect") from exc
    except httpx.HTTPError as exc:
        raise BrainError(f"{provider} broke off the answer", kind="stream") from exc
    finally:
        let_go(response)  # closed: no reference cycle left for a full collection
