"""VoiceAgent + Conversation on callbridge.testing's FakeLeg, with fake STT/TTS/VAD (the
layer's unit test; tests/peers/ holds the real-peer proofs). The leg runs the 20 ms schedule
on a FakeClock and records, per tick, what the agent sent.

No wall time: the clock moves only when the test driver advances it (1 ms at a time, letting
every ready task run in between), and "worker threads" run their jobs inline, completing
after the fake-time cost a job charges (FakeWorkers), so every timing below is exact.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np
import pytest

from callbridge.agents.conversation import Conversation, ConversationConfig, heard_text
from callbridge.agents.vad_pool import VadPool
from callbridge.agents.voice import APOLOGY, VoiceAgent, VoiceAgentConfig
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.frames import FRAME_SAMPLES
from callbridge.core.ports import CallLeg
from callbridge.llm.base import BrainError, BrainOutput, Message, TextDelta, ToolCall
from callbridge.media.turns import TurnConfig
from callbridge.media.vad import VadConfig, VadStream
from callbridge.stt.base import Transcript
from callbridge.testing import FakeLeg, FakeWorkers, drive


def tone(amplitude: int, frames: int = 1) -> bytes:
    t = np.arange(frames * FRAME_SAMPLES)
    return (amplitude * np.sin(2 * np.pi * 300 * t / 8000)).astype("<i2").tobytes()


class EnergyRunner:
    """Stands in for Silero: 'speech' when the chunk is loud (the test controls loudness)."""

    def run(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rms = np.sqrt(np.mean(np.square(x[:, -256:]), axis=1))
        return (rms > 0.05).astype(np.float32), state

    def stream(self, config: VadConfig | None = None) -> VadStream:
        # A steady tone stands for speech here; the noise gate would rightly take a tone
        # that lasts seconds for the line's noise (its effect on speech: tests/unit/media).
        config = replace(config or VadConfig(), noise_margin_db=None)
        return VadStream(config, silence_state=np.zeros((2, 1, 128), np.float32))


class FakeStt:
    def __init__(self, text: str) -> None:
        self.text = text
        self.fed = 0

    def start(self) -> None:
        self.fed = 0

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        self.fed += len(pcm8k)
        return []

    def finish(self) -> Transcript:
        return Transcript(self.text if self.fed else "", True)

    def close(self) -> None:
        pass


class FakeTts:
    """100 ms of a quiet-ish tone per word: long answers are easy to make."""

    sample_rate = 8000

    def synthesize(self, text: str) -> Iterator[bytes]:
        yield tone(2000, frames=5 * len(text.split()))

    def close(self) -> None:
        pass


class ScriptBrain:
    def __init__(self, replies: list[str | Exception], tools: Sequence[ToolCall] = ()) -> None:
        self.replies = replies
        self.tools = tools
        self.histories: list[list[Message]] = []

    async def respond(self, history: Sequence[Message]) -> AsyncIterator[BrainOutput]:
        self.histories.append(list(history))
        reply = self.replies.pop(0) if self.replies else "Okay."
        if isinstance(reply, Exception):
            raise reply
        for word in reply.split(" "):
            yield TextDelta(word + " ")
        for call in self.tools:
            yield call


class SlowTts(FakeTts):
    """Synthesis that takes a while (a worker thread's CPU time, as piper's would)."""

    def __init__(self, seconds: float, workers: FakeWorkers) -> None:
        self.seconds = seconds
        self.workers = workers

    def synthesize(self, text: str) -> Iterator[bytes]:
        self.workers.charge(self.seconds)
        yield from super().synthesize(text)


class FakeTurnModel:
    """An end-of-turn model: the probabilities it will give, in order (then 1.0), each after
    40 ms of (fake) work."""

    def __init__(self, workers: FakeWorkers, probabilities: list[float]) -> None:
        self.workers = workers
        self.probabilities = probabilities
        self.asked: list[int] = []  # samples of audio per question

    def predict(self, pcm: bytes, sample_rate: int = 8000) -> float:
        self.workers.charge(0.04)
        self.asked.append(len(pcm) // 2)
        return self.probabilities.pop(0) if self.probabilities else 1.0


async def run_agent(
    brain: ScriptBrain,
    leg: FakeLeg,
    seconds: float,
    stt_text: str = "what time is it",
    greet: bool = False,
    tts: FakeTts | None = None,
    config: ConversationConfig | None = None,
    during: Callable[[VoiceAgent], Awaitable[None]] | None = None,
    turn_model: FakeTurnModel | None = None,
    workers: FakeWorkers | None = None,
) -> VoiceAgent:
    """The agent on `leg` for `seconds` of fake time; then the caller hangs up. `workers` is
    the speech executor (pass the one a slow fake charges)."""
    clock = leg.clock
    executor = workers or FakeWorkers(clock)
    pool = VadPool(EnergyRunner(), clock, executor=FakeWorkers(clock))  # type: ignore[arg-type]
    async with pool:

        def conversation(call_leg: CallLeg) -> Conversation:
            return Conversation(
                call_leg,
                clock=clock,
                vad_pool=pool,
                recognizer=lambda: FakeStt(stt_text),
                synthesizer=tts or FakeTts(),
                executor=executor,
                config=config or ConversationConfig(),
                turn_model=turn_model,
            )

        agent = VoiceAgent(
            brain=brain,
            conversation=conversation,
            clock=clock,
            config=VoiceAgentConfig(greet=greet),
        )
        task = asyncio.create_task(agent.run(leg))
        side = asyncio.create_task(during(agent)) if during is not None else None
        await drive(clock, leg.pump(seconds))
        leg.end()
        await drive(clock, asyncio.gather(task, *([side] if side is not None else [])))
    await task
    return agent


def agent_audio_times(leg: FakeLeg, utterance: int) -> list[float]:
    return [s.at for s in leg.audio_sent(utterance)]


async def test_answers_a_turn_after_the_end_of_speech() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)  # 0.2 s silence, 0.8 s speech
    brain = ScriptBrain(["It is three o'clock."])
    agent = await run_agent(brain, leg, seconds=3.0)
    assert [m.role for m in agent.history] == ["user", "assistant"]
    assert agent.history[0].content == "what time is it"
    assert agent.history[1].content == "It is three o'clock." and not agent.history[1].interrupted
    times = agent_audio_times(leg, 1)
    assert len(times) == 4 * 5  # 4 words x 100 ms, all played
    speech_end = leg.sent[0].at + 1.0
    # End of turn needs 600 ms of silence (judged per 32 ms VAD chunk, sent on a 20 ms
    # tick); the answer starts right after.
    assert 0.6 <= times[0] - speech_end < 0.6 + 0.06, times[0] - speech_end


async def test_barge_in_stops_playout_and_keeps_only_what_was_heard() -> None:
    leg = FakeLeg(FakeClock())
    long_answer = " ".join(f"word{i}" for i in range(40))  # 4 s of audio
    leg.say(frames=40, silence_before=10)
    brain = ScriptBrain([long_answer, "Sure."])
    # The caller speaks again 1.5 s after the agent starts (~2.7 s into the call).
    leg.silence(75)
    onset_index = len(leg.caller) + 0
    leg.say(frames=50)
    agent = await run_agent(brain, leg, seconds=6.0, stt_text="stop please")
    onset = leg.sent[0].at + 0.02 * onset_index
    times = agent_audio_times(leg, 1)
    assert times, "the agent never spoke"
    stop_latency = times[-1] - onset
    assert 0 < stop_latency < 0.3, stop_latency
    interrupted = [m for m in agent.history if m.interrupted]
    assert len(interrupted) == 1
    heard = interrupted[0].content.split()
    assert 0 < len(heard) < 40 and heard == long_answer.split()[: len(heard)]
    # It then answered the interrupting turn.
    assert agent.history[-1].content == "Sure."


async def test_barge_in_silences_the_agent_before_it_is_confirmed() -> None:
    leg = FakeLeg(FakeClock())
    long_answer = " ".join(f"word{i}" for i in range(40))
    leg.say(frames=40, silence_before=10)
    brain = ScriptBrain([long_answer, "Sure."])
    leg.silence(75)
    onset_index = len(leg.caller)
    leg.say(frames=50)
    await run_agent(brain, leg, seconds=4.0, stt_text="stop please")
    onset = leg.sent[0].at + 0.02 * onset_index
    stop_latency = agent_audio_times(leg, 1)[-1] - onset
    # the hold starts with the first qualifying VAD chunk: well under min_speech (150 ms)
    assert 0 < stop_latency < 0.05, stop_latency


async def test_a_cough_pauses_the_answer_which_then_plays_in_full() -> None:
    leg = FakeLeg(FakeClock())
    answer = " ".join(f"word{i}" for i in range(25))  # 2.5 s of audio
    leg.say(frames=40, silence_before=10)
    brain = ScriptBrain([answer])
    leg.silence(70)  # into the answer...
    leg.say(frames=4)  # ...an 80 ms cough
    agent = await run_agent(brain, leg, seconds=5.5)
    assert not any(m.interrupted for m in agent.history)
    times = agent_audio_times(leg, 1)
    assert len(times) == 25 * 5  # nothing dropped
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # it paused for the cough (80 ms) and the hold's release (500 ms), then went on
    assert 0.55 <= max(gaps) < 0.65, max(gaps)


async def first_answer_delay(config: ConversationConfig) -> float:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    workers = FakeWorkers(leg.clock)
    await run_agent(
        ScriptBrain(["It is three."]),
        leg,
        seconds=2.5,
        tts=SlowTts(0.15, workers),
        config=config,
        workers=workers,
    )
    times = agent_audio_times(leg, 1)
    assert times, "no answer"
    return times[0] - (leg.sent[0].at + 1.0)  # speech ends 1.0 s into the call


async def test_the_answer_is_prepared_during_the_pause_and_plays_when_the_turn_ends() -> None:
    end_silence = ConversationConfig().turn.end_silence
    prepared = await first_answer_delay(ConversationConfig())
    assert end_silence <= prepared < end_silence + 0.06, prepared
    # the same call without preparing: transcript + brain + 150 ms of synthesis come after
    late = await first_answer_delay(ConversationConfig(prepare_after=None))
    assert late - prepared > 0.13, late  # ~150 ms, on the 20 ms tick


class StreamingTts(FakeTts):
    """A streaming synthesiser: the clause arrives in 5 pieces, 100 ms of work apart."""

    def __init__(self, workers: FakeWorkers) -> None:
        self.workers = workers

    def synthesize(self, text: str) -> Iterator[bytes]:
        pcm = b"".join(super().synthesize(text))
        step = len(pcm) // 5 // 2 * 2
        for i in range(5):
            self.workers.charge(0.1)
            yield pcm[i * step : (i + 1) * step if i < 4 else len(pcm)]


async def test_streamed_synthesis_plays_before_the_clause_is_complete() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    words = " ".join(f"w{i}" for i in range(10))  # one clause, 1 s of audio
    config = ConversationConfig(prepare_after=None)
    workers = FakeWorkers(leg.clock)
    tts = StreamingTts(workers)
    await run_agent(ScriptBrain([words]), leg, seconds=3.5, tts=tts, config=config, workers=workers)
    times = agent_audio_times(leg, 1)
    assert len(times) == 10 * 5  # all of it, in order
    delay = times[0] - (leg.sent[0].at + 1.0)
    # end of turn + the first piece (100 ms), not + the whole clause (500 ms)
    assert delay < config.turn.end_silence + 0.06 + 0.1 + 0.02, delay


async def test_caller_going_on_after_a_pause_gets_one_answer_to_all_of_it() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=30, silence_before=10)
    leg.silence(15)  # a 300 ms pause: longer than prepare_after
    leg.say(frames=30)
    brain = ScriptBrain(["Prepared for the pause.", "The real answer."])
    agent = await run_agent(brain, leg, seconds=4.0, stt_text="all of it")
    assert [(m.role, m.content) for m in agent.history] == [
        ("user", "all of it"),
        ("assistant", "The real answer."),
    ]
    assert not agent_audio_times(leg, 1), "the answer prepared for the pause was heard"
    assert agent_audio_times(leg, 2)
    assert len(brain.histories) == 2  # it did prepare an answer for the pause
    assert [m.role for m in brain.histories[-1]] == ["user"]


async def test_own_echo_at_minus_20_db_does_not_interrupt() -> None:
    leg = FakeLeg(FakeClock(), echo=True)
    long_answer = " ".join(f"word{i}" for i in range(25))
    brain = ScriptBrain([long_answer])
    agent = await run_agent(brain, leg, seconds=3.5, greet=True)
    assert not any(m.interrupted for m in agent.history)
    assert len(agent_audio_times(leg, 1)) == 25 * 5


async def test_brain_failure_gives_the_apology_and_the_call_goes_on() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    brain = ScriptBrain([BrainError("server said 500", kind="http", status=500)])
    agent = await run_agent(brain, leg, seconds=3.0)
    assert agent.history[-1] == Message("assistant", APOLOGY)
    assert not leg.hangups  # the agent did not hang up
    assert agent_audio_times(leg, 1) or agent_audio_times(leg, 2)


async def test_hang_up_tool_waits_for_the_goodbye_to_play() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    brain = ScriptBrain(["Goodbye then."], tools=[ToolCall("t1", "hang_up", {})])
    agent = await run_agent(brain, leg, seconds=4.0)
    assert leg.end_reason == "agent_hangup"
    assert len(agent_audio_times(leg, 1)) == 2 * 5  # the whole goodbye went out first
    assert agent.history[-1].role == "tool"


def test_heard_text_cuts_by_playout_position() -> None:
    clauses = [("one two three.", 0, 300), ("four five six seven.", 300, 700)]
    assert heard_text(clauses, 0) == ""
    assert heard_text(clauses, 300) == "one two three."
    assert heard_text(clauses, 500) == "one two three. four five"
    assert heard_text(clauses, 10_000) == "one two three. four five six seven."


class FlakyRunner(EnergyRunner):
    """The VAD model fails (as when it misses its deadline) in a window of loop time."""

    def __init__(self, clock: FakeClock, fail_from: float, fail_to: float) -> None:
        self.clock = clock
        self.window = (fail_from, fail_to)

    def run(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.window[0] <= self.clock.now() < self.window[1]:
            raise RuntimeError("model run failed")
        return super().run(x, state)


async def test_vad_failures_mid_sentence_do_not_end_the_turn() -> None:
    clock = FakeClock()
    leg = FakeLeg(clock)
    leg.say(frames=100, silence_before=10)  # 2 s of speech
    brain = ScriptBrain(["One answer."])
    t0 = clock.now()
    runner = FlakyRunner(clock, t0 + 0.7, t0 + 1.7)  # 1 s mid-sentence without a VAD verdict
    executor = FakeWorkers(clock)
    pool = VadPool(runner, clock, executor=FakeWorkers(clock))  # type: ignore[arg-type]
    async with pool:
        agent = VoiceAgent(
            brain=brain,
            conversation=lambda call_leg: Conversation(
                call_leg,
                clock=clock,
                vad_pool=pool,
                recognizer=lambda: FakeStt("a long sentence"),
                synthesizer=FakeTts(),
                executor=executor,
            ),
            clock=clock,
            config=VoiceAgentConfig(greet=False),
        )
        task = asyncio.create_task(agent.run(leg))
        await drive(clock, leg.pump(4.0))
        leg.end()
        await drive(clock, task)
    assert pool.failures >= 20
    assert len(brain.histories) == 1, "the turn was cut where the VAD failed"
    assert [m.role for m in agent.history] == ["user", "assistant"]


async def test_say_speaks_after_the_current_answer_and_joins_the_history() -> None:
    leg = FakeLeg(FakeClock())

    async def operator(agent: VoiceAgent) -> None:
        await leg.clock.sleep_until(leg.clock.now() + 0.2)  # the greeting is playing
        await agent.say("Your order shipped today.")

    brain = ScriptBrain(["Hello there, how can I help?"])
    agent = await run_agent(brain, leg, seconds=2.5, greet=True, during=operator)
    assert [(m.role, m.content, m.interrupted) for m in agent.history] == [
        ("assistant", "Hello there, how can I help?", False),
        ("assistant", "Your order shipped today.", False),
    ]
    greeting, said = agent_audio_times(leg, 1), agent_audio_times(leg, 2)
    assert len(greeting) == 6 * 5 and len(said) == 4 * 5  # both in full
    assert said[0] > greeting[-1]


async def test_say_with_interrupt_cuts_the_agent_off() -> None:
    leg = FakeLeg(FakeClock())
    long_greeting = " ".join(f"word{i}" for i in range(40))  # 4 s of audio

    async def operator(agent: VoiceAgent) -> None:
        await leg.clock.sleep_until(leg.clock.now() + 0.6)
        await agent.say("Sorry, one moment.", interrupt=True)

    agent = await run_agent(
        ScriptBrain([long_greeting]), leg, seconds=2.5, greet=True, during=operator
    )
    first, second = agent.history
    assert first.interrupted and 0 < len(first.content.split()) < 40, first
    assert (second.content, second.interrupted) == ("Sorry, one moment.", False)
    cut, said = agent_audio_times(leg, 1), agent_audio_times(leg, 2)
    assert len(cut) <= 35 and len(said) == 3 * 5  # cut at 0.6 s of its 4 s
    assert said[0] - cut[-1] < 0.2


async def test_say_before_the_agent_runs_is_an_error() -> None:
    agent = VoiceAgent(
        brain=ScriptBrain([]),
        conversation=lambda leg: None,  # type: ignore[arg-type,return-value]
        clock=FakeClock(),
    )
    with pytest.raises(RuntimeError, match="not running"):
        await agent.say("hello")


SEMANTIC = ConversationConfig(turn=TurnConfig(end_silence=0.2), end_silence_max=1.2)


async def test_a_turn_the_model_calls_complete_is_answered_after_the_quick_end() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    workers = FakeWorkers(leg.clock)
    model = FakeTurnModel(workers, [0.9])
    agent = await run_agent(
        ScriptBrain(["It is three."]),
        leg,
        seconds=2.5,
        config=SEMANTIC,
        turn_model=model,
        workers=workers,
    )
    assert [m.role for m in agent.history] == ["user", "assistant"]
    # asked once, on the call's audio so far (200 ms before the speech, the speech, the pause
    # up to the VAD chunk that reached 200 ms of silence)
    (asked,) = model.asked
    assert (0.2 + 0.8 + 0.2) * 8000 <= asked < (0.2 + 0.8 + 0.2 + 0.07) * 8000, asked
    delay = agent_audio_times(leg, 1)[0] - (leg.sent[0].at + 1.0)
    # 200 ms of silence (+ a VAD chunk), the model's 40 ms, the 20 ms tick
    assert 0.24 <= delay < 0.2 + 0.04 + 0.06, delay


async def test_a_pause_the_model_calls_incomplete_gets_no_answer_then_one_answer() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=30, silence_before=10)  # "I would like"
    leg.silence(35)  # a 700 ms pause
    leg.say(frames=40)  # "to leave a message."
    workers = FakeWorkers(leg.clock)
    model = FakeTurnModel(workers, [0.1, 0.95])
    brain = ScriptBrain(["Prepared for the pause.", "The real answer."])
    agent = await run_agent(
        brain,
        leg,
        seconds=4.0,
        stt_text="all of it",
        config=SEMANTIC,
        turn_model=model,
        workers=workers,
    )
    t0 = leg.sent[0].at
    gap = (t0 + 0.8, t0 + 1.5 + 0.8)  # from the first part's end to the second part's end
    assert not [s for s in leg.audio_sent() if gap[0] <= s.at <= gap[1]]
    assert [(m.role, m.content) for m in agent.history] == [
        ("user", "all of it"),
        ("assistant", "The real answer."),
    ]
    assert agent_audio_times(leg, 2)[0] - gap[1] < 0.2 + 0.04 + 0.06
    assert len(model.asked) == 2


async def test_incomplete_turn_ends_at_end_silence_max() -> None:
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    workers = FakeWorkers(leg.clock)
    model = FakeTurnModel(workers, [0.2])
    await run_agent(
        ScriptBrain(["Okay."]), leg, seconds=3.0, config=SEMANTIC, turn_model=model, workers=workers
    )
    delay = agent_audio_times(leg, 1)[0] - (leg.sent[0].at + 1.0)
    assert 1.2 <= delay < 1.2 + 0.06, delay
