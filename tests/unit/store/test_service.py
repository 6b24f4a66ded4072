"""The store wired into the calls layer: CallManager records a call (WAV from the leg's tap,
transcript and turns from the agent's sink, the call row, its log events) and finalises it
at hang-up; the VoiceAgent's transcript sink on a FakeLeg in fake time; the env hook."""

from __future__ import annotations

import asyncio
import json
import logging
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.agents.conversation import Conversation
from callbridge.agents.echo import EchoAgent
from callbridge.agents.vad_pool import VadPool
from callbridge.agents.voice import VoiceAgent, VoiceAgentConfig
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.asyncio_clock import FakeClock, LoopClock
from callbridge.core.events import DtmfDigit
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import CallLeg, LegInfo
from callbridge.store.db import SqliteCallDb
from callbridge.store.service import CallSession, Store, StoreConfig, build_store
from callbridge.testing import FakeLeg, FakeWorkers, drive
from tests.unit.agents.test_voice_agent import EnergyRunner, FakeStt, FakeTts, ScriptBrain


def frame(value: int) -> AudioFrame:
    return AudioFrame(np.full(FRAME_SAMPLES, value, dtype="<i2").tobytes())


def tick_leg(ticks: int) -> FakeLeg:
    """A leg whose media loop runs `ticks` ticks: each delivers caller frame i (value i) and
    sends the agent's next queued frame, showing both to the tap; then the caller hangs up."""
    info = LegInfo("sip", "inbound", local_user="echo", remote_uri="sip:alice@example.com",
                   ids={"sip_call_id": "abc@host"})  # fmt: skip
    leg = FakeLeg(FakeClock(), info=info, after_script="hangup")
    leg.feed(*(frame(i) for i in range(1, 4)), DtmfDigit("7", 100))
    leg.feed(*(frame(i) for i in range(4, ticks + 1)))
    return leg


def store(tmp_path: Path, **kw: Any) -> Store:
    return build_store(StoreConfig(tmp_path, fsync=False, **kw))


async def run_call(mgr: CallManager, leg: FakeLeg) -> Call:
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    mgr.on_end.append(done.set_result)
    mgr.start_call(leg)
    return await drive(leg.clock, done, limit=5.0)


def stereo(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


async def test_the_manager_records_a_call_and_saves_it_before_reporting_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    st = store(tmp_path)
    mgr = CallManager(Router({"echo": EchoAgent}, "echo"), LoopClock(), store=st)
    leg = tick_leg(ticks=25)
    saved_at_end: list[bool] = []
    mgr.on_end.append(lambda c: saved_at_end.append(c.record is not None and c.record.finished))
    call = await run_call(mgr, leg)
    assert saved_at_end == [True]
    assert call.record is not None and call.record.recorder is not None
    assert leg.taps == [call.record.recorder, None]  # set at the start, released at the end

    # the recording: one frame per tick; the agent channel is the echo, a tick behind
    samples = stereo(tmp_path / "recordings" / f"{call.id}.wav")
    ticks = samples.reshape(-1, FRAME_SAMPLES, 2)[:, 0, :]
    assert len(ticks) == 25
    assert ticks[:, 0].tolist() == list(range(1, 26))
    assert ticks[0, 1] == 0 and ticks[1:, 1].tolist() == list(range(1, 25))

    # the transcript: complete, with the reason (the echo agent says nothing)
    doc = json.loads((tmp_path / "transcripts" / f"{call.id}.json").read_text())
    assert (doc["complete"], doc["end_reason"], doc["entries"]) == (True, "remote_bye", [])

    # the database: the call row, closed, and the call's log events
    db = st.db
    await db.flush()
    row = await db.get_call(call.id)
    assert row is not None
    assert (row.transport, row.direction, row.from_uri, row.to_uri, row.agent) == (
        "sip", "inbound", "sip:alice@example.com", "echo", "echo",
    )  # fmt: skip
    assert row.end_reason == "remote_bye" and row.ended is not None and row.ended >= row.started
    assert row.recording_path == str(tmp_path / "recordings" / f"{call.id}.wav")
    assert row.ids == {"sip_call_id": "abc@host"}
    names = [e.name for e in await db.events(call.id)]
    assert names[0] == "call.started" and names[-1] == "call.ended", names
    ended = (await db.events(call.id))[-1]
    assert ended.data["reason"] == "remote_bye" and ended.data["ticks"] == 25
    assert st.sessions == {}
    await mgr.shutdown(1.0)  # closes the store
    assert st._closed


async def test_without_recording_no_tap_is_set_and_no_wav_written(tmp_path: Path) -> None:
    st = store(tmp_path, recording=False)
    mgr = CallManager(Router({"echo": EchoAgent}, "echo"), LoopClock(), store=st)
    leg = tick_leg(ticks=5)
    call = await run_call(mgr, leg)
    assert leg.taps == [None]  # only the release at the end
    assert not (tmp_path / "recordings").exists()
    assert (tmp_path / "transcripts" / f"{call.id}.json").exists()
    await st.aclose()


async def test_a_call_setup_writes_no_file_when_recording_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the transcript (on: documented, one per call) is written once there is
    something in it or at the end, not empty at the setup; no WAV at all."""
    st = store(tmp_path, recording=False)
    submitted: list[object] = []
    real = st.io.inner.submit

    def spy(fn: Any, *args: Any, **kw: Any) -> Any:
        submitted.append(fn)
        return real(fn, *args, **kw)

    monkeypatch.setattr(st.io.inner, "submit", spy)
    session = st.begin(call_id="call-q", info=LegInfo("sip", "inbound"), agent="echo", t0=0.0)
    assert submitted == [] and session.recorder is None
    assert not (tmp_path / "transcripts" / "call-q.json").exists()
    await session.finish("remote_bye", 1.0)
    assert len(submitted) == 1  # the transcript, complete, once
    doc = json.loads((tmp_path / "transcripts" / "call-q.json").read_text())
    assert doc["complete"] and doc["entries"] == []
    await st.aclose()


async def test_a_store_that_fails_leaves_the_call_unrecorded_but_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = store(tmp_path)

    def broken(**kw: Any) -> CallSession:
        raise OSError(28, "No space left on device")

    st.begin = broken  # type: ignore[method-assign]
    mgr = CallManager(Router({"echo": EchoAgent}, "echo"), LoopClock(), store=st)
    leg = tick_leg(ticks=5)
    call = await run_call(mgr, leg)
    assert call.record is None and leg.end_reason == "remote_bye"
    assert any("cannot record call" in r.getMessage() for r in caplog.records)
    await st.aclose()


async def test_closing_the_store_finishes_live_calls_as_shutdown(tmp_path: Path) -> None:
    st = store(tmp_path)
    session = st.begin(call_id="call-x", info=LegInfo("sip", "outbound", "agent", "sip:bob@h"),
                       agent="voice", t0=0.0)  # fmt: skip
    assert session.recorder is not None
    session.recorder.on_tick(frame(1).pcm, None)
    await st.aclose()
    doc = json.loads((tmp_path / "transcripts" / "call-x.json").read_text())
    assert doc["complete"] and doc["end_reason"] == "shutdown"
    with wave.open(str(tmp_path / "recordings" / "call-x.wav")) as w:
        assert w.getnframes() == FRAME_SAMPLES
    db = SqliteCallDb(tmp_path / "callbridge.db")
    row = await db.get_call("call-x")
    await db.aclose()
    assert row is not None and row.end_reason == "shutdown"
    assert (row.from_uri, row.to_uri) == ("agent", "sip:bob@h")  # outbound: we called


# ---- the VoiceAgent's transcript sink --------------------------------------------------------


async def run_voice(
    leg: FakeLeg, brain: ScriptBrain, sink: Any, seconds: float, stt_text: str
) -> VoiceAgent:
    clock = leg.clock
    executor = FakeWorkers(clock)
    pool = VadPool(EnergyRunner(), clock, executor=FakeWorkers(clock))  # type: ignore[arg-type]
    async with pool:

        def conversation(call_leg: CallLeg) -> Conversation:
            return Conversation(
                call_leg, clock=clock, vad_pool=pool, recognizer=lambda: FakeStt(stt_text),
                synthesizer=FakeTts(), executor=executor,
            )  # fmt: skip

        agent = VoiceAgent(
            brain=brain, conversation=conversation, clock=clock,
            config=VoiceAgentConfig(greet=False),
        )  # fmt: skip
        agent.attach_transcript(sink)
        task = asyncio.create_task(agent.run(leg))
        await drive(clock, leg.pump(seconds))
        leg.end()
        await drive(clock, task, limit=5.0)
    return agent


async def test_voice_turns_barge_ins_and_digits_reach_transcript_and_turns(
    tmp_path: Path,
) -> None:
    st = store(tmp_path)
    leg = FakeLeg(FakeClock())
    t0 = leg.clock.now()
    session = st.begin(call_id="call-v", info=leg.info, agent="voice", t0=t0)
    long_answer = " ".join(f"word{i}" for i in range(30))  # 3 s of audio
    leg.say(frames=40, silence_before=10)  # caller: 0.2 s silence, 0.8 s speech
    leg.silence(75)
    leg.say(frames=50)  # ... and again 1.5 s later, into the answer: a barge-in
    leg.put(DtmfDigit("4", 100))
    agent = await run_voice(leg, ScriptBrain([long_answer, "Sure."]), session, 4.6, "stop please")
    await session.finish("remote_bye", leg.clock.now())

    doc = json.loads((tmp_path / "transcripts" / "call-v.json").read_text())
    speech = [e for e in doc["entries"] if e["kind"] == "speech"]
    assert [(e["role"], e["interrupted"]) for e in speech] == [
        ("caller", False), ("agent", True), ("caller", False), ("agent", False),
    ]  # fmt: skip
    caller1, cut, caller2, sure = speech
    heard = next(m for m in agent.history if m.interrupted).content
    assert cut["text"] == heard and 0 < len(heard.split()) < 30
    assert sure["text"] == "Sure."
    # the first turn: 0.2 s to 1.0 s of the call (the VAD's edges, within its chunks)
    assert 0.0 <= caller1["start"] <= 0.3 and 0.9 <= caller1["end"] <= 1.2
    assert caller1["end"] < cut["start"] < caller2["start"] < cut["end"] + 0.3
    assert cut["end"] < sure["start"]
    dtmf = [e for e in doc["entries"] if e["kind"] == "dtmf"]
    assert [e["digit"] for e in dtmf] == ["4"]

    turns = await st.db.turns("call-v")
    assert [(t.utterance, t.user_text, t.agent_text, t.interrupted) for t in turns] == [
        (1, "stop please", heard, True), (2, "stop please", "Sure.", False),
    ]  # fmt: skip
    assert turns[1].voice_to_voice_ms is not None and turns[1].voice_to_voice_ms > 0
    assert turns[1].stt_ms is not None and turns[1].brain_ms is not None
    await st.aclose()


class BrokenSink:
    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kw: Any) -> None:
            raise RuntimeError("sink down")

        return fail


async def test_a_failing_sink_does_not_disturb_the_conversation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    leg = FakeLeg(FakeClock())
    leg.say(frames=40, silence_before=10)
    agent = await run_voice(leg, ScriptBrain(["It is three."]), BrokenSink(), 2.4, "what time")
    assert [(m.role, m.content) for m in agent.history] == [
        ("user", "what time"), ("assistant", "It is three."),
    ]  # fmt: skip
    assert any(r.msg == "agent.transcript_failed" for r in caplog.records)


# ---- the app's wiring ---------------------------------------------------------------------------


async def test_the_gateway_builds_its_store_from_settings(tmp_path: Path) -> None:
    from callbridge.config.settings import load_settings
    from callbridge.gateway import build_call_store

    settings = load_settings(
        environ={
            "CALLBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "CALLBRIDGE_RECORDING_TRANSCRIPTS": "false",
        }
    )
    st = build_call_store(settings)
    assert st.config.recording and not st.config.transcripts
    assert (tmp_path / "data" / "callbridge.db").exists()
    await st.aclose()


async def test_finishing_a_call_completes_its_files_even_when_cancelled(tmp_path: Path) -> None:
    st = store(tmp_path)
    session = st.begin(call_id="call-c", info=LegInfo("sip", "inbound"), agent="echo", t0=0.0)
    assert session.recorder is not None
    for i in range(120):
        session.recorder.on_tick(frame(i).pcm, frame(-i).pcm)
    task = asyncio.create_task(session.finish("shutdown", 2.4))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    st.io.submit(lambda: None).result()  # what was queued has run
    with wave.open(str(tmp_path / "recordings" / "call-c.wav")) as w:
        assert w.getnframes() == 120 * FRAME_SAMPLES
    doc = json.loads((tmp_path / "transcripts" / "call-c.json").read_text())
    assert doc["complete"] and doc["end_reason"] == "shutdown"
    await st.aclose()
