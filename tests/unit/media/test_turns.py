"""Endpointing state machine on a fake clock (plain floats)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio.wav import read_wav
from callbridge.media.turns import (
    SpeechConfirmed,
    SpeechDiscarded,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnEnded,
    TurnEvent,
    TurnState,
)
from callbridge.media.vad import SileroVad

FIXTURES = Path(__file__).parents[2] / "fixtures" / "audio"
STEP = 0.02
T0 = 1000.0


def drive(
    det: TurnDetector, probs: list[float], t0: float = T0, step: float = STEP
) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    for i, p in enumerate(probs):
        events.extend(det.update(p, t0 + i * step))
    return events


def state(det: TurnDetector) -> TurnState:
    return det.state  # a call, so mypy does not narrow the property across updates


def seconds(value: float, duration: float) -> list[float]:
    return [value] * round(duration / STEP)


def test_click_of_100ms_does_not_start_a_turn() -> None:
    det = TurnDetector()
    events = drive(det, seconds(0.0, 0.2) + seconds(0.95, 0.1) + seconds(0.0, 1.0))
    assert [type(e) for e in events] == [SpeechStarted, SpeechDiscarded]
    assert events[0].at == pytest.approx(T0 + 0.2)
    assert isinstance(events[1], SpeechDiscarded)
    assert (events[1].at, events[1].onset) == pytest.approx((T0 + 0.3, T0 + 0.2))
    assert state(det) is TurnState.QUIET
    assert det.onset is None


def test_turn_with_pause_ends_after_600ms_silence_with_onset_and_end() -> None:
    det = TurnDetector()
    probs = (
        seconds(0.0, 0.5)  # quiet
        + seconds(0.9, 0.6)  # speech from T0+0.5
        + seconds(0.05, 0.15)  # a 150 ms pause inside the sentence
        + seconds(0.9, 0.4)  # more speech; last speech update at T0+1.64
        + seconds(0.0, 1.0)
    )
    events: list[tuple[float, TurnEvent]] = []
    states: list[TurnState] = []
    for i, p in enumerate(probs):
        now = T0 + i * STEP
        events.extend((now, e) for e in det.update(p, now))
        states.append(det.state)
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechConfirmed, TurnEnded]
    started, confirmed, ended = (e for _, e in events)
    assert isinstance(started, SpeechStarted) and started.at == pytest.approx(T0 + 0.5)
    assert isinstance(confirmed, SpeechConfirmed)
    assert confirmed.onset == pytest.approx(T0 + 0.5)  # onset, not confirmation time
    assert confirmed.at == pytest.approx(T0 + 0.7)  # min speech 200 ms
    assert isinstance(ended, TurnEnded)
    assert ended.speech_start == pytest.approx(T0 + 0.5)
    assert ended.speech_end == pytest.approx(T0 + 1.64)
    assert ended.at == pytest.approx(T0 + 1.64 + 0.6)
    # the pause went through STOPPING and back, without ending the turn
    pause = states[round(1.1 / STEP) : round(1.25 / STEP)]
    assert set(pause) == {TurnState.STOPPING}
    assert states[round(1.3 / STEP)] is TurnState.SPEAKING
    assert state(det) is TurnState.QUIET


def test_silence_just_short_of_end_silence_does_not_end_turn() -> None:
    det = TurnDetector()
    events = drive(det, seconds(0.9, 0.5) + seconds(0.0, 0.58) + seconds(0.9, 0.2))
    assert not any(isinstance(e, TurnEnded) for e in events)
    assert state(det) is TurnState.SPEAKING


def test_hysteresis_between_thresholds() -> None:
    det = TurnDetector(TurnConfig(start_threshold=0.5, stop_threshold=0.35))
    assert drive(det, seconds(0.45, 1.0)) == []  # never starts below the start threshold
    drive(det, seconds(0.9, 0.3), t0=T0 + 1.0)
    assert state(det) is TurnState.SPEAKING
    assert drive(det, seconds(0.4, 2.0), t0=T0 + 1.3) == []  # still speech once speaking
    assert state(det) is TurnState.SPEAKING
    drive(det, [0.1], t0=T0 + 3.3)
    assert state(det) is TurnState.STOPPING
    # between thresholds does not resume, so the turn ends on time
    events = drive(det, seconds(0.45, 1.0), t0=T0 + 3.32)
    assert [type(e) for e in events] == [TurnEnded]
    assert isinstance(events[0], TurnEnded)
    assert events[0].speech_end == pytest.approx(T0 + 3.28)


def test_dip_while_starting_discards() -> None:
    det = TurnDetector()
    events = drive(det, [*seconds(0.9, 0.1), 0.1, *seconds(0.9, 0.3)])
    assert [type(e) for e in events] == [
        SpeechStarted,
        SpeechDiscarded,
        SpeechStarted,
        SpeechConfirmed,
    ]
    assert isinstance(events[3], SpeechConfirmed)
    assert events[3].onset == pytest.approx(T0 + 0.12)


def test_zero_min_speech_confirms_on_first_chunk() -> None:
    det = TurnDetector(TurnConfig(min_speech=0.0))
    assert det.update(0.9, 5.0) == [SpeechStarted(5.0), SpeechConfirmed(5.0, 5.0)]


def test_chunk_steps_of_32ms() -> None:
    det = TurnDetector()
    events = drive(det, [0.9] * 10 + [0.0] * 30, step=0.032)
    confirmed = [e for e in events if isinstance(e, SpeechConfirmed)]
    assert confirmed[0].at == pytest.approx(T0 + 7 * 0.032)  # first update >= 200 ms after onset
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended[0].at == pytest.approx(T0 + 9 * 0.032 + 19 * 0.032)  # 608 ms after last speech


def test_reset_goes_quiet_silently() -> None:
    det = TurnDetector()
    drive(det, seconds(0.9, 0.5))
    det.reset()
    assert state(det) is TurnState.QUIET
    assert drive(det, seconds(0.0, 1.0), t0=T0 + 0.5) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"start_threshold": 0.3, "stop_threshold": 0.4}, {"min_speech": -1.0}, {"end_silence": -0.1}],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TurnConfig(**kwargs)


@given(st.lists(st.floats(0.0, 1.0), max_size=300))
def test_event_grammar_and_timing_invariants(probs: list[float]) -> None:
    cfg = TurnConfig()
    det = TurnDetector(cfg)
    expect_start = True
    confirmed = False
    for i, p in enumerate(probs):
        now = T0 + i * STEP
        for e in det.update(p, now):
            match e:
                case SpeechStarted(at):
                    assert expect_start and at == now
                    expect_start, confirmed, onset = False, False, at
                case SpeechDiscarded(at, o):
                    assert not expect_start and not confirmed and o == onset
                    # the discard may land exactly on min_speech (float sums), never past it
                    assert at - o <= cfg.min_speech + 1e-9
                    expect_start = True
                case SpeechConfirmed(at, o):
                    assert not expect_start and not confirmed and o == onset
                    assert at - o >= cfg.min_speech - 1e-6
                    confirmed = True
                case TurnEnded(at, start, end):
                    assert confirmed and start == onset
                    assert start <= end < at
                    assert at - end >= cfg.end_silence - 1e-6
                    expect_start = True
    assert (state(det) is TurnState.QUIET) == expect_start


def test_turn_on_real_vad_probabilities() -> None:
    """Silero on espeak speech: one turn (across the comma's ~180 ms pause), onset and end
    close to the audio's own."""
    pcm, _ = read_wav(FIXTURES / "caller_stop.wav")
    lead, tail = 0.6, 1.2
    audio = bytes(int(lead * 16000)) + pcm + bytes(int(tail * 16000))
    vad = SileroVad()
    stream = vad.stream()
    det = TurnDetector()
    events: list[TurnEvent] = []
    for i in range(0, len(audio) - 319, 320):
        stream.feed(audio[i : i + 320], T0 + (i + 320) / 16000)
        vad.evaluate([stream])
        for r in stream.results():
            events.extend(det.update(r.probability, r.end))
    assert [type(e) for e in events] == [SpeechStarted, SpeechConfirmed, TurnEnded]
    ended = events[-1]
    assert isinstance(ended, TurnEnded)
    # the phrase is loud from ~0.02 s to ~1.54 s into the file; Silero lags by a chunk or so
    assert T0 + lead < ended.speech_start < T0 + lead + 0.15
    assert T0 + lead + 1.5 < ended.speech_end < T0 + lead + 1.75


def drive_levels(det: TurnDetector, chunks: list[tuple[float, float]]) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    for i, (p, level) in enumerate(chunks):
        events.extend(det.update(p, T0 + i * STEP, level))
    return events


def test_vad_hangover_after_the_last_loud_chunk_is_trimmed() -> None:
    det = TurnDetector(TurnConfig(min_speech=0.1, end_silence=0.3))
    speech = [(1.0, -20.0)] * 25  # 0.5 s
    hangover = [(0.95, -75.0)] * 8  # the model still says speech, the line is quiet
    silence = [(0.0, -90.0)] * 30
    events = drive_levels(det, speech + hangover + silence)
    (end,) = [e for e in events if isinstance(e, TurnEnded)]
    last_loud = T0 + 24 * STEP
    assert end.speech_end == pytest.approx(last_loud)
    assert end.at == pytest.approx(last_loud + 0.3, abs=STEP + 1e-9)


def test_without_levels_the_probability_alone_decides() -> None:
    det = TurnDetector(TurnConfig(min_speech=0.1, end_silence=0.3))
    events = drive(det, [1.0] * 25 + [0.95] * 8 + [0.0] * 30)
    (end,) = [e for e in events if isinstance(e, TurnEnded)]
    assert end.speech_end == pytest.approx(T0 + 32 * STEP)


def test_a_quiet_caller_is_not_cut_by_the_level_gate() -> None:
    det = TurnDetector(TurnConfig(min_speech=0.1, end_silence=0.3))
    # peak -45 dBFS: 35 dB below is -80, so the -60 dBFS floor applies; -58 is still speech
    events = drive_levels(det, [(1.0, -45.0)] * 10 + [(1.0, -58.0)] * 30)
    assert not [e for e in events if isinstance(e, TurnEnded)]
    assert state(det) is TurnState.SPEAKING


def test_a_soft_syllable_within_the_drop_keeps_the_turn() -> None:
    det = TurnDetector(TurnConfig(min_speech=0.1, end_silence=0.3))
    events = drive_levels(det, [(1.0, -15.0)] * 10 + [(1.0, -45.0)] * 30)  # 30 dB down
    assert state(det) is TurnState.SPEAKING and not events[2:]
