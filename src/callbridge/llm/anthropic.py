"""A brain on Anthropic's Messages API (Claude), streamed.

``POST /v1/messages`` with ``stream: true`` answers with named server-sent events:
``message_start``, then per content block ``content_block_start`` (a ``text`` or ``tool_use``
block), ``content_block_delta`` (``text_delta`` / ``input_json_delta`` with ``partial_json``)
and ``content_block_stop``; then ``message_delta`` and ``message_stop``. ``ping`` may come at
any time and ``error`` reports a failure after the 200 header. Plain httpx, no SDK.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from callbridge.llm.base import (
    DEFAULT_SYSTEM_PROMPT,
    TOOLS,
    BrainError,
    BrainOutput,
    Message,
    SseEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    first_output_within,
    new_http_client,
    normalize_history,
    parse_tool_arguments,
    redact,
    spoken_content,
    stream_outputs,
)

_PROVIDER = "Anthropic"
API_VERSION = "2023-06-01"


@dataclass(slots=True)
class _ToolBlock:
    id: str
    name: str
    initial: dict[str, object]
    partial_json: list[str] = field(default_factory=list)


class AnthropicBrain:
    """Claude over the Messages API. ``timeout`` bounds the wait for the first word and any
    later silence of the stream."""

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        base_url: str = "https://api.anthropic.com",
        max_tokens: int = 300,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        temperature: float | None = None,
        tools: Sequence[ToolSpec] = TOOLS,
    ) -> None:
        self.model = model
        self.system_prompt = system_prompt
        self.base_url = base_url.rstrip("/")
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.temperature = temperature
        self.tools = tuple(tools)
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else new_http_client()

    def __repr__(self) -> str:
        return f"AnthropicBrain(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        """Close the HTTP client if this brain created it."""
        if self._owns_client:
            await self._client.aclose()

    def respond(self, history: Sequence[Message]) -> AsyncGenerator[BrainOutput, None]:
        return first_output_within(self._stream(history), self.timeout, _PROVIDER)

    def request_body(self, history: Sequence[Message]) -> dict[str, object]:
        """The JSON sent for ``history`` (public for tests and debugging)."""
        normalized = normalize_history(history)
        # The API has no system role: all system text goes to the top-level field.
        system = [self.system_prompt] if self.system_prompt else []
        system += [m.content for m in normalized if m.role == "system" and m.content]
        body: dict[str, object] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": _wire_messages(m for m in normalized if m.role != "system"),
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if self.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in self.tools
            ]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def _headers(self) -> dict[str, str]:
        return {
            "x-api-key": self._api_key,
            "anthropic-version": API_VERSION,
            "accept": "text/event-stream",
        }

    def _stream(self, history: Sequence[Message]) -> AsyncGenerator[BrainOutput, None]:
        return stream_outputs(
            self._client,
            f"{self.base_url}/v1/messages",
            body=self.request_body(history),
            headers=self._headers(),
            timeout=self.timeout,
            provider=_PROVIDER,
            secret=self._api_key,
            parse=_parse,
        )


def _blocks(message: Message) -> list[dict[str, object]]:
    match message.role:
        case "tool":
            return [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                }
            ]
        case "assistant":
            # Trailing whitespace in an assistant turn is rejected by the API.
            text = spoken_content(message).rstrip()
            blocks: list[dict[str, object]] = [{"type": "text", "text": text}] if text else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message.tool_calls
            ]
            return blocks
        case "user" | "system":
            return [{"type": "text", "text": message.content}] if message.content else []


def _wire_messages(history: Iterable[Message]) -> list[dict[str, object]]:
    """Turns in API form: tool results ride in user turns, and consecutive turns of one role
    are merged, because the API wants user and assistant to alternate."""
    wire: list[dict[str, object]] = []
    for message in history:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if wire and wire[-1]["role"] == role:
            previous = wire[-1]["content"]
            assert isinstance(previous, list)
            previous.extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    return wire


async def _parse(events: AsyncIterator[SseEvent], secret: str | None) -> AsyncIterator[BrainOutput]:
    tools: dict[int, _ToolBlock] = {}
    async for event in events:
        if not event.data.strip():
            continue
        try:
            payload = json.loads(event.data)
        except ValueError:
            raise BrainError(f"{_PROVIDER} sent a malformed stream") from None
        if not isinstance(payload, dict):
            raise BrainError(f"{_PROVIDER} sent a malformed stream")
        kind = payload.get("type", event.event)
        match kind:
            case "content_block_start":
                block = payload.get("content_block")
                index = payload.get("index")
                if not isinstance(block, dict) or not isinstance(index, int):
                    raise BrainError(f"{_PROVIDER} sent a malformed stream")
                if block.get("type") == "text" and block.get("text"):
                    yield TextDelta(str(block["text"]))
                elif block.get("type") == "tool_use":
                    initial = block.get("input")
                    tools[index] = _ToolBlock(
                        str(block.get("id") or f"toolu_{index}"),
                        str(block.get("name") or ""),
                        initial if isinstance(initial, dict) else {},
                    )
                # thinking and server-tool blocks are not for the caller's ears.
            case "content_block_delta":
                delta = payload.get("delta")
                if not isinstance(delta, dict):
                    raise BrainError(f"{_PROVIDER} sent a malformed stream")
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextDelta(str(delta["text"]))
                elif delta.get("type") == "input_json_delta":
                    tool = tools.get(_index(payload))
                    if tool is not None:
                        tool.partial_json.append(str(delta.get("partial_json", "")))
            case "content_block_stop":
                tool = tools.pop(_index(payload), None)
                if tool is not None:
                    yield _complete(tool)
            case "message_stop":
                return
            case "error":
                error = payload.get("error")
                detail = error.get("message", "") if isinstance(error, dict) else ""
                raise BrainError(f"{_PROVIDER} failed mid-answer: {redact(str(detail), secret)}")
            case _:
                pass  # message_start, message_delta, ping, and future event types
    raise BrainError(f"{_PROVIDER} ended the stream early")


def _index(payload: dict[str, object]) -> int:
    index = payload.get("index")
    return index if isinstance(index, int) else -1


def _complete(tool: _ToolBlock) -> ToolCall:
    if not tool.name:
        raise BrainError(f"{_PROVIDER} sent a tool call without a name")
    raw = "".join(tool.partial_json)
    arguments = parse_tool_arguments(raw, tool.name) if raw.strip() else dict(tool.initial)
    return ToolCall(tool.id, tool.name, arguments)
