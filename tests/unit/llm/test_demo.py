"""The rule-based demo brain, on recogniser-style transcripts and a fixed clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from callbridge.llm.base import Brain, BrainOutput, Message, TextDelta, ToolCall
from callbridge.llm.demo import ASK_FOR_MESSAGE, DEFAULT_GREETING, GOODBYE, DemoBrain

MONDAY_AFTERNOON = datetime(2025, 3, 3, 15, 5)


def demo(now: datetime = MONDAY_AFTERNOON) -> DemoBrain:
    return DemoBrain(clock_now=lambda: now)


async def outputs(brain: Brain, history: Sequence[Message]) -> list[BrainOutput]:
    return [output async for output in brain.respond(history)]


async def say(brain: DemoBrain, *turns: str) -> str:
    """Play the caller's turns one by one; return the text of the last answer."""
    history: list[Message] = []
    answer = ""
    for turn in turns:
        history.append(Message("user", turn))
        answer = "".join(o.text for o in await outputs(brain, history) if isinstance(o, TextDelta))
        history.append(Message("assistant", answer))
    return answer


async def test_greets_when_the_call_starts() -> None:
    greeting = await outputs(demo(), [])
    assert all(isinstance(o, TextDelta) for o in greeting)
    assert len(greeting) > 1
    assert "".join(o.text for o in greeting if isinstance(o, TextDelta)) == DEFAULT_GREETING
    brain = DemoBrain(greeting="Hi, Acme here.")
    assert await say_nothing_yet(brain) == "Hi, Acme here."


async def say_nothing_yet(brain: DemoBrain) -> str:
    return "".join(o.text for o in await outputs(brain, []) if isinstance(o, TextDelta))


async def test_answer_is_streamed_in_word_groups() -> None:
    result = await outputs(demo(), [Message("user", "please repeat this rather long sentence")])
    assert len(result) >= 3
    assert all(isinstance(o, TextDelta) for o in result)
    first = result[0]
    assert isinstance(first, TextDelta)
    assert len(first.text.split()) <= 2  # a short first piece lets synthesis start early
    text = "".join(o.text for o in result if isinstance(o, TextDelta))
    assert text == "You said: please repeat this rather long sentence."


@pytest.mark.parametrize(
    ("heard", "answer"),
    [
        ("what time is it", "It's 3:05 PM."),
        ("What time is it?", "It's 3:05 PM."),
        ("uh what's the time please", "It's 3:05 PM."),
        ("what date is it", "Today is Monday, March 3rd, 2025."),
        ("what's the date today", "Today is Monday, March 3rd, 2025."),
        ("what day is it", "It's Monday."),
        ("what is the time and date", "It's 3:05 PM on Monday, March 3rd, 2025."),
        ("which year is it", "It's 2025."),
        ("time please", "It's 3:05 PM."),
        ("tell me the date", "Today is Monday, March 3rd, 2025."),
    ],
)
async def test_tells_time_and_date(heard: str, answer: str) -> None:
    assert await say(demo(), heard) == answer


@pytest.mark.parametrize(
    ("now", "spoken"),
    [
        (datetime(2025, 1, 1, 0, 0), "It's 12:00 AM."),
        (datetime(2025, 1, 1, 12, 30), "It's 12:30 PM."),
        (datetime(2025, 1, 1, 9, 7), "It's 9:07 AM."),
        (datetime(2025, 1, 1, 23, 59), "It's 11:59 PM."),
    ],
)
async def test_time_is_spoken_on_a_twelve_hour_clock(now: datetime, spoken: str) -> None:
    assert await say(demo(now), "what time is it") == spoken


@pytest.mark.parametrize(
    ("day", "spoken"),
    [(1, "1st"), (2, "2nd"), (11, "11th"), (12, "12th"), (13, "13th"), (22, "22nd"), (31, "31st")],
)
async def test_dates_use_ordinals(day: int, spoken: str) -> None:
    answer = await say(demo(datetime(2025, 3, day, 10, 0)), "what's the date")
    assert f"March {spoken}, 2025." in answer


async def test_repeats_back_what_it_heard() -> None:
    assert await say(demo(), "the weather is nice today") == "You said: the weather is nice today."
    assert await say(demo(), "i had a great time") == "You said: i had a great time."
    assert await say(demo(), "i like green apples") == "You said: i like green apples."
    assert await say(demo(), "I like   green apples!") == "You said: I like green apples!"


async def test_takes_a_message() -> None:
    brain = demo()
    assert await say(brain, "can i leave a message") == ASK_FOR_MESSAGE
    history = [
        Message("user", "can i leave a message"),
        Message("assistant", ASK_FOR_MESSAGE),
        Message("user", "tell bob the meeting moved to friday"),
    ]
    answer = "".join(o.text for o in await outputs(brain, history) if isinstance(o, TextDelta))
    assert answer == "Got it, I'll pass on: tell bob the meeting moved to friday."
    assert brain.messages == ("tell bob the meeting moved to friday",)
    # The next turn is a normal one again.
    assert await say(brain, "what time is it") == "It's 3:05 PM."
    assert brain.messages == ("tell bob the meeting moved to friday",)


async def test_message_request_survives_recognition_errors() -> None:
    brain = demo()
    assert await say(brain, "i want to leave a massage") == ASK_FOR_MESSAGE
    assert await say(brain, "call me back") == "Got it, I'll pass on: call me back."
    assert brain.messages == ("call me back",)


async def test_message_can_be_cancelled() -> None:
    brain = demo()
    await say(brain, "take a message")
    assert await say(brain, "never mind") == "Okay, no message then."
    assert brain.messages == ()


@pytest.mark.parametrize(
    "heard",
    ["bye", "goodbye", "ok bye bye", "good bye thanks", "thanks for your time goodbye", "okay by"],
)
async def test_goodbye_hangs_up_after_saying_it(heard: str) -> None:
    result = await outputs(demo(), [Message("user", heard)])
    assert "".join(o.text for o in result if isinstance(o, TextDelta)) == GOODBYE
    assert isinstance(result[-1], ToolCall)
    assert result[-1].name == "hang_up"
    assert result[-1].arguments == {}
    assert sum(isinstance(o, ToolCall) for o in result) == 1


@pytest.mark.parametrize("heard", ["stand by for the news", "i will buy a new car"])
async def test_by_inside_a_sentence_is_not_goodbye(heard: str) -> None:
    result = await outputs(demo(), [Message("user", heard)])
    assert not any(isinstance(o, ToolCall) for o in result)


async def test_hello_and_help_explain_what_it_can_do() -> None:
    assert (await say(demo(), "hello")).startswith("Hello!")
    assert "time" in await say(demo(), "help")


async def test_silence_and_tool_results() -> None:
    assert await say(demo(), "   ") == "Sorry, I didn't catch that."
    history = [Message("user", "x"), Message("tool", "ok", tool_call_id="1")]
    assert await outputs(demo(), history) == []


def test_repr_and_protocol() -> None:
    brain: Brain = demo()
    assert "DemoBrain" in repr(brain)
