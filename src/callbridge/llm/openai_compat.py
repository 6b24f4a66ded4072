"""A brain on any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, llama.cpp server).

Streams ``POST {base_url}/chat/completions`` with ``stream: true``: server-sent events whose
``choices[0].delta`` carries ``content`` text and ``tool_calls`` fragments (``index``, then
``id`` and ``function.name`` once, ``function.arguments`` in pieces), ending with
``data: [DONE]``. Plain httpx, no SDK: the wire format is small and this keeps the
dependency tree (and the cancel path) under our control.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
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
    http_error_message,
    new_http_client,
    normalize_history,
    parse_tool_arguments,
    spoken_content,
    stream_outputs,
)

_PROVIDER = "the LLM endpoint"


@dataclass(slots=True)
class _PartialCall:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class OpenAICompatBrain:
    """Chat completions over HTTP; no key needed for local servers.

    ``timeout`` bounds the wait for the first word (connect included) and any later silence
    of the stream. Pass ``tools=()`` for servers or models without tool support (llama.cpp
    server without ``--jinja``, some Ollama models answer 400 when offered tools).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        temperature: float | None = 0.7,
        max_tokens: int | None = None,
        tools: Sequence[ToolSpec] = TOOLS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.system_prompt = system_prompt
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.tools = tuple(tools)
        self._api_key = api_key or None
        self._owns_client = client is None
        self._client = client if client is not None else new_http_client()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAICompatBrain(base_url={self.base_url!r}, model={self.model!r}, key={key})"

    async def aclose(self) -> None:
        """Close the HTTP client if this brain created it."""
        if self._owns_client:
            await self._client.aclose()

    def respond(self, history: Sequence[Message]) -> AsyncGenerator[BrainOutput, None]:
        return first_output_within(self._stream(history), self.timeout, _PROVIDER)

    def request_body(self, history: Sequence[Message]) -> dict[str, object]:
        """The JSON sent for ``history`` (public for tests and debugging)."""
        messages: list[dict[str, object]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.extend(_wire_message(m) for m in normalize_history(history))
        body: dict[str, object] = {"model": self.model, "messages": messages, "stream": True}
        if self.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in self.tools
            ]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _stream(self, history: Sequence[Message]) -> AsyncGenerator[BrainOutput, None]:
        return stream_outputs(
            self._client,
            f"{self.base_url}/chat/completions",
            body=self.request_body(history),
            headers=self._headers(),
            timeout=self.timeout,
            provider=_PROVIDER,
            secret=self._api_key,
            parse=_parse,
        )


def _wire_message(message: Message) -> dict[str, object]:
    match message.role:
        case "system" | "user":
            return {"role": message.role, "content": message.content}
        case "tool":
            return {
                "role": "tool",
                "tool_call_id": message.tool_call_id,
                "content": message.content,
            }
        case "assistant":
            wire: dict[str, object] = {"role": "assistant", "content": spoken_content(message)}
            if message.tool_calls:
                wire["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                    for call in message.tool_calls
                ]
            return wire


async def _parse(events: AsyncIterator[SseEvent], secret: str | None) -> AsyncIterator[BrainOutput]:
    """Chunks to outputs: text as it comes, each tool call once its arguments are complete."""
    calls = _ToolCallAssembler()
    finished = False
    async for event in events:
        if not event.data.strip():
            continue
        if event.data.strip() == "[DONE]":
            finished = True
            break
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise BrainError(f"{_PROVIDER} sent a malformed stream") from None
        if not isinstance(chunk, dict):
            raise BrainError(f"{_PROVIDER} sent a malformed stream")
        if chunk.get("error"):
            # vLLM, Ollama and llama.cpp report failures after the 200 header this way.
            raise BrainError(http_error_message(_PROVIDER, 200, event.data.encode(), secret))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            continue  # a usage-only chunk
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or not isinstance(delta, dict | None):
            raise BrainError(f"{_PROVIDER} sent a malformed stream")
        delta = delta or {}
        # reasoning_content / reasoning fields are the model's thoughts: never spoken.
        text = delta.get("content")
        if isinstance(text, str) and text:
            yield TextDelta(text)
        fragments = delta.get("tool_calls") or []
        if not isinstance(fragments, list):
            raise BrainError(f"{_PROVIDER} sent a malformed tool call")
        for position, fragment in enumerate(fragments):
            for call in calls.take(position, fragment):
                yield call
        if choice.get("finish_reason"):
            finished = True
            for call in calls.finish():
                yield call
    if not finished:
        raise BrainError(f"{_PROVIDER} ended the stream early")
    for call in calls.finish():
        yield call


class _ToolCallAssembler:
    """Joins ``delta.tool_calls`` fragments into calls.

    A call is complete when a later index starts, a new call reuses its index, or the choice
    finishes: the arguments of one call never resume after the next call has begun.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def take(self, position: int, fragment: object) -> list[ToolCall]:
        if not isinstance(fragment, dict):
            raise BrainError(f"{_PROVIDER} sent a malformed tool call")
        index = fragment.get("index", position)
        function = fragment.get("function") or {}
        if not isinstance(index, int) or not isinstance(function, dict):
            raise BrainError(f"{_PROVIDER} sent a malformed tool call")
        call_id = fragment.get("id")
        name = function.get("name")
        arguments = function.get("arguments")
        done: list[ToolCall] = []
        current = self._calls.get(index)
        # Ollama reuses index 0 for parallel calls, telling them apart only by a new id.
        if current is not None and call_id and name and call_id != current.id:
            done.append(self._complete(index))
            current = None
        if current is None:
            done.extend(self._complete(i) for i in sorted(i for i in self._calls if i < index))
            if not isinstance(name, str) or not name:
                raise BrainError(f"{_PROVIDER} sent a tool call without a name")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"call_{index}"  # some local servers omit ids
            current = self._calls[index] = _PartialCall(call_id, name)
        if isinstance(arguments, str):
            current.arguments.append(arguments)
        elif isinstance(arguments, dict):
            current.arguments.append(json.dumps(arguments))  # some servers send an object
        return done

    def finish(self) -> list[ToolCall]:
        return [self._complete(i) for i in sorted(self._calls)]

    def _complete(self, index: int) -> ToolCall:
        call = self._calls.pop(index)
        arguments = parse_tool_arguments("".join(call.arguments), call.name)
        return ToolCall(call.id, call.name, arguments)
