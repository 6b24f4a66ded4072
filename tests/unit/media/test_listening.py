"""The sans-IO listening core on a fake clock: times are plain floats passed in.

A `Call` drives a Listener the way the shell does: one 20 ms caller frame at a time (LOUD
speech or silence), a VAD result per frame (probability 1 for speech, 0 for silence), and
transcripts / model verdicts handed back when a test says they are ready.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media.listening import (
    AskTurnModel,
    ConfirmBargeIn,
    ConfirmTurn,
    DiscardUtterance,
    EndTurn,
    FeedStt,
    FinishUtterance,
    ListenAction,
    Listener,
    ListeningConfig,
    PausePlayout,
    PrepareTurn,
    ResumePlayout,
    ResumeTurn,
    SpeechOnset,
    StartUtterance,
)
from callbridge.media.turns import TurnConfig
from callbridge.media.vad import VadResult

STEP = 0.02
T0 = 1000.0
SPEECH_DBFS = -20.0
SILENCE_DBFS = -70.0
# plain silence endpointing (as the shell's defaults), and semantic with a quick end
SILENCE_ONLY = ListeningConfig(turn=TurnConfig(end_silence=0.4), prepare_after=0.15)
SEMANTIC = ListeningConfig(
    turn=TurnConfig(end_silence=0.2), prepare_after=0.15, semantic=True, end_silence_max=1.2
)


def frame(n: int, loud: bool) -> bytes:
    return bytes([n % 251 + 1 if loud else 0, 0]) * 160


class Call:
    def __init__(self, config: ListeningConfig) -> None:
        self.core = Listener(config)
        self.now = T0
        self.n = 0
        self.actions: list[tuple[float, ListenAction]] = []
        self.agent_speaking = False
        self.agent_dbfs = -120.0

    def _record(self, actions: list[ListenAction]) -> list[ListenAction]:
        self.actions.extend((self.now, a) for a in actions)
        return actions

    def tick(self, loud: bool, *, level: float | None = None) -> list[ListenAction]:
        self.now = T0 + (self.n + 1) * STEP
        self.n += 1
        out = self._record(self.core.frame(frame(self.n, loud), self.now))
        result = VadResult(
            1.0 if loud else 0.0,
            self.now - STEP,
            self.now,
            (SPEECH_DBFS if loud else SILENCE_DBFS) if level is None else level,
            "model",
        )
        return out + self._record(
            self.core.vad(result, agent_speaking=self.agent_speaking, agent_dbfs=self.agent_dbfs)
        )

    def speak(self, seconds: float, **kw: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.tick(True, **kw)

    def pause(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.tick(False)

    def of(self, kind: type[ListenAction]) -> list[tuple[float, ListenAction]]:
        return [(t, a) for t, a in self.actions if isinstance(a, kind)]

    def last_finish(self) -> int:
        return self.of(FinishUtterance)[-1][1].request  # type: ignore[union-attr]

    def transcribe(self, text: str, after: float = 0.0) -> list[ListenAction]:
        self.now += after
        return self._record(self.core.transcript(self.last_finish(), text, self.now))

    def last_ask(self) -> AskTurnModel:
        ask = self.of(AskTurnModel)[-1][1]
        assert isinstance(ask, AskTurnModel)
        return ask

    def judge(self, probability: float, after: float = 0.0) -> list[ListenAction]:
        self.now += after
        return self._record(self.core.verdict(self.last_ask().request, probability, self.now))


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-6)


class Like:
    """Equal to an action of `kind` whose fields equal `values` in order (approx() allowed).
    The action classes compiled by mypyc (callbridge.native) take only real floats, so a test
    cannot build an expected action out of approx() values."""

    def __init__(self, kind: type, *values: object) -> None:
        self.kind, self.values = kind, values

    def __eq__(self, other: object) -> bool:
        if type(other) is not self.kind:
            return False
        fields = tuple(getattr(other, f.name) for f in dataclasses.fields(other))  # type: ignore[arg-type]
        return fields == self.values

    def __repr__(self) -> str:
        return f"{self.kind.__name__}{self.values!r}"


# ---- pre-roll, utterance, plain end of turn ----------------------------------------------------


def test_the_utterance_starts_with_the_pre_roll_and_is_fed_in_batches() -> None:
    call = Call(SILENCE_ONLY)
    call.pause(1.0)  # 50 silent frames: only the last 20 are the pre-roll
    call.speak(0.5)
    (t, start), *_ = call.of(StartUtterance)
    assert t == approx(T0 + 1.02)
    assert isinstance(start, StartUtterance)
    # the 19 silent frames before the onset and the onset frame itself: 400 ms
    assert start.pcm == b"".join(frame(n, n > 50) for n in range(32, 52))
    feeds = [a.pcm for _, a in call.of(FeedStt)]  # type: ignore[union-attr]
    assert all(len(f) == 5 * 320 for f in feeds)  # 100 ms at a time
    assert b"".join(feeds) == b"".join(frame(n, True) for n in range(52, 52 + len(feeds) * 5))
    assert [a for _, a in call.of(SpeechOnset)] == [Like(SpeechOnset, approx(T0 + 1.02))]


def test_a_click_is_discarded_and_its_audio_never_reaches_the_next_turn() -> None:
    call = Call(SILENCE_ONLY)
    call.pause(0.2)
    call.speak(0.06)  # shorter than min_speech
    call.pause(0.2)
    assert [type(a) for _, a in call.actions] == [StartUtterance, DiscardUtterance]
    call.speak(0.3)
    call.pause(0.5)
    fed = [a.pcm for _, a in call.of(FeedStt)]  # type: ignore[union-attr]
    clicks = {frame(n, True) for n in range(11, 14)}
    assert not any(f[i : i + 320] in clicks for f in fed for i in range(0, len(f), 320))


def test_silence_only_turn_prepares_at_150_ms_and_confirms_at_end_silence() -> None:
    call = Call(SILENCE_ONLY)
    call.pause(0.2)
    call.speak(0.8)
    speech_end = call.now
    call.pause(0.16)
    ((t, _finish),) = call.of(FinishUtterance)
    assert t - speech_end == approx(0.16)  # the first chunk at or past 150 ms
    assert not call.of(PrepareTurn)
    out = call.transcribe("what time is it", after=0.03)
    assert [type(a) for a in out] == [PausePlayout, PrepareTurn]
    prep = out[1]
    assert isinstance(prep, PrepareTurn)
    assert (prep.text, prep.speech_end, prep.stt_latency) == (
        "what time is it",
        approx(speech_end),
        approx(0.03),
    )
    assert prep.speech_start == approx(T0 + 0.22)
    call.pause(0.3)
    ((t, _confirm),) = call.of(ConfirmTurn)
    assert t - speech_end == approx(0.4)
    assert call.of(ResumePlayout)[-1][0] == t  # the held answer is released with it
    assert not call.of(EndTurn)


def test_without_preparing_the_transcript_is_asked_at_the_end_of_the_turn() -> None:
    call = Call(dataclasses.replace(SILENCE_ONLY, prepare_after=None))
    call.speak(0.5)
    speech_end = call.now
    call.pause(0.4)
    ((t, _),) = call.of(FinishUtterance)
    assert t - speech_end == approx(0.4)
    out = call.transcribe("hello there", after=0.05)
    assert out == [
        Like(EndTurn, "hello there", approx(T0 + 0.02), approx(speech_end), t, approx(0.05))
    ]


def test_turn_ends_before_its_tentative_transcript_comes_then_that_is_final() -> None:
    call = Call(SILENCE_ONLY)
    call.speak(0.5)
    call.pause(0.6)  # transcript still being decoded when the turn ends
    assert not call.of(ConfirmTurn)
    out = call.transcribe("late words")
    assert len(out) == 1 and isinstance(out[0], EndTurn) and out[0].text == "late words"
    assert not call.of(PausePlayout)  # nothing was ever held


def test_speech_after_a_tentative_turn_drops_it_and_decodes_the_whole_turn_again() -> None:
    call = Call(SILENCE_ONLY)
    call.speak(0.6)
    call.pause(0.2)
    call.transcribe("first half")
    # pre-roll (the onset frame), the speech, the pause, and the chunk that resumed it
    turn_so_far = b"".join(frame(n, n <= 30 or n == 41) for n in range(1, 42))
    call.speak(0.1)
    resume = call.of(ResumeTurn)
    assert [t for t, _ in resume] == [approx(T0 + 0.82)]
    # a fresh utterance fed with everything since the onset (pre-roll included)
    start = call.of(StartUtterance)[-1][1]
    assert isinstance(start, StartUtterance) and start.pcm.endswith(turn_so_far)
    call.speak(0.4)
    call.pause(0.5)
    # One final turn: its tentative transcript (asked at 160 ms of silence) came after the
    # end of the turn (400 ms), so it is the final one, decided when it was asked.
    assert call.transcribe("first half second half") == [
        Like(
            EndTurn,
            "first half second half",
            approx(T0 + 0.02),
            approx(T0 + 1.30),
            approx(T0 + 1.46),
            approx(0.34),
        )
    ]


def test_a_stale_tentative_transcript_is_ignored() -> None:
    call = Call(SILENCE_ONLY)
    call.speak(0.4)
    call.pause(0.2)
    stale = call.last_finish()
    call.speak(0.3)  # resumes before the transcript came
    assert not call.of(ResumeTurn)  # nothing prepared yet: nothing to drop
    assert call.core.transcript(stale, "old", call.now) == []


def test_no_preparing_while_the_agent_speaks() -> None:
    call = Call(SILENCE_ONLY)
    call.agent_speaking = True
    call.agent_dbfs = -60.0  # quiet enough for the caller to be heard over it
    call.speak(0.4)
    call.pause(0.3)
    assert not call.of(FinishUtterance)  # a backchannel, not a turn to prepare for


# ---- barge-in --------------------------------------------------------------------------------


def test_barge_in_holds_at_once_then_confirms_after_min_speech() -> None:
    call = Call(SILENCE_ONLY)
    call.agent_speaking = True
    call.agent_dbfs = -30.0
    call.pause(0.2)
    call.speak(0.2)
    ((t_hold, hold),) = call.of(PausePlayout)
    assert hold == PausePlayout("caller", t_hold) and t_hold == approx(T0 + 0.22)
    ((t, barge),) = call.of(ConfirmBargeIn)
    # min_speech 150 ms from the onset chunk: decided on the chunk at 160 ms
    assert barge == Like(ConfirmBargeIn, approx(T0 + 0.22), approx(T0 + 0.38), t_hold)
    assert call.of(ResumePlayout)[0][0] == t  # the flush released the hold


def test_a_cough_over_the_agent_pauses_it_and_lets_it_go_on() -> None:
    call = Call(SILENCE_ONLY)
    call.agent_speaking = True
    call.agent_dbfs = -30.0
    call.speak(0.06)
    call.pause(0.7)
    assert not call.of(ConfirmBargeIn)
    [(t_on, _)], [(t_off, _)] = call.of(PausePlayout), call.of(ResumePlayout)
    # hold_release (500 ms) after the last counted chunk, at the next chunk's boundary
    assert 0.5 <= t_off - t_on <= 0.56, t_off - t_on


def test_echo_of_the_agent_is_neither_a_turn_nor_a_barge_in() -> None:
    call = Call(SILENCE_ONLY)
    call.agent_speaking = True
    call.agent_dbfs = -10.0
    call.speak(1.0, level=-32.0)  # under -10 - 20 + 4 dB
    assert not call.actions


def test_speech_over_a_held_answer_is_the_turn_going_on_not_a_barge_in() -> None:
    call = Call(SILENCE_ONLY)
    call.speak(0.5)
    call.pause(0.16)
    call.transcribe("so")
    call.agent_speaking = True  # the prepared answer is queued, held
    call.agent_dbfs = -20.0
    call.speak(0.02)
    call.agent_speaking = False  # the shell cancelled and flushed it
    call.speak(0.3)
    assert call.of(ResumeTurn) and not call.of(ConfirmBargeIn)
    assert [type(a) for _, a in call.actions if isinstance(a, PausePlayout | ResumePlayout)] == [
        PausePlayout
    ]  # the leg's flush releases that hold: no ResumePlayout needed
    assert not call.core.held


# ---- semantic end of turn ------------------------------------------------------------------------


def test_model_asked_at_the_quick_end_with_the_turns_audio() -> None:
    call = Call(SEMANTIC)
    call.pause(0.1)
    call.speak(0.6)
    speech_end = call.now
    call.pause(0.2)
    ((t, ask),) = call.of(AskTurnModel)
    assert t - speech_end == approx(0.2)
    assert isinstance(ask, AskTurnModel) and ask.sample_rate == 8000
    # pre-roll (5 silent frames before the onset) + speech + 200 ms of silence
    assert ask.pcm == b"".join(frame(n, 5 < n <= 35) for n in range(1, 46))


def test_model_window_keeps_the_last_seconds() -> None:
    call = Call(dataclasses.replace(SEMANTIC, model_window=1.0))
    call.speak(3.0)
    call.pause(0.2)
    assert len(call.last_ask().pcm) == 8000 * 2
    assert call.last_ask().pcm.endswith(b"\0\0" * 1600)


def test_complete_verdict_ends_the_turn_and_releases_the_prepared_answer() -> None:
    call = Call(SEMANTIC)
    call.speak(0.8)
    speech_end = call.now
    call.pause(0.16)
    call.transcribe("what time is it", after=0.01)  # prepared, held
    call.pause(0.04)
    assert call.judge(0.9, after=0.04) == [
        Like(ResumePlayout, approx(call.now)),
        ConfirmTurn(call.now),
    ]
    assert call.now - speech_end == approx(0.24)
    call.pause(1.5)
    assert len(call.of(ConfirmTurn)) == 1 and not call.of(EndTurn)


def test_complete_verdict_without_preparing_ends_the_turn_at_once() -> None:
    call = Call(dataclasses.replace(SEMANTIC, prepare_after=None))
    call.speak(0.5)
    call.pause(0.2)
    assert not call.of(FinishUtterance)
    out = call.judge(0.7, after=0.05)
    assert [type(a) for a in out] == [FeedStt, FinishUtterance]  # the last 80 ms, then done
    ended = call.transcribe("yes")
    assert isinstance(ended[0], EndTurn) and ended[0].decided_at == approx(call.now)


def test_complete_verdict_waits_for_the_prepared_transcript() -> None:
    call = Call(SEMANTIC)
    call.speak(0.5)
    call.pause(0.2)
    assert call.judge(0.95) == []  # the transcript is still being decoded
    call.pause(0.1)
    assert not call.of(ConfirmTurn)
    out = call.transcribe("leave a message please")
    assert [type(a) for a in out] == [PausePlayout, PrepareTurn, ResumePlayout, ConfirmTurn]


def test_incomplete_verdict_waits_until_end_silence_max() -> None:
    call = Call(SEMANTIC)
    call.speak(0.5)
    speech_end = call.now
    call.pause(0.2)
    call.transcribe("I would like")
    assert call.judge(0.2) == []
    call.pause(0.98)
    assert not call.of(ConfirmTurn)
    call.pause(0.02)
    ((t, _),) = call.of(ConfirmTurn)
    assert t - speech_end == approx(1.2)


def test_max_silence_ends_the_turn_when_the_model_never_answers() -> None:
    call = Call(dataclasses.replace(SEMANTIC, prepare_after=None))
    call.speak(0.5)
    speech_end = call.now
    call.pause(1.3)
    ((t, _),) = call.of(FinishUtterance)
    assert t - speech_end == approx(1.2)
    call.judge(1.0)  # too late: the turn is over
    assert len(call.of(FinishUtterance)) == 1


def test_hello_then_a_pause_then_the_request_is_one_turn() -> None:
    """The acceptance scenario: the model calls "Hello." complete (its prosody is), but a bare
    greeting is a preface, so the turn goes on through a 700 ms pause."""
    call = Call(SEMANTIC)
    call.speak(0.5)
    call.pause(0.2)
    call.transcribe("hello")
    assert call.judge(0.98, after=0.03) == []
    call.pause(0.5)  # 700 ms in all
    call.speak(1.5)
    assert [type(a) for _, a in call.of(ResumeTurn)] == [ResumeTurn]
    assert not call.of(ConfirmTurn) and not call.of(EndTurn)
    call.pause(0.2)
    call.transcribe("hello I would like to leave a message")
    call.judge(0.97, after=0.04)
    assert len(call.of(ConfirmTurn)) == 1


def test_a_verdict_for_an_earlier_pause_is_ignored() -> None:
    call = Call(SEMANTIC)
    call.speak(0.5)
    call.pause(0.2)
    old = call.last_ask().request
    call.speak(0.3)
    call.pause(0.2)
    call.transcribe("one two three")
    assert call.core.verdict(old, 1.0, call.now) == []
    assert len(call.of(AskTurnModel)) == 2


def test_lexical_veto_can_be_switched_off() -> None:
    call = Call(dataclasses.replace(SEMANTIC, lexical=False))
    call.speak(0.5)
    call.pause(0.2)
    call.transcribe("hello")
    assert ConfirmTurn(call.now) in call.judge(0.9)


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        ListeningConfig(turn=TurnConfig(end_silence=0.5), semantic=True, end_silence_max=0.3)
    with pytest.raises(ValueError):
        ListeningConfig(complete_threshold=1.5)


# ---- properties -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    script=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=12),
    semantic=st.booleans(),
    verdicts=st.lists(st.floats(0, 1), max_size=12),
)
def test_every_turn_ends_once_and_nothing_is_left_held(
    script: list[tuple[bool, int]], semantic: bool, verdicts: list[float]
) -> None:
    """Whatever the caller does and the model says, each turn gets exactly one ending
    (ConfirmTurn or one EndTurn), holds pair up, and silence at the end settles everything."""
    call = Call(SEMANTIC if semantic else SILENCE_ONLY)
    answered: set[int] = set()
    for loud, frames in script:
        for _ in range(frames):
            call.tick(loud)
            for _, a in call.actions:
                if isinstance(a, FinishUtterance) and a.request not in answered:
                    answered.add(a.request)
                    call._record(call.core.transcript(a.request, "words here", call.now))
                if isinstance(a, AskTurnModel) and a.request not in answered:
                    answered.add(a.request)
                    p = verdicts.pop() if verdicts else 0.5
                    call._record(call.core.verdict(a.request, p, call.now))
    call.pause(2.0)
    for _, a in list(call.actions):
        if isinstance(a, FinishUtterance) and a.request not in answered:
            answered.add(a.request)
            call._record(call.core.transcript(a.request, "words here", call.now))
    onsets = len(call.of(StartUtterance)) - len(call.of(DiscardUtterance))
    ends = len(call.of(ConfirmTurn)) + len(call.of(EndTurn))
    assert ends == onsets - len(call.of(ResumeTurn)) - _resumed_unprepared(call)
    assert len(call.of(PausePlayout)) - len(call.of(ResumePlayout)) == len(call.of(ResumeTurn))
    assert not call.core.held


def _resumed_unprepared(call: Call) -> int:
    """StartUtterances that re-open a paused turn without a prepared answer to drop."""
    reopened = 0
    in_turn = False
    for _, a in call.actions:
        if isinstance(a, StartUtterance):
            reopened += in_turn
            in_turn = True
        elif isinstance(a, DiscardUtterance | ConfirmTurn | EndTurn):
            in_turn = False
        elif isinstance(a, ResumeTurn):
            reopened -= 1
    return reopened
