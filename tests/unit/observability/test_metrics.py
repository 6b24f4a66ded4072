"""Metrics: what the calls layer and the agents' events feed, read back through
prometheus_client's own text parser (what a Prometheus server would see)."""

from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families

from callbridge.core.log import event
from callbridge.observability.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_calls_rtp_and_registrations() -> None:
    live = [1, 2, 3]
    m = Metrics(active_calls=lambda: len(live), registrations=lambda: [("trunk", "registered")])
    m.call_started("sip", "inbound")
    m.call_ended("rtp_timeout", {"rtp_in": 100, "lost": 3, "late": 2, "concealed": 4,
                                 "jitter_ms": 7.5})  # fmt: skip
    m.call_ended("bye", {"frames_in": 10, "payloads_late": 1, "frames_concealed": 0})
    got = samples(m)
    assert got[("callbridge_active_calls", ())] == 3
    assert (
        got[("callbridge_calls_started_total", (("direction", "inbound"), ("transport", "sip")))]
        == 1
    )
    assert got[("callbridge_calls_ended_total", (("reason", "rtp_timeout"),))] == 1
    assert got[("callbridge_calls_ended_total", (("reason", "bye"),))] == 1
    assert got[("callbridge_rtp_lost_packets_total", ())] == 3
    assert got[("callbridge_rtp_late_frames_total", ())] == 3
    assert got[("callbridge_rtp_concealed_frames_total", ())] == 4
    assert got[("callbridge_rtp_jitter_ms_count", ())] == 1
    assert got[("callbridge_rtp_jitter_ms_sum", ())] == 7.5
    state = "callbridge_registration_state"
    assert got[(state, (("account", "trunk"), ("state", "registered")))] == 1
    assert got[(state, (("account", "trunk"), ("state", "failed")))] == 0
    live.clear()
    assert samples(m)[("callbridge_active_calls", ())] == 0


def test_turn_latency_and_barge_in_from_the_agents_log_events() -> None:
    m = Metrics()
    logger = logging.getLogger("callbridge.test.metrics")
    logger.setLevel(logging.INFO)
    m.install(logger)
    try:
        event(logger, "agent.turn", utterance=2, text="hi", voice_to_voice_ms=640,
              stt_final_ms=120, brain_first_token_ms=300, tts_first_audio_ms=150)  # fmt: skip
        event(logger, "agent.turn", utterance=3, text="greeting")  # no latencies: nothing
        event(logger, "agent.barge_in", utterance=2, decided_after_ms=180, silenced_after_ms=90)
        event(logger, "call.started", agent="echo")  # not a metric
    finally:
        m.uninstall(logger)
    event(logger, "agent.turn", utterance=4, voice_to_voice_ms=1)  # after uninstall: unseen
    got = samples(m)
    name = "callbridge_turn_latency_seconds"
    for stage, seconds in (("voice_to_voice", 0.64), ("stt", 0.12), ("brain", 0.3),
                           ("tts", 0.15)):  # fmt: skip
        assert got[(f"{name}_count", (("stage", stage),))] == 1
        assert abs(got[(f"{name}_sum", (("stage", stage),))] - seconds) < 1e-9
    assert got[(f"{name}_bucket", (("le", "0.75"), ("stage", "voice_to_voice")))] == 1
    assert got[(f"{name}_bucket", (("le", "0.5"), ("stage", "voice_to_voice")))] == 0
    assert got[("callbridge_barge_in_decision_seconds_count", ())] == 1
    assert abs(got[("callbridge_barge_in_decision_seconds_sum", ())] - 0.18) < 1e-9
    assert abs(got[("callbridge_barge_in_silenced_seconds_sum", ())] - 0.09) < 1e-9


def test_two_gateways_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.call_ended("bye", {})
    assert ("callbridge_calls_ended_total", (("reason", "bye"),)) not in samples(b)
