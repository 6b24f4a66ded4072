"""AnthropicBrain against a real local HTTP server serving Messages API event streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from callbridge.llm.anthropic import API_VERSION, AnthropicBrain
from callbridge.llm.base import (
    CALL_CONNECTED_CUE,
    INTERRUPTED_NOTE,
    Brain,
    BrainError,
    BrainOutput,
    Message,
    TextDelta,
    ToolCall,
)
from tests.unit.llm.fakes import (
    MESSAGE_START,
    FakeLLMServer,
    Sse,
    Stall,
    Status,
    anthropic_end,
    anthropic_event,
    anthropic_text_block,
    anthropic_tool_block,
)

KEY = "sk-ant-api03-SECRETSECRET-0123456789"
HELLO = [Message("user", "hello")]
TIMEOUT = 0.2  # seconds to the first token (and between chunks)
PING = anthropic_event({"type": "ping"})


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    fake = FakeLLMServer()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def brain(server: FakeLLMServer) -> AsyncIterator[AnthropicBrain]:
    b = AnthropicBrain(KEY, "claude-haiku-4-5", base_url=server.url, timeout=TIMEOUT)
    yield b
    await b.aclose()


async def collect(brain: Brain, history: Sequence[Message] = HELLO) -> list[BrainOutput]:
    return [output async for output in brain.respond(history)]


def stream(*blocks: list[bytes], end: bool = True) -> tuple[bytes, ...]:
    chunks = [MESSAGE_START, PING]
    for block in blocks:
        chunks += block
    if end:
        chunks += anthropic_end()
    return tuple(chunks)


async def test_streams_text_deltas(server: FakeLLMServer, brain: AnthropicBrain) -> None:
    server.queue(Sse(stream(anthropic_text_block(0, "Hello ", "there", "!"))))
    assert await collect(brain) == [TextDelta("Hello "), TextDelta("there"), TextDelta("!")]


async def test_request_headers_and_body(server: FakeLLMServer) -> None:
    brain = AnthropicBrain(
        KEY, "claude-haiku-4-5", base_url=server.url, system_prompt="Be brief.", max_tokens=200
    )
    server.queue(Sse(stream(anthropic_text_block(0, "ok"))))
    await collect(brain, [Message("system", "The caller is Bob."), *HELLO])
    await brain.aclose()
    request = await server.next_request()
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == API_VERSION == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    body = request.json()
    assert body["model"] == "claude-haiku-4-5"
    assert body["max_tokens"] == 200
    assert body["stream"] is True
    assert body["system"] == "Be brief.\n\nThe caller is Bob."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    tools = body["tools"]
    assert isinstance(tools, list)
    assert [t["name"] for t in tools] == ["hang_up", "transfer", "send_dtmf"]
    assert tools[2]["input_schema"]["properties"]["digits"]["type"] == "string"


def test_history_alternates_and_carries_tool_results_in_user_turns() -> None:
    brain = AnthropicBrain(KEY, "m")
    call = ToolCall("toolu_1", "send_dtmf", {"digits": "1"})
    history = [
        Message("assistant", "Hi, how can I help?"),
        Message("user", "press one"),
        Message("user", "please"),
        Message("assistant", "Pressing one. ", tool_calls=(call,)),
        Message("tool", "sent", tool_call_id="toolu_1"),
        Message("user", "thanks"),
        Message("assistant", "You're welcome, and", interrupted=True),
    ]
    assert brain.request_body(history)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": CALL_CONNECTED_CUE}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi, how can I help?"}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "press one"}, {"type": "text", "text": "please"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Pressing one."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "send_dtmf",
                    "input": {"digits": "1"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent"},
                {"type": "text", "text": "thanks"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": f"You're welcome, and... {INTERRUPTED_NOTE}"}],
        },
    ]


async def test_tool_use_split_across_fragments(
    server: FakeLLMServer, brain: AnthropicBrain
) -> None:
    server.queue(
        Sse(
            stream(
                anthropic_text_block(0, "Transferring you now."),
                anthropic_tool_block(1, "toolu_9", "transfer", '{"target": "+15551234"}', 7),
            )
        )
    )
    assert await collect(brain) == [
        TextDelta("Transferring you now."),
        ToolCall("toolu_9", "transfer", {"target": "+15551234"}),
    ]


async def test_tool_use_is_yielded_at_its_block_stop(
    server: FakeLLMServer, brain: AnthropicBrain
) -> None:
    chunks = stream(anthropic_tool_block(0, "toolu_1", "hang_up", ""), end=False)
    server.queue(Sse(chunks, hold=True))
    outputs = brain.respond(HELLO)
    assert await asyncio.wait_for(anext(outputs), 1.0) == ToolCall("toolu_1", "hang_up", {})
    await outputs.aclose()
    await server.client_gone()


async def test_thinking_blocks_are_not_spoken(server: FakeLLMServer, brain: AnthropicBrain) -> None:
    thinking = [
        anthropic_event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            }
        ),
        anthropic_event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Let me think."},
            }
        ),
        anthropic_event({"type": "content_block_stop", "index": 0}),
    ]
    server.queue(Sse(stream(thinking, anthropic_text_block(1, "Yes."))))
    assert await collect(brain) == [TextDelta("Yes.")]


async def test_http_error_is_a_brain_error_without_the_key(
    server: FakeLLMServer, brain: AnthropicBrain
) -> None:
    body = (
        '{"type": "error", "error": {"type": "authentication_error", '
        f'"message": "invalid x-api-key {KEY}"}}}}'
    ).encode()
    server.queue(Status(401, body))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert (caught.value.kind, caught.value.status) == ("http", 401)
    assert "invalid x-api-key" in str(caught.value)
    assert KEY not in str(caught.value)
    assert KEY not in repr(brain)


async def test_overloaded_is_a_brain_error(server: FakeLLMServer, brain: AnthropicBrain) -> None:
    server.queue(Status(529, b"overloaded", content_type="text/plain"))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.status == 529


async def test_error_event_mid_stream(server: FakeLLMServer, brain: AnthropicBrain) -> None:
    error = anthropic_event(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    server.queue(Sse((*stream(anthropic_text_block(0, "Sure"), end=False), error)))
    outputs: list[BrainOutput] = []
    with pytest.raises(BrainError, match="Overloaded"):
        async for output in brain.respond(HELLO):
            outputs.append(output)
    assert outputs == [TextDelta("Sure")]


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(stream(anthropic_text_block(0, "cut"), end=False), id="no-message-stop"),
        pytest.param((MESSAGE_START, b"event: ping\ndata: {oops\n\n"), id="bad-json"),
        pytest.param(
            stream(anthropic_tool_block(0, "t", "transfer", '{"target": 12')), id="bad-tool-json"
        ),
    ],
)
async def test_malformed_stream_is_a_brain_error(
    server: FakeLLMServer, brain: AnthropicBrain, chunks: tuple[bytes, ...]
) -> None:
    server.queue(Sse(chunks))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "stream"


async def test_stall_before_first_token_is_a_timeout(
    server: FakeLLMServer, brain: AnthropicBrain
) -> None:
    server.queue(Sse((MESSAGE_START, PING), hold=True))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "timeout"
    await server.client_gone()


async def test_stall_without_headers_is_a_timeout(
    server: FakeLLMServer, brain: AnthropicBrain
) -> None:
    server.queue(Stall(seconds=5.0, send_headers=False))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "timeout"


async def test_cancelling_the_turn_closes_the_connection(
    server: FakeLLMServer, brain: AnthropicBrain
) -> None:
    chunks = stream(anthropic_text_block(0, "A very long story"), end=False)
    server.queue(Sse(chunks, hold=True))
    first = asyncio.Event()

    async def turn() -> None:
        async for _ in brain.respond(HELLO):
            first.set()

    task = asyncio.create_task(turn())
    await asyncio.wait_for(first.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.client_gone(deadline=1.0)
