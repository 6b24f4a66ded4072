"""What the voice agent publishes for the dashboard's live transcript (on the process bus,
named with the call's id): the recognizer's partials and the caller's onset (grey lines),
each final caller turn and what the caller heard of each answer, an interrupted answer with
the whole of what was cut, and a retracted pause. Runs the agent on the agents' unit-test
harness (FakeLeg, fake clock, fake STT/TTS/VAD: tests/unit/agents/test_voice_agent.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.bus import default_bus
from callbridge.core.call_events import (
    BargeIn,
    TranscriptLine,
    TranscriptPartial,
    TranscriptRetracted,
)
from callbridge.core.log import call_context
from callbridge.stt.base import Transcript
from callbridge.testing import FakeLeg
from tests.unit.agents import test_voice_agent as harness

CALL = "call-7-dash01"
Published = TranscriptLine | TranscriptPartial | TranscriptRetracted | BargeIn


@pytest.fixture
def published() -> Iterator[list[Published]]:
    got: list[Published] = []
    bus = default_bus()
    subs = [bus.subscribe(t, got.append) for t in (TranscriptLine, TranscriptPartial,
                                                   TranscriptRetracted, BargeIn)]  # fmt: skip
    yield got
    for unsubscribe in subs:
        unsubscribe()


class PartialStt(harness.FakeStt):
    """A streaming recognizer: a hypothesis after every 0.2 s of speech."""

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        before = self.fed // 3200
        super().feed(pcm8k)
        words = self.text.split()[: self.fed // 3200]
        return [Transcript(" ".join(words), False)] if self.fed // 3200 > before else []


def new_leg() -> FakeLeg:
    leg = FakeLeg(FakeClock())
    leg.info.ids["call_id"] = CALL
    return leg


async def test_partials_then_the_final_line_then_the_answer(
    published: list[Published], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "FakeStt", PartialStt)
    leg = new_leg()
    leg.say(frames=40, silence_before=10)  # 0.8 s of speech
    with call_context(CALL):
        await harness.run_agent(harness.ScriptBrain(["It is three."]), leg, seconds=3.0,
                                stt_text="what time is it now")  # fmt: skip
    assert {ev.call_id for ev in published} == {CALL}
    partials = [ev for ev in published if isinstance(ev, TranscriptPartial)]
    assert all(p.active for p in partials)
    assert "" in [p.text for p in partials]  # the onset: no words yet (the page keeps any)
    texts = [p.text for p in partials if p.text]
    assert texts[:4] == ["what", "what time", "what time is", "what time is it"]
    assert set(texts[4:]) <= {"what time is it now"}
    lines = [(ev.role, ev.text, ev.utterance) for ev in published if isinstance(ev, TranscriptLine)]
    # the answer again once its turn is confirmed (prepared in the pause): the same utterance
    assert lines[:2] == [("caller", "what time is it now", None), ("agent", "It is three.", 1)]
    assert set(lines[2:]) <= {("agent", "It is three.", 1)}
    last_partial = max(i for i, ev in enumerate(published) if isinstance(ev, TranscriptPartial))
    first_line = next(i for i, ev in enumerate(published) if isinstance(ev, TranscriptLine))
    assert last_partial < first_line  # grey while they talk, then solid


async def test_an_interrupted_answer_says_what_was_heard_and_what_was_cut(
    published: list[Published],
) -> None:
    long_answer = " ".join(f"word{i}" for i in range(40))
    leg = new_leg()
    leg.say(frames=40, silence_before=10)
    leg.silence(75)
    leg.say(frames=50)  # over the answer
    with call_context(CALL):
        await harness.run_agent(harness.ScriptBrain([long_answer, "Sure."]), leg, seconds=6.0,
                                stt_text="stop please")  # fmt: skip
    barge = [ev for ev in published if isinstance(ev, BargeIn)]
    cut = [ev for ev in published if isinstance(ev, TranscriptLine) and ev.interrupted]
    assert len(barge) == 1 and len(cut) == 1
    assert cut[0].role == "agent" and cut[0].utterance == barge[0].utterance == 1
    assert cut[0].said == long_answer and long_answer.startswith(cut[0].text)
    assert 0 < len(cut[0].text.split()) < 40 and cut[0].text == barge[0].heard
    lines = [(ev.role, ev.text) for ev in published if isinstance(ev, TranscriptLine)]
    assert lines[0] == ("caller", "stop please")
    # the interrupting turn and its answer (reported again when its turn is confirmed: the
    # same utterance, which the page replaces)
    assert lines[2:] == [("caller", "stop please"), ("agent", "Sure."), ("agent", "Sure.")]


async def test_a_pause_that_was_not_the_end_is_retracted(published: list[Published]) -> None:
    leg = new_leg()
    leg.say(frames=30, silence_before=10)
    leg.silence(15)  # longer than prepare_after: an answer is prepared, then dropped
    leg.say(frames=30)
    brain = harness.ScriptBrain(["Prepared for the pause.", "The real answer."])
    with call_context(CALL):
        await harness.run_agent(brain, leg, seconds=4.0, stt_text="all of it")
    kinds = [
        (type(ev).__name__, getattr(ev, "role", ""), getattr(ev, "text", ""))
        for ev in published
        if not isinstance(ev, TranscriptPartial)
    ]
    # The pause, tentatively a turn, and the answer prepared for it (synthesised, held, never
    # heard); the retraction, which the page applies to both; then the whole turn's.
    assert kinds == [
        ("TranscriptLine", "caller", "all of it"),
        ("TranscriptLine", "agent", "Prepared for the pause."),
        ("TranscriptRetracted", "", ""),
        ("TranscriptLine", "caller", "all of it"),
        ("TranscriptLine", "agent", "The real answer."),
        ("TranscriptLine", "agent", "The real answer."),
    ]
