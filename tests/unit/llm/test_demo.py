"""The rule-based demo brain, on recogniser-style transcripts and a fixed clock: what it
answers, the tools it asks for, and the flows that span turns (a message, an offer)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from callbridge.config.settings import load_settings
from callbridge.core.errors import ConfigError
from callbridge.llm.base import Brain, BrainOutput, Message, TextDelta, ToolCall
from callbridge.llm.demo import (
    ANYTHING_ELSE,
    ASK_FOR_MESSAGE,
    DEFAULT_GREETING,
    GOODBYE,
    HELP,
    NO_MESSAGE,
    NO_ONE_AVAILABLE,
    NOT_HEARD,
    NOT_UNDERSTOOD,
    NOTHING_SAID_YET,
    TRANSFER_NOW,
    WELCOME,
    DemoBrain,
)
from callbridge.voice_setup import build_brain_factory

MONDAY_AFTERNOON = datetime(2025, 3, 3, 15, 5)
RECEPTION = "sip:reception@pbx.example.com"


def demo(now: datetime = MONDAY_AFTERNOON, transfer_to: str = "") -> DemoBrain:
    return DemoBrain(clock_now=lambda: now, transfer_to=transfer_to)


async def outputs(brain: Brain, history: Sequence[Message]) -> list[BrainOutput]:
    return [output async for output in brain.respond(history)]


def text_of(out: list[BrainOutput]) -> str:
    return "".join(o.text for o in out if isinstance(o, TextDelta))


def tools_of(out: list[BrainOutput]) -> list[ToolCall]:
    return [o for o in out if isinstance(o, ToolCall)]


class Call:
    """A call with the brain: the history grows as the agent's would (tool calls and results
    included)."""

    def __init__(self, brain: DemoBrain) -> None:
        self.brain = brain
        self.history: list[Message] = []
        self.tools: list[ToolCall] = []

    async def say(self, heard: str) -> str:
        self.history.append(Message("user", heard))
        out = await outputs(self.brain, self.history)
        self.tools = tools_of(out)
        self.history.append(Message("assistant", text_of(out), tool_calls=tuple(self.tools)))
        self.history.extend(Message("tool", "done", tool_call_id=t.id) for t in self.tools)
        return text_of(out)


async def say(brain: DemoBrain, *turns: str) -> str:
    """Play the caller's turns one by one; return the text of the last answer."""
    call = Call(brain)
    answer = ""
    for turn in turns:
        answer = await call.say(turn)
    return answer


async def test_greets_when_the_call_starts() -> None:
    greeting = await outputs(demo(), [])
    assert all(isinstance(o, TextDelta) for o in greeting)
    assert len(greeting) > 1
    assert text_of(greeting) == DEFAULT_GREETING
    assert text_of(await outputs(DemoBrain(greeting="Hi, Acme here."), [])) == "Hi, Acme here."


async def test_answer_is_streamed_in_word_groups() -> None:
    result = await outputs(demo(), [Message("user", "what can you do")])
    assert len(result) >= 3
    assert all(isinstance(o, TextDelta) for o in result)
    first = result[0]
    assert isinstance(first, TextDelta)
    assert len(first.text.split()) <= 2  # a short first piece lets synthesis start early
    assert text_of(result) == HELP


@pytest.mark.parametrize(
    ("heard", "answer"),
    [
        ("what time is it", "It's 3:05 PM."),
        ("What time is it?", "It's 3:05 PM."),
        ("what's the tie", "It's 3:05 PM."),
        ("do you have the time", "It's 3:05 PM."),
        ("time please", "It's 3:05 PM."),
        ("what date is it", "Today is Monday, March 3rd, 2025."),
        ("what's today's date", "Today is Monday, March 3rd, 2025."),
        ("which day is today", "Today is Monday, March 3rd, 2025."),
        ("what year is it", "Today is Monday, March 3rd, 2025."),
        ("what is the time and date", "It's 3:05 PM on Monday, March 3rd, 2025."),
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


@pytest.mark.parametrize(
    "heard",
    [
        "the weather is nice today",
        "i had a great time",
        "I like   green apples!",
        "i would like to know more about the weather in the mountains next week",
    ],
)
async def test_anything_else_gets_what_it_can_do_not_the_callers_words(heard: str) -> None:
    answer = await say(demo(), heard)
    assert answer == NOT_UNDERSTOOD
    assert "time" in answer and "message" in answer and "person" in answer
    assert not {"weather", "apples", "great", "mountains"} & set(answer.lower().split())


async def test_takes_a_message() -> None:
    call = Call(demo())
    assert await call.say("i like to leave a massage") == ASK_FOR_MESSAGE
    assert call.tools == []
    answer = await call.say("tell bob the meeting moved to friday")
    assert answer == (
        "Thanks, I've taken your message: tell bob the meeting moved to friday. " + ANYTHING_ELSE
    )
    assert [(t.name, t.arguments) for t in call.tools] == [
        ("take_message", {"text": "tell bob the meeting moved to friday"})
    ]
    # The next turn is a normal one again.
    assert await call.say("what time is it") == "It's 3:05 PM."
    assert call.tools == []


async def test_the_message_tool_comes_before_the_confirmation() -> None:
    # The agent runs tools after the answer; it records a message even when the caller cuts
    # the confirmation short, so the tool must be in its hands before the words are.
    history = [
        Message("user", "can i leave a message"),
        Message("assistant", ASK_FOR_MESSAGE),
        Message("user", "please call me back on five five five"),
    ]
    out = await outputs(demo(), history)
    assert isinstance(out[0], ToolCall) and out[0].name == "take_message"
    assert out[0].arguments == {"text": "please call me back on five five five"}
    assert all(isinstance(o, TextDelta) for o in out[1:])


async def test_message_words_that_sound_like_requests_are_still_the_message() -> None:
    call = Call(demo())
    await call.say("take a message")
    text = "tell anna the time of the meeting changed and she should call the operator"
    assert (await call.say(text)).startswith("Thanks, I've taken your message: tell anna")
    assert call.tools[0].arguments == {"text": text}


@pytest.mark.parametrize("heard", ["never mind", "no", "forget it", "cancel that"])
async def test_message_can_be_cancelled(heard: str) -> None:
    call = Call(demo())
    await call.say("can i leave a message")
    assert await call.say(heard) == NO_MESSAGE
    assert call.tools == []


async def test_message_prompt_can_be_repeated_and_is_still_awaited() -> None:
    call = Call(demo())
    await call.say("i want to leave a note for bob")
    assert await call.say("sorry what") == ASK_FOR_MESSAGE
    assert await call.say("leave a message") == ASK_FOR_MESSAGE
    assert (await call.say("call me back")).startswith("Thanks, I've taken your message")
    assert call.tools[0].name == "take_message"


async def test_an_interrupted_prompt_still_awaits_the_message() -> None:
    brain = demo()
    history = [Message("user", "take a message")]
    await outputs(brain, history)
    history += [Message("assistant", "Sure, what", interrupted=True), Message("user", "hi")]
    out = await outputs(brain, history)
    assert [t.arguments for t in tools_of(out)] == [{"text": "hi"}]


async def test_a_prepared_answer_that_was_dropped_leaves_no_state() -> None:
    # The agent prepared an answer for a pause the caller talked through and dropped it
    # from the history: the full turn must still be taken as the message.
    brain = demo()
    history = [Message("user", "take a message"), Message("assistant", ASK_FOR_MESSAGE)]
    await outputs(brain, [*history, Message("user", "tell bob")])  # prepared, then dropped
    out = await outputs(brain, [*history, Message("user", "tell bob i will be late")])
    assert [t.arguments for t in tools_of(out)] == [{"text": "tell bob i will be late"}]


@pytest.mark.parametrize(
    "heard",
    ["transfer me to somebody", "can i talk to a person please", "operator", "a human please"],
)
async def test_transfers_to_the_configured_target(heard: str) -> None:
    call = Call(demo(transfer_to=RECEPTION))
    assert await call.say(heard) == TRANSFER_NOW
    assert [(t.name, t.arguments) for t in call.tools] == [("transfer", {"target": RECEPTION})]


async def test_without_a_target_says_no_one_is_available_and_offers_a_message() -> None:
    call = Call(demo())
    assert await call.say("can i speak to someone") == NO_ONE_AVAILABLE
    assert call.tools == []
    assert await call.say("yes please") == ASK_FOR_MESSAGE
    assert (await call.say("call me back")).startswith("Thanks, I've taken your message")
    call = Call(demo())
    await call.say("operator")
    assert await call.say("no") == f"Alright. {ANYTHING_ELSE}"
    assert call.tools == []
    assert await call.say("no") == GOODBYE
    assert [t.name for t in call.tools] == ["hang_up"]


async def test_repeats_its_last_answer() -> None:
    call = Call(demo())
    assert await call.say("what day is it") == "Today is Monday, March 3rd, 2025."
    for again in ("repeat that", "say that again", "pardon", "sorry what"):
        assert await call.say(again) == "Today is Monday, March 3rd, 2025."
    assert await say(demo(), "what") == NOTHING_SAID_YET


async def test_repeats_all_of_an_answer_the_caller_cut_short() -> None:
    brain = demo()
    history = [Message("user", "help")]
    await outputs(brain, history)
    history += [Message("assistant", "You can ask", interrupted=True)]
    history += [Message("user", "sorry say that again")]
    assert text_of(await outputs(brain, history)) == HELP


@pytest.mark.parametrize(
    "heard",
    ["bye", "goodbye", "good bye", "ok bye bye", "that's all", "thats all thanks",
     "that's it thanks", "nothing else", "thanks for your time goodbye", "okay by"],
)  # fmt: skip
async def test_goodbye_hangs_up_after_saying_it(heard: str) -> None:
    result = await outputs(demo(), [Message("user", heard)])
    assert text_of(result) == GOODBYE
    assert isinstance(result[-1], ToolCall)
    assert result[-1].name == "hang_up"
    assert result[-1].arguments == {}
    assert sum(isinstance(o, ToolCall) for o in result) == 1


@pytest.mark.parametrize("heard", ["stand by for the news", "i will buy a new car"])
async def test_by_inside_a_sentence_is_not_goodbye(heard: str) -> None:
    result = await outputs(demo(), [Message("user", heard)])
    assert not any(isinstance(o, ToolCall) for o in result)


async def test_thanks_then_no_is_the_end_of_the_call() -> None:
    call = Call(demo())
    assert await call.say("thank you") == WELCOME
    assert await call.say("no") == GOODBYE
    assert [t.name for t in call.tools] == ["hang_up"]


async def test_hello_and_help_explain_what_it_can_do() -> None:
    assert await say(demo(), "hello") == f"Hello! {HELP}"
    assert await say(demo(), "help") == HELP
    assert await say(demo(), "what can you do") == HELP


async def test_tool_call_ids_are_unique_within_a_call() -> None:
    call = Call(demo(transfer_to=RECEPTION))
    ids = []
    for heard in ("take a message", "call me", "operator", "bye"):
        await call.say(heard)
        ids += [t.id for t in call.tools]
    assert len(ids) == 3 and len(set(ids)) == 3


async def test_silence_and_tool_results() -> None:
    assert await say(demo(), "   ") == NOT_HEARD
    history = [Message("user", "x"), Message("tool", "ok", tool_call_id="1")]
    assert await outputs(demo(), history) == []


def test_repr_and_protocol() -> None:
    brain: Brain = demo(transfer_to=RECEPTION)
    assert "DemoBrain" in repr(brain) and RECEPTION in repr(brain)


def test_the_gateway_gives_the_configured_transfer_target_to_each_demo_brain() -> None:
    settings = load_settings(environ={"CALLBRIDGE_AGENT_TRANSFER_TO": f" {RECEPTION} "})
    factory, closers = build_brain_factory(settings)
    first, second = factory(), factory()
    assert isinstance(first, DemoBrain) and first.transfer_to == RECEPTION
    assert first is not second and closers == []  # one brain per call: no shared state
    assert load_settings(environ={}).agent.transfer_to == ""


@pytest.mark.parametrize("target", ["sip:reception@pbx.example.com", "sips:100@10.0.0.1:5061",
                                    "tel:+15551234567"])  # fmt: skip
def test_transfer_targets_that_are_accepted(target: str) -> None:
    env = {"CALLBRIDGE_AGENT_TRANSFER_TO": target}
    assert load_settings(environ=env).agent.transfer_to == target


@pytest.mark.parametrize("target", ["reception", "sip:", "http://pbx.example.com", "tel:555"])
def test_transfer_targets_that_are_refused_name_the_setting(target: str) -> None:
    with pytest.raises(ConfigError, match=r"agent\.transfer_to .*must be a SIP URI"):
        load_settings(environ={"CALLBRIDGE_AGENT_TRANSFER_TO": target})
