"""The voice agent's `take_message` tool on a FakeLeg, with the real store as its
transcript sink: the message becomes an `agent.message` event (the call's events in the API),
a `message` entry of the transcript JSON and a tool result in the history; a caller who cuts
the confirmation short keeps their message."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from callbridge.agents.conversation import Conversation
from callbridge.agents.vad_pool import VadPool
from callbridge.agents.voice import VoiceAgent, VoiceAgentConfig
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.log import call_context
from callbridge.core.ports import CallLeg
from callbridge.llm.base import BrainOutput, Message, TextDelta, ToolCall
from callbridge.store.service import Store, StoreConfig, build_store
from callbridge.testing import FakeLeg, FakeWorkers, drive
from tests.unit.agents.test_voice_agent import EnergyRunner, FakeStt, FakeTts

MESSAGE = "call bob back about the invoice"
TAKE = ToolCall("demo_take_message_1", "take_message", {"text": f"  {MESSAGE} "})


class MessageBrain:
    """Answers the first turn with `first` and the message tool (first, as DemoBrain does),
    every later turn with "Sure."."""

    def __init__(self, first: str, *, every_turn: bool = False) -> None:
        self.first = first
        self.every_turn = every_turn
        self.turns = 0

    async def respond(self, history: Sequence[Message]) -> AsyncIterator[BrainOutput]:
        self.turns += 1
        if self.turns == 1 or self.every_turn:
            yield TAKE
        for word in (self.first if self.turns == 1 else "Sure.").split():
            yield TextDelta(word + " ")


async def run(
    tmp_path: Path, leg: FakeLeg, brain: MessageBrain, seconds: float
) -> tuple[VoiceAgent, Store]:
    """The call on fake time (test_voice_agent's harness), recorded by a real store session."""
    clock = leg.clock
    st = build_store(StoreConfig(tmp_path, fsync=False, recording=False))
    session = st.begin(call_id="call-m", info=leg.info, agent="voice", t0=clock.now())
    pool = VadPool(EnergyRunner(), clock, executor=FakeWorkers(clock))
    async with pool:

        def conversation(call_leg: CallLeg) -> Conversation:
            return Conversation(
                call_leg, clock=clock, vad_pool=pool, recognizer=lambda: FakeStt(MESSAGE),
                synthesizer=FakeTts(), executor=FakeWorkers(clock),
            )  # fmt: skip

        agent = VoiceAgent(
            brain=brain, conversation=conversation, clock=clock,
            config=VoiceAgentConfig(greet=False),
        )  # fmt: skip
        agent.attach_transcript(session)
        with call_context("call-m"):  # as CallManager runs it: the events reach the store
            task = asyncio.create_task(agent.run(leg))
        await drive(clock, leg.pump(seconds))
        leg.end()
        await drive(clock, task)
    await session.finish("remote_bye", clock.now())
    return agent, st


def messages_logged(caplog: pytest.LogCaptureFixture) -> list[object]:
    return [
        getattr(r, "fields", {}).get("text") for r in caplog.records if r.msg == "agent.message"
    ]


async def test_a_message_is_logged_kept_in_the_history_and_the_transcript(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)  # the caller leaves the message
    agent, st = await run(tmp_path, leg, MessageBrain("Thanks, message taken."), 2.5)

    assert messages_logged(caplog) == [MESSAGE]  # whitespace normalised
    assert agent.history[-1] == Message("tool", f"message taken: {MESSAGE}", tool_call_id=TAKE.id)
    assert agent.history[-2].tool_calls == (TAKE,)

    doc = json.loads((tmp_path / "transcripts" / "call-m.json").read_text())
    kinds = [(e["kind"], e["role"], e["text"]) for e in doc["entries"]]
    assert kinds == [
        ("speech", "caller", MESSAGE),
        ("speech", "agent", "Thanks, message taken."),
        ("message", "caller", MESSAGE),
    ]
    entry = doc["entries"][2]
    assert entry["start"] == entry["end"] and entry["start"] >= doc["entries"][0]["end"]

    events = [e for e in await st.db.events("call-m") if e.name == "agent.message"]
    assert [e.data for e in events] == [{"text": MESSAGE}]
    turns = await st.db.turns("call-m")
    assert [(t.user_text, t.agent_text) for t in turns] == [(MESSAGE, "Thanks, message taken.")]
    await st.aclose()


async def test_cutting_the_confirmation_short_keeps_the_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    leg.silence(75)
    leg.say(frames=50)  # 1.5 s later, into the 3 s confirmation: a barge-in
    long_confirmation = " ".join(f"word{i}" for i in range(30))
    agent, st = await run(tmp_path, leg, MessageBrain(long_confirmation), 4.2)

    assert any(m.interrupted for m in agent.history), "the confirmation was not cut"
    assert messages_logged(caplog) == [MESSAGE]
    # The cut answer keeps only what was heard, without its tool call: no result to pair.
    assert not [m for m in agent.history if m.role == "tool"]
    doc = json.loads((tmp_path / "transcripts" / "call-m.json").read_text())
    assert [e["text"] for e in doc["entries"] if e["kind"] == "message"] == [MESSAGE]
    await st.aclose()


async def test_a_message_prepared_for_a_pause_the_caller_talked_through_is_not_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    leg = FakeLeg(FakeClock())
    leg.say(frames=30, silence_before=10)
    leg.silence(15)  # a 300 ms pause: an answer is prepared for it
    leg.say(frames=30)
    brain = MessageBrain("Thanks, message taken.", every_turn=True)
    agent, st = await run(tmp_path, leg, brain, 3.5)
    assert brain.turns == 2  # the prepared answer (dropped) and the real one
    assert messages_logged(caplog) == [MESSAGE]
    assert [m.role for m in agent.history] == ["user", "assistant", "tool"]
    doc = json.loads((tmp_path / "transcripts" / "call-m.json").read_text())
    assert [e["text"] for e in doc["entries"] if e["kind"] == "message"] == [MESSAGE]
    await st.aclose()


async def test_an_empty_message_is_a_failed_tool_and_no_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    agent = VoiceAgent(brain=MessageBrain(""), conversation=None, clock=FakeClock())  # type: ignore[arg-type]
    empty = ToolCall("m2", "take_message", {"text": "  "})
    await agent._tool(empty, None, None, None)  # type: ignore[arg-type]  # unused by this tool
    assert agent.history == [Message("tool", "failed: the message is empty", tool_call_id="m2")]
    assert messages_logged(caplog) == []
