"""Issue 4, acceptance 1: streamdouble (a Twilio Media Streams simulator from PyPI, written by
someone else) places simulated Twilio calls against the real gateway's /twilio/media with
spoken audio, the product's default voice agent behind it.

1. The agent greets, the caller asks a question, the agent answers: reply audio arrives (and
   is saved), every mark callbridge sent is echoed, streamdouble reports no protocol violation.
2. Barge-in: the caller talks over the greeting; callbridge must send `clear` within 300 ms of
   the caller's speech onset (both instants on streamdouble's clock: when it sent the first
   speech frame, when the clear arrived).

streamdouble cannot sign its upgrade request, so the gateway runs with
CALLBRIDGE_TWILIO_VALIDATE=false (signatures are acceptance 2: tests/unit/api).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamdouble import api as sd
from streamdouble.scenario import parse as parse_scenario
from streamdouble.session import SessionConfig
from streamdouble.trace import Trace, TraceConfig

from .conftest import GatewayFactory
from .peerlib import speech
from .peerlib.audio import ulaw_decode
from .peerlib.callbridge import CallbridgeProcess

pytestmark = pytest.mark.peer

QUESTION = "do you know what time it is"
# Its first 400 ms are speech without a pause: with a pause early on (e.g. "hold on," dips
# for 60 ms after 180 ms) a 300 ms bound measures the phrase against the agent's 150 ms
# barge-in count, not how fast callbridge reacts.
INTERRUPTION = "no no, I have another question"
MAX_CLEAR_S = 0.300  # acceptance: clear within 300 ms of the caller's speech onset
LOUD_DBFS = -40.0  # a 20 ms frame louder than this is speech (streamdouble idles at digital 0)


def start_gateway(gateway_factory: GatewayFactory) -> tuple[CallbridgeProcess, str]:
    gw = gateway_factory(
        extra_env={"CALLBRIDGE_HTTP_ENABLED": "true", "CALLBRIDGE_TWILIO_VALIDATE": "false"}
    )
    gw.wait_for("http.listening", timeout=10)
    return gw, f"ws://127.0.0.1:{gw.config.http_port}/twilio/media"


def frame_dbfs(payload: str) -> float:
    x = ulaw_decode(base64.b64decode(payload)).astype(np.float64)
    ms = float(np.mean(x * x)) if x.size else 0.0
    return 10 * np.log10(ms / 32768.0**2) if ms > 0 else -np.inf


def loud_frames(trace: Trace, direction: str) -> list[float]:
    """Times of the loud media frames sent ("out", by the caller) or received ("in")."""
    return [
        r["t"]
        for r in trace.records
        if r.get("dir") == direction
        and r.get("event") == "media"
        and "payload" in r
        and frame_dbfs(r["payload"]) > LOUD_DBFS
    ]


def times(trace: Trace, direction: str, event: str) -> list[float]:
    return [r["t"] for r in trace.records if r.get("dir") == direction and r.get("event") == event]


async def run(url: str, steps: list[Any], tmp: Path, name: str) -> tuple[sd.CallReport, Trace]:
    trace = Trace(TraceConfig(tmp / f"{name}.jsonl", payloads=True))
    config = SessionConfig(
        response_timeout_s=30.0,
        quiet_period_s=1.0,
        max_drain_s=20.0,
        max_call_s=90.0,
        custom_parameters={"agent": "agent"},
        trace=trace,
    )
    report = await sd.run_scenario(
        url, parse_scenario({"name": name, "steps": steps}), config=config
    )
    trace.flush()  # kept next to the test's logs for a failure's post-mortem
    sd.save_reply(report, tmp / f"{name}-reply.wav")
    return report, trace


def describe(report: sd.CallReport) -> str:
    return str(report.to_dict())


async def test_streamdouble_call_gets_an_answer(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw, url = start_gateway(gateway_factory)
    question = speech.save(tmp_path / "question.wav", speech.piper_speech(QUESTION))
    report, trace = await run(
        url,
        [
            {"wait_for": {"event": "audio", "timeout": 30}},  # the greeting
            {"wait_for": {"event": "quiet", "timeout": 30}},
            {"say": str(question)},
            {"wait": 6},  # end of turn, recognition, the answer
            {"wait_for": {"event": "quiet", "timeout": 20}},
            {"expect": "no_violations"},
        ],
        tmp_path,
        "answer",
    )
    result = report.result
    print(
        f"streamdouble: first audio (greeting) {report.time_to_first_audio_ms:.0f} ms, "
        f"marks {len(result.marks_received)} received / {len(result.marks_echoed)} echoed, "
        f"reply {result.audio_duration_s:.2f} s, violations {report.violations}"
    )
    assert report.violations == [] and result.violation_count == 0, describe(report)
    assert result.unknown_events == [], describe(report)
    assert result.failed_expectations == [], describe(report)
    assert report.spoke and report.time_to_first_audio_ms is not None

    asked = loud_frames(trace, "out")
    assert asked, "the caller's question was not sent"
    question_end = asked[-1]
    answer = [t for t in loud_frames(trace, "in") if t > question_end]
    assert answer, "no answer after the question"
    answer_s = 0.02 * len(answer)
    print(
        f"answer: first audio {1000 * (answer[0] - question_end):.0f} ms after the question "
        f"ended, {answer_s:.2f} s of speech"
    )
    assert answer_s >= 0.5, f"only {answer_s:.2f} s of answer"

    # Every mark callbridge sent was echoed (no clear in this call), and nothing else.
    assert result.marks_received, describe(report)
    assert sorted(result.marks_echoed) == sorted(result.marks_received)
    assert result.clears_received == 0

    # The voice agent took the question as a turn and answered it (what the recogniser made
    # of the words is the speech stack's business, not the transport's).
    heard = gw.wait_for("agent.heard", timeout=5)
    answered = gw.wait_for("agent.turn", timeout=5, utterance=2)
    print(f"agent heard {heard[0]['text']!r}, answered {answered[0]['text']!r}")
    gw.wait_for("call.ended", timeout=10)
    ended = gw.events("call.ended")[0]
    assert ended["reason"] in ("twilio_stop", "socket_closed"), ended
    assert ended["marks_echoed"] == ended["marks_sent"] == len(result.marks_received), ended
    gw.assert_no_crash()


async def test_streamdouble_barge_in_clears_within_300_ms(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw, url = start_gateway(gateway_factory)
    interruption = speech.save(tmp_path / "interrupt.wav", speech.piper_speech(INTERRUPTION))
    report, trace = await run(
        url,
        [
            {"wait_for": {"event": "audio", "timeout": 30}},
            # Well into the (about 7 s) greeting, once it is all synthesised: while piper
            # runs, the barge-in decision waits for CPU on a 2-core box (up to 140 ms seen),
            # which is the speech runtime's latency, not the transport's.
            {"wait": 3.0},
            {"say": str(interruption)},
            {"expect": "clear"},
            {"wait": 2.0},
            {"expect": "no_violations"},
        ],
        tmp_path,
        "barge-in",
    )
    result = report.result
    assert report.violations == [] and result.violation_count == 0, describe(report)
    assert result.failed_expectations == [], describe(report)
    onset = loud_frames(trace, "out")[0]
    clears = times(trace, "in", "clear")
    assert clears, f"no clear: {describe(report)}"
    agent_before = [t for t in loud_frames(trace, "in") if t <= onset]
    assert agent_before and onset - agent_before[-1] < 0.1, "the agent was not talking"
    clear_s = clears[0] - onset
    barge = gw.wait_for("agent.barge_in", timeout=5)[0]
    print(
        f"streamdouble: first audio {report.time_to_first_audio_ms:.0f} ms; clear "
        f"{1000 * clear_s:.0f} ms after the caller's speech onset (max "
        f"{1000 * MAX_CLEAR_S:.0f}); agent.barge_in {barge}"
    )
    assert 0 < clear_s <= MAX_CLEAR_S, f"clear came {1000 * clear_s:.0f} ms after the onset"
    # After the clear, no more of the greeting: what arrives later is a new answer at most.
    late = [t for t in loud_frames(trace, "in") if clears[0] < t < clears[0] + 0.5]
    assert not late, f"{len(late)} frames of the cleared greeting kept coming"
    # The first clear may be the hold (the agent falls silent on the first chunk of caller
    # speech); once the barge-in is confirmed, the rest of the greeting is dropped.
    cleared = gw.wait_for("twilio.clear", timeout=5, why="flush")[0]
    assert cleared["dropped_samples"] > 0, cleared
    interrupted = gw.wait_for("agent.interrupted", timeout=5)[0]
    assert interrupted["heard"] != interrupted["said"], interrupted
    gw.wait_for("call.ended", timeout=10)
    gw.assert_no_crash()
