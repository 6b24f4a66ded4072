"""The optimised per-packet hot path (issue 12) against recorded pre-optimisation outputs.

fixtures/hotpath_digests.json holds, for every case of the fixed corpus in
fixtures/hotpath_corpus.py, the SHA-256 of everything the implementation before the hot path
rework produced: every frame out and its concealment flag, every DTMF event, every datagram on
the wire (RTP, RFC 4733, RTCP) and every statistic. The streams cover loss, reordering,
duplicates, timestamp and sequence jumps, SSRC changes, stalls, DTMF, RTCP, malformed and
non-plain headers and a second source. The current implementation must reproduce each digest
exactly; fixtures/make_hotpath_digests.py says how the digests were made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from callbridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.rtp.jitter import JitterBuffer, JitterConfig
from callbridge.rtp.playout_clock import PlayoutClock
from callbridge.rtp.sender import RtpSender
from callbridge.rtp.session import RtpParams, RtpSession
from tests.unit.rtp.fixtures.hotpath_corpus import (
    CODECS,
    KNOB_VALUES,
    SESSION_NS,
    ClockCase,
    G711Case,
    Impl,
    JitterCase,
    SessionCase,
    clock_cases,
    corpus_digest,
    g711_cases,
    jitter_cases,
    run_clock,
    run_g711,
    run_jitter,
    run_sender_report,
    run_session,
    session_cases,
)

CURRENT = Impl(
    RtpSession=RtpSession,
    RtpParams=RtpParams,
    RtpSender=RtpSender,
    JitterBuffer=JitterBuffer,
    JitterConfig=JitterConfig,
    PlayoutClock=PlayoutClock,
    ulaw_encode=ulaw_encode,
    alaw_encode=alaw_encode,
    ulaw_decode=ulaw_decode,
    alaw_decode=alaw_decode,
)
RECORDED: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).parent / "fixtures" / "hotpath_digests.json").read_text()
)


def _params(cases: Sequence[object]) -> list[object]:
    return [pytest.param(f"{i:03d}", c, id=f"{i:03d}") for i, c in enumerate(cases)]


def test_the_corpus_is_the_one_the_digests_were_recorded_for() -> None:
    # A mismatch here means hotpath_corpus.py changed, not the implementation.
    assert corpus_digest() == RECORDED["corpus"]["sha256"]
    assert len(RECORDED["session"]) == len(session_cases())
    assert len(RECORDED["jitter"]) == len(jitter_cases())
    assert len(RECORDED["playout_clock"]) == len(clock_cases())
    assert RECORDED["g711"].keys() == g711_cases().keys()


def test_the_session_corpus_covers_every_knob_value_and_combination() -> None:
    cases = session_cases()
    for i, values in enumerate(KNOB_VALUES):
        assert {c.knobs[i] for c in cases} == set(values)
    assert {(c.n, c.codec, c.latch) for c in cases} == {
        (n, codec, latch) for n in SESSION_NS for codec in CODECS for latch in (False, True)
    }


@pytest.mark.parametrize(("case_id", "case"), _params(session_cases()))
def test_session_receive_tick_and_send_match_the_recording(case_id: str, case: SessionCase) -> None:
    assert run_session(CURRENT, case) == RECORDED["session"][case_id], case


def test_a_sender_report_block_about_us_is_applied_as_recorded() -> None:
    assert run_sender_report(CURRENT) == RECORDED["sender_report"]["000"]


@pytest.mark.parametrize(("case_id", "case"), _params(jitter_cases()))
def test_jitter_buffer_matches_the_recording_with_odd_inputs(
    case_id: str, case: JitterCase
) -> None:
    assert run_jitter(CURRENT, case) == RECORDED["jitter"][case_id], case


@pytest.mark.parametrize(("case_id", "case"), _params(clock_cases()))
def test_playout_clock_matches_the_recording(case_id: str, case: ClockCase) -> None:
    assert run_clock(CURRENT, case) == RECORDED["playout_clock"][case_id]


@pytest.mark.parametrize(("name", "case"), list(g711_cases().items()))
def test_g711_matches_the_recording(name: str, case: G711Case) -> None:
    assert run_g711(CURRENT, case) == RECORDED["g711"][name]
