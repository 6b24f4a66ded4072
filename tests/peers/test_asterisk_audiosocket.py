"""Issue 14 over AudioSocket: "Asterisk" (peerlib.asterisk.AudioSocketAsterisk, written from
res_audiosocket.c) connects to the gateway's AudioSocket server as AudioSocket() does and
streams the caller without a gap, 20 ms per frame.

1. It asks the time (a piper voice); the answer that comes back over the socket, transcribed
   with Whisper, says the current hour.
2. It talks over the agent's long answer 1.5 s in: the agent's audio stops within the SIP
   bound (300 ms, tests/peers/test_voice_barge_in.py), measured on arrival at "Asterisk".
3. The TCP connection drops mid-call: the call ends (remote_hangup) with its recording and
   transcript saved and complete.
"""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from .conftest import GatewayFactory
from .peerlib import speech
from .peerlib.asterisk_calls import AudioSocketCaller, LoopThread
from .peerlib.callbridge import CallbridgeProcess
from .peerlib.process import LOOPBACK, free_port, wait_true, wait_until
from .peerlib.voice_caller import wait_for_sound, wait_for_speech_end
from .test_voice_agent_answers import says_the_hour

pytestmark = pytest.mark.peer

MAX_STOP_S = 0.300  # the SIP bound (test_voice_barge_in.py)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def start(gateway_factory: GatewayFactory, **env: str) -> tuple[CallbridgeProcess, int]:
    port = free_port()
    gw = gateway_factory(
        extra_env={
            "CALLBRIDGE_AGENT_GREET": "false",
            "CALLBRIDGE_AUDIOSOCKET_ENABLED": "true",
            "CALLBRIDGE_AUDIOSOCKET_PORT": str(port),
            **env,
        }
    )
    gw.wait_for("audiosocket.listening", timeout=10)
    return gw, port


def call_id_of(gw: CallbridgeProcess, caller: AudioSocketCaller) -> str:
    uuid = str(caller.peer.call_id)
    started = gw.wait_for("call.started", timeout=5, audiosocket_uuid=uuid)[0]
    assert started["transport"] == "audiosocket" and started["agent"] == "voice", started
    return str(started["call_id"])


def test_asterisk_asks_the_time_over_audiosocket(
    gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    gw, port = start(gateway_factory)
    caller = AudioSocketCaller(loop_thread, LOOPBACK, port).connect()
    call_id = call_id_of(gw, caller)
    question = speech.piper_speech("What time is it?")
    asked = caller.say(question)
    gw.wait_for("agent.heard", timeout=15, call_id=call_id)
    answer_end = wait_for_speech_end(gw, caller, call_id, utterance=1)
    turn = gw.events("agent.turn", call_id=call_id, utterance=1)[0]
    said_at = datetime.fromtimestamp(float(turn["ts"])).astimezone()
    caller.hang_up()
    gw.wait_for("call.ended", timeout=10, call_id=call_id)

    heard = gw.events("agent.heard", call_id=call_id)
    assert "time" in speech.words(heard[0]["text"]), heard
    after = asked + speech.duration(question)
    agent = [f for f in caller.frames() if f.time >= after]
    segs = speech.wire_segments(agent)
    assert segs, "no answer came back over the socket"
    answer = speech.transcribe_whisper(speech.render(agent, segs[0].start - 0.1, answer_end + 0.2))
    hours = {t.hour % 12 or 12 for t in (said_at - timedelta(minutes=1), said_at)}
    print(f"answer {turn['text']!r} heard as {answer!r}")
    assert says_the_hour(answer, hours), f"answer {turn['text']!r} heard as {answer!r}, {hours}"
    # Paced by the gateway: one frame per 20 ms, never a burst (AudioSocket cannot recall).
    times = [f.time for f in caller.frames()]
    span = times[-1] - times[0]
    assert len(times) <= span / 0.02 + 10, (len(times), span)


def test_barge_in_over_audiosocket_stops_the_agent_within_the_sip_bound(
    gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    gw, port = start(gateway_factory)
    caller = AudioSocketCaller(loop_thread, LOOPBACK, port).connect()
    call_id = call_id_of(gw, caller)
    question = speech.piper_speech("what can you do")
    interruption = speech.piper_speech("hold on, I have another question")
    asked = caller.say(question)
    gw.wait_for("agent.heard", timeout=15, call_id=call_id)
    answer_on = wait_for_sound(
        caller, after=asked + speech.duration(question), timeout=15, what="the answer"
    )
    wait_true(lambda: time.time() >= answer_on + 1.5, 5, "1.5 s of the answer")
    barged = caller.say(interruption)
    wait_true(lambda: time.time() >= barged + speech.duration(interruption) + 0.5, 10, "talking")
    wait_until(lambda: gw.events("agent.barge_in", call_id=call_id) or None, 10, "barge-in")
    caller.hang_up()
    gw.wait_for("call.ended", timeout=10, call_id=call_id)

    onset_frames = [f for f in caller.sent if f.time >= barged - 0.05 and f.dbfs > -40]
    assert onset_frames, "the interruption was not sent"
    onset = onset_frames[0].time
    agent = caller.frames()
    talking = speech.last_loud_before(agent, onset)
    assert talking is not None and onset - talking < 0.2, "the agent was not talking"
    stop = speech.end_of_sound_at(agent, onset)
    assert stop is not None
    print(f"agent audio stopped {1000 * (stop - onset):.0f} ms after the caller's onset")
    assert stop - onset <= MAX_STOP_S, f"the agent kept talking {stop - onset:.3f} s"
    barge = gw.events("agent.barge_in", call_id=call_id)
    assert [b["utterance"] for b in barge] == [1], barge


def test_a_dropped_connection_ends_the_call_with_recording_and_transcript(
    gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    gw, port = start(gateway_factory, CALLBRIDGE_RECORDING_ENABLED="true")
    caller = AudioSocketCaller(loop_thread, LOOPBACK, port).connect()
    call_id = call_id_of(gw, caller)
    caller.say(speech.piper_speech("What time is it?"))
    gw.wait_for("agent.heard", timeout=15, call_id=call_id)
    wait_for_speech_end(gw, caller, call_id, utterance=1)
    caller.hang_up()  # the TCP connection drops: no hangup frame, just the end of the stream
    ended = gw.wait_for("call.ended", timeout=10, call_id=call_id)[0]
    assert ended["reason"] == "remote_hangup", ended
    saved = gw.wait_for("store.call_saved", timeout=5, call_id=call_id)[0]
    assert saved["reason"] == "remote_hangup", saved

    data = gw.config.data_dir
    with wave.open(str(data / "recordings" / f"{call_id}.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        seconds = w.getnframes() / 8000
    assert abs(seconds - float(ended["duration"])) <= 0.2, (seconds, ended["duration"])
    doc = json.loads((data / "transcripts" / f"{call_id}.json").read_text(encoding="utf-8"))
    assert (doc["complete"], doc["end_reason"]) == (True, "remote_hangup"), doc
    roles = [e["role"] for e in doc["entries"] if e["kind"] == "speech"]
    assert "caller" in roles and "agent" in roles, doc["entries"]
    gw.assert_no_crash()
