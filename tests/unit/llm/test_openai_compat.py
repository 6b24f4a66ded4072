"""OpenAICompatBrain against a real local HTTP server; the shared SSE and history helpers."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.llm.base import (
    CALL_CONNECTED_CUE,
    DEFAULT_SYSTEM_PROMPT,
    INTERRUPTED_NOTE,
    INTERRUPTED_SILENT_NOTE,
    UNANSWERED_TOOL_RESULT,
    Brain,
    BrainError,
    BrainOutput,
    Message,
    SseEvent,
    TextDelta,
    ToolCall,
    aclose_stream,
    iter_sse,
    normalize_history,
)
from callbridge.llm.openai_compat import OpenAICompatBrain
from tests.unit.llm.fakes import (
    FakeLLMServer,
    Sse,
    Stall,
    Status,
    openai_chunk,
    openai_text,
    openai_tool_call,
    sse,
)

KEY = "sk-test-0123456789abcdefSECRET"
HELLO = [Message("user", "hello")]
TIMEOUT = 1.0  # seconds to the first token (and between chunks); ample on a busy machine


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    fake = FakeLLMServer()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def brain(server: FakeLLMServer) -> AsyncIterator[OpenAICompatBrain]:
    b = OpenAICompatBrain(f"{server.url}/v1", "llama3.2", timeout=TIMEOUT)
    yield b
    await b.aclose()


async def collect(brain: Brain, history: Sequence[Message] = HELLO) -> list[BrainOutput]:
    return [output async for output in brain.respond(history)]


def text_of(outputs: list[BrainOutput]) -> str:
    return "".join(o.text for o in outputs if isinstance(o, TextDelta))


# --- streaming -------------------------------------------------------------------------------


async def test_streams_text_deltas_in_order(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    server.queue(Sse(openai_text("It's ", "three ", "o'clock.")))
    outputs = await collect(brain)
    assert outputs == [TextDelta("It's "), TextDelta("three "), TextDelta("o'clock.")]


async def test_request_is_a_streamed_chat_completion_with_tools(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    server.queue(Sse(openai_text("ok")))
    await collect(brain)
    request = await server.next_request()
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert "authorization" not in request.headers  # local servers need no key
    body = request.json()
    assert body["model"] == "llama3.2"
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "hello"},
    ]
    tools = body["tools"]
    assert isinstance(tools, list)
    assert [t["function"]["name"] for t in tools] == ["hang_up", "transfer", "send_dtmf"]
    assert all(t["type"] == "function" for t in tools)
    assert tools[1]["function"]["parameters"]["required"] == ["target"]


async def test_sends_bearer_key_when_configured(server: FakeLLMServer) -> None:
    brain = OpenAICompatBrain(f"{server.url}/v1", "gpt-4o-mini", KEY, timeout=TIMEOUT)
    server.queue(Sse(openai_text("ok")))
    await collect(brain)
    await brain.aclose()
    assert (await server.next_request()).headers["authorization"] == f"Bearer {KEY}"


async def test_no_tools_field_when_tools_disabled(server: FakeLLMServer) -> None:
    brain = OpenAICompatBrain(f"{server.url}/v1", "m", timeout=TIMEOUT, tools=(), temperature=None)
    server.queue(Sse(openai_text("ok")))
    await collect(brain)
    await brain.aclose()
    body = (await server.next_request()).json()
    assert "tools" not in body
    assert "temperature" not in body


async def test_tool_call_split_across_many_fragments(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    chunks = [
        *openai_text("Putting you through.", done=False),
        *openai_tool_call("call_abc", "transfer", '{"target": "sip:sales@example.com"}', pieces=9),
        openai_chunk({}, "tool_calls"),
        sse("[DONE]"),
    ]
    server.queue(Sse(tuple(chunks)))
    outputs = await collect(brain)
    assert outputs == [
        TextDelta("Putting you through."),
        ToolCall("call_abc", "transfer", {"target": "sip:sales@example.com"}),
    ]


async def test_tool_call_is_yielded_as_soon_as_the_next_one_starts(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    chunks = [
        *openai_tool_call("call_1", "send_dtmf", '{"digits": "12#"}', pieces=4),
        *openai_tool_call("call_2", "hang_up", "", index=1),
    ]
    server.queue(Sse(tuple(chunks), hold=True))  # the stream stays open after these
    stream = brain.respond(HELLO)
    first = await asyncio.wait_for(anext(stream), 1.0)
    assert first == ToolCall("call_1", "send_dtmf", {"digits": "12#"})
    await stream.aclose()
    await server.client_gone()


async def test_ollama_style_parallel_calls_on_one_index(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    def whole(call_id: str, name: str, arguments: str) -> bytes:
        fragment = {"index": 0, "id": call_id, "function": {"name": name, "arguments": arguments}}
        return openai_chunk({"tool_calls": [fragment]})

    chunks = (
        whole("a", "send_dtmf", '{"digits":"1"}'),
        whole("b", "hang_up", "{}"),
        openai_chunk({}, "tool_calls"),
        sse("[DONE]"),
    )
    server.queue(Sse(chunks))
    assert await collect(brain) == [
        ToolCall("a", "send_dtmf", {"digits": "1"}),
        ToolCall("b", "hang_up", {}),
    ]


async def test_reasoning_and_usage_chunks_are_not_spoken(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    chunks = (
        openai_chunk({"reasoning_content": "The user greets me."}),
        openai_chunk({"content": "Hi!"}),
        openai_chunk({}, "stop"),
        sse({"id": "x", "choices": [], "usage": {"total_tokens": 3}}),
        b": keep-alive comment\n\n",
        sse("[DONE]"),
    )
    server.queue(Sse(chunks))
    assert await collect(brain) == [TextDelta("Hi!")]


async def test_stream_closed_after_finish_reason_without_done_is_accepted(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    server.queue(Sse((openai_chunk({"content": "Hi."}), openai_chunk({}, "stop"))))
    assert text_of(await collect(brain)) == "Hi."


# --- failures ---------------------------------------------------------------------------------


async def test_http_500_is_a_brain_error(server: FakeLLMServer, brain: OpenAICompatBrain) -> None:
    server.queue(Status(500, b'{"error": {"message": "model crashed"}}'))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "http"
    assert caught.value.status == 500
    assert "500" in str(caught.value)
    assert "model crashed" in str(caught.value)


async def test_key_never_appears_in_errors_or_repr(server: FakeLLMServer) -> None:
    brain = OpenAICompatBrain(f"{server.url}/v1", "gpt-4o", KEY, timeout=TIMEOUT)
    echo = f'{{"error": {{"message": "Incorrect API key provided: {KEY}"}}}}'.encode()
    server.queue(Status(401, echo))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    await brain.aclose()
    assert caught.value.status == 401
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    assert KEY not in repr(brain)
    assert KEY not in str(brain)


async def test_connection_refused_is_a_brain_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    brain = OpenAICompatBrain(f"http://127.0.0.1:{port}/v1", "m", timeout=TIMEOUT)
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    await brain.aclose()
    assert caught.value.kind == "connect"


@pytest.mark.parametrize("send_headers", [True, False])
async def test_no_first_token_in_time_is_a_timeout(
    server: FakeLLMServer, brain: OpenAICompatBrain, send_headers: bool
) -> None:
    server.queue(Stall(seconds=5.0, send_headers=send_headers))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "timeout"
    assert TIMEOUT <= loop.time() - started < TIMEOUT + 0.5
    await server.client_gone()  # the stalled connection was given up, not leaked


async def test_keepalives_without_words_do_not_count_as_first_token(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    # A role-only chunk, then keep-alive comments more often than the read timeout: the
    # connection is never idle, yet the caller hears nothing.
    chunks = (openai_chunk({"role": "assistant", "content": ""}), *[b": ping\n\n"] * 40)
    server.queue(Sse(chunks, interval=TIMEOUT / 4, hold=True))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "timeout"
    assert loop.time() - started < TIMEOUT + 0.3
    await server.client_gone()


async def test_stall_mid_stream_is_a_timeout(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    server.queue(Sse(openai_text("Well, ", done=False), hold=True))
    outputs: list[BrainOutput] = []
    with pytest.raises(BrainError) as caught:
        async for output in brain.respond(HELLO):
            outputs.append(output)
    assert outputs == [TextDelta("Well, ")]
    assert caught.value.kind == "timeout"


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param((b"data: {not json\n\n",), id="bad-json"),
        pytest.param((sse([1, 2]),), id="not-an-object"),
        pytest.param((sse({"choices": [{"delta": "text"}]}),), id="bad-delta"),
        pytest.param(openai_text("cut ", done=False), id="ended-early"),
        pytest.param((sse({"error": {"message": "out of memory"}}),), id="error-chunk"),
        pytest.param(
            (
                *openai_tool_call("c", "transfer", '{"target": '),
                openai_chunk({}, "tool_calls"),
                sse("[DONE]"),
            ),
            id="truncated-arguments",
        ),
        pytest.param(
            (openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),),
            id="tool-without-name",
        ),
    ],
)
async def test_malformed_stream_is_a_brain_error(
    server: FakeLLMServer, brain: OpenAICompatBrain, chunks: tuple[bytes, ...]
) -> None:
    server.queue(Sse(chunks))
    with pytest.raises(BrainError) as caught:
        await collect(brain)
    assert caught.value.kind == "stream"


# --- cancellation (barge-in) ------------------------------------------------------------------


async def test_cancelling_the_turn_closes_the_connection(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    server.queue(Sse(openai_text("This is a long answer ", done=False), hold=True))
    first = asyncio.Event()
    received: list[BrainOutput] = []

    async def turn() -> None:
        async for output in brain.respond(HELLO):
            received.append(output)
            first.set()

    task = asyncio.create_task(turn())
    await asyncio.wait_for(first.wait(), 1.0)
    task.cancel()  # the consumer is awaiting the next token, inside the HTTP read
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.client_gone(deadline=1.0)
    assert received == [TextDelta("This is a long answer ")]


async def test_closing_a_paused_stream_closes_the_connection(
    server: FakeLLMServer, brain: OpenAICompatBrain
) -> None:
    server.queue(Sse(openai_text("One. ", "Two. ", done=False), interval=0.05, hold=True))
    stream = brain.respond(HELLO)
    assert await asyncio.wait_for(anext(stream), 1.0) == TextDelta("One. ")
    await aclose_stream(stream)  # the consumer stopped between items
    await server.client_gone(deadline=1.0)


async def test_borrowed_client_stays_open(server: FakeLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        brain = OpenAICompatBrain(f"{server.url}/v1", "m", client=client, timeout=TIMEOUT)
        server.queue(Sse(openai_text("a")), Sse(openai_text("b")))
        assert text_of(await collect(brain)) == "a"
        await brain.aclose()
        assert not client.is_closed
        assert text_of(await collect(brain)) == "b"


# --- history mapping --------------------------------------------------------------------------


def test_history_maps_interruptions_and_tool_turns() -> None:
    brain = OpenAICompatBrain("http://localhost:11434/v1", "m", system_prompt="Be brief.")
    history = [
        Message("assistant", "Hello, how can I help?"),
        Message("user", "what are your opening hours"),
        Message("assistant", "We are open Monday to", interrupted=True),
        Message("user", "put me through to sales"),
        Message(
            "assistant",
            "Sure.",
            tool_calls=(ToolCall("call_1", "transfer", {"target": "sales"}),),
        ),
        Message("tool", "transfer failed: busy", tool_call_id="call_1"),
        Message("user", "ok"),
        Message("assistant", "", interrupted=True),
    ]
    assert brain.request_body(history)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": CALL_CONNECTED_CUE},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "what are your opening hours"},
        {"role": "assistant", "content": f"We are open Monday to... {INTERRUPTED_NOTE}"},
        {"role": "user", "content": "put me through to sales"},
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "transfer", "arguments": '{"target": "sales"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "transfer failed: busy"},
        {"role": "user", "content": "ok"},
        {"role": "assistant", "content": INTERRUPTED_SILENT_NOTE},
    ]


def test_normalize_answers_orphaned_calls_and_drops_orphaned_results() -> None:
    call = ToolCall("c1", "send_dtmf", {"digits": "1"})
    history = [
        Message("system", "extra rules"),
        Message("user", "press one"),
        Message("assistant", "", tool_calls=(call,)),
        Message("user", "   "),
        Message("tool", "late result", tool_call_id="c1"),
        Message("tool", "nobody asked", tool_call_id="zzz"),
        Message("assistant", ""),
    ]
    assert normalize_history(history) == [
        Message("system", "extra rules"),
        Message("user", "press one"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", UNANSWERED_TOOL_RESULT, tool_call_id="c1"),
    ]


def test_empty_history_asks_for_a_greeting() -> None:
    assert normalize_history([]) == [Message("user", CALL_CONNECTED_CUE)]


def test_message_rejects_unpaired_tool_turns() -> None:
    with pytest.raises(ValueError):
        Message("tool", "done")
    with pytest.raises(ValueError):
        Message("user", "x", tool_calls=(ToolCall("1", "hang_up", {}),))


# --- SSE parsing ------------------------------------------------------------------------------

STREAM = (
    b": comment\r\n"
    b"event: content_block_delta\r\n"
    b'data: {"a": 1}\r\n'
    b"\r\n"
    b"data: line one\n"
    b"data: line two\n"
    b"\n"
    b"id: 7\rdata:no-space\r\r"
    b"data: caf\xc3\xa9\n\n"
    b"data: [DONE]"
)
EVENTS = [
    SseEvent("content_block_delta", '{"a": 1}'),
    SseEvent("message", "line one\nline two"),
    SseEvent("message", "no-space"),
    SseEvent("message", "café"),
    SseEvent("message", "[DONE]"),
]


async def parse(chunks: list[bytes]) -> list[SseEvent]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for event in iter_sse(source())]


async def test_sse_parser_handles_every_line_ending_and_multiline_data() -> None:
    assert await parse([STREAM]) == EVENTS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_parser_is_independent_of_chunking(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert asyncio.run(parse(chunks)) == EVENTS
