"""Barge-in decisions on a fake clock: real interruptions fire, echo and coughs do not."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from callbridge.audio.levels import rms_dbfs
from callbridge.audio.wav import read_wav
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.media.bargein import BargeIn, BargeInConfig, BargeInDetector, BargeInState
from callbridge.media.playout import PlayoutQueue
from callbridge.media.vad import SileroVad

FIXTURES = Path(__file__).parents[2] / "fixtures" / "audio"
STEP = 0.02
T0 = 500.0


def state(det: BargeInDetector) -> BargeInState:
    return det.state  # a call, so mypy does not narrow the property across updates


def feed(
    det: BargeInDetector,
    t_from: float,
    t_to: float,
    *,
    caller_dbfs: float,
    speech: float,
    agent_playing: bool = True,
    agent_dbfs: float = -20.0,
) -> list[BargeIn]:
    out: list[BargeIn] = []
    for k in range(round((t_to - t_from) / STEP)):
        b = det.update(
            caller_dbfs=caller_dbfs,
            speech=speech,
            agent_playing=agent_playing,
            agent_dbfs=agent_dbfs,
            now=t_from + k * STEP,
        )
        if b is not None:
            out.append(b)
    return out


def test_caller_speech_15s_into_playback_fires_at_confirmation_with_onset() -> None:
    det = BargeInDetector()
    assert feed(det, T0, T0 + 1.5, caller_dbfs=-70.0, speech=0.0) == []
    fired = feed(det, T0 + 1.5, T0 + 3.0, caller_dbfs=-20.0, speech=0.95)
    assert len(fired) == 1
    (b,) = fired
    assert b.onset == pytest.approx(T0 + 1.5)  # speech start, not decision time
    confirmation = b.onset + det.config.min_speech
    assert confirmation - 1e-9 <= b.at <= confirmation + STEP
    assert state(det) is BargeInState.FIRED


def test_no_barge_in_while_agent_is_not_playing() -> None:
    det = BargeInDetector()
    assert feed(det, T0, T0 + 2.0, caller_dbfs=-15.0, speech=1.0, agent_playing=False) == []
    assert state(det) is BargeInState.IDLE


def test_agent_stopping_mid_count_resets() -> None:
    det = BargeInDetector()
    feed(det, T0, T0 + 0.1, caller_dbfs=-15.0, speech=1.0)
    assert state(det) is BargeInState.COUNTING
    feed(det, T0 + 0.1, T0 + 0.12, caller_dbfs=-15.0, speech=1.0, agent_playing=False)
    assert state(det) is BargeInState.IDLE
    fired = feed(det, T0 + 0.12, T0 + 0.5, caller_dbfs=-15.0, speech=1.0)
    assert fired[0].onset == pytest.approx(T0 + 0.12)


def test_cough_of_100ms_does_not_fire_even_with_vad_hangover() -> None:
    det = BargeInDetector()
    fired = feed(det, T0, T0 + 0.1, caller_dbfs=-8.0, speech=1.0)
    # the VAD keeps saying "speech" for a while after the cough; the frames are quiet again
    fired += feed(det, T0 + 0.1, T0 + 0.3, caller_dbfs=-60.0, speech=1.0)
    fired += feed(det, T0 + 0.3, T0 + 2.0, caller_dbfs=-60.0, speech=0.0)
    assert fired == []
    assert state(det) is BargeInState.IDLE


def test_two_coughs_far_apart_do_not_add_up() -> None:
    det = BargeInDetector()
    fired = feed(det, T0, T0 + 0.1, caller_dbfs=-8.0, speech=1.0)
    fired += feed(det, T0 + 0.1, T0 + 0.2, caller_dbfs=-60.0, speech=0.0)
    fired += feed(det, T0 + 0.2, T0 + 0.3, caller_dbfs=-8.0, speech=1.0)
    assert fired == []


def test_short_dips_between_syllables_are_bridged() -> None:
    det = BargeInDetector()
    fired = feed(det, T0, T0 + 0.1, caller_dbfs=-20.0, speech=1.0)
    fired += feed(det, T0 + 0.1, T0 + 0.14, caller_dbfs=-45.0, speech=0.2)  # 40 ms dip
    fired += feed(det, T0 + 0.14, T0 + 0.4, caller_dbfs=-20.0, speech=1.0)
    assert len(fired) == 1
    assert fired[0].onset == pytest.approx(T0)
    assert fired[0].at == pytest.approx(T0 + 0.16)


def test_echo_guard_thresholds() -> None:
    det = BargeInDetector(BargeInConfig(echo_return_db=-20.0, echo_margin_db=4.0, floor_dbfs=-50.0))
    assert det.echo_threshold(-10.0) == pytest.approx(-26.0)
    assert det.echo_threshold(-40.0) == pytest.approx(-50.0)  # the floor
    assert det.echo_threshold(float("-inf")) == pytest.approx(-50.0)
    # the agent at -10 dBFS: a caller at -28 dBFS could be its echo
    assert feed(det, T0, T0 + 1.0, caller_dbfs=-28.0, speech=1.0, agent_dbfs=-10.0) == []
    assert len(feed(det, T0 + 1.0, T0 + 2.0, caller_dbfs=-24.0, speech=1.0, agent_dbfs=-10.0)) == 1


def test_quiet_caller_below_floor_never_fires() -> None:
    det = BargeInDetector()
    assert feed(det, T0, T0 + 2.0, caller_dbfs=-55.0, speech=1.0, agent_dbfs=float("-inf")) == []


def test_fires_once_per_stretch_then_rearms() -> None:
    det = BargeInDetector()
    assert len(feed(det, T0, T0 + 2.0, caller_dbfs=-20.0, speech=1.0)) == 1
    # the agent stopped and restarted while the caller kept talking: still the same stretch
    feed(det, T0 + 2.0, T0 + 2.2, caller_dbfs=-20.0, speech=1.0, agent_playing=False)
    assert feed(det, T0 + 2.2, T0 + 3.0, caller_dbfs=-20.0, speech=1.0) == []
    feed(det, T0 + 3.0, T0 + 3.5, caller_dbfs=-60.0, speech=0.0)
    assert state(det) is BargeInState.IDLE
    again = feed(det, T0 + 3.5, T0 + 4.0, caller_dbfs=-20.0, speech=1.0)
    assert [b.onset for b in again] == [pytest.approx(T0 + 3.5)]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        BargeInConfig(min_speech=-0.1)


# ---- the whole loop: playout queue -> echo path -> caller stream -> VAD -> detector ---------


def load(name: str) -> npt.NDArray[np.float64]:
    pcm, rate = read_wav(FIXTURES / name)
    assert rate == 8000
    return np.frombuffer(pcm, "<i2").astype(np.float64)


@dataclass
class Call:
    """An agent answer played through PlayoutQueue, heard back on the caller's line."""

    vad: SileroVad | None  # None: worst case, the VAD calls every frame speech
    echo_gain: float = 0.1  # -20 dB
    echo_delay_frames: int = 3
    seconds: float = 10.0
    caller_at: float | None = None
    barge_ins: list[BargeIn] = field(default_factory=list)
    max_probability: float = 0.0

    def run(self) -> PlayoutQueue:
        agent = load("agent_office.wav")
        caller = load("caller_stop.wav")
        ticks = round(self.seconds / STEP)
        answer = np.tile(agent, ticks * FRAME_SAMPLES // len(agent) + 2)
        q = PlayoutQueue()
        for k in range(ticks + 10):  # the answer is longer than the test
            chunk = answer[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]
            q.push(AudioFrame(chunk.astype("<i2").tobytes()), "answer")
        line = collections.deque([np.zeros(FRAME_SAMPLES)] * self.echo_delay_frames)
        rng = np.random.default_rng(7)
        det = BargeInDetector()
        stream = self.vad.stream() if self.vad else None
        probability = 1.0
        for k in range(ticks):
            now = T0 + (k + 1) * STEP  # the frame's last sample
            item = q.pop()
            sent = np.frombuffer(item[0].pcm, "<i2") if item else np.zeros(FRAME_SAMPLES)
            line.append(sent.astype(np.float64))
            x = line.popleft() * self.echo_gain + rng.normal(0, 10, FRAME_SAMPLES)
            if self.caller_at is not None:
                i = round((now - STEP - T0 - self.caller_at) * 8000)
                if 0 <= i < len(caller):
                    part = caller[i : i + FRAME_SAMPLES]
                    x[: len(part)] += part
            pcm = np.clip(x, -32768, 32767).astype("<i2").tobytes()
            if stream is not None and self.vad is not None:
                stream.feed(pcm, now)
                self.vad.evaluate([stream])
                for r in stream.results():
                    probability = r.probability
            self.max_probability = max(self.max_probability, probability)
            b = det.update(
                caller_dbfs=rms_dbfs(pcm),
                speech=probability,
                agent_playing=q.playing,
                agent_dbfs=q.peak_dbfs,
                now=now,
            )
            if b is not None:
                self.barge_ins.append(b)
                q.flush()  # within the frame of the decision
        return q


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def test_own_echo_at_minus_20db_never_interrupts_over_10s(vad: SileroVad) -> None:
    call = Call(vad)
    q = call.run()
    assert call.max_probability > 0.9  # Silero does hear the echo as speech...
    assert call.barge_ins == []  # ...but it is never louder than the agent's own echo can be
    assert q.played("answer") == 500 * FRAME_SAMPLES  # the answer went on uninterrupted


def test_own_echo_with_a_vad_that_always_says_speech() -> None:
    call = Call(None)
    call.run()
    assert call.barge_ins == []


def test_real_caller_speech_over_echo_interrupts(vad: SileroVad) -> None:
    call = Call(vad, seconds=4.0, caller_at=1.5)
    q = call.run()
    assert len(call.barge_ins) == 1
    b = call.barge_ins[0]
    assert T0 + 1.5 <= b.onset <= T0 + 1.6
    assert b.at - b.onset < 0.25
    # what the caller heard stops at the decision; the rest of the answer was dropped
    assert q.played("answer") == round((b.at - T0) / STEP) * FRAME_SAMPLES
    assert q.dropped("answer") > 0 and not q.playing


def holding_after(det: BargeInDetector, t_from: float, t_to: float, **kw: float | bool) -> bool:
    feed(det, t_from, t_to, **kw)  # type: ignore[arg-type]
    return det.holding


def test_hold_starts_at_the_first_counted_frame_and_ends_on_fire() -> None:
    det = BargeInDetector()
    assert not holding_after(det, T0, T0 + 0.5, caller_dbfs=-70.0, speech=0.0)
    # one qualifying frame is enough to silence the agent, long before min_speech
    assert holding_after(det, T0 + 0.5, T0 + 0.52, caller_dbfs=-20.0, speech=0.9)
    fired = feed(det, T0 + 0.52, T0 + 1.0, caller_dbfs=-20.0, speech=0.9)
    assert len(fired) == 1
    assert not det.holding  # confirmed: the audio is dropped, not paused


def test_cough_holds_then_releases_after_hold_release() -> None:
    det = BargeInDetector(BargeInConfig(hold_release=0.2))
    assert holding_after(det, T0, T0 + 0.06, caller_dbfs=-8.0, speech=1.0)
    # quiet again: the run ends after max_gap, but the hold lasts hold_release past the cough
    assert holding_after(det, T0 + 0.06, T0 + 0.2, caller_dbfs=-60.0, speech=0.0)
    assert state(det) is BargeInState.IDLE
    assert not holding_after(det, T0 + 0.2, T0 + 0.3, caller_dbfs=-60.0, speech=0.0)


def test_echo_never_holds() -> None:
    det = BargeInDetector()
    # the agent at -10 dBFS echoed at -30: speech-like but below the guard (-26)
    assert not holding_after(det, T0, T0 + 1.0, caller_dbfs=-30.0, speech=1.0, agent_dbfs=-10.0)


def test_hold_ends_when_the_agent_stops_playing() -> None:
    det = BargeInDetector()
    assert holding_after(det, T0, T0 + 0.06, caller_dbfs=-20.0, speech=1.0)
    assert not holding_after(
        det, T0 + 0.06, T0 + 0.08, caller_dbfs=-60.0, speech=0.0, agent_playing=False
    )
