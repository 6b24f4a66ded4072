"""Voice agent, issue 3 acceptance 1 and issue 10 acceptance 1, against a real softphone.

baresip calls `agent`, hears the greeting, and asks "What time is it?" in plain words, in a
piper voice and (second run) an espeak-ng voice, with the gateway's real clock. The answer it
receives, transcribed here with Whisper (the packaged tiny.en model, in the test's process),
says the current hour (acceptance 3, the agent not interrupting itself, is
test_voice_no_self_interrupt.py).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import speech
from .peerlib.audio import read_wav
from .peerlib.baresip import BaresipConfig, BaresipCtl, start_baresip
from .peerlib.capture import read_rtp, start_capture
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port, free_port_pair
from .peerlib.speech import Segment, TimedFrame
from .peerlib.voice_caller import (
    WireTap,
    wait_for_speech_end,
)

pytestmark = pytest.mark.peer

QUESTION = "What time is it?"
TIME_ANSWER = re.compile(r"^It's (\d{1,2}):(\d\d) ([AP]M)\.$")
GREETING_WORDS = {"ask", "date", "leave", "message", "goodbye", "hang"}
HOUR_WORDS = ["twelve", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
              "ten", "eleven"]  # fmt: skip


# Words Whisper writes for an hour said at the start of the answer ("It's two eleven" heard as
# "it's to 11"): homophones, accepted only right after "it's", where the hour is said.
HOUR_HOMOPHONES = {"won": 1, "to": 2, "too": 2, "for": 4, "ate": 8}


def says_the_hour(transcript: str, hours: set[int]) -> bool:
    """Does a transcript of the agent's answer say one of these hours (1-12)? Whisper writes a
    time as "11:42 pm", "1142 pm", "3 0 5 p.m.", "2007 am" (two oh seven), "240 1pm" (two
    forty one), in words ("eleven forty-two"), or with the hour as a homophone ("it's to 11
    am")."""
    text = transcript.lower()
    for run in re.findall(r"\d[\d :]*", text):  # digits with the spaces or colons inside a time
        number = re.sub(r"[ :]", "", run)
        first = re.split(r"[ :]", run.strip())[0]  # "240" of "240 1": forty-one heard as 40 1
        for digits in (number, first):
            hour = int(digits) if len(digits) <= 2 else int(digits[:-2] or 0)
            if hour > 12 and len(digits) == 4:
                hour = int(digits[0])  # "two oh seven" written as 2007, "two nineteen" as 2019
            if hour in hours:
                return True
    said = set(speech.words(text.replace("-", " ")))
    if any(HOUR_WORDS[h % 12] in said for h in hours):
        return True
    first = re.match(r"\s*it(?:'s| is)\s+([a-z]+)\b", text)
    return first is not None and HOUR_HOMOPHONES.get(first.group(1)) in hours


def test_hour_check_tells_answers_apart() -> None:
    """Control: the check accepts piper's answer through G.711 and Whisper for the right hour
    only, and rejects an answer that says no time."""
    from .peerlib.audio import ulaw_decode, ulaw_encode

    def heard(text: str) -> str:
        return speech.transcribe_whisper(ulaw_decode(ulaw_encode(speech.piper_speech(text))))

    right = heard("It's 3:05 PM.")
    assert says_the_hour(right, {3}), right
    assert not says_the_hour(right, {11}), right
    assert says_the_hour("it's twelve thirty-three a.m.", {12})
    for heard_as, hour in (
        ("it's 1200 am.", 12),
        ("it's 1201 am.", 12),
        ("it's 3 0 5 p.m.", 3),
        ("it's 2007 am.", 2),
        ("it's 2019 pm.", 2),
        ("it's to 11 am.", 2),
        ("it's for 30 pm.", 4),
        ("it's 240 1pm.", 2),
        ("it's 1140 1 am.", 11),
        ("it's 6 8 in pm.", 6),  # six eighteen, heard in CI
    ):
        assert says_the_hour(heard_as, {hour}) and not says_the_hour(heard_as, {hour % 12 + 1})
    # a homophone elsewhere is not the hour: "ten to eleven" says 10 and 11, never 2
    assert not says_the_hour("it's ten to eleven.", {2})
    assert not says_the_hour("it's 1007 am.", {1})
    wrong = heard("You can ask me the time or the date, or leave a message.")
    assert not any(says_the_hour(wrong, {h}) for h in range(1, 13)), wrong


def test_every_hour_of_the_answer_is_heard() -> None:
    """The peer test below asks the time once, at whatever time it runs, so one run hears one
    hour's words. Here the agent's answer for every hour of a day (its brain's wording, its
    piper voice, the minutes varied) goes through G.711, µ-law and A-law in turn, and the
    caller's recogniser must hear the hour each time. The voice is the deterministic one, so
    every hour is known to pass or known to fail: the voice callers hear varies its timing at
    random, and with it tiny.en misheard about 2 answers in 96 (a short "eight" as "a").
    The peer test keeps that voice."""
    from datetime import datetime as dt

    from callbridge.audio.g711 import codec_for
    from callbridge.llm.demo import _spoken_time
    from callbridge.tts.piper import PiperSynthesizer

    from .peerlib.audio import alaw_decode, ulaw_decode

    tts = PiperSynthesizer(deterministic=True)
    misheard = []
    for hour in range(24):
        text = f"It's {_spoken_time(dt(2026, 12, 7, hour, (41 + 7 * hour) % 60))}."
        pcm = b"".join(tts.synthesize(text))
        name, decode = ("PCMU", ulaw_decode) if hour % 2 == 0 else ("PCMA", alaw_decode)
        heard = speech.transcribe_whisper(decode(codec_for(name).encode(pcm)))
        if not says_the_hour(heard, {hour % 12 or 12}):
            misheard.append(f"{text!r} ({name}) heard as {heard!r}")
    assert not misheard, misheard


def _answer_segment(agent: list[TimedFrame], after: float) -> Segment:
    segs = [s for s in speech.wire_segments(agent, min_gap_s=0.8) if s.start >= after]
    assert segs, f"no agent audio after t={after:.2f}"
    return segs[0]


@pytest.mark.parametrize("voice", ["piper", "espeak-ng"])
def test_baresip_asks_the_time_and_hears_the_answer(
    voice: str, registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("baresip", "tshark", "sox", "espeak-ng")
    gw = gateway_factory(extra_env={"CALLBRIDGE_AGENT_GREET": "true"})
    question = speech.piper_speech(QUESTION) if voice == "piper" else speech.espeak_speech(QUESTION)
    # aufile is only a source and hangs up at its EOF: pad both microphone files.
    mic_silent = speech.save(tmp_path / "silence.wav", speech.silence(90))
    mic_question = speech.save(
        tmp_path / "question.wav", speech.concat(question, speech.silence(90))
    )
    sip_port = free_port_pair()
    ctrl_port = free_port()
    while ctrl_port in (sip_port, sip_port + 1):
        ctrl_port = free_port()
    bs_rtp = PORT_BLOCKS.take(20)
    cfg = BaresipConfig(
        confdir=tmp_path / "baresip", user="alice", sip_port=sip_port, ctrl_port=ctrl_port,
        rtp_range=bs_rtp, source_wav=mic_silent,
    )  # fmt: skip
    gw_lo, gw_hi = gw.config.rtp_range
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (portrange {gw_lo}-{gw_hi} or portrange {bs_rtp[0]}-{bs_rtp[1]})",
    )
    bs = start_baresip(registry, "baresip", cfg, lifetime_s=60)
    ctl = BaresipCtl.connect(ctrl_port)
    try:
        with WireTap(*bs_rtp) as tap:  # what baresip receives, live
            ctl.command("dial", f"sip:agent@{gw.sip_addr[0]}:{gw.sip_addr[1]}")
            ctl.wait_event("CALL_ESTABLISHED", 10)
            call_id = str(gw.wait_for("call.started", timeout=5)[0]["call_id"])
            wait_for_speech_end(gw, tap, call_id, utterance=1)  # the greeting
            ctl.command("ausrc", f"aufile,{mic_question}")  # speak now
            gw.wait_for("agent.heard", timeout=15, call_id=call_id)
            wait_for_speech_end(gw, tap, call_id, utterance=2)  # the answer
        ctl.command("hangup")
        ctl.wait_event("CALL_CLOSED", 5)
        ctl.command("quit")
    finally:
        ctl.close()
    assert bs.wait(10) == 0, bs.stdout_text()[-3000:]

    started = gw.events("call.started")
    assert len(started) == 1, started
    assert started[0].get("agent") == "voice", f"'agent' must reach the voice agent: {started[0]}"
    gw.wait_for("call.ended", timeout=10, call_id=call_id)

    heard = gw.events("agent.heard", call_id=call_id)
    assert len(heard) == 1, f"one question asked, agent.heard: {heard}"
    assert "time" in speech.words(heard[0]["text"]), f"the agent misheard: {heard[0]}"
    turns = [t for t in gw.events("agent.turn", call_id=call_id) if TIME_ANSWER.match(t["text"])]
    assert len(turns) == 1, f"agent.turn events: {gw.events('agent.turn', call_id=call_id)}"
    turn = turns[0]
    hour, minute, meridiem = TIME_ANSWER.match(turn["text"]).groups()  # type: ignore[union-attr]
    said_at = datetime.fromtimestamp(float(turn["ts"])).astimezone()  # the gateway's own clock
    spoken = [
        f"{t.hour % 12 or 12}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"
        for t in (said_at - timedelta(minutes=1), said_at)
    ]
    assert f"{hour}:{minute} {meridiem}" in spoken, f"wrong time {turn['text']!r}, now {spoken[-1]}"

    # What reached the caller, on the wire: greeting, the question, the answer.
    pcap = cap.stop()
    to_caller = f"udp.dstport >= {bs_rtp[0]} && udp.dstport <= {bs_rtp[1]}"
    from_caller = f"udp.srcport >= {bs_rtp[0]} && udp.srcport <= {bs_rtp[1]}"
    agent = speech.timed_frames(read_rtp(pcap, to_caller), 0)
    agent += speech.timed_frames(read_rtp(pcap, to_caller), 8)
    agent.sort(key=lambda f: f.time)
    caller = speech.timed_frames(read_rtp(pcap, from_caller), 0)
    caller += speech.timed_frames(read_rtp(pcap, from_caller), 8)
    caller.sort(key=lambda f: f.time)
    asked_segs = speech.wire_segments(caller)
    assert len(asked_segs) == 1, f"the caller said one thing, found {asked_segs}"
    q = asked_segs[0]
    assert agent and agent[0].time < q.start, "no greeting before the question"
    greeting = speech.transcribe_whisper(speech.render(agent, agent[0].time - 0.1, q.start))
    answer_seg = _answer_segment(agent, q.end)
    answer = speech.transcribe_whisper(
        speech.render(agent, answer_seg.start - 0.1, answer_seg.end + 0.2)
    )
    on_wire_v2v = answer_seg.start - q.end
    print(
        f"greeting heard as {greeting!r}\nanswer {turn['text']!r} heard as {answer!r}\n"
        f"voice-to-voice on the wire {1000 * on_wire_v2v:.0f} ms (question end to first answer "
        f"packet; logged: {turn.get('voice_to_voice_ms')} ms, stt {turn.get('stt_final_ms')} ms)"
    )
    assert len(GREETING_WORDS & set(speech.words(greeting))) >= 2, f"greeting: {greeting!r}"
    hours = {t.hour % 12 or 12 for t in (said_at - timedelta(minutes=1), said_at)}
    assert says_the_hour(answer, hours), f"answer {turn['text']!r} heard as {answer!r}, now {hours}"
    assert on_wire_v2v < 4.0, f"the answer came {on_wire_v2v:.2f} s after the question"

    # The softphone's own recording holds the answer too (it only has frames that arrived:
    # the greeting's packets, then the answer's).
    recs = cfg.recordings("dec")
    assert len(recs) == 1, recs
    dec = read_wav(recs[0])
    n_greeting = sum(1 for f in agent if f.time < q.start) * speech.FRAME
    recorded = speech.transcribe_whisper(dec[n_greeting:])
    print(f"baresip's recording after the greeting: {recorded!r}")
    assert says_the_hour(recorded, hours), f"baresip recorded {recorded!r}, now {hours}"


def test_the_agent_says_a_time_on_the_hour_as_a_caller_says_it() -> None:
    """On the hour the demo answers "It's 6:00 AM."; piper read that "six zero zero", which
    Whisper (and a caller) took for a number ("at 60000 am", the browser test at 06:00). The
    gateway's own voice, through G.711, must say the hour and no zeros."""
    import numpy as np

    from callbridge.tts.piper import PiperSynthesizer

    from .peerlib.audio import ulaw_decode, ulaw_encode

    voice = PiperSynthesizer(deterministic=True)
    for text, hour in (("It's 6:00 AM.", 6), ("It's 12:00 PM.", 12), ("It's 6:05 PM.", 6)):
        pcm = np.frombuffer(b"".join(voice.synthesize(text)), dtype="<i2")
        said = speech.transcribe_whisper(ulaw_decode(ulaw_encode(pcm)))
        assert says_the_hour(said, {hour}), (text, said)
        assert not re.search(r"0\s*-?\s*0|000|zero", said), (text, said)
