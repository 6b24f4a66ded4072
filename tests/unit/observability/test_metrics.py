"""Metrics: what the calls layer and the agents' typed bus events feed, read back through
prometheus_client's own text parser (what a Prometheus server would see)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from callbridge.core.bus import Bus
from callbridge.core.call_events import (
    BargeIn,
    CallEnded,
    CallInfo,
    CallStarted,
    Noted,
    RegistrationChanged,
    TurnMeasured,
)
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


def test_turn_latency_and_barge_in_from_the_agents_typed_events() -> None:
    m = Metrics()
    process = Bus(name="process")
    gateway = Bus(process, name="gateway")
    m.install(gateway)
    # the agents publish on the process-wide bus (the gateway's root)
    process.publish(TurnMeasured("c1", 1.0, 2, "hi", voice_to_voice_ms=640, stt_final_ms=120,
                                 brain_first_token_ms=300, tts_first_audio_ms=150))  # fmt: skip
    process.publish(TurnMeasured("c1", 1.0, 3, "greeting"))  # no latencies: nothing
    process.publish(BargeIn("c1", 2.0, 2, 0.5, 180, 90, "h"))
    process.publish(Noted("agent.turn", {"voice_to_voice_ms": 5}))  # a log line, not a metric
    # a typed event published on the gateway's bus reaches the process bus too: counted once
    gateway.publish(TurnMeasured("c1", 1.0, 4, "x", stt_final_ms=100))
    m.uninstall()
    process.publish(TurnMeasured("c1", 1.0, 5, "x", voice_to_voice_ms=1))  # after: unseen
    got = samples(m)
    name = "callbridge_turn_latency_seconds"
    for stage, count, seconds in (("voice_to_voice", 1, 0.64), ("stt", 2, 0.22),
                                  ("brain", 1, 0.3), ("tts", 1, 0.15)):  # fmt: skip
        assert got[(f"{name}_count", (("stage", stage),))] == count
        assert abs(got[(f"{name}_sum", (("stage", stage),))] - seconds) < 1e-9
    assert got[(f"{name}_bucket", (("le", "0.75"), ("stage", "voice_to_voice")))] == 1
    assert got[(f"{name}_bucket", (("le", "0.5"), ("stage", "voice_to_voice")))] == 0
    assert got[("callbridge_barge_in_decision_seconds_count", ())] == 1
    assert abs(got[("callbridge_barge_in_decision_seconds_sum", ())] - 0.18) < 1e-9
    assert abs(got[("callbridge_barge_in_silenced_seconds_sum", ())] - 0.09) < 1e-9


def test_each_gateway_counts_only_the_calls_on_its_own_bus() -> None:
    process = Bus(name="process")
    a_bus, b_bus = Bus(process, name="a"), Bus(process, name="b")
    a, b = Metrics(), Metrics()
    a.install(a_bus)
    b.install(b_bus)
    info = CallInfo("c1", "sip", "inbound", "agent", "sip:x@y", "echo")
    a_bus.publish(CallStarted(info, 1.0))
    a_bus.publish(CallEnded(info, 2.0, "remote_bye", 1.0, {"rtp_in": 10, "lost": 1}))
    b_bus.publish(CallEnded(info, 2.0, "api", 1.0, {}))
    a_bus.publish(RegistrationChanged("trunk", "failed", "sip:a@b", "sip:b", "403", 403, None,
                                      1, 3.0))  # fmt: skip
    got_a, got_b = samples(a), samples(b)
    assert got_a[("callbridge_calls_ended_total", (("reason", "remote_bye"),))] == 1
    assert ("callbridge_calls_ended_total", (("reason", "api"),)) not in got_a
    assert got_b[("callbridge_calls_ended_total", (("reason", "api"),))] == 1
    started = ("callbridge_calls_started_total", (("direction", "inbound"), ("transport", "sip")))
    assert got_a[started] == 1 and started not in got_b
    assert got_a[("callbridge_rtp_lost_packets_total", ())] == 1
    state = "callbridge_registration_state"
    assert got_a[(state, (("account", "trunk"), ("state", "failed")))] == 1
    assert got_a[(state, (("account", "trunk"), ("state", "registered")))] == 0


def test_two_gateways_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.call_ended("bye", {})
    assert ("callbridge_calls_ended_total", (("reason", "bye"),)) not in samples(b)
