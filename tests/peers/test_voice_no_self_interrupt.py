"""Voice agent, issue 3 acceptance 3: the agent does not interrupt itself.

SIPp calls `agent` with the test's RTP endpoint as its media; the endpoint echoes everything it
receives back at -20 dB (a phone's echo) and the caller stays silent except for one short
question; the greeting and the answer both play to their last words, with no barge-in and no
turn heard in the agent's own echo.
"""

from __future__ import annotations

import re
import time

import pytest

from callbridge.llm.demo import DEFAULT_GREETING, HELP

from .conftest import GatewayFactory, require_tools
from .peerlib import speech
from .peerlib.callbridge import CallbridgeProcess
from .peerlib.process import ProcessRegistry, free_port
from .peerlib.speech import Segment, TimedFrame
from .peerlib.voice_caller import (
    CallerMedia,
    start_voice_call,
    wait_for_sound,
    wait_for_speech_end,
)

pytestmark = pytest.mark.peer

QUESTION = "do you know what time it is"
TIME_ANSWER = re.compile(r"^It's (\d{1,2}):(\d\d) ([AP]M)\.$")
GREETING_WORDS = {"ask", "date", "leave", "message", "goodbye", "hang"}


def test_agent_does_not_interrupt_itself_on_its_own_echo(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp", "tshark")
    gw = gateway_factory(extra_env={"CALLBRIDGE_AGENT_GREET": "true"})
    question = speech.piper_speech("can you help me")
    with CallerMedia(free_port(), echo_gain=0.1) as media:  # -20 dB echo of the agent
        call = start_voice_call(registry, gw, media)
        call_id = call.call_id()
        greeting_on = wait_for_sound(media, after=time.time() - 1, timeout=15, what="the greeting")
        greeting_end = wait_for_speech_end(gw, media, call_id, utterance=1, may_be_cut=True)
        _assert_echo_ignored(gw, call_id, media, (greeting_on, greeting_end), "its greeting", 0)
        asked = media.play(question)
        gw.wait_for("agent.heard", timeout=15, call_id=call_id)
        answer_on = wait_for_sound(
            media, after=asked + speech.duration(question), timeout=15, what="the answer"
        )
        answer_end = wait_for_speech_end(gw, media, call_id, utterance=2, may_be_cut=True)
        _assert_echo_ignored(gw, call_id, media, (answer_on, answer_end), "its answer", 1)
        assert call.caller.hang_up() == 0, call.caller.sipp.describe()
    gw.wait_for("call.ended", timeout=10, call_id=call_id)
    assert not media.errors, media.errors

    heard = gw.events("agent.heard", call_id=call_id)
    assert len(heard) == 1 and "help" in speech.words(heard[0]["text"]), (
        f"the agent must hear the question and nothing of its own echo: {heard}"
    )
    texts = [t["text"] for t in gw.events("agent.turn", call_id=call_id)]
    assert texts == [DEFAULT_GREETING, HELP], f"agent.turn texts: {texts}"
    history = gw.wait_for("agent.history", timeout=5, call_id=call_id)[0]["messages"]
    assert not [m for m in history if m.get("interrupted")], history

    audio = call.audio()
    # The question, by the endpoint's clock (the capture's too): the caller also sends echo.
    q = Segment(asked, asked + speech.duration(question))
    greeting_frames = [f for f in audio.agent if f.time < q.start]
    answer_frames = [f for f in audio.agent if f.time > q.end]
    assert greeting_frames and answer_frames, "no greeting or no answer on the wire"
    greeting_segs = speech.wire_segments(greeting_frames, min_gap_s=0.8)
    answer_segs = speech.wire_segments(answer_frames, min_gap_s=0.8)
    greeting = speech.transcribe(
        speech.render(greeting_frames, greeting_segs[0].start - 0.1, greeting_segs[-1].end + 0.2)
    )
    answer = speech.transcribe(
        speech.render(answer_frames, answer_segs[0].start - 0.1, answer_segs[-1].end + 0.2)
    )
    # The echo really was there: what the caller sent while the agent spoke, 20 dB down.
    window = (answer_segs[0].start + 0.1, answer_segs[-1].end)
    echo_db = _power_mean(audio.caller, *window) - _power_mean(audio.agent, *window)
    spans = [s[-1].end - s[0].start for s in (greeting_segs, answer_segs)]
    refs = [speech.duration(speech.piper_speech(t)) for t in (DEFAULT_GREETING, HELP)]
    print(
        f"greeting {spans[0]:.2f} s (piper alone {refs[0]:.2f} s) heard as {greeting!r}\n"
        f"answer {spans[1]:.2f} s (piper alone {refs[1]:.2f} s) heard as {answer!r}\n"
        f"echo level relative to the agent: {echo_db:.1f} dB; "
        f"backchannels logged: {gw.events('agent.backchannel', call_id=call_id)}"
    )
    assert -23 < echo_db < -17, f"echo at {echo_db:.1f} dB, not -20 dB"
    for name, text, span, ref in zip(
        ("greeting", "answer"), (greeting, answer), spans, refs, strict=True
    ):
        # Played to the end: its last words are there and it lasted as long as the speech.
        assert {"goodbye", "hang"} <= set(speech.words(text)), f"{name} cut short: {text!r}"
        assert span >= 0.9 * ref, f"{name} lasted {span:.2f} s, the speech is {ref:.2f} s"


def _assert_echo_ignored(
    gw: CallbridgeProcess,
    call_id: str,
    media: CallerMedia,
    span: tuple[float, float],
    what: str,
    questions: int,
) -> None:
    """No barge-in, and no turn heard but the caller's `questions`; the message says how
    loud the echo was meanwhile (measured at the endpoint: sent vs received)."""
    barge = gw.events("agent.barge_in", call_id=call_id)
    cut = gw.events("agent.interrupted", call_id=call_id)
    heard = gw.events("agent.heard", call_id=call_id)
    if barge or cut or len(heard) != questions:
        sent = [TimedFrame.of(f.time, f.pcm) for f in media.sent]
        echo_db = _power_mean(sent, *span) - _power_mean(media.frames(), *span)
        raise AssertionError(
            f"the agent took its own echo ({echo_db:.1f} dB below it, the caller silent) "
            f"for the caller during {what}:\nagent.barge_in {barge}\nagent.interrupted {cut}\n"
            f"agent.heard {heard} ({questions} question(s) asked)\n"
            f"agent.backchannel {gw.events('agent.backchannel', call_id=call_id)}"
        )


def _power_mean(frames: list[TimedFrame], start: float, end: float) -> float:
    """Mean power (dBFS) of the frames sent between `start` and `end`."""
    import math

    powers = [10 ** (f.dbfs / 10) if f.dbfs > -math.inf else 0.0 for f in frames
              if start <= f.time < end]  # fmt: skip
    assert powers and max(powers) > 0, f"no audio between {start:.2f} and {end:.2f}"
    return 10 * math.log10(sum(powers) / len(powers))
